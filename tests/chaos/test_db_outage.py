"""The database stops and starts again under writers (a private PostgreSQL cluster; the
machine's shared one is never touched). While it is down, calls fail UNAVAILABLE with reason
DATABASE_UNAVAILABLE (after the SDK's 8 s of retries for LogBatch); once it is back the same
server process answers again by itself, and every acknowledged point is stored exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from chaos_helpers import (
    assert_exactly_once,
    bounded,
    keel_process,
    private_postgres,
    wait_for_acks,
    write_report,
    writers,
)

import keel
from keel.exceptions import Unavailable

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

WRITERS = 4


def _outage(tmp_path: Path, outage_s: float, outages: int) -> None:
    with private_postgres() as pg:
        env = {
            "KEEL_DB_URL": pg.url,
            "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts",
            "KEEL_SERVICES": "tracking",
        }
        with keel_process(env, tmp_path) as server:
            client = keel.Client(server.uri)
            run_id = client.create_run(client.create_experiment("chaos-db-outage")).info.run_id
            pid = server.pid
            recovered_in: list[float] = []
            with writers(server.uri, run_id, WRITERS, 100_000, seconds=180) as (ledger, stop):
                for round_ in range(outages):
                    wait_for_acks(ledger, (round_ + 1) * 40, timeout=60)
                    pg.stop("fast")  # ends every connection of the server's pool
                    down_at = time.monotonic()
                    with pytest.raises(Unavailable) as err:  # the SDK's retries ran out while down
                        client.log_metric(run_id, "probe", 1.0, step=round_)
                    assert err.value.reason == "DATABASE_UNAVAILABLE", err.value
                    time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
                    before = ledger.total_acked()
                    pg.start()
                    back_at = time.monotonic()
                    wait_for_acks(ledger, before + 20, timeout=30)  # same process: recovered alone
                    recovered_in.append(round(time.monotonic() - back_at, 2))
                stop.set()
            assert server.pid == pid
            figures = assert_exactly_once(client, run_id, ledger)
    labels = set(ledger.errors)
    assert labels <= {"UNAVAILABLE:DATABASE_UNAVAILABLE", "UNAVAILABLE:UNAVAILABLE"}, dict(ledger.errors)
    write_report(
        "database-outage",
        {
            **figures,
            "outages": outages,
            "outage_seconds": outage_s,
            "recovered_seconds": recovered_in,
            "errors": dict(ledger.errors),
        },  # fmt: skip
        tmp_path,
    )


@pytest.mark.postgres
def test_database_stopped_and_started_under_writers(tmp_path: Path) -> None:
    _outage(tmp_path, outage_s=bounded(9.0, 9.0), outages=1)


@pytest.mark.postgres
@pytest.mark.chaos_long
def test_database_outages_repeated_under_writers(tmp_path: Path) -> None:
    _outage(tmp_path, outage_s=15.0, outages=3)
