"""Registry benchmark: keel vs MLflow's registry (``mlflow server``, SQLite backend), same run.

Run with ``make bench-registry`` (or ``.venv/bin/python bench/bench_registry.py [--quick]``).
Everything runs on loopback on this machine: keel server processes (SQLite) and ``mlflow server``
processes (SQLite) from bench/.venv-mlflow. Every load loop is bounded in count and time.

Workloads (the same for both):
  1. create_model_version latency p50 (sequential; keel also snapshots the files, MLflow does not);
  2. transition_model_version_stage latency p50 (one version, alternating Staging/Production);
  3. search_model_versions over 1,000 models x 10 versions (populated straight into each
     store's tables): p50 of ``name = '<one model>'`` and of ``name LIKE '<prefix>%'`` (100 hits);
  4. concurrent registration: 16 threads across 2 server processes register 10 versions each of
     one new model; errors and duplicate version numbers are counted.
Results are printed and written to this script's section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Shared harness of the tracking benchmark: child processes, MLflow server, timing, machine info.
from bench_tracking import (  # noqa: E402
    MLFLOW_BIN,
    MlflowHttp,
    machine,
    mlflow_server,
    mlflow_version,
    percentile,
    process,
    timed,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Registry (bench/bench_registry.py)"
MODELS, VERSIONS_PER_MODEL = 1000, 10
THREADS, PER_THREAD = 16, 10


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


def keel_server(db_url: str, artifacts: Path) -> contextlib.AbstractContextManager[int]:
    env = {"KEEL_DB_URL": db_url, "KEEL_ARTIFACT_URI": f"file://{artifacts}", "KEEL_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "keel.cli", "server", "--port", "0", "--services", "registry"]
    return process(cmd, r"keel server listening on [^:]+:(\d+)", env)


def mlflow_server_ready(workdir: Path) -> contextlib.AbstractContextManager[int]:
    """``mlflow server`` over ``workdir/mlflow.db`` (several may share it), ready on /health."""
    return mlflow_server(workdir)


class Mlflow(MlflowHttp):
    def get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        self.conn.request("GET", f"/api/2.0/mlflow/{path}?{urllib.parse.urlencode(params)}")
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"mlflow {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else {}


def mlflow_source(client: Mlflow) -> tuple[str, str]:
    """A run to register from: (source URI under its artifact root, run id)."""
    exp = client.post("experiments/create", {"name": f"bench-{time.time_ns()}"})["experiment_id"]
    run = client.post("runs/create", {"experiment_id": exp, "start_time": int(time.time() * 1000)})["run"][
        "info"
    ]
    return f"{run['artifact_uri']}/model", run["run_id"]


# ---------------------------------------------------------------------------------------------
# Population (straight into each store's tables: setup, not measured)
# ---------------------------------------------------------------------------------------------


def populate_keel(db_url: str, prefix: str) -> None:
    from keel_server.common import db as dbmod
    from keel_server.common.migrations import upgrade

    database = dbmod.open_database(db_url)
    upgrade(database)
    now = dbmod.now_ms()
    with database.connection_context(), database.atomic():
        dbmod.RegisteredModel.insert_many(
            [
                {
                    "name": f"{prefix}-{m:04d}",
                    "last_version": VERSIONS_PER_MODEL,
                    "creation_time": now,
                    "last_updated_time": now,
                }
                for m in range(MODELS)
            ]  # fmt: skip
        ).execute()
        ids = dict(
            dbmod.RegisteredModel.select(dbmod.RegisteredModel.name, dbmod.RegisteredModel.id).tuples()
        )
        rows = [
            {"model": ids[f"{prefix}-{m:04d}"], "version": v, "source": f"file:///src/{m}/{v}", "status": "READY",
             "storage_location": f"file:///reg/{m}/{v}", "creation_time": now, "last_updated_time": now}
            for m in range(MODELS) for v in range(1, VERSIONS_PER_MODEL + 1)
        ]  # fmt: skip
        for start in range(0, len(rows), 500):
            dbmod.ModelVersion.insert_many(rows[start : start + 500]).execute()
    database.close()


MLFLOW_POPULATE = r"""
import sys, time
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModel, SqlModelVersion
store = SqlAlchemyStore(sys.argv[1])
prefix, models, per = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
now = int(time.time() * 1000)
with store.ManagedSessionMaker() as session:
    session.add_all([SqlRegisteredModel(name=f"{prefix}-{m:04d}", creation_time=now, last_updated_time=now) for m in range(models)])
    session.flush()
    session.add_all([SqlModelVersion(name=f"{prefix}-{m:04d}", version=v, creation_time=now, last_updated_time=now,
                                     source=f"file:///src/{m}/{v}", status="READY", current_stage="None")
                     for m in range(models) for v in range(1, per + 1)])
