"""SIGKILL of ``keel server`` mid-write, then a restart on the same port, on SQLite and on
PostgreSQL: writers keep logging through the SDK (LogBatch carries a request id, so the SDK's
retries across the restart never write twice); afterwards every acknowledged point is stored
exactly once and the SQLite file passes ``PRAGMA integrity_check``."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from backends import make_database_url
from chaos_helpers import (
    Ledger,
    assert_exactly_once,
    bounded,
    keel_process,
    wait_for_acks,
    write_report,
    writers,
)

import keel

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

WRITERS = 4
MAX_STEPS = 5000


def _kill_and_restart_under_writers(backend: str, tmp_path: Path, kills: int) -> None:
    with make_database_url(backend, tmp_path) as db_url:
        env = {
            "KEEL_DB_URL": db_url,
            "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts",
            "KEEL_SERVICES": "tracking",
        }
        with keel_process(env, tmp_path) as server:
            client = keel.Client(server.uri)
            run_id = client.create_run(client.create_experiment(f"chaos-kill-{backend}")).info.run_id
            started = time.monotonic()
            ledger: Ledger
            with writers(server.uri, run_id, WRITERS, MAX_STEPS, seconds=120) as (ledger, stop):
                for round_ in range(kills):
                    wait_for_acks(ledger, (round_ + 1) * 40, timeout=60)
                    server.kill()  # mid-write: the writers have calls in flight
                    time.sleep(0.5)
                    server.start()  # same port: the SDK's retries reach it
                wait_for_acks(ledger, (kills + 1) * 40, timeout=60)  # writes go on after the restart
                stop.set()
            elapsed = time.monotonic() - started
            figures = assert_exactly_once(client, run_id, ledger)
        # Unacknowledged failures: only UNAVAILABLE (the SDK gave up while the server was down).
        assert set(ledger.errors) <= {"UNAVAILABLE:UNAVAILABLE"}, dict(ledger.errors)
        if backend == "sqlite":
            path = db_url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    write_report(
        f"kill-restart-{backend}",
        {
            **figures,
            "kills": kills,
            "writers": WRITERS,
            "seconds": round(elapsed, 2),
            "errors": dict(ledger.errors),
        },
        tmp_path,
    )


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigkill_mid_write_then_restart_keeps_every_acknowledged_point_once(
    backend: str, tmp_path: Path
) -> None:
    _kill_and_restart_under_writers(backend, tmp_path, kills=1)


@pytest.mark.chaos_long
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_repeated_sigkills_under_writers(backend: str, tmp_path: Path) -> None:
    _kill_and_restart_under_writers(backend, tmp_path, kills=int(bounded(1, 5)))
