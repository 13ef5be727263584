"""Idempotency keys for CreateRun and LogBatch."""

import peewee as pw

from keel_server.common.db import IDEMPOTENCY_TABLES

NUMBER = 3
DESCRIPTION = "client request ids (idempotency keys) of CreateRun and LogBatch"


def upgrade(database: pw.Database) -> None:
    database.create_tables(IDEMPOTENCY_TABLES, safe=True)
