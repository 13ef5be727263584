"""The metadata DB layer and migrations on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import math
import subprocess
import sys

import peewee as pw
import pytest

from keel_server.common import db as dbmod
from keel_server.common.migrations import (
    LATEST_VERSION,
    SchemaOutdated,
    current_version,
    ensure_current,
    upgrade,
)


@pytest.fixture()
def database(db_url: str):
    database = dbmod.initialize(db_url)
    yield database
    database.close()


def test_fresh_database_is_created_at_latest_version(database: pw.Database) -> None:
    assert current_version(database) is None
    ensure_current(database)
    with database.connection_context():
        assert current_version(database) == LATEST_VERSION
        for model in dbmod.ALL_TABLES:
            assert database.table_exists(model._meta.table_name), model.__name__
    ensure_current(database)  # idempotent on a current database


def test_older_schema_is_refused_until_keel_db_upgrade(database: pw.Database, db_url: str) -> None:
    upgrade(database, target=1)
    with database.connection_context():
        assert current_version(database) == 1
        assert not database.table_exists("deployment")
    with pytest.raises(SchemaOutdated, match=r"run `keel db upgrade`"):
        ensure_current(database)

    result = subprocess.run(
        [sys.executable, "-m", "keel.cli", "db", "upgrade", "--db-url", db_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"schema is at version {LATEST_VERSION}" in result.stdout
    ensure_current(database)
    with database.connection_context():
        assert database.table_exists("deployment")


def test_server_refuses_older_schema_with_one_clear_line(database: pw.Database, db_url: str) -> None:
    upgrade(database, target=1)
    database.close()
    result = subprocess.run(
        [sys.executable, "-m", "keel.cli", "server", "--port", "0", "--db-url", db_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "keel db upgrade" in result.stderr


def test_models_round_trip_with_constraints(database: pw.Database) -> None:
    ensure_current(database)
    with database.connection_context():
        with dbmod.write_transaction():
            exp = dbmod.Experiment.create(name="exp", artifact_location="file:///tmp/a")
            run = dbmod.Run.create(
                run_id="a" * 32, experiment=exp, start_time=1, artifact_uri="file:///tmp/a/r"
            )
            dbmod.Param.create(run=run, key="lr", value="0.1")
            for kind, stored in (
                (dbmod.VALUE_NAN, 0.0),
                (dbmod.VALUE_POS_INF, dbmod.MAX_DOUBLE),
                (dbmod.VALUE_NEG_INF, -dbmod.MAX_DOUBLE),
            ):
                dbmod.Metric.create(
                    run=run, key=f"m{kind}", value=stored, value_kind=kind, timestamp=1, step=0
                )
        stored_max = dbmod.Metric.get(dbmod.Metric.value_kind == dbmod.VALUE_POS_INF).value
        assert not math.isinf(stored_max) and stored_max == dbmod.MAX_DOUBLE

        with pytest.raises(pw.IntegrityError):
            with database.atomic():
                dbmod.Experiment.create(name="exp", artifact_location="x")
        with pytest.raises(pw.IntegrityError):
            with database.atomic():
                dbmod.Param.create(run=run, key="lr", value="0.2")

        model = dbmod.RegisteredModel.create(name="m")
        dbmod.ModelVersion.create(model=model, version=1, source="runs:/x/model")
        with pytest.raises(pw.IntegrityError):
            with database.atomic():
                dbmod.ModelVersion.create(model=model, version=1, source="runs:/y/model")
        # Cascades: deleting the model removes its versions.
        model.delete_instance()
        assert dbmod.ModelVersion.select().count() == 0


def test_unreachable_database_url_fails_fast() -> None:
    database = dbmod.open_database("postgresql://postgres@127.0.0.1:1/nope")
    with pytest.raises(pw.OperationalError):
        database.connect()


@pytest.mark.parametrize(
    "url, message",
    [
        ("oracle://x/y", "unsupported database URL scheme"),
        ("postgresql://127.0.0.1:5432", "names no database"),
        ("sqlite://", "bad SQLite URL"),
    ],
)
def test_bad_database_urls_are_explained(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dbmod.open_database(url)
