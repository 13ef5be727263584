"""SIGTERM ends ``keel server`` within the grace period plus a stated bound, whatever is in flight.

Calls still running at the grace are cancelled; a worker thread inside a long database query
cannot be interrupted, and without the bound it kept the interpreter alive at exit until the
query ended (25 s after a 10 s grace, with six long searches).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import grpc
import pytest
from server_fixtures import server_process, sigterm_and_wait

from keel.tracking.v1 import tracking_pb2, tracking_pb2_grpc
from keel_server.common import db as dbmod
from keel_server.common.migrations import ensure_current
from keel_server.common.server import SHUTDOWN_BOUND_SECONDS

GRACE_SECONDS = 1.0
SEARCHES = 6
RUNS = 50_000
# Each search ORs this many metric keys no run has: every run is probed for every key, a few
# seconds per search alone on this DB and far more with six running at once on two cores.
# (SQLite's parser refuses much deeper OR chains.)
FILTER_TERMS = 60
# Slack for the scheduler of a loaded machine on top of the documented bound.
SLACK_SECONDS = 1.5


def _big_database(path: Path) -> str:
    """A SQLite DB with one experiment holding RUNS runs, each with one metric (~2 s)."""
    url = f"sqlite:///{path}"
    database = dbmod.initialize(url)
    try:
        ensure_current(database)
        now = dbmod.now_ms()
        with database.atomic():
            experiment = dbmod.Experiment.create(name="big", artifact_location=f"file://{path.parent}/a")
            run_ids = [uuid.uuid4().hex for _ in range(RUNS)]
            for start in range(0, RUNS, 2000):
                batch = run_ids[start : start + 2000]
                dbmod.Run.insert_many(
                    [
                        {
                            "run_id": run_id,
                            "experiment": experiment.experiment_id,
                            "start_time": now + i,
                            "artifact_uri": f"file://{path.parent}/a/{run_id}",
                            "status": "FINISHED",
                        }
                        for i, run_id in enumerate(batch)
                    ]
                ).execute()
                dbmod.LatestMetric.insert_many(
                    [
                        {"run": run_id, "key": "loss", "value": 0.5, "timestamp": now, "step": 0}
                        for run_id in batch
                    ]
                ).execute()
        return str(experiment.experiment_id)
    finally:
        database.close()


@pytest.mark.timeout(120)
def test_sigterm_exits_within_grace_plus_bound_with_long_searches_in_flight(tmp_path: Path) -> None:
    started = time.monotonic()
    experiment_id = _big_database(tmp_path / "keel.db")
    setup_seconds = time.monotonic() - started
    assert setup_seconds < 20, f"setup took {setup_seconds:.1f} s"
    env = {
        "KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts",
        "KEEL_SERVICES": "tracking",
        "KEEL_GRACE_SECONDS": str(GRACE_SECONDS),
    }
    slow_filter = " or ".join(f"metrics.absent_{i} > 0" for i in range(FILTER_TERMS))
    with server_process(env=env, cwd=tmp_path) as handle:
        process = handle.process
        assert process is not None
        channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        try:
            stub = tracking_pb2_grpc.TrackingServiceStub(channel)
            request = tracking_pb2.SearchRunsRequest(
                experiment_ids=[experiment_id], filter=slow_filter, page_size=10
            )
            searches = [stub.SearchRuns.future(request, timeout=90) for _ in range(SEARCHES)]
            # A call sent after the searches on the same connection answering means the server
            # has taken them all (each on its own worker thread, inside its query by now).
            health = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            health(b"", timeout=30)
            assert not any(f.done() for f in searches), "a search ended before SIGTERM: not long enough"

            rc, elapsed, stderr = sigterm_and_wait(process)
            assert rc == 0, stderr[-2000:]
            bound = GRACE_SECONDS + SHUTDOWN_BOUND_SECONDS + SLACK_SECONDS
            assert elapsed < bound, f"exit took {elapsed:.1f} s after SIGTERM (bound {bound:.1f} s)"
            assert "keel stopped" in stderr
            # The searches were still running at the grace: cut, none of them completed.
            for future in searches:
                with pytest.raises(grpc.RpcError) as info:
                    future.result(timeout=30)
                assert info.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        finally:
            channel.close()
