"""``keel models serve``: one model on its own server, as ``mlflow models serve`` is used.

No database: the single deployment is fixed at start-up (``StaticDeployments``) and a
``models:/`` or ``runs:/`` URI is resolved through the keel server at ``KEEL_TRACKING_URI``
(``ClientResolver``), still following stage and alias moves by polling. The model is loaded
before the server listens, so "listening" means ready (a model that fails to load is reported
as FAILED by health, ModelReady and GetDeployment; the server stays up).

``--workers N`` (N > 1) runs N such processes on one port (see ``workers.py``).
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlparse

import peewee as pw

from keel_server.common import db as dbmod
from keel_server.common.app import App
from keel_server.common.config import Settings
from keel_server.common.server import RunningServer, build_server
from keel_server.inference.resolver import ClientResolver
from keel_server.inference.runtime import FAILED, InferenceRuntime
from keel_server.inference.store import BatchingConfig, DeploymentRecord, StaticDeployments

log = logging.getLogger("keel.inference")

READY_LINE = "keel models serve listening on {host}:{port}"


@dataclass
class ServeOptions:
    model_uri: str
    name: str = ""
    host: str = "127.0.0.1"
    port: int = 8500
    http_port: int = 8080
    workers: int = 1
    max_batch_size: int = 0
    max_batch_delay_ms: float = 0.0
    tracking_uri: str | None = None
    poll_seconds: float = 2.0
    reuse_port: bool = False
    grpc_threads: int = 16


@dataclass
class ServingApp(App):
    """An App without a database, carrying the runtime of its one deployment."""

    inference_runtime: InferenceRuntime | None = field(default=None, repr=False)


def deployment_name(model_uri: str) -> str:
    """A deployment name from a URI: the registered model's name, else the folder's, else 'model'."""
    parsed = urlparse(model_uri)
    if parsed.scheme == "models":
        base = re.split(r"[/@]", model_uri[len("models:") :].lstrip("/"))[0]
    else:
        base = model_uri.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"model-{name}" if name else "model"
    return name[:63].rstrip("-")


def build(options: ServeOptions) -> tuple[RunningServer, InferenceRuntime]:
    """Loads the model, then starts the gRPC (keel v1 + KServe v2) and HTTP servers."""
    batching = BatchingConfig.checked(options.max_batch_size, options.max_batch_delay_ms)
    record = DeploymentRecord(
        name=options.name or deployment_name(options.model_uri),
        model_uri=options.model_uri,
        creation_time=dbmod.now_ms(),
        batching=batching,
    )
    runtime = InferenceRuntime(
        StaticDeployments(record), ClientResolver(options.tracking_uri), options.poll_seconds
    )
    runtime.load_now()
    runtime.start()
    # KEEL_* variables still apply (e.g. KEEL_MAX_MESSAGE_BYTES); the command's flags win.
    settings = Settings.load(
        dict(
            host=options.host,
            port=options.port,
            http_port=options.http_port,
            services=("inference",),
            max_workers=options.grpc_threads,
            registry_poll_seconds=options.poll_seconds,
            reuse_port=options.reuse_port,
        )
    )
    # No database: the uninitialised proxy fails loudly if anything ever tries to use one.
    app = ServingApp(settings=settings, database=cast(pw.Database, dbmod.db), inference_runtime=runtime)
    try:
        running = build_server(settings, app)
    except BaseException:
        runtime.close()
        raise
    return running, runtime


def serve(options: ServeOptions) -> int:
    """Runs until SIGTERM/SIGINT. Prints READY_LINE once the model is loaded and ports are open."""
    if options.workers > 1:
        from keel_server.inference.workers import supervise

        return supervise(options)
    running, runtime = build(options)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for view in runtime.views():
        if view.state == FAILED:
            print(
                f"keel models serve: deployment {view.name} FAILED: {view.message}",
                file=sys.stderr,
                flush=True,
            )
    http = f" (http {options.host}:{options.http_port})" if options.http_port else ""
    print(READY_LINE.format(host=options.host, port=running.port) + http, flush=True)
    stop.wait()
    running.stop()
    return 0
