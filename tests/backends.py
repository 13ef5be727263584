"""Real backends for the test suite: fresh databases on SQLite, PostgreSQL and MariaDB, and
fresh buckets on the SeaweedFS S3 server started by scripts/with_services.sh.

The fixtures in conftest.py are thin wrappers around the context managers here, so fixtures
of any scope (module, session) can reuse them:

    with make_database_url("postgres") as url:      # postgresql://postgres@127.0.0.1:5432/keel_test_...
        ...
    with make_s3_bucket() as s3:                     # {"endpoint": ..., "bucket": ..., ...}
        ...

Servers (the tests FAIL, never skip, when one is missing):
  PostgreSQL 127.0.0.1:5432, user postgres (trust); MariaDB 127.0.0.1:3306, user root (no
  password, over TCP; scripts/with_services.sh creates root@127.0.0.1 if it is missing);
  S3 from the KEEL_TEST_S3_ENDPOINT / _ACCESS_KEY / _SECRET_KEY variables.
Select database backends with KEEL_TEST_BACKENDS=sqlite,postgres,mysql (default: all three).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

BACKENDS = ("sqlite", "postgres", "mysql")

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
MYSQL_HOST, MYSQL_PORT, MYSQL_USER = "127.0.0.1", 3306, "root"

PG_START_HINT = (
    "start PostgreSQL with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start "
    "(or run the tests through `make test` / scripts/with_services.sh, which starts it)"
)
MYSQL_START_HINT = (
    "start MariaDB with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd "
    "(or run the tests through `make test` / scripts/with_services.sh, which starts it and creates "
    "the root@127.0.0.1 account)"
)
S3_HINT = "run tests through make test / scripts/with_services.sh (it starts a private SeaweedFS S3 server)"


def selected_backends() -> list[str]:
    """The database backends named by KEEL_TEST_BACKENDS (comma list), default all three."""
    raw = os.environ.get("KEEL_TEST_BACKENDS", "").strip()
    if not raw:
        return list(BACKENDS)
    chosen = [b.strip().lower() for b in raw.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown:
        raise ValueError(
            f"KEEL_TEST_BACKENDS: unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}"
        )
    return chosen


def unique_name(prefix: str = "keel_test") -> str:
    """A name no other test run (or parallel worker) uses: prefix_<pid>_<random>."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


# ---------------------------------------------------------------- databases
@contextmanager
def make_database_url(kind: str, directory: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """Yield the URL of a fresh, empty database of ``kind`` and drop it afterwards.

    ``sqlite`` -> ``sqlite:///<directory>/keel.db`` (a temp dir when ``directory`` is None),
    ``postgres`` -> ``postgresql://postgres@127.0.0.1:5432/<db>``,
    ``mysql`` -> ``mysql://root@127.0.0.1:3306/<db>``.
    """
    if kind == "sqlite":
        with _sqlite_url(directory) as url:
            yield url
    elif kind == "postgres":
        with _postgres_url() as url:
            yield url
    elif kind == "mysql":
        with _mysql_url() as url:
            yield url
    else:
        raise ValueError(f"unknown database backend {kind!r}; choose from {', '.join(BACKENDS)}")


@contextmanager
def _sqlite_url(directory: str | os.PathLike[str] | None) -> Iterator[str]:
    own = directory is None
    folder = Path(tempfile.mkdtemp(prefix="keel-sqlite-")) if own else Path(directory)  # type: ignore[arg-type]
    try:
        yield f"sqlite:///{folder / 'keel.db'}"
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def _pg_admin() -> Any:
    import psycopg2

    error = ""
    try:
        conn = psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5
        )
    except psycopg2.OperationalError as exc:
        error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if error:  # failed outside the except block, so the report is one line, not a chain
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_USER}@{PG_HOST}:{PG_PORT} ({error}); {PG_START_HINT}",
            pytrace=False,
        )
    conn.autocommit = True
    return conn


@contextmanager
def _postgres_url() -> Iterator[str]:
    name = unique_name()
    admin = _pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin = _pg_admin()
        try:
            with admin.cursor() as cur:
                # FORCE ends connections a test (or a server's pool) left open.
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()


def _mysql_admin() -> Any:
    import pymysql

    error = ""
    try:
        return pymysql.connect(
            host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password="", connect_timeout=5, autocommit=True
        )
    except pymysql.err.OperationalError as exc:
        error = str(exc)
    pytest.fail(
        f"MariaDB/MySQL is not reachable as {MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT} ({error}); {MYSQL_START_HINT}",
        pytrace=False,
    )


@contextmanager
def _mysql_url() -> Iterator[str]:
    name = unique_name()
    admin = _mysql_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    finally:
        admin.close()
    try:
        yield f"mysql://{MYSQL_USER}@{MYSQL_HOST}:{MYSQL_PORT}/{name}"
    finally:
        admin = _mysql_admin()
        try:
            with admin.cursor() as cur:
                # A connection left open in a transaction would block DROP on a metadata lock
                # (for a year by default): end such connections first.
                cur.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                    (name,),
                )
                for (conn_id,) in cur.fetchall():
                    try:
                        cur.execute(f"KILL {int(conn_id)}")
                    except Exception:  # already gone
                        pass
                cur.execute("SET SESSION lock_wait_timeout = 30")
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()


# ---------------------------------------------------------------- S3
def s3_env() -> dict[str, str]:
    """endpoint (host:port), access_key and secret_key of the test S3 server, or fail the test."""
    names = {
        "endpoint": "KEEL_TEST_S3_ENDPOINT",
        "access_key": "KEEL_TEST_S3_ACCESS_KEY",
        "secret_key": "KEEL_TEST_S3_SECRET_KEY",
    }
    values = {key: os.environ.get(var, "") for key, var in names.items()}
    missing = [names[k] for k, v in values.items() if not v]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: {S3_HINT}", pytrace=False)
    return values


def s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    from minio import Minio

    return Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False)


@contextmanager
def make_s3_bucket() -> Iterator[dict[str, Any]]:
    """Create a fresh bucket on the test S3 server; yield its settings; empty and delete it after.

    Keys: endpoint (host:port), endpoint_url (http://host:port, the form KEEL_S3_ENDPOINT_URL
    takes), access_key, secret_key, bucket, secure (False), artifact_uri (s3://<bucket>/artifacts).
    """
    env = s3_env()
    client = s3_client(**env)
    bucket = unique_name("keel-test").replace("_", "-")
    try:
        client.make_bucket(bucket)
    except Exception as exc:
        pytest.fail(
            f"cannot create bucket {bucket} on S3 {env['endpoint']} ({exc}); {S3_HINT}", pytrace=False
        )
    try:
        yield {
            **env,
            "endpoint_url": f"http://{env['endpoint']}",
            "bucket": bucket,
            "secure": False,
            "artifact_uri": f"s3://{bucket}/artifacts",
        }
    finally:
        _delete_bucket(client, bucket)


def _delete_bucket(client: Any, bucket: str) -> None:
    from minio.deleteobjects import DeleteObject

    try:
        if not client.bucket_exists(bucket):
            return
        objects = [DeleteObject(o.object_name) for o in client.list_objects(bucket, recursive=True)]
        errors = list(client.remove_objects(bucket, objects))
        if errors:
            raise RuntimeError(f"could not delete {len(errors)} object(s): {errors[0]}")
        client.remove_bucket(bucket)
    except Exception as exc:  # cleanup must not mask the test's own result
        warnings.warn(f"test bucket {bucket} was not fully removed: {exc}", stacklevel=2)
