"""Shared ways to run keel in tests: in-process on port 0, or as a real ``keel server`` process.

Loaded as a pytest plugin from conftest.py. The contract fixtures are parametrised over the
backends of ``backends.py`` (SQLite, PostgreSQL, MariaDB; ``KEEL_TEST_BACKENDS`` narrows them).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from backends import make_database_url, make_s3_bucket, selected_backends

from keel_server.common.config import ALL_SERVICES, Settings
from keel_server.common.server import RunningServer, build_server


@dataclass
class ServerHandle:
    uri: str
    port: int
    settings: Settings
    running: RunningServer | None = None
    process: subprocess.Popen[str] | None = None


@contextlib.contextmanager
def running_server(
    db_url: str, artifact_uri: str, services: tuple[str, ...] = ALL_SERVICES, **overrides: object
) -> Iterator[ServerHandle]:
    """An in-process server on 127.0.0.1:<free port> over the given DB and artifact root."""
    settings = replace(
        Settings(),
        db_url=db_url,
        artifact_uri=artifact_uri,
        port=0,
        services=services,
        grace_seconds=1.0,
        **overrides,  # type: ignore[arg-type]
    )
    running = build_server(settings)
    try:
        yield ServerHandle(
            uri=f"grpc://127.0.0.1:{running.port}", port=running.port, settings=settings, running=running
        )
    finally:
        running.stop(grace=1.0)


def s3_settings(s3: dict[str, Any]) -> dict[str, Any]:
    """The server settings that point keel at a bucket from ``backends.make_s3_bucket``."""
    return {"s3_endpoint_url": s3["endpoint_url"], "s3_access_key": s3["access_key"], "s3_secret_key": s3["secret_key"]}


@contextlib.contextmanager
def running_s3_server(root: Path) -> Iterator[ServerHandle]:
    """An in-process server over SQLite in ``root`` and a fresh bucket on the test S3 server."""
    with make_s3_bucket() as s3, make_database_url("sqlite", root) as db_url:
        with running_server(db_url, s3["artifact_uri"], **s3_settings(s3)) as handle:
            yield handle


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers that cannot bind port 0 themselves)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


LISTENING = re.compile(r"keel server listening on [^:]+:(\d+)")


@contextlib.contextmanager
def server_process(
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 60.0,
) -> Iterator[ServerHandle]:
    """``keel server --port 0 ...`` as a child process; ready when it prints its port."""
    command = [sys.executable, "-m", "keel.cli", "server", "--port", "0", *(args or [])]
    full_env = {**os.environ, **(env or {})}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd
    )
    port = 0
    assert process.stdout is not None
    for line in process.stdout:  # blocks until the readiness line (or exit)
        match = LISTENING.search(line)
        if match:
            port = int(match.group(1))
            break
    if not port:
        process.wait(timeout=timeout)
        stderr = process.stderr.read() if process.stderr else ""
        raise RuntimeError(f"keel server exited with {process.returncode} before listening: {stderr[-2000:]}")
    try:
        yield ServerHandle(uri=f"grpc://127.0.0.1:{port}", port=port, settings=Settings(), process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=15)  # drains the pipes (see sigterm_and_wait)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def sigterm_and_wait(process: subprocess.Popen[str], timeout: float = 60.0) -> tuple[int, float, str]:
    """Sends SIGTERM; returns (exit code, seconds from the signal to the exit, stderr)."""
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    # communicate() drains both pipes while it waits: a server logging more than a pipe holds on
    # its way out would otherwise block on the write, and never exit.
    _, stderr = process.communicate(timeout=timeout)
    elapsed = time.monotonic() - signalled
    return process.returncode, elapsed, stderr or ""


@pytest.fixture(scope="module", params=selected_backends())
def keel_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    """All four services in-process over a fresh database of each backend and a local artifact root."""
    root = tmp_path_factory.mktemp(f"keel-{request.param}")
    with make_database_url(request.param, root) as db_url:
        with running_server(db_url, f"file://{root}/artifacts") as handle:
            yield handle


@pytest.fixture()
def client(keel_server: ServerHandle) -> Iterator[object]:
    """A ``keel.Client`` of ``keel_server``, also set as the fluent API's tracking URI."""
    import keel

    keel.set_tracking_uri(keel_server.uri)
    yield keel.Client(keel_server.uri)
