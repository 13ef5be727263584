"""Starts the MLflow REST port: binds every registered route to one ``Port`` and serves it."""

from __future__ import annotations

import importlib
import ssl

import keel
from keel_server.common.config import Settings
from keel_server.common.gateway import Gateway
from keel_server.common.http import HTTPApp, Request, Response, Router
from keel_server.mlflow_port import core

# Each module registers its routes with ``core.endpoint`` when imported.
ROUTE_MODULES = (
    "keel_server.mlflow_port.meta",
    "keel_server.mlflow_port.tracking",
    "keel_server.mlflow_port.registry",
    "keel_server.mlflow_port.artifacts",
    "keel_server.mlflow_port.logged_models",
)


def build_router(port: core.Port) -> Router:
    for module in ROUTE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    router = Router()
    for method, path, route in core.registered_endpoints():
        router.add(method, path, _bind(port, route))
    return router


def _bind(port: core.Port, route: core.Route):  # -> Handler
    def handler(request: Request) -> Response:
        return route(port, request)

    return handler


def start_mlflow_port(
    settings: Settings,
    gateway: Gateway,
    grpc_port: int,
    ssl_context: ssl.SSLContext | None = None,
) -> HTTPApp:
    """Serves MLflow's REST API on ``settings.mlflow_port`` (0 picks a free port) in background threads."""
    port = core.Port(gateway=gateway, settings=settings, grpc_port=grpc_port)
    router = build_router(port)
    app = HTTPApp(
        (settings.host, settings.mlflow_port),
        router,
        core.render_error,
        name="mlflow-rest-port",
        max_body=core.MAX_JSON_BODY,
        ssl_context=ssl_context,
        server_header=f"keel/{keel.__version__}",
    )
    return app.start()
