"""Helpers of the ``mlflow``-client suites (issue #16, Tests, first bullet): a ``keel server``
process with its MLflow REST port, and programs run by the real ``mlflow`` package in its own
venvs (``make mlflow-venvs``): the newest 3.x that installs and the last 2.x minor.

The programs run with the venv's python and the venv's ``bin`` first on ``PATH`` (as in an
activated venv: ``mlflow.projects`` and ``mlflow models serve`` start ``python``/``mlflow`` from
it). Their environment drops every ``MLFLOW_*``/``KEEL_*`` variable of the test process and sets
only what keeps the client quiet and bounded, none of which changes what it sends to the server:

- ``MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT=0``: ``log_model`` without ``pip_requirements`` starts
  a python process that imports the model to find its requirements (8-12 s per call on a busy
  machine); with no time it is killed at once and the flavor's default requirements are written,
  as MLflow does on any inference failure. Only the files' ``requirements.txt`` differs.
- ``MLFLOW_DISABLE_TELEMETRY``/``DO_NOT_TRACK``: nothing leaves the machine.
- ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false``: no progress bars in the captured output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from server_fixtures import ServerHandle, free_port, server_process

ROOT = Path(__file__).resolve().parents[3]
VENVS = {"mlflow3": ROOT / "build" / "venv-mlflow3", "mlflow2": ROOT / "build" / "venv-mlflow2"}
MLFLOW_READY = re.compile(r"keel MLflow REST API on (http://\S+)")
# How long the server may take to print its MLflow line after its gRPC one (it binds both first).
MLFLOW_LINE_TIMEOUT_S = 30.0
# Attempts at a free port that another process takes before the server binds it.
BIND_ATTEMPTS = 5
CLIENT_ENV = {
    "MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "PYTHONUNBUFFERED": "1",
}


def venv_python(venv: str) -> Path:
    """The python of one of the client venvs; fails (not skips) when it was not built."""
    path = VENVS[venv] / "bin" / "python"
    if not (VENVS[venv] / "bin" / "mlflow").exists():
        pytest.fail(f"the MLflow client venv {VENVS[venv]} is missing: run `make mlflow-venvs`")
    return path


def installed(venv: str, distribution: str) -> str | None:
    """The version of ``distribution`` in the venv (from its metadata, not by importing), or None."""
    site = next((VENVS[venv] / "lib").glob("python*/site-packages"))
    found = sorted(site.glob(f"{distribution}-*.dist-info"))
    return found[0].name[len(distribution) + 1 : -len(".dist-info")] if found else None


def mlflow_version(venv: str) -> str:
    version = installed(venv, "mlflow")
    assert version, f"no mlflow in {VENVS[venv]}"
    return version


def require_in_venv(venv: str, distribution: str, why: str, ok: Any = bool) -> None:
    """Fails, saying how to rebuild, when a venv made before ``make mlflow-venvs`` installed
    ``distribution`` lacks it (the venvs are rebuilt only when the mlflow pins change)."""
    version = installed(venv, distribution)
    if not (version and ok(version)):
        pytest.fail(
            f"{VENVS[venv]} has {distribution} {version}, {why}: rebuild it with "
            f"`rm -rf {VENVS[venv]} && make mlflow-venvs`"
        )


@dataclass
class KeelWithPort:
    """A ``keel server`` process: its gRPC URI (keel's SDK) and its MLflow REST URL (``mlflow``)."""

    handle: ServerHandle
    grpc_uri: str
    http_url: str
    root: Path
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    def log_tail(self) -> str:
        """The server's last log lines, for the message of a failed assertion."""
        return "".join(self.stderr_tail)[-6000:]


def _drain(stream: Any, into: deque[str]) -> None:
    """Reads a pipe to its end so the server never blocks on a full one, keeping the tail."""
    for line in stream:
        into.append(line)


def _mlflow_line(handle: ServerHandle) -> str:
    """The URL of the ``keel MLflow REST API on ...`` line, read after the listening line."""
    process = handle.process
    assert process is not None and process.stdout is not None
    found: list[str] = []

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            match = MLFLOW_READY.search(line)
            if match:
                found.append(match.group(1))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(MLFLOW_LINE_TIMEOUT_S)
    if not found:
        raise RuntimeError(f"keel server printed no MLflow REST line within {MLFLOW_LINE_TIMEOUT_S}s")
    return found[0]


@contextlib.contextmanager
def keel_with_mlflow_port(root: Path) -> Iterator[KeelWithPort]:
    """``keel server --port 0 --mlflow-port <free>`` over SQLite and a file artifact root in
    ``root``; ready when it has printed both its gRPC and its MLflow REST addresses."""
    root.mkdir(parents=True, exist_ok=True)
    env = {
        "KEEL_DB_URL": f"sqlite:///{root}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{root}/artifacts",
        "KEEL_MLFLOW_PORT": "0",
    }
    with contextlib.ExitStack() as stack:
        handle: ServerHandle | None = None
        last_error: Exception | None = None
        for _attempt in range(BIND_ATTEMPTS):
            try:
                handle = stack.enter_context(
                    server_process(["--mlflow-port", str(free_port())], env=env, cwd=root)
                )
                break
            except RuntimeError as exc:  # the free port was taken in between: pick another
                if "in use" not in str(exc):
                    raise
                last_error = exc
        if handle is None:
            raise RuntimeError(f"could not bind the MLflow port: {last_error}")
        url = _mlflow_line(handle)
        server = KeelWithPort(handle=handle, grpc_uri=handle.uri, http_url=url, root=root)
        assert handle.process is not None
        threading.Thread(target=_drain, args=(handle.process.stderr, server.stderr_tail), daemon=True).start()
        yield server


@dataclass
class ProgramResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def summary(self) -> dict[str, Any]:
        """The JSON object of the program's last stdout line."""
        lines = self.stdout.strip().splitlines()
        assert lines, f"no output:\n{self.stderr[-4000:]}"
        return dict(json.loads(lines[-1]))

    def explain(self, server: KeelWithPort | None = None) -> str:
        text = f"exit {self.returncode} after {self.seconds:.0f}s\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-8000:]}"
        if server is not None:
            text += f"\n--- keel server log\n{server.log_tail()}"
        return text


def run_in_venv(
    venv: str,
    program: Path,
    args: list[str],
    *,
    cwd: Path,
    timeout: float,
    extra_env: dict[str, str] | None = None,
) -> ProgramResult:
    """``program ARGS`` with the venv's python, in a clean client environment (module docstring)."""
    python = venv_python(venv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KEEL_", "VIRTUAL_ENV"))}
    env.update(CLIENT_ENV)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra_env or {})
    started = time.monotonic()
    done = subprocess.run(
        [str(python), str(program), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    return ProgramResult(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
