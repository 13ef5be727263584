"""Shared pytest fixtures for keel's test suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backends import make_database_url, make_s3_bucket, selected_backends

# In-process and subprocess keel servers (keel_server / client fixtures).
pytest_plugins = ["server_fixtures"]

# ============================================================================
# Backend fixtures (real databases and S3). Helpers live in tests/backends.py;
# servers come from scripts/with_services.sh (`make test` runs through it).
# ============================================================================

_BACKEND_MARKS = {"postgres": pytest.mark.postgres, "mysql": pytest.mark.mysql}


@pytest.fixture(params=[pytest.param(b, marks=_BACKEND_MARKS.get(b, ()), id=b) for b in selected_backends()])
def db_backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test: sqlite, postgres or mysql (KEEL_TEST_BACKENDS narrows them)."""
    return str(request.param)


@pytest.fixture()
def db_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty database on each selected backend, dropped after the test.

    sqlite:///<tmp_path>/keel.db, postgresql://postgres@127.0.0.1:5432/keel_test_<pid>_<hex>,
    mysql://root@127.0.0.1:3306/keel_test_<pid>_<hex>. An unreachable server FAILS the test.
    """
    with make_database_url(db_backend, tmp_path) as url:
        yield url


@pytest.fixture()
def s3_settings() -> Iterator[dict[str, Any]]:
    """A fresh bucket on the test S3 server (auth on): endpoint (host:port), endpoint_url,
    access_key, secret_key, bucket, secure, artifact_uri. Emptied and deleted afterwards."""
    with make_s3_bucket() as settings:
        yield settings


# ============================================================================
# End of backend fixtures.
# ============================================================================
