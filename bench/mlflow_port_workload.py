"""The `mlflow` client workload of ``bench_mlflow_port.py``: run with the Python of an mlflow venv,
against one tracking URI; prints one JSON object of timings (ms per call; MB/s for artifacts).

    python mlflow_port_workload.py --uri http://127.0.0.1:5000 [--quick] [--skip-search-populate]

Only MlflowClient calls are timed (no fluent API: it adds calls of its own). Every loop is bounded
in count and in time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

BUDGET_S = 60.0


def timed(fn: Callable[[int], Any], count: int, budget_s: float = BUDGET_S) -> list[float]:
    """Milliseconds of each call of ``fn(i)``, up to ``count`` calls or ``budget_s`` seconds."""
    samples: list[float] = []
    end = time.monotonic() + budget_s
    for i in range(count):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1000)
        if time.monotonic() > end:
            break
    return samples


def p50(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def populate(client: MlflowClient, experiment_id: str, n_runs: int, threads: int = 8) -> None:
    """``n_runs`` finished runs with an rmse metric and a model param (a third are 'cnn')."""

    def one(i: int) -> None:
        run = client.create_run(experiment_id, run_name=f"r{i}")
        rid = run.info.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            rid,
            metrics=[Metric("rmse", (i * 7919 % 1000) / 1000.0, now, 0)],
            params=[Param("model", "cnn" if i % 3 == 0 else "mlp")],
            tags=[RunTag("team", "vision")],
        )
        client.set_terminated(rid)

    with futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n_runs)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--search-runs", type=int, default=5000)
    parser.add_argument("--artifact-mib", type=int, default=256)
    parser.add_argument("--floor", action="store_true", help="against the canned null server")
    args = parser.parse_args()
    n = 20 if args.quick else 200
    client = MlflowClient(tracking_uri=args.uri, registry_uri=args.uri)
    out: dict[str, Any] = {}
    tag = uuid.uuid4().hex[:8]

    exp = client.create_experiment(f"bench-{tag}")
    runs: list[str] = []
    out["create_run"] = p50(timed(lambda i: runs.append(client.create_run(exp).info.run_id), n))
    run_id = runs[0]
    out["log_metric"] = p50(timed(lambda i: client.log_metric(run_id, "loss", 1.0 / (i + 1), step=i), n * 2))
    batch = [Metric("acc", i / 1000.0, int(time.time() * 1000), i) for i in range(1000)]
    out["log_batch_1000"] = p50(timed(lambda i: client.log_batch(runs[1 + i % (len(runs) - 1)], metrics=batch), 20))

    search_exp = client.create_experiment(f"search-{tag}")
    n_search = 300 if args.quick else args.search_runs
    if not args.floor:
        started = time.monotonic()
        populate(client, search_exp, n_search)
        out["populate_s"] = time.monotonic() - started
    out["search_runs_runs"] = n_search
    out["search_runs"] = p50(
        timed(
            lambda i: client.search_runs(
                [search_exp],
                filter_string="metrics.rmse < 0.8 and params.model = 'cnn'",
                order_by=["metrics.rmse ASC"],
                max_results=100,
            ),
            10 if args.quick else 30,
        )
    )

    # Registry: versions need files at their source (keel snapshots them at registration).
    model_dir = tempfile.mkdtemp()
    with open(os.path.join(model_dir, "MLmodel"), "w") as f:
        f.write("flavors: {}\n")
    client.log_artifacts(run_id, model_dir, "model")
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    name = f"bench-model-{tag}"
    client.create_registered_model(name)
    versions: list[str] = []
    out["create_model_version"] = p50(
        timed(lambda i: versions.append(client.create_model_version(name, source, run_id).version), 20 if args.quick else 50)
    )
    stages = ("Staging", "Production", "Archived")
    out["transition_stage"] = p50(
        timed(lambda i: client.transition_model_version_stage(name, versions[i % len(versions)], stages[i % 3]), 30 if args.quick else 60)
    )
    client.set_registered_model_alias(name, "champion", versions[0])
    out["get_by_alias"] = p50(timed(lambda i: client.get_model_version_by_alias(name, "champion"), n))

    # One large artifact up and down (MB/s).
    size = (16 if args.quick else args.artifact_mib) * 1024 * 1024
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "big.bin")
        with open(path, "wb") as f:
            block = os.urandom(1024 * 1024)
            for _ in range(size // len(block)):
                f.write(block)
        start = time.perf_counter()
        client.log_artifact(run_id, path, "blobs")
        up_s = time.perf_counter() - start
        os.unlink(path)
        start = time.perf_counter()
        local = client.download_artifacts(run_id, "blobs/big.bin", os.path.join(work, "down"))
        down_s = time.perf_counter() - start
        got = os.path.getsize(local)
    out["artifact_mib"] = size // (1024 * 1024)
    out["artifact_up_mb_s"] = size / 1e6 / up_s
    out["artifact_down_mb_s"] = size / 1e6 / down_s
    out["artifact_ok"] = got == size
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
