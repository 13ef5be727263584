"""``common.prepared``: Peewee queries compiled once per database and run as raw SQL, on SQLite,
PostgreSQL and MariaDB (the registry's write path runs on them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest
from backends import make_database_url

from keel_server.common import db as dbmod
from keel_server.common.db import RegisteredModel
from keel_server.common.migrations import upgrade
from keel_server.common.prepared import Statement, arg, columns, instance, returning_id, update_returning

BY_NAME = Statement(
    lambda: RegisteredModel.select(*columns(RegisteredModel)).where(RegisteredModel.name == arg("name"))
)
INSERT = Statement(
    lambda: returning_id(
        RegisteredModel.insert(
            name=arg("name"),
            description=arg("description"),
            creation_time=arg("now"),
            last_updated_time=arg("now"),
        ),
        RegisteredModel.id,
    )
)
BUMP = Statement(
    lambda: RegisteredModel.update(last_version=RegisteredModel.last_version + 1).where(
        RegisteredModel.name == arg("name")
    )
)
BUMP_RETURNING = Statement(
    lambda: (
        RegisteredModel.update(last_version=RegisteredModel.last_version + 1)
        .where(RegisteredModel.name == arg("name"))
        .returning(RegisteredModel.last_version)
    )
)


@pytest.fixture()
def database(db_url: str) -> Iterator[pw.Database]:
    database = dbmod.initialize(db_url)
    upgrade(database)
    with database.connection_context():
        yield database
    database.close()


def test_rows_and_ids_match_what_peewee_reads(database: pw.Database) -> None:
    with dbmod.write_transaction():
        new_id = INSERT.insert(name='a\'b "c" %s ?', description="", now=5)
        INSERT.insert(name="other", description="x", now=6)
    # The id is the new row's (RETURNING on PostgreSQL, lastrowid elsewhere), and the values went
    # in as given: quotes and placeholder-like characters are data, not SQL.
    expected = RegisteredModel.get(RegisteredModel.name == 'a\'b "c" %s ?')
    assert new_id == expected.id
    row = BY_NAME.one(name='a\'b "c" %s ?')
    assert row is not None
    model = instance(RegisteredModel, columns(RegisteredModel), row)
    assert (model.id, model.name, model.description, model.creation_time, model.last_version) == (
        expected.id,
        expected.name,
        "",
        5,
        0,
    )
    assert BY_NAME.one(name="missing") is None
    assert BY_NAME.all(name="other")[0][1] == "other"


def test_update_counts_and_returning(database: pw.Database) -> None:
    with dbmod.write_transaction():
        INSERT.insert(name="m", description="", now=1)
        assert BUMP.count(name="m") == 1
        assert BUMP.count(name="nobody") == 0
        if update_returning():
            assert BUMP_RETURNING.one(name="m") == (2,)
            assert BUMP_RETURNING.one(name="nobody") is None
    assert RegisteredModel.get(RegisteredModel.name == "m").last_version == (2 if update_returning() else 1)
    assert update_returning() is not isinstance(database, pw.MySQLDatabase)


def test_errors_are_peewee_errors_and_a_missing_value_is_named(database: pw.Database) -> None:
    with dbmod.write_transaction():
        INSERT.insert(name="dup", description="", now=1)
    # The store's race handling relies on Peewee's IntegrityError from a raw statement too.
    with pytest.raises(pw.IntegrityError), dbmod.write_transaction():
        INSERT.insert(name="dup", description="", now=2)
    with pytest.raises(TypeError, match="placeholder 'name'"):
        BY_NAME.one(nom="dup")


def test_compiled_per_database(database: pw.Database, tmp_path: Path) -> None:
    """A statement compiled for one database runs on the next one the proxy points at (a test
    process opens many), in that database's dialect, reading that database's rows."""
    with dbmod.write_transaction():
        INSERT.insert(name="first", description="", now=1)
    assert BY_NAME.one(name="first") is not None
    (tmp_path / "second").mkdir()
    with make_database_url("sqlite", tmp_path / "second") as other_url:
        other = dbmod.initialize(other_url)
        try:
            upgrade(other)
            with other.connection_context():
                assert BY_NAME.one(name="first") is None
                with dbmod.write_transaction():
                    INSERT.insert(name="second", description="", now=1)
                assert BY_NAME.one(name="second") is not None
        finally:
            other.close()
            dbmod.db.initialize(database)
    assert BY_NAME.one(name="second") is None
