"""The port's own endpoints: ``/health``, ``/version`` (as ``mlflow server`` answers them) and
``/api/2.0/keel/server-info``, where the keel SDK given an ``http://`` tracking URI learns the
gRPC address to use instead."""

from __future__ import annotations

import keel
from keel_server.common.http import Request, Response, json_response
from keel_server.mlflow_port.core import Port, endpoint

# The MLflow version whose REST API this port follows (what /version answers: the mlflow client
# compares it for feature checks).
MLFLOW_API_VERSION = "3.1.0"


@endpoint("GET", "/health")
def health(port: Port, request: Request) -> Response:
    return Response(200, b"OK", "text/plain")


@endpoint("GET", "/version")
def version(port: Port, request: Request) -> Response:
    return Response(200, MLFLOW_API_VERSION.encode(), "text/plain")


@endpoint("GET", "/api/2.0/keel/server-info")
def server_info(port: Port, request: Request) -> Response:
    """Where keel's gRPC services answer, as seen by this caller: the host it used to reach this
    port (a server bound to 0.0.0.0 has no better name for itself) and the gRPC port, or the
    configured tracking address when the services run apart."""
    configured = port.settings.tracking_address
    if configured:
        uri = configured
    else:
        host = (request.headers.get("Host") or port.settings.host).strip()
        if host.startswith("["):
            host = host[: host.index("]") + 1]
        else:
            host = host.rsplit(":", 1)[0]
        scheme = "grpcs" if port.settings.tls_enabled else "grpc"
        uri = f"{scheme}://{host}:{port.grpc_port}"
    return json_response({"grpc_uri": uri, "keel_version": keel.__version__, "mlflow_api_version": MLFLOW_API_VERSION})
