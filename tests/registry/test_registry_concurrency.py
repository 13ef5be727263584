"""Races across 2 real ``keel server`` processes sharing one database and artifact root, on
SQLite, PostgreSQL and MariaDB: numbering must be distinct and gap-free with zero errors, and
concurrent archive-existing promotions must leave exactly one version in Production."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from backends import make_database_url, selected_backends
from registry_helpers import unique
from server_fixtures import ServerHandle, server_process

import keel

THREADS = 16
PER_THREAD = 10
DEADLINE_S = 120  # each race must finish well within this


@pytest.fixture(scope="module", params=selected_backends())
def two_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[ServerHandle], str]]:
    """Two registry server processes over one fresh DB and one local artifact root, plus a
    source folder under that root (a store URI, so no run is needed)."""
    root = tmp_path_factory.mktemp(f"race-{request.param}")
    source_dir = Path(root, "artifacts", "sources", "model")
    source_dir.mkdir(parents=True)
    (source_dir / "MLmodel").write_text("flavors: {}\n")
    with make_database_url(request.param, root) as db_url:
        args = [
            "--services",
            "registry",
            "--db-url",
            db_url,
            "--artifact-uri",
            f"file://{root}/artifacts",
            "--workers",
            "16",
        ]
        with contextlib.ExitStack() as stack:
            # One after the other: the first creates the schema.
            servers = [stack.enter_context(server_process(args)) for _ in range(2)]
            yield servers, f"file://{source_dir}"


def _run_threads(work: list, clients: list) -> list[BaseException]:  # type: ignore[type-arg]
    """Runs work[i](clients[i % 2]) on THREADS threads released together; returns the errors."""
    start = threading.Barrier(len(work))
    errors: list[BaseException] = []

    def body(i: int) -> None:
        start.wait(timeout=30)
        try:
            work[i](clients[i % len(clients)])
        except BaseException as exc:  # noqa: BLE001 - counted and reported by the test
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=len(work)) as pool:
        futures = [pool.submit(body, i) for i in range(len(work))]
        for f in futures:
            f.result(timeout=DEADLINE_S)
    return errors


def test_concurrent_registrations_get_distinct_gap_free_numbers(two_servers) -> None:
    servers, source = two_servers
    clients = [keel.Client(s.uri) for s in servers]
    name = unique("race")
    clients[0].create_registered_model(name)
    numbers: list[str] = []
    lock = threading.Lock()

    def register(client: keel.Client) -> None:
        for _ in range(PER_THREAD):
            mv = client.create_model_version(name, source)
            assert mv.status == "READY", mv.status_message
            with lock:
                numbers.append(mv.version)

    errors = _run_threads([register] * THREADS, clients)
    assert errors == []
    assert sorted(map(int, numbers)) == list(range(1, THREADS * PER_THREAD + 1))
    stored = clients[1].search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in stored) == list(range(1, THREADS * PER_THREAD + 1))
    assert {v.status for v in stored} == {"READY"}


def test_concurrent_archive_existing_promotions_leave_one_in_production(two_servers) -> None:
    servers, source = two_servers
    clients = [keel.Client(s.uri) for s in servers]
    name = unique("promote")
    clients[0].create_registered_model(name)
    for _ in range(THREADS):
        clients[0].create_model_version(name, source)

    def promoter(version: int):  # type: ignore[no-untyped-def]
        def promote(client: keel.Client) -> None:
            for stage in ("Staging", "Production"):
                client.transition_model_version_stage(name, version, stage, archive_existing_versions=True)

        return promote

    errors = _run_threads([promoter(v) for v in range(1, THREADS + 1)], clients)
    assert errors == []
    stages = [v.current_stage for v in clients[1].search_model_versions(f"name = '{name}'")]
    assert stages.count("Production") == 1
    assert stages.count("Staging") == 0  # every Staging holder was archived by the next promotion
    assert stages.count("Archived") == THREADS - 1
    # Every move was recorded: 2 promotions per version plus the archivings they caused.
    history = clients[0].list_model_history(name)
    assert sum(1 for e in history if e.to_stage == "Production") == THREADS
