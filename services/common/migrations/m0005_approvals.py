"""Review and approval of stage transitions: protected stages, transition requests, and the
notes (request, comment) of their history events."""

import peewee as pw

from keel_server.common.db import APPROVAL_TABLES

NUMBER = 5
DESCRIPTION = "approval policies, transition requests and their history notes"


def upgrade(database: pw.Database) -> None:
    database.create_tables(APPROVAL_TABLES, safe=True)
