"""Artifact checksums and inference deployments."""

import peewee as pw

from keel_server.common.db import SERVING_TABLES

NUMBER = 2
DESCRIPTION = "artifact object checksums and inference deployments"


def upgrade(database: pw.Database) -> None:
    database.create_tables(SERVING_TABLES, safe=True)
