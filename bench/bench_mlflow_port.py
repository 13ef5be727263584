"""MLflow REST port benchmark (issue #16): the same `mlflow` client workloads against `mlflow server`
(SQLite) and against keel's MLflow port (`keel server --mlflow-port`, SQLite), in one run, with
the client's own overhead as the floor (the same client against a server that answers every call
with a canned reply and does no work).

Run with ``make bench-mlflow-port`` (or ``.venv/bin/python bench/bench_mlflow_port.py [--quick]``).
The client is mlflow from build/venv-mlflow3 (``make mlflow-venvs``), running
bench/mlflow_port_workload.py; the same client and the same calls for all three servers.
Results are printed and written to this script's section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracking import free_port, machine, process, replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MLFLOW_VENV = ROOT / "build" / "venv-mlflow3"
WORKLOAD = ROOT / "bench" / "mlflow_port_workload.py"
SECTION = "## MLflow REST port (bench/bench_mlflow_port.py)"

LATENCY_ROWS = [
    ("create_run", "create_run"),
    ("log_metric", "log_metric"),
    ("log_batch_1000", "log_batch of 1,000 metrics"),
    ("search_runs", "search_runs (filter + order, 100 of {runs} runs)"),
    ("create_model_version", "create_model_version"),
    ("transition_stage", "transition_model_version_stage"),
    ("get_by_alias", "get_model_version_by_alias"),
]


# ---------------------------------------------------------------------------------------------
# The floor: canned replies, no work
# ---------------------------------------------------------------------------------------------

_RUN_INFO = {
    "run_id": "0" * 32, "run_uuid": "0" * 32, "experiment_id": "1", "run_name": "r", "user_id": "u",
    "status": "RUNNING", "start_time": 1, "artifact_uri": "mlflow-artifacts:/1/" + "0" * 32 + "/artifacts",
    "lifecycle_stage": "active",
}  # fmt: skip
_RUN = {"info": _RUN_INFO, "data": {"metrics": [{"key": "rmse", "value": 0.5, "timestamp": 1, "step": 0}],
        "params": [{"key": "model", "value": "cnn"}], "tags": [{"key": "team", "value": "vision"}]}}  # fmt: skip
_VERSION = {"name": "m", "version": "1", "status": "READY", "current_stage": "None", "creation_timestamp": 1,
            "source": "mlflow-artifacts:/1/x/artifacts/model", "run_id": "0" * 32}  # fmt: skip
_CANNED = {
    "experiments/create": {"experiment_id": "1"},
    "runs/create": {"run": _RUN},
    "runs/get": {"run": _RUN},
    "runs/update": {"run_info": _RUN_INFO},
    "runs/search": {"runs": [_RUN] * 100},
    "registered-models/create": {"registered_model": {"name": "m"}},
    "model-versions/create": {"model_version": _VERSION},
    "model-versions/get": {"model_version": _VERSION},
    "model-versions/transition-stage": {"model_version": _VERSION},
    "registered-models/alias": {"model_version": _VERSION},
}


class _NullHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass

    def _drain(self) -> None:
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining:
            remaining -= len(self.rfile.read(min(remaining, 1 << 20)))

    def _reply(self, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _api(self) -> None:
        self._drain()
        path = urlsplit(self.path).path
        if path.startswith("/api/2.0/mlflow-artifacts/artifacts"):
            query = urlsplit(self.path).query
            if self.command == "GET" and not query and path.endswith(".bin"):
                self._download()
                return
            self._reply(b'{"files": []}' if self.command == "GET" else b"{}")
            return
        key = path.split("/api/2.0/mlflow/", 1)[-1]
        self._reply(json.dumps(_CANNED.get(key, {})).encode())

    def _download(self) -> None:
        size = self.server.artifact_bytes  # type: ignore[attr-defined]
        block = b"\0" * (1 << 20)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        for _ in range(size // len(block)):
            self.wfile.write(block)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _api  # noqa: N815


def null_server_main(artifact_mib: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NullHandler)
    server.daemon_threads = True
    server.artifact_bytes = artifact_mib * 1024 * 1024  # type: ignore[attr-defined]
    print(f"null server on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


# ---------------------------------------------------------------------------------------------
# The two real servers
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def mlflow_server(work: Path) -> Iterator[int]:
    port = free_port()
    cmd = [
        str(MLFLOW_VENV / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}", "--artifacts-destination", str(work / "mlartifacts"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start")
            time.sleep(0.2)  # polling a process we cannot ask to signal readiness
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def keel_port(work: Path) -> Iterator[int]:
    port = free_port()
    env = {
        "KEEL_DB_URL": f"sqlite:///{work / 'keel.db'}",
        "KEEL_ARTIFACT_URI": f"file://{work / 'keel-artifacts'}",
        "KEEL_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "keel.cli", "server", "--port", "0", "--mlflow-port", str(port)]
    with process(cmd, r"keel MLflow REST API on http://[^:]+:(\d+)", env) as bound:
        yield bound


def workload(uri: str, quick: bool, floor: bool = False) -> dict[str, Any]:
    cmd = [str(MLFLOW_VENV / "bin" / "python"), str(WORKLOAD), "--uri", uri]
    cmd += ["--quick"] if quick else []
    cmd += ["--floor"] if floor else []
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"workload against {uri} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mlflow_version() -> str:
    done = subprocess.run([str(MLFLOW_VENV / "bin" / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def report(keel: dict[str, Any], mlflow: dict[str, Any], floor: dict[str, Any], load: tuple[float, float]) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    lines = [
        SECTION,
        "",
        f"Run {when} on {machine()}, load average {load[0]:.1f} before, {load[1]:.1f} after. The client is "
        f"mlflow {mlflow_version()} (`MlflowClient`, one process, sequential calls) for all three servers: "
        "`mlflow server` (SQLite backend, proxied artifacts), keel's MLflow port (`keel server --mlflow-port`, "
        "SQLite, local artifact store; the port calls keel's gRPC services over a Unix socket), and the floor: "
        "a server that answers every call with a canned reply (the client's own cost per call). Latencies are "
        "p50 in ms.",
        "",
        "| call | keel port | mlflow server | floor (client only) | keel faster by | server part (minus floor): keel / MLflow | server part faster by | target (>= 5x) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    runs = f"{keel['search_runs_runs']:,}"
    for key, label in LATENCY_ROWS:
        k, m, f = keel[key], mlflow[key], floor[key]
        ratio = m / k if k else float("nan")
        # What each server adds over the client's own cost (never below a tenth of a ms: noise).
        server_ratio = max(m - f, 0.1) / max(k - f, 0.1)
        lines.append(
            f"| {label.format(runs=runs)} | {k:.2f} | {m:.2f} | {f:.2f} | {ratio:.1f}x "
            f"| {k - f:.2f} / {m - f:.2f} | {server_ratio:.1f}x | {'met' if ratio >= 5 else 'missed'} |"
        )
    lines += [
        "",
        f"Artifacts: one {keel['artifact_mib']} MiB file through the client's `log_artifact` and `download_artifacts` "
        "(MB/s; target: keel >= 2x MLflow).",
        "",
        "| direction | keel port | mlflow server | floor | keel faster by | target (>= 2x) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, label in (("artifact_up_mb_s", "upload"), ("artifact_down_mb_s", "download")):
        k, m, f = keel[key], mlflow[key], floor[key]
        lines.append(f"| {label} | {k:.0f} | {m:.0f} | {f:.0f} | {k / m:.1f}x | {'met' if k / m >= 2 else 'missed'} |")
    lines += [
        "",
        f"Populating the {keel['search_runs_runs']:,} search runs (create_run + log_batch + set_terminated, 8 client "
        f"threads): keel {keel.get('populate_s', 0):.1f} s, MLflow {mlflow.get('populate_s', 0):.1f} s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, a 16 MiB artifact (a smoke run)")
    parser.add_argument("--null-server", type=int, metavar="MIB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.null_server is not None:
        null_server_main(args.null_server)
        return
    if not (MLFLOW_VENV / "bin" / "mlflow").exists():
        sys.exit("build/venv-mlflow3 is missing: run `make mlflow-venvs`")
    load_before = os.getloadavg()[0]
    mib = 16 if args.quick else 256
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-port-") as tmp:
        work = Path(tmp)
        (work / "keel").mkdir()
        (work / "mlflow").mkdir()
        with keel_port(work / "keel") as port:
            keel = workload(f"http://127.0.0.1:{port}", args.quick)
        print("keel", json.dumps(keel), flush=True)
        with mlflow_server(work / "mlflow") as port:
            mlflow = workload(f"http://127.0.0.1:{port}", args.quick)
        print("mlflow", json.dumps(mlflow), flush=True)
        null_cmd = [sys.executable, __file__, "--null-server", str(mib)]
        with process(null_cmd, r"null server on [^:]+:(\d+)") as port:
            floor = workload(f"http://127.0.0.1:{port}", args.quick, floor=True)
        print("floor", json.dumps(floor), flush=True)
    text = report(keel, mlflow, floor, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.quick:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()
