"""Helpers of the MLflow port's artifact and auth tests (the servers themselves come from
conftest.py): ``keel server`` as a process for memory figures, raw HTTP that sends a path exactly
as written (bad inputs), and the mlflow client's own artifact repository for a run.
"""

from __future__ import annotations

import base64
import contextlib
import http.client as http_client
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from server_fixtures import free_port

MLFLOW_PORT_LINE = re.compile(r"keel MLflow REST API on https?://[^:]+:(\d+)")


@dataclass
class ProcessServer:
    """``keel server`` as a child process with its MLflow port."""

    grpc_uri: str
    http_url: str
    process: subprocess.Popen[str]


@contextlib.contextmanager
def port_server_process(root: Path, env: dict[str, str] | None = None) -> Iterator[ProcessServer]:
    """``keel server --mlflow-port P`` as a child process (for its own memory figures)."""
    root.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    command = [sys.executable, "-m", "keel.cli", "server", "--port", "0", "--mlflow-port", str(http_port)]
    full_env = {
        **os.environ,
        "KEEL_DB_URL": f"sqlite:///{root}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{root}/artifacts",
        **(env or {}),
    }
    # The log goes to a file: an unread pipe would fill up and block the server.
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=full_env)
    assert process.stdout is not None
    grpc_port = 0
    for line in process.stdout:  # the readiness lines, printed once both doors listen
        if match := re.search(r"keel server listening on [^:]+:(\d+)", line):
            grpc_port = int(match.group(1))
        if MLFLOW_PORT_LINE.search(line):
            break
    else:
        process.wait(timeout=30)
        log.close()
        raise RuntimeError(
            f"keel server exited with {process.returncode}: {(root / 'server.log').read_text()[-2000:]}"
        )
    try:
        yield ProcessServer(f"grpc://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB, from /proc."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def reset_peak_rss(pid: int) -> bool:
    """Resets a process's VmHWM to its current RSS (Linux >= 4.0: write 5 to clear_refs); False
    where that is not allowed (then the peak since start is what is read)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_http(
    base_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> HttpReply:
    """One raw HTTP request (the path is sent exactly as given: no normalisation, no quoting)."""
    parts = urlsplit(base_url)
    connection = http_client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return HttpReply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def proxy_path(experiment_id: str, run_id: str, path: str = "") -> str:
    """The artifact proxy URL path of a run's file (``path`` as given, unquoted)."""
    tail = f"/{path}" if path else ""
    return f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts{tail}"


def artifact_repo(http_url: str, experiment_id: str, run_id: str) -> Any:
    """The mlflow client's own artifact repository for a run on this port (what ``log_artifact``
    and ``download_artifacts`` use for an ``mlflow-artifacts:`` URI)."""
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    return MlflowArtifactsRepository(
        f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts", tracking_uri=http_url
    )


def write_random_file(path: Path, size: int, block: int = 4 * 1024 * 1024) -> None:
    """``size`` bytes of random data, written in blocks (never whole in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        left = size
        while left > 0:
            n = min(block, left)
            out.write(os.urandom(n))
            left -= n


def sha256_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
