"""Tracking and registry tables."""

import peewee as pw

from keel_server.common.db import REGISTRY_TABLES, TRACKING_TABLES

NUMBER = 1
DESCRIPTION = "tracking and registry tables"


def upgrade(database: pw.Database) -> None:
    database.create_tables([*TRACKING_TABLES, *REGISTRY_TABLES], safe=True)
