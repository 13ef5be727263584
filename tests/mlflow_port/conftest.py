"""Fixtures of the MLflow REST port suites: a keel server in-process (SQLite, artifacts in a tmp
folder) with its MLflow port on a free loopback port, and the real ``mlflow`` client pointed at it.

- ``mlflow_port`` (module): the shared server, with ``mlflow.set_tracking_uri`` /
  ``set_registry_uri`` and ``MLFLOW_TRACKING_URI`` pointing at its port for the whole module.
- ``mlflow_port_server`` (module): a factory, ``mlflow_port_server(**settings_overrides)``, for
  servers with other settings (``auth=True, admin_token=...``); each is stopped at the end of the
  module. It does not repoint the ``mlflow`` client: use ``server.use_mlflow(token=...)``.

Both yield ``PortServer``: ``.grpc_uri``, ``.http_url``, ``.settings``, plus ``.call(...)`` for raw
HTTP (error shapes, bad inputs), ``.keel_client()`` for the gRPC door and ``.use_mlflow(...)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from server_fixtures import free_port

from keel_server.common.config import Settings
from keel_server.common.server import RunningServer, build_server

# What the mlflow client reads from the environment and would otherwise leak between suites.
_MLFLOW_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
)
# Attempts at binding a port that free_port() found free (another process may take it first).
_BIND_ATTEMPTS = 5


@dataclass
class PortServer:
    """A running keel server with its MLflow REST port."""

    grpc_uri: str
    http_url: str
    settings: Settings
    running: RunningServer
    root: Path

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """One raw HTTP request: ``path`` relative to the port (``/api/2.0/mlflow/runs/get``, or
        ``runs/get`` for short); ``body`` sent as JSON, or ``raw`` bytes as they are. Returns
        (status, the decoded JSON body, or the text when it is not JSON)."""
        if not path.startswith("/"):
            path = f"/api/2.0/mlflow/{path}"
        url = self.http_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        text = payload.decode("utf-8", errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def keel_client(self) -> Any:
        """keel's gRPC SDK on this server: the other door to the same data (credentials, with
        auth on, from ``KEEL_TRACKING_TOKEN`` as for any SDK user)."""
        import keel

        return keel.Client(self.grpc_uri)

    @contextlib.contextmanager
    def use_mlflow(
        self, *, token: str | None = None, username: str | None = None, password: str | None = None
    ) -> Iterator[None]:
        """Points the ``mlflow`` client (fluent API and ``MlflowClient``) at this port, with the
        given credentials, and puts everything back afterwards."""
        env = {"MLFLOW_TRACKING_URI": self.http_url}
        if token is not None:
            env["MLFLOW_TRACKING_TOKEN"] = token
        if username is not None:
            env["MLFLOW_TRACKING_USERNAME"] = username
        if password is not None:
            env["MLFLOW_TRACKING_PASSWORD"] = password
        with _mlflow_pointed_at(self.http_url, env):
            yield


@contextlib.contextmanager
def _mlflow_pointed_at(url: str, env: dict[str, str]) -> Iterator[None]:
    import mlflow
    import mlflow.tracking.fluent as fluent

    saved = {name: os.environ.get(name) for name in _MLFLOW_ENV}
    _reset_mlflow_state(mlflow, fluent)
    for name in _MLFLOW_ENV:
        os.environ.pop(name, None)
    os.environ.update(env)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        yield
    finally:
        _reset_mlflow_state(mlflow, fluent)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])


def _reset_mlflow_state(mlflow: Any, fluent: Any) -> None:
    """What the fluent API caches between calls: active runs and the active experiment, which
    would name runs and experiments of another server."""
    while mlflow.active_run() is not None:
        mlflow.end_run()
    fluent._active_experiment_id = None
    fluent._last_active_run_id.set(None)
    fluent._last_logged_model_id.set(None)


@contextlib.contextmanager
def start_port_server(root: Path, **overrides: Any) -> Iterator[PortServer]:
    """A keel server in-process over SQLite in ``root``, its MLflow port on a free loopback port."""
    root.mkdir(parents=True, exist_ok=True)
    running: RunningServer | None = None
    settings = Settings()
    last_error: Exception | None = None
    for _attempt in range(_BIND_ATTEMPTS):
        settings = replace(
            Settings(),
            db_url=f"sqlite:///{root}/keel.db",
            artifact_uri=f"file://{root}/artifacts",
            port=0,
            grace_seconds=1.0,
            mlflow_port=free_port(),
            **overrides,
        )
        try:
            running = build_server(settings)
            break
        except OSError as exc:  # the free port was taken in between: pick another
            last_error = exc
    if running is None:
        raise RuntimeError(f"could not bind the MLflow port: {last_error}")
    door = running.front_doors["mlflow"]
    server = PortServer(
        grpc_uri=f"grpc://127.0.0.1:{running.port}",
        http_url=f"http://127.0.0.1:{door.port}",
        settings=settings,
        running=running,
        root=root,
    )
    try:
        yield server
    finally:
        running.stop(grace=1.0)


@pytest.fixture(scope="module")
def mlflow_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortServer]:
    """The module's keel server with its MLflow port, and the ``mlflow`` client pointed at it."""
    with start_port_server(tmp_path_factory.mktemp("mlflow-port")) as server, server.use_mlflow():
        yield server


@pytest.fixture(scope="module")
def mlflow_port_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., PortServer]]:
    """A factory of servers with other settings: ``mlflow_port_server(auth=True, admin_token=T)``.
    Each is stopped at the end of the module; the ``mlflow`` client is left where it was."""
    with contextlib.ExitStack() as stack:

        def start(**settings_overrides: Any) -> PortServer:
            root = tmp_path_factory.mktemp("mlflow-port-custom")
            return stack.enter_context(start_port_server(root, **settings_overrides))

        yield start
