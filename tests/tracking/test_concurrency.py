"""No metric point is lost when many threads and two server processes log to one run, on
every backend (SQLite file in WAL mode, PostgreSQL, MariaDB)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import keel
from keel.entities import Metric

THREADS = 8
POINTS_PER_THREAD = 40


def _log_points(client: keel.Client, run_id: str, worker: int, barrier: threading.Barrier) -> None:
    barrier.wait(timeout=30)  # start together so writes really overlap
    for i in range(POINTS_PER_THREAD):
        if i % 4 == 0:
            batch = [Metric("loss", float(worker), 1000 + i, worker * 1000 + i)]
            client.log_batch(run_id, metrics=batch)
        else:
            client.log_metric(run_id, "loss", float(worker), timestamp=1000 + i, step=worker * 1000 + i)


def test_threads_and_two_server_processes_lose_no_point(client: keel.Client, keel_server) -> None:
    from server_fixtures import server_process

    experiment_id = client.create_experiment(f"concurrency-{keel_server.port}")
    run_id = client.create_run(experiment_id).info.run_id
    env = {
        "KEEL_DB_URL": keel_server.settings.db_url,
        "KEEL_ARTIFACT_URI": keel_server.settings.artifact_uri,
        "KEEL_SERVICES": "tracking",
        "KEEL_LOG_LEVEL": "WARNING",
    }
    with server_process(env=env) as first, server_process(env=env) as second:
        clients = [keel.Client(first.uri), keel.Client(second.uri)]
        barrier = threading.Barrier(THREADS)
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [
                pool.submit(_log_points, clients[w % 2], run_id, w, barrier) for w in range(THREADS)
            ]
            for future in futures:
                future.result(timeout=120)
    history = client.get_metric_history(run_id, "loss")
    assert len(history) == THREADS * POINTS_PER_THREAD
    assert sorted(m.step for m in history) == sorted(
        w * 1000 + i for w in range(THREADS) for i in range(POINTS_PER_THREAD)
    )
    # The latest value is the point with the largest step, whoever wrote last.
    assert client.get_run(run_id).data.metrics["loss"] == float(THREADS - 1)


def test_concurrent_points_to_a_deleted_run_fail_alone(client: keel.Client, experiment_id: str) -> None:
    """Single LogMetric calls of concurrent callers share transactions (group commit): a point for
    a deleted run must fail on its own and never take the points of other runs with it."""
    from keel.exceptions import FailedPrecondition

    alive = client.create_run(experiment_id).info.run_id
    dead = client.create_run(experiment_id).info.run_id
    client.delete_run(dead)

    def log(i: int) -> str:
        target = dead if i % 3 == 0 else alive
        try:
            client.log_metric(target, "m", float(i), timestamp=1, step=i)
        except FailedPrecondition:
            return "refused"
        return "ok"

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(log, range(120)))
    assert outcomes.count("refused") == 40
    assert sorted(m.step for m in client.get_metric_history(alive, "m")) == [i for i in range(120) if i % 3]
    assert client.get_run(dead).data.metrics == {}