"""


def populate_mlflow(workdir: Path, prefix: str) -> None:
    subprocess.run(
        [str(MLFLOW_BIN / "python"), "-c", MLFLOW_POPULATE, f"sqlite:///{workdir / 'mlflow.db'}", prefix, str(MODELS),
         str(VERSIONS_PER_MODEL)],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------


def race(register: Callable[[int], str]) -> tuple[int, int, int]:
    """THREADS threads x PER_THREAD registrations; (errors, duplicate numbers, distinct numbers)."""
    numbers: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def body(i: int) -> None:
        start.wait(timeout=60)
        for _ in range(PER_THREAD):
            try:
                number = register(i)
            except Exception as exc:  # noqa: BLE001 - counted
                with lock:
                    errors.append(str(exc)[:200])
                continue
            with lock:
                numbers.append(number)

    with ThreadPoolExecutor(THREADS) as pool:
        for f in [pool.submit(body, i) for i in range(THREADS)]:
            f.result(timeout=600)
    if errors:
        print(f"  first error: {errors[0]}")
    return len(errors), len(numbers) - len(set(numbers)), len(set(numbers))


def bench_keel(work: Path, calls: int, budget: float) -> dict[str, Any]:
    import keel

    out: dict[str, Any] = {}
    artifacts = work / "keel-artifacts"
    source_dir = artifacts / "sources" / "model"
    source_dir.mkdir(parents=True)
    (source_dir / "MLmodel").write_text("flavors: {}\n")
    (source_dir / "model.pkl").write_bytes(b"\0" * 4096)
    source = f"file://{source_dir}"
    db_url = f"sqlite:///{work / 'keel.db'}"
    populate_keel(db_url, "bench-model")
    with keel_server(db_url, artifacts) as port_a, keel_server(db_url, artifacts) as port_b:
        client = keel.Client(f"grpc://127.0.0.1:{port_a}")
        client.create_registered_model("latency")
        client.create_model_version("latency", source)  # warm up
        out["create_p50"] = percentile(
            timed(lambda: client.create_model_version("latency", source), calls, budget), 0.5
        )
        stages = iter(["Staging", "Production"] * calls)
        out["transition_p50"] = percentile(
            timed(lambda: client.transition_model_version_stage("latency", 1, next(stages)), calls, budget),
            0.5,
        )
        out["search_name_p50"] = percentile(
            timed(
                lambda: client.search_model_versions("name = 'bench-model-0500'", max_results=100),
                calls,
                budget,
            ),
            0.5,
        )
        out["search_like_p50"] = percentile(
            timed(
                lambda: client.search_model_versions("name LIKE 'bench-model-05%'", max_results=100),
                calls,
                budget,
            ),
            0.5,
        )
        assert len(client.search_model_versions("name LIKE 'bench-model-05%'", max_results=100)) == 100
        clients = [client, keel.Client(f"grpc://127.0.0.1:{port_b}")]
        clients[0].create_registered_model("race")
        out["race"] = race(lambda i: clients[i % 2].create_model_version("race", source).version)
    return out


def bench_mlflow(work: Path, calls: int, budget: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    populate_mlflow(work, "bench-model")
    with mlflow_server_ready(work) as port_a, mlflow_server_ready(work) as port_b:
        client = Mlflow(port_a)
        source, run_id = mlflow_source(client)
        client.post("registered-models/create", {"name": "latency"})

        def create() -> None:
            client.post("model-versions/create", {"name": "latency", "source": source, "run_id": run_id})

        create()  # warm up
        out["create_p50"] = percentile(timed(create, calls, budget), 0.5)
        stages = iter(["Staging", "Production"] * calls)

        def transition() -> None:
            body = {
                "name": "latency",
                "version": "1",
                "stage": next(stages),
                "archive_existing_versions": False,
            }
            client.post("model-versions/transition-stage", body)

        out["transition_p50"] = percentile(timed(transition, calls, budget), 0.5)
        for key, flt in (
            ("search_name_p50", "name = 'bench-model-0500'"),
            ("search_like_p50", "name LIKE 'bench-model-05%'"),
        ):
            out[key] = percentile(
                timed(
                    lambda f=flt: client.get("model-versions/search", {"filter": f, "max_results": 100}),
                    calls,
                    budget,
                ),
                0.5,
            )
        client.post("registered-models/create", {"name": "race"})
        per_thread = [Mlflow(port_a if i % 2 == 0 else port_b) for i in range(THREADS)]
        out["race"] = race(
            lambda i: per_thread[i].post(
                "model-versions/create", {"name": "race", "source": source, "run_id": run_id}
            )["model_version"]["version"]
        )
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def report(keel_r: dict[str, Any], ml: dict[str, Any], calls: int) -> None:
    def ratio(key: str) -> str:
        return f"{ml[key] / keel_r[key]:.1f}x"

    ke, kd, kn = keel_r["race"]
    me, md, mn = ml["race"]
    lines = [
        SECTION,
        "",
        f"Run {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} on {machine()}; MLflow {mlflow_version()} "
        f"(`mlflow server`, SQLite backend, REST over one keep-alive connection); keel through its Python SDK, "
        f"SQLite. Latencies are p50 of up to {calls} sequential calls, in ms.",
        "",
        "| workload | keel | MLflow | keel faster by |",
        "| --- | ---: | ---: | ---: |",
        f"| create_model_version (keel also snapshots 2 files) | {keel_r['create_p50']:.2f} | {ml['create_p50']:.2f} | {ratio('create_p50')} |",
        f"| transition_model_version_stage | {keel_r['transition_p50']:.2f} | {ml['transition_p50']:.2f} | {ratio('transition_p50')} |",
        f"| search_model_versions `name = 'bench-model-0500'` over {MODELS}x{VERSIONS_PER_MODEL} | {keel_r['search_name_p50']:.2f} | {ml['search_name_p50']:.2f} | {ratio('search_name_p50')} |",
        f"| search_model_versions `name LIKE 'bench-model-05%'` (100 hits) | {keel_r['search_like_p50']:.2f} | {ml['search_like_p50']:.2f} | {ratio('search_like_p50')} |",
        "",
        f"Concurrent registration: {THREADS} threads across 2 server processes x {PER_THREAD} versions of one new model "
        f"({THREADS * PER_THREAD} attempts):",
        "",
        "| | errors | duplicate numbers | distinct versions |",
        "| --- | ---: | ---: | ---: |",
        f"| keel | {ke} | {kd} | {kn} |",
        f"| MLflow (measured) | {me} | {md} | {mn} |",
        "",
    ]  # fmt: skip
    text = "\n".join(lines)
    print("\n" + text)
    write_section(text)


def write_section(text: str) -> None:
    """Replaces this benchmark's section of bench/RESULTS.md (other sections are kept)."""
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: text + "\n", existing)
    else:
        updated = existing.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    args = parser.parse_args()
    calls, budget = (50, 20.0) if args.quick else (300, 60.0)
    if not (MLFLOW_BIN / "mlflow").exists():
        sys.exit(
            "bench/.venv-mlflow is missing: python3 -m venv bench/.venv-mlflow && bench/.venv-mlflow/bin/pip install mlflow"
        )
    with tempfile.TemporaryDirectory(prefix="keel-bench-registry-") as tmp:
        (Path(tmp) / "keel").mkdir()
        (Path(tmp) / "mlflow").mkdir()
        print("keel ...", flush=True)
        keel_r = bench_keel(Path(tmp) / "keel", calls, budget)
        print("mlflow ...", flush=True)
        ml = bench_mlflow(Path(tmp) / "mlflow", calls, budget)
    report(keel_r, ml, calls)


if __name__ == "__main__":
    main()
