"""Fixtures of the artifact suite (helpers live in art_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from art_helpers import STORES, ArtifactServer, artifact_server, make_run
from backends import selected_backends


@pytest.fixture(
    scope="module",
    params=[pytest.param((s, b), id=f"{s}-{b}") for s in STORES for b in selected_backends()],
)
def art_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactServer]:
    """The artifacts service over each artifact store and each database backend."""
    store_kind, db_kind = request.param
    with artifact_server(store_kind, db_kind, tmp_path_factory.mktemp(f"art-{store_kind}-{db_kind}")) as server:
        yield server


@pytest.fixture()
def run_id(art_server: ArtifactServer) -> str:
    return make_run(art_server.root_uri)


