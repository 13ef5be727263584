"""Tracking benchmark: keel vs MLflow's own tracking server vs a raw gRPC echo (the floor).

Run with ``make bench-tracking`` (or ``.venv/bin/python bench/bench_tracking.py [--quick]``).
Everything runs on loopback on this machine in one go: a keel server process (SQLite, and
PostgreSQL for the 100k search), ``mlflow server`` (SQLite backend) from bench/.venv-mlflow, and
an echo gRPC server process. Each load loop is bounded in count and time.

Workloads (same for keel and MLflow):
  1. single log_metric calls per second, CONCURRENCY calls in flight, for SECONDS;
  2. log_batch of 1000 metrics per call: metrics per second;
  3. create_run latency p50 (sequential calls);
  4. search_runs, filter ``metrics.rmse < 0.8 and params.model = 'cnn'``, order by
     ``metrics.rmse ASC``, 100 results: p50 over 5,000 runs (keel and MLflow) and over 100,000 runs
     (keel on SQLite and PostgreSQL).
Results are printed and written to this script's section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
MLFLOW_BIN = ROOT / "bench" / ".venv-mlflow" / "bin"
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Tracking (bench/bench_tracking.py)"
FILTER = "metrics.rmse < 0.8 and params.model = 'cnn'"
ORDER = ["metrics.rmse ASC"]
ECHO_METHOD = "/bench.Echo/Echo"


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


def echo_server_main() -> None:
    """A gRPC server whose one method returns the request bytes: the floor of any unary call."""
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"echo listening on 127.0.0.1:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


@contextlib.contextmanager
def process(command: list[str], ready: str, env: dict[str, str] | None = None, timeout: float = 120) -> Iterator[int]:
    """Starts a child, waits for the line matching ``ready`` (a regex with the port), yields the port."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
    )
    port = 0
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line])[-20:]
        match = re.search(ready, line)
        if match:
            port = int(match.group(1))
            break
        if time.monotonic() > deadline:
            break
    if not port:
        proc.kill()
        raise RuntimeError(f"{command[0]} did not start: {''.join(tail)}")
    # Keep draining output so the child never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def keel_server(db_url: str, artifacts: Path) -> contextlib.AbstractContextManager[int]:
    env = {"KEEL_DB_URL": db_url, "KEEL_ARTIFACT_URI": f"file://{artifacts}", "KEEL_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "keel.cli", "server", "--port", "0", "--services", "tracking"]
    return process(cmd, r"keel server listening on [^:]+:(\d+)", env)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(workdir: Path) -> Iterator[int]:
    port = free_port()
    cmd = [
        str(MLFLOW_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--default-artifact-root", str(workdir / "mlartifacts"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError("mlflow server did not become healthy in 180 s")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------


class MlflowHttp:
    """MLflow's REST API over one keep-alive connection (what MlflowClient does, minus overhead)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body)
        headers = {"Content-Type": "application/json"}
        try:
            self.conn.request("POST", f"/api/2.0/mlflow/{path}", payload, headers)
            response = self.conn.getresponse()
        except (ConnectionError, http.client.HTTPException):
            # The server closed an idle keep-alive connection: reconnect once.
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.conn.request("POST", f"/api/2.0/mlflow/{path}", payload, headers)
            response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"mlflow {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else {}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], Any], count: int, budget_s: float) -> list[float]:
    """Latencies (ms) of up to ``count`` sequential calls within ``budget_s``."""
    out: list[float] = []
    deadline = time.monotonic() + budget_s
    for _ in range(count):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
        if time.monotonic() > deadline:
            break
    return out


async def _grpc_rate(target: str, method: str, make: Callable[[int], bytes], concurrency: int, seconds: float,
                     max_calls: int) -> float:  # fmt: skip
    """Calls per second of a unary method with ``concurrency`` calls in flight (grpc.aio)."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        await call(make(0))  # warm up the channel
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < stop_at and done < max_calls:
                await call(make(w * 1_000_000 + i))
                i += 1
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return done / (time.perf_counter() - start)


def grpc_rate(*args: Any) -> float:
    return asyncio.run(_grpc_rate(*args))


def mlflow_rate(port: int, path: str, make: Callable[[int], dict[str, Any]], concurrency: int, seconds: float,
                max_calls: int) -> float:  # fmt: skip
    done = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker(w: int) -> None:
        nonlocal done
        client = MlflowHttp(port)
        i = 0
        while time.perf_counter() < stop_at and done < max_calls:
            client.post(path, make(w * 1_000_000 + i))
            i += 1
            with lock:
                done += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Data for search
# ---------------------------------------------------------------------------------------------


def run_spec(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "rmse": rng.random(),
        "acc": rng.random(),
        "model": rng.choice(["cnn", "rnn", "mlp"]),
        "team": rng.choice(["vision", "nlp", "speech", "ranking"]),
        "start": 1_700_000_000_000 + i * 1000,
    }


def populate_keel(db_url: str, n_runs: int, name: str) -> str:
    """Bulk-inserts ``n_runs`` runs straight into keel's tables (setup only, not measured)."""
    from keel_server.common import db as kdb
    from keel_server.common.migrations import ensure_current

    database = kdb.open_database(db_url)
    ensure_current(database)
    kdb.db.initialize(database)
    rng = random.Random(7)
    with database.connection_context():
        with database.atomic():
            exp_id = kdb.Experiment.insert(name=name, artifact_location="file:///tmp/bench").execute()
        chunk = 500
        for start in range(0, n_runs, chunk):
            runs, metrics, latest, params, tags = [], [], [], [], []
            for i in range(start, min(n_runs, start + chunk)):
                spec = run_spec(i, rng)
                run_id = uuid.uuid4().hex
                runs.append({"run_id": run_id, "experiment": exp_id, "run_name": f"run-{i}", "status": "FINISHED",
                             "start_time": spec["start"], "end_time": spec["start"] + 500,
                             "artifact_uri": f"file:///tmp/bench/{run_id}/artifacts"})  # fmt: skip
                for key in ("rmse", "acc"):
                    point = {"run": run_id, "key": key, "value": spec[key], "timestamp": spec["start"], "step": 0}
                    metrics.append(point)
                    latest.append(dict(point))
                params.append({"run": run_id, "key": "model", "value": spec["model"]})
                tags.append({"run": run_id, "key": "team", "value": spec["team"]})
            with database.atomic():
                kdb.Run.insert_many(runs).execute()
                kdb.Metric.insert_many(metrics).execute()
                kdb.LatestMetric.insert_many(latest).execute()
                kdb.Param.insert_many(params).execute()
                kdb.RunTag.insert_many(tags).execute()
        if kdb.is_sqlite():
            database.execute_sql("ANALYZE")
        elif not kdb.is_mysql():
            database.execute_sql("ANALYZE")
    database.close()
    return str(exp_id)


MLFLOW_POPULATE = r"""
# Runs inside bench/.venv-mlflow. One template run goes through MLflow's own SqlAlchemyStore (so
# every MLflow column and default is right); the rest are copies of its rows with new ids and
# values, bulk-inserted (going through the store for each run takes minutes: setup only).
import random, sqlite3, sys, uuid
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.entities import Metric, Param, RunTag
uri, n, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
store = SqlAlchemyStore(uri, "/tmp/mlartifacts")
exp = store.create_experiment(name)
template = store.create_run(exp, "bench", 1, [], "template")
tid = template.info.run_id
store.log_batch(tid, [Metric("rmse", 0.5, 1, 0), Metric("acc", 0.5, 1, 0)], [Param("model", "cnn")], [RunTag("team", "vision")])
conn = sqlite3.connect(uri.replace("sqlite:///", ""))
conn.row_factory = sqlite3.Row
def rows(table):
    return [dict(r) for r in conn.execute(f"SELECT * FROM {table} WHERE run_uuid = ?", (tid,))]
tables = {t: rows(t) for t in ("runs", "metrics", "latest_metrics", "params", "tags")}
rng = random.Random(7)
out = {t: [] for t in tables}
for i in range(n):
    spec = {"rmse": rng.random(), "acc": rng.random(), "model": rng.choice(["cnn", "rnn", "mlp"]),
            "team": rng.choice(["vision", "nlp", "speech", "ranking"]), "start": 1_700_000_000_000 + i * 1000}
    rid = uuid.uuid4().hex
    for table, templ in tables.items():
        for row in templ:
            row = dict(row, run_uuid=rid)
            if table == "runs":
                row.update(name=f"run-{i}", start_time=spec["start"], end_time=spec["start"] + 500, status="FINISHED",
                           artifact_uri=row["artifact_uri"].replace(tid, rid))
            elif table in ("metrics", "latest_metrics"):
                row.update(value=spec[row["key"]], timestamp=spec["start"])
            elif table == "params":
                row.update(value=spec["model"])
            elif table == "tags" and row["key"] == "team":
                row.update(value=spec["team"])
            elif table == "tags" and row["key"] == "mlflow.runName":
                row.update(value=f"run-{i}")
            out[table].append(row)
store.delete_run(tid)
with conn:
    for table, items in out.items():
        if items:
            cols = list(items[0])
            conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                             [tuple(r[c] for c in cols) for r in items])
    conn.execute("ANALYZE")
print(exp)
"""


def populate_mlflow(workdir: Path, n_runs: int, name: str) -> str:
    """Fills MLflow's SQLite store with the same runs through its own SqlAlchemyStore."""
    out = subprocess.run(
        [str(MLFLOW_BIN / "python"), "-c", MLFLOW_POPULATE, f"sqlite:///{workdir / 'mlflow.db'}", str(n_runs), name],
        capture_output=True, text=True, check=True, cwd=workdir, timeout=1800,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def keel_stub(port: int) -> Any:
    from keel.tracking.v1 import tracking_pb2_grpc

    return tracking_pb2_grpc.TrackingServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


def keel_search_p50(port: int, experiment_id: str, calls: int) -> tuple[float, int]:
    from keel.tracking.v1 import tracking_pb2 as pb

    stub = keel_stub(port)
    request = pb.SearchRunsRequest(experiment_ids=[experiment_id], filter=FILTER, order_by=ORDER, page_size=100)
    got = len(stub.SearchRuns(request).runs)
    return statistics.median(timed(lambda: stub.SearchRuns(request), calls, 60)), got


def mlflow_search_p50(port: int, experiment_id: str, calls: int) -> tuple[float, int]:
    client = MlflowHttp(port)
    body = {"experiment_ids": [experiment_id], "filter": FILTER, "order_by": ORDER, "max_results": 100}
    got = len(client.post("runs/search", body).get("runs", []))
    return statistics.median(timed(lambda: client.post("runs/search", body), calls, 120)), got


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    return f"{os.cpu_count()} CPUs (nproc), {cpu}, {mem} RAM, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (1,000 and 10,000 runs, 2 s loads)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each rate measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight for the rate measurements")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server for the 100k search (a scratch database is created and dropped)")  # fmt: skip
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    if args.echo_server:
        echo_server_main()
        return
    small, large = (1000, 10_000) if args.quick else (5000, 100_000)
    seconds = 2.0 if args.quick else args.seconds
    conc = args.concurrency
    if not args.skip_mlflow and not (MLFLOW_BIN / "mlflow").exists():
        sys.exit("bench/.venv-mlflow is missing: python3 -m venv bench/.venv-mlflow && "
                 "bench/.venv-mlflow/bin/pip install mlflow")  # fmt: skip
    from keel.tracking.v1 import tracking_pb2 as pb

    work = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    results: dict[str, Any] = {}
    try:
        # 1. the floor: raw gRPC echo with a LogMetric-sized payload
        sample = pb.LogMetricRequest(run_id=uuid.uuid4().hex, key="loss", value=0.5, step=1).SerializeToString()
        with process([sys.executable, __file__, "--echo-server"], r"echo listening on [^:]+:(\d+)") as echo_port:
            results["echo_rate"] = grpc_rate(f"127.0.0.1:{echo_port}", ECHO_METHOD, lambda i: sample, conc, seconds, 10**6)
            echo_stub = grpc.insecure_channel(f"127.0.0.1:{echo_port}").unary_unary(ECHO_METHOD)
            results["echo_p50"] = statistics.median(timed(lambda: echo_stub(sample), 2000, 10))
        print(f"echo: {results['echo_rate']:.0f} calls/s, p50 {results['echo_p50']:.3f} ms", flush=True)

        # 2. keel on SQLite
        with keel_server(f"sqlite:///{work / 'keel.db'}", work / "artifacts") as port:
            stub = keel_stub(port)
            exp = stub.CreateExperiment(pb.CreateExperimentRequest(name="bench")).experiment_id
            run_id = stub.CreateRun(pb.CreateRunRequest(experiment_id=exp)).info.run_id

            def log_metric(i: int) -> bytes:
                return pb.LogMetricRequest(run_id=run_id, key="loss", value=i * 0.001, step=i).SerializeToString()

            method = "/keel.tracking.v1.TrackingService/LogMetric"
            results["keel_log_metric_rate"] = grpc_rate(f"127.0.0.1:{port}", method, log_metric, conc, seconds, 10**6)
            results["keel_log_metric_p50"] = statistics.median(
                timed(lambda: stub.LogMetric(pb.LogMetricRequest(run_id=run_id, key="seq", value=1.0)), 1000, 10)
            )
            batch_run = stub.CreateRun(pb.CreateRunRequest(experiment_id=exp)).info.run_id
            counter = iter(range(10**9))

            def keel_batch() -> None:
                base = next(counter) * 1000
                stub.LogBatch(pb.LogBatchRequest(run_id=batch_run, metrics=[
                    pb.Metric(key=f"m{j % 10}", value=j * 0.5, timestamp=1_700_000_000_000, step=base + j)
                    for j in range(1000)]))  # fmt: skip

            lat = timed(keel_batch, 200, seconds * 2)
            results["keel_batch_metrics_per_s"] = 1000 / (statistics.mean(lat) / 1000)
            results["keel_create_run_p50"] = statistics.median(
                timed(lambda: stub.CreateRun(pb.CreateRunRequest(experiment_id=exp)), 300, 20)
            )
        print(f"keel: {results['keel_log_metric_rate']:.0f} log_metric/s, "
              f"{results['keel_batch_metrics_per_s']:.0f} batch metrics/s, "
              f"create_run p50 {results['keel_create_run_p50']:.2f} ms", flush=True)  # fmt: skip

        # 3. keel search over `small` and `large` runs (SQLite), and `large` on PostgreSQL
        for label, n in (("small", small), ("large", large)):
            db_path = work / f"search-{n}.db"
            t0 = time.perf_counter()
            exp_id = populate_keel(f"sqlite:///{db_path}", n, f"search-{n}")
            print(f"populated keel/sqlite with {n} runs in {time.perf_counter() - t0:.1f}s", flush=True)
            with keel_server(f"sqlite:///{db_path}", work / "artifacts") as port:
                results[f"keel_search_{label}_sqlite_p50"], got = keel_search_p50(port, exp_id, 30)
                assert got == 100, f"search returned {got} runs"
        results.update(search_on_postgres(args.pg_url, large, work))

        # 4. MLflow
        if not args.skip_mlflow:
            results.update(bench_mlflow(work, small, conc, seconds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, small, large, conc, seconds)


def search_on_postgres(admin_url: str, n: int, work: Path) -> dict[str, float]:
    import psycopg2

    name = f"keel_bench_{os.getpid()}"
    admin_dsn = admin_url.replace("postgresql://", "")
    user_host, _, _ = admin_dsn.partition("/")
    user, _, hostport = user_host.rpartition("@")
    host, _, port = hostport.partition(":")
    conn = psycopg2.connect(host=host, port=int(port or 5432), user=user or "postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://{user_host}/{name}"
    try:
        t0 = time.perf_counter()
        exp_id = populate_keel(url, n, f"search-{n}")
        print(f"populated keel/postgres with {n} runs in {time.perf_counter() - t0:.1f}s", flush=True)
        with keel_server(url, work / "artifacts") as port_:
            p50, got = keel_search_p50(port_, exp_id, 30)
            assert got == 100
        return {"keel_search_large_pg_p50": p50}
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def bench_mlflow(work: Path, small: int, conc: int, seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    mlwork = work / "mlflow"
    mlwork.mkdir()
    t0 = time.perf_counter()
    search_exp = populate_mlflow(mlwork, small, f"search-{small}")
    print(f"populated mlflow with {small} runs in {time.perf_counter() - t0:.1f}s", flush=True)
    with mlflow_server(mlwork) as port:
        client = MlflowHttp(port)
        exp = client.post("experiments/create", {"name": "bench"})["experiment_id"]
        run_id = client.post("runs/create", {"experiment_id": exp, "start_time": int(time.time() * 1000)})["run"]["info"]["run_id"]

        def log_metric(i: int) -> dict[str, Any]:
            return {"run_id": run_id, "key": "loss", "value": i * 0.001, "timestamp": int(time.time() * 1000), "step": i}

        out["mlflow_log_metric_rate"] = mlflow_rate(port, "runs/log-metric", log_metric, conc, seconds, 10**6)
        out["mlflow_log_metric_p50"] = statistics.median(timed(lambda: client.post("runs/log-metric", log_metric(1)), 300, 10))
        batch_run = client.post("runs/create", {"experiment_id": exp, "start_time": 1})["run"]["info"]["run_id"]
        counter = iter(range(10**9))

        def batch() -> None:
            base = next(counter) * 1000
            client.post("runs/log-batch", {"run_id": batch_run, "metrics": [
                {"key": f"m{j % 10}", "value": j * 0.5, "timestamp": 1_700_000_000_000, "step": base + j}
                for j in range(1000)]})  # fmt: skip

        lat = timed(batch, 50, seconds * 3)
        out["mlflow_batch_metrics_per_s"] = 1000 / (statistics.mean(lat) / 1000)
        out["mlflow_create_run_p50"] = statistics.median(
            timed(lambda: client.post("runs/create", {"experiment_id": exp, "start_time": 1}), 200, 30)
        )
        out["mlflow_search_small_p50"], got = mlflow_search_p50(port, search_exp, 30)
        assert got == 100, f"mlflow search returned {got}"
    print(f"mlflow: {out['mlflow_log_metric_rate']:.0f} log_metric/s, {out['mlflow_batch_metrics_per_s']:.0f} "
          f"batch metrics/s, create_run p50 {out['mlflow_create_run_p50']:.2f} ms, "
          f"search p50 {out['mlflow_search_small_p50']:.1f} ms", flush=True)  # fmt: skip
    return out


def report(r: dict[str, Any], small: int, large: int, conc: int, seconds: float) -> None:
    def ratio(a: str, b: str, invert: bool = False) -> str:
        if a not in r or b not in r:
            return "n/a"
        value = r[b] / r[a] if invert else r[a] / r[b]
        return f"{value:.1f}x"

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rows = [
        ("single log_metric calls/s", f"{r['keel_log_metric_rate']:.0f}", f"{r.get('mlflow_log_metric_rate', 0):.0f}",
         f"{r['echo_rate']:.0f}", f"{ratio('keel_log_metric_rate', 'mlflow_log_metric_rate')} MLflow, "
         f"{r['keel_log_metric_rate'] / r['echo_rate']:.2f} of echo",
         ">=10x MLflow and >=0.5 of echo",
         verdict(r.get("mlflow_log_metric_rate", 0) * 10 <= r["keel_log_metric_rate"]
                 and r["keel_log_metric_rate"] >= 0.5 * r["echo_rate"])),
        ("log_metric p50 ms (1 in flight)", f"{r['keel_log_metric_p50']:.3f}", f"{r.get('mlflow_log_metric_p50', 0):.3f}",
         f"{r['echo_p50']:.3f}", ratio("keel_log_metric_p50", "mlflow_log_metric_p50", invert=True) + " lower", "(info)", ""),
        ("log_batch metrics/s (1000/call)", f"{r['keel_batch_metrics_per_s']:.0f}",
         f"{r.get('mlflow_batch_metrics_per_s', 0):.0f}", "", ratio("keel_batch_metrics_per_s", "mlflow_batch_metrics_per_s"),
         ">=5x", verdict(r["keel_batch_metrics_per_s"] >= 5 * r.get("mlflow_batch_metrics_per_s", 0))),
        ("create_run p50 ms", f"{r['keel_create_run_p50']:.2f}", f"{r.get('mlflow_create_run_p50', 0):.2f}", "",
         ratio("keel_create_run_p50", "mlflow_create_run_p50", invert=True) + " lower", ">=10x lower",
         verdict(r["keel_create_run_p50"] * 10 <= r.get("mlflow_create_run_p50", 0))),
        (f"search_runs p50 ms, {small:,} runs (SQLite)", f"{r['keel_search_small_sqlite_p50']:.1f}",
         f"{r.get('mlflow_search_small_p50', 0):.1f}", "",
         ratio("keel_search_small_sqlite_p50", "mlflow_search_small_p50", invert=True) + " lower", ">=10x lower",
         verdict(r["keel_search_small_sqlite_p50"] * 10 <= r.get("mlflow_search_small_p50", 0))),
        (f"search_runs p50 ms, {large:,} runs (SQLite)", f"{r['keel_search_large_sqlite_p50']:.1f}", "", "", "",
         "<100 ms", verdict(r["keel_search_large_sqlite_p50"] < 100)),
        (f"search_runs p50 ms, {large:,} runs (PostgreSQL)", f"{r['keel_search_large_pg_p50']:.1f}", "", "", "",
         "<100 ms", verdict(r["keel_search_large_pg_p50"] < 100)),
    ]  # fmt: skip
    header = ["workload", "keel", "MLflow", "gRPC echo", "ratio", "target", "result"]
    lines = [
        SECTION,
        "",
        f"Machine: {machine()}. Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        f"Loopback; keel server process over SQLite (WAL) unless noted; `mlflow server` {mlflow_version()} over "
        f"SQLite; rates with {conc} calls in flight for {seconds:.0f} s; search filter `{FILTER}` ordered by "
        f"`{ORDER[0]}`, 100 results.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(row) + " |" for row in rows],
        "",
        NOTES,
        "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    write_section(text)


NOTES = """Notes:
- keel's LogMetric commits the points of concurrent callers in one transaction (group commit; each
  caller still returns only once its point is durable), and the metric hot path uses pre-built SQL.
  Search ordered by one metric walks the latest_metric (key, value, run_id) index, so 100,000 runs
  cost about what 5,000 do.
- log_metric vs the echo floor sits near the 0.5 target on this 2-CPU machine (0.27 before group
  commit; 0.60 and 0.45 in two later runs: the load generator shares the two CPUs with the servers
  and other jobs). Profile: bench/profiles/log_metric_server.speedscope.json (py-spy, summary in
  log_metric_server.txt): keel's own code (servicer, store, group commit) is ~14% of the server's
  wall samples, half of it waiting for its group's commit; the rest is grpcio's synchronous server
  machinery (the same as the echo server's) plus the shared interceptor (request id, trailing
  metadata), which the echo floor does not pay.
- MLflow log_metric with 16 in flight is throttled by SQLite write contention in `mlflow server`;
  its sequential p50 is in the second row."""


def mlflow_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([str(MLFLOW_BIN / "mlflow"), "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.strip().split()[-1]
    return "?"


def write_section(text: str) -> None:
    replace_section(SECTION, text)


def replace_section(section: str, text: str) -> None:
    """Replaces ``section`` (its heading line through the next ``## ``) of bench/RESULTS.md with
    ``text``, or appends it; other sections are kept."""
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(section) + r".*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: text + "\n", existing)
    else:
        updated = existing.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(updated)


if __name__ == "__main__":
    main()
