"""Numbered, plain-Python schema migrations.

Each module ``mNNNN_<slug>.py`` has ``NUMBER``, ``DESCRIPTION`` and ``upgrade(database)``. A new
database is brought to the latest version on first start; a database at an older version is
refused at start (``SchemaOutdated``) until ``keel db upgrade`` migrates it.

Rule for authors: once a later migration alters a table, earlier migrations must stop using
the live model for it and freeze the definition they created.
"""

from __future__ import annotations

import logging
from types import ModuleType

import peewee as pw

from keel_server.common.db import SchemaVersion, db, now_ms

from . import (
    m0001_initial,
    m0002_serving,
    m0003_client_requests,
    m0004_auth_audit,
    m0005_approvals,
    m0006_logged_models,
    m0007_param_tag_value_index,
)

MIGRATIONS: list[ModuleType] = [
    m0001_initial,
    m0002_serving,
    m0003_client_requests,
    m0004_auth_audit,
    m0005_approvals,
    m0006_logged_models,
    m0007_param_tag_value_index,
]
LATEST_VERSION = MIGRATIONS[-1].NUMBER

log = logging.getLogger("keel.migrations")


class SchemaOutdated(RuntimeError):
    """The database needs ``keel db upgrade`` (or a newer keel)."""


def current_version(database: pw.Database) -> int | None:
    """The applied version; None for an empty database (no keel tables at all)."""
    if not database.table_exists(SchemaVersion._meta.table_name):
        if database.table_exists("experiment"):
            return 0  # keel tables without bookkeeping: treat as older than every migration
        return None
    row = SchemaVersion.select().where(SchemaVersion.id == 1).first()
    return row.version if row else 0


def upgrade(database: pw.Database, target: int | None = None) -> list[int]:
    """Applies the pending migrations up to ``target`` (default: latest). Returns their numbers."""
    goal = LATEST_VERSION if target is None else target
    db.initialize(database)
    with database.connection_context():
        start = current_version(database) or 0
        applied: list[int] = []
        database.create_tables([SchemaVersion], safe=True)
        for migration in MIGRATIONS:
            if start < migration.NUMBER <= goal:
                log.info("applying migration %04d: %s", migration.NUMBER, migration.DESCRIPTION)
                with database.atomic():
                    migration.upgrade(database)
                    _stamp(migration.NUMBER)
                applied.append(migration.NUMBER)
        return applied


def ensure_current(database: pw.Database) -> None:
    """Server start: create a fresh database, accept a current one, refuse an older or newer one."""
    db.initialize(database)
    with database.connection_context():
        version = current_version(database)
    if version is None:
        try:
            upgrade(database)
        except pw.DatabaseError:
            # Another replica created the schema at the same moment: fine if it is now current.
            with database.connection_context():
                if current_version(database) != LATEST_VERSION:
                    raise
        return
    if version < LATEST_VERSION:
        raise SchemaOutdated(
            f"the database schema is at version {version} but this keel needs version {LATEST_VERSION}: "
            "run `keel db upgrade` (with the same KEEL_DB_URL) to migrate it"
        )
    if version > LATEST_VERSION:
        raise SchemaOutdated(
            f"the database schema is at version {version}, newer than this keel ({LATEST_VERSION}): upgrade keel"
        )


def _stamp(version: int) -> None:
    updated = (
        SchemaVersion.update(version=version, applied_at=now_ms()).where(SchemaVersion.id == 1).execute()
    )
    if not updated:
        SchemaVersion.insert(id=1, version=version, applied_at=now_ms()).on_conflict_ignore().execute()
