"""One server runtime for every keel service.

``build_server`` puts any subset of the services on one gRPC server, with health checking (a
status per service), reflection, the error/request-id interceptor and raised message limits.
``serve`` runs it until SIGTERM or SIGINT, then drains in-flight calls for
``settings.grace_seconds`` and exits within ``SHUTDOWN_BOUND_SECONDS`` after that, whatever is
still running. A server with the artifacts or registry service also sweeps what dead uploads left
in the artifact store (``UploadSweeper``), at start and periodically.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keel_server.audit import servicer as audit_servicer
from keel_server.auth import servicer as auth_servicer
from keel_server.auth.gate import Gate
from keel_server.common import db as dbmod
from keel_server.common import discovery, metrics
from keel_server.common.app import App
from keel_server.common.config import Settings
from keel_server.common.gateway import Gateway, internal_socket
from keel_server.common.http import HTTPApp
from keel_server.common.interceptors import KeelServerInterceptor
from keel_server.common.memory import tune_allocator
from keel_server.common.metrics import serve_metrics
from keel_server.common.migrations import ensure_current
from keel_server.common.sweeper import PeriodicSweeper, sweep_interval
from keel_server.common.tls import server_credentials, ssl_context

log = logging.getLogger("keel.server")

# After SIGTERM the process exits at most this many seconds after the grace period: calls the
# cancel at the grace cannot stop (a worker thread inside a long database query) would otherwise
# keep the interpreter alive at exit until they end.
SHUTDOWN_BOUND_SECONDS = 2.0
# Services that write to the artifact store (and so may leave staging files or multipart
# uploads behind when the process dies).
ARTIFACT_WRITERS = ("artifacts", "registry")

# Each module exposes ``add_to_server(server, app) -> list[str]`` (the full service names).
SERVICE_MODULES = {
    "tracking": "keel_server.tracking.servicer",
    "registry": "keel_server.registry.servicer",
    "artifacts": "keel_server.artifacts.servicer",
    "inference": "keel_server.inference.servicer",
}


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    app: App
    health: health.HealthServicer
    service_names: list[str]
    # The HTTP front doors this process serves ("mlflow", "ui"), by name.
    front_doors: dict[str, HTTPApp] = field(default_factory=dict)

    def stop(self, grace: float | None = None) -> None:
        """Marks every service NOT_SERVING, ends the endless streams, drains in-flight calls,
        then runs shutdown hooks."""
        self.health.enter_graceful_shutdown()
        for door in self.front_doors.values():
            door.stop()
        for hook in self.app.drain_hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001 - shutdown must go on
                log.exception("drain hook failed")
        self.server.stop(self.app.settings.grace_seconds if grace is None else grace).wait()
        for hook in reversed(self.app.shutdown_hooks):
            try:
                hook()
            except Exception:  # noqa: BLE001 - shutdown must go on
                log.exception("shutdown hook failed")


class UploadSweeper(PeriodicSweeper):
    """Removes what dead uploads left in the artifact store (``ArtifactStore.sweep`` with
    ``settings.stale_upload_seconds``)."""

    thread_name = "keel-upload-sweeper"

    def __init__(self, app: App) -> None:
        super().__init__(sweep_interval(app.settings.stale_upload_seconds))
        self.app = app

    def run_once(self) -> int:
        """One sweep; the number of leftovers removed (0 when the store failed: logged), also
        counted in ``keel_sweeper_actions_total{sweeper="uploads",action="removed"}``."""
        try:
            removed = self.app.artifact_store.sweep(self.app.settings.stale_upload_seconds)
        except Exception as exc:  # noqa: BLE001 - the next pass tries again
            log.warning("sweep of dead uploads failed: %s", exc)
            return 0
        metrics.sweeper_action("uploads", "removed", removed)
        return removed


def open_app(settings: Settings) -> App:
    """Opens the database (creating or checking its schema) and returns the shared state.

    Raises ``SchemaOutdated`` for an older schema and peewee errors for an unreachable DB.
    """
    database = dbmod.initialize(settings.db_url, max_connections=settings.max_workers + 8)
    ensure_current(database)
    return App(settings=settings, database=database)


def build_server(settings: Settings, app: App | None = None) -> RunningServer:
    # TLS files are checked before anything opens or listens (ValueError naming the bad one).
    credentials = server_credentials(settings)
    tune_allocator()  # before gRPC and the executor start their threads
    app = app or open_app(settings)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        # Ping idle connections so a client that vanished without closing its connection
        # (mid-upload, say) frees its worker thread within ~80 s instead of at its deadline.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # The SDK pings every 30 s during long calls; accept that instead of answering GOAWAY.
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="keel-rpc"),
        interceptors=[KeelServerInterceptor(Gate(settings))],
        options=options,
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    service_names: list[str] = []
    for name in settings.services:
        module = importlib.import_module(SERVICE_MODULES[name])
        service_names.extend(module.add_to_server(server, app))
    # Auth and audit run on every server (WhoAmI, the audit log of the shared database).
    service_names.extend(auth_servicer.add_to_server(server, app))
    service_names.extend(audit_servicer.add_to_server(server, app))
    service_names.extend(discovery.add_to_server(server, settings))
    for full_name in service_names:
        health_servicer.set(full_name, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    address = f"{settings.host}:{settings.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port} (address in use or not available)")
    # The HTTP front doors (MLflow REST port, console) call this server's services as gRPC
    # clients over a private Unix socket, so auth, validation and the audit log apply unchanged.
    internal = internal_socket() if settings.mlflow_port or settings.ui_port else ""
    if internal:
        server.add_insecure_port(internal)
        app.shutdown_hooks.append(lambda: _remove_socket(internal))
    server.start()
    front_doors: dict[str, HTTPApp] = {}
    if internal:
        try:
            front_doors = _start_front_doors(settings, internal, port)
        except BaseException:
            server.stop(0)
            raise
    if set(ARTIFACT_WRITERS) & set(settings.services):
        sweeper = UploadSweeper(app)
        app.shutdown_hooks.append(sweeper.stop)
        sweeper.start()
    if settings.metrics_port:
        serve_metrics(settings.host, settings.metrics_port, ssl_context(settings))
    log.info("keel listening", extra={"port": port, "service": ",".join(settings.services)})
    return RunningServer(
        server=server,
        port=port,
        app=app,
        health=health_servicer,
        service_names=service_names,
        front_doors=front_doors,
    )


def _start_front_doors(settings: Settings, internal: str, grpc_port: int) -> dict[str, HTTPApp]:
    """The MLflow REST port and the console, each a gRPC client of this server's services (those
    it runs over ``internal``, the others at their configured addresses)."""
    remote = {service: settings.address_of(service) for service in ("tracking", "registry", "artifacts", "inference")}
    gateway = Gateway.for_server(internal, settings.services, remote)
    context = ssl_context(settings)
    doors: dict[str, HTTPApp] = {}
    try:
        if settings.mlflow_port:
            from keel_server.mlflow_port.app import start_mlflow_port

            doors["mlflow"] = start_mlflow_port(settings, gateway, grpc_port, context)
        if settings.ui_port:
            from keel_server.console.app import start_console

            doors["ui"] = start_console(settings, gateway, context)
    except BaseException:
        for door in doors.values():
            door.stop()
        raise
    return doors


def _remove_socket(address: str) -> None:
    path = address.removeprefix("unix:")
    for remove in (os.unlink, os.rmdir):
        try:
            remove(path)
        except OSError:
            pass
        path = os.path.dirname(path)


def serve(settings: Settings) -> None:
    """Runs until SIGTERM/SIGINT, then shuts down gracefully."""
    running = build_server(settings)
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s received: draining in-flight calls", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Printed for scripts and tests that start the server with --port 0.
    print(
        f"keel server listening on {settings.host}:{running.port} ({','.join(settings.services)})", flush=True
    )
    for name, door in running.front_doors.items():
        label = {"mlflow": "MLflow REST API", "ui": "console"}.get(name, name)
        scheme_ = "https" if settings.tls_enabled else "http"
        print(f"keel {label} on {scheme_}://{settings.host}:{door.port}", flush=True)
    stop_requested.wait()
    # Whatever happens from here on, the process ends by the grace period plus the bound.
    exit_by = time.monotonic() + settings.grace_seconds + SHUTDOWN_BOUND_SECONDS
    threading.Thread(target=_exit_at, args=(exit_by,), name="keel-exit-watchdog", daemon=True).start()
    running.stop()
    log.info("keel stopped")
    _flush_output()


def _exit_at(deadline: float) -> None:
    """Ends the process with status 0 at ``deadline`` if it is still alive then. Worker threads
    still inside a call that was cancelled at the grace (a long database query cannot be
    interrupted from here) would otherwise hold the interpreter's exit until they end; the
    database keeps its own atomicity, as after a crash."""
    threading.Event().wait(max(0.0, deadline - time.monotonic()))
    busy = [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    log.warning(
        "shutdown overran the grace period by %.1f s: exiting with %d thread(s) still busy",
        SHUTDOWN_BOUND_SECONDS, len(busy),
    )  # fmt: skip
    _flush_output()
    os._exit(0)


def _flush_output() -> None:
    """Flushes the log handlers, stdout and stderr (``os._exit`` would drop what they buffer)."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001, S110 - flushing is best effort on the way out
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110
            pass
