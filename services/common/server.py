"""One server runtime for every keel service.

``build_server`` puts any subset of the services on one gRPC server, with health checking (a
status per service), reflection, the error/request-id interceptor and raised message limits.
``serve`` runs it until SIGTERM or SIGINT, then drains in-flight calls for
``settings.grace_seconds``.
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keel_server.common import db as dbmod
from keel_server.common.app import App
from keel_server.common.config import Settings
from keel_server.common.interceptors import KeelServerInterceptor
from keel_server.common.memory import tune_allocator
from keel_server.common.metrics import serve_metrics
from keel_server.common.migrations import ensure_current

log = logging.getLogger("keel.server")

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

    def stop(self, grace: float | None = None) -> None:
        """Marks every service NOT_SERVING, drains in-flight calls, then runs shutdown hooks."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.app.settings.grace_seconds if grace is None else grace).wait()
        for hook in reversed(self.app.shutdown_hooks):
            try:
                hook()
            except Exception:  # noqa: BLE001 - shutdown must go on
                log.exception("shutdown hook failed")


def open_app(settings: Settings) -> App:
    """Opens the database (creating or checking its schema) and returns the shared state.

    Raises ``SchemaOutdated`` for an older schema and peewee errors for an unreachable DB.
    """
    database = dbmod.initialize(settings.db_url, max_connections=settings.max_workers + 8)
    ensure_current(database)
    return App(settings=settings, database=database)


def build_server(settings: Settings, app: App | None = None) -> RunningServer:
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
        interceptors=[KeelServerInterceptor()],
        options=options,
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    service_names: list[str] = []
    for name in settings.services:
        module = importlib.import_module(SERVICE_MODULES[name])
        service_names.extend(module.add_to_server(server, app))
    for full_name in service_names:
        health_servicer.set(full_name, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port} (address in use or not available)")
    server.start()
    if settings.metrics_port:
        serve_metrics(settings.host, settings.metrics_port)
    log.info("keel listening", extra={"port": port, "service": ",".join(settings.services)})
    return RunningServer(
        server=server, port=port, app=app, health=health_servicer, service_names=service_names
    )


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
    stop_requested.wait()
    running.stop()
    log.info("keel stopped")
