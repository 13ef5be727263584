"""Helpers for the tracking contract suite (servers come from tests/server_fixtures.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture()
def experiment_id(client) -> str:  # type: ignore[no-untyped-def]
    """A fresh experiment of the module's server."""
    return str(client.create_experiment(f"exp-{uuid.uuid4().hex[:12]}"))


@pytest.fixture(autouse=True)
def _no_active_runs() -> Iterator[None]:
    """Each test starts and ends without a fluent active run."""
    yield
    from keel import fluent

    while fluent.active_run() is not None:
        fluent.end_run()
