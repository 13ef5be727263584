"""Indexes on param and run_tag (key, value, run_id): SearchRuns ordered by one param or tag walks
them for a page's worth of rows instead of joining and sorting every run of the experiments.

SQLite only. PostgreSQL's b-tree refuses entries over 2,704 bytes, and a param value may hold
6,000 characters (a tag 8,000), so the index would make long values unloggable there; MariaDB
indexes a TEXT column only through a prefix, and a prefix index cannot deliver ORDER BY value.
On those two the search runs the same query and sorts (as before this migration).

Not declared on the Peewee models: a model index is created on every backend by
``create_tables`` (m0001), and these are backend-specific."""

import peewee as pw

NUMBER = 7
DESCRIPTION = "param and run_tag (key, value, run_id) indexes for ordering runs by a param or tag (SQLite)"

INDEXES = (
    ("param_key_value_run_id", "param"),
    ("run_tag_key_value_run_id", "run_tag"),
)


def upgrade(database: pw.Database) -> None:
    if not isinstance(database, pw.SqliteDatabase):
        return
    for name, table in INDEXES:
        database.execute_sql(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ("key", "value", "run_id")')
