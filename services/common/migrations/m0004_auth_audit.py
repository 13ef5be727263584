"""Identities, groups, API tokens, per-resource permissions and the audit log."""

import peewee as pw

from keel_server.common.db import AUDIT_TABLES, AUTH_TABLES

NUMBER = 4
DESCRIPTION = "auth (principals, groups, tokens, permissions) and the append-only audit log"


def upgrade(database: pw.Database) -> None:
    database.create_tables([*AUTH_TABLES, *AUDIT_TABLES], safe=True)
