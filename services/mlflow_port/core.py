"""What every MLflow REST route shares: the caller's credentials as gRPC metadata, MLflow's way
of passing arguments (query string for GET, JSON body otherwise), and MLflow's error shape.

A route is a function ``(port, request) -> Response`` registered with ``@endpoint(METHOD, PATH)``
in one of the route modules (``tracking``, ``registry``, ``artifacts``, ``logged_models``); it
turns the MLflow request into keel gRPC calls through ``port.call`` and the answers back into
MLflow's JSON. It never touches a store, so permissions, validation and the audit log are the
gRPC services' own.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote as url_quote
from urllib.parse import unquote as url_unquote

import grpc

import keel.exceptions as sdk_errors
from keel_server.common import errors as server_errors
from keel_server.common.config import Settings
from keel_server.common.gateway import Gateway
from keel_server.common.http import MethodNotAllowed, Request, Response, Router, json_response

log = logging.getLogger("keel.mlflow_port")

API = "/api/2.0/mlflow"
# MLflow's UI and some clients call the same endpoints under /ajax-api.
AJAX_API = "/ajax-api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts"
# Largest JSON body accepted (log-batch is capped at 1 MB by MLflow; registry bodies are small).
MAX_JSON_BODY = 16 * 1024 * 1024

# Query arguments MLflow repeats (``?experiment_ids=1&experiment_ids=2``): always lists.
LIST_ARGS = frozenset({"experiment_ids", "order_by", "run_ids", "model_ids", "metric_keys", "stages"})

Route = Callable[["Port", Request], Response]


@dataclass
class Port:
    """The MLflow REST port's shared state, handed to every route."""

    gateway: Gateway
    settings: Settings
    # The gRPC URI a client on this port's host reaches keel at (for /api/2.0/keel/server-info).
    grpc_port: int
    router: Router = field(default_factory=Router)

    def call(self, request: Request, service: str, method: str, message: Any) -> Any:
        """A unary keel call made with the HTTP caller's credentials."""
        return self.gateway.call(service, method, message, caller_metadata(request))

    def stream(self, request: Request, service: str, method: str, message: Any) -> Iterator[Any]:
        return self.gateway.stream(service, method, message, caller_metadata(request))

    def upload(self, request: Request, service: str, method: str, messages: Iterator[Any]) -> Any:
        return self.gateway.upload(service, method, messages, caller_metadata(request))


# Route modules register here at import; ``app.build_router`` binds them to a Port.
_ENDPOINTS: list[tuple[str, str, Route]] = []


def endpoint(method: str, path: str, *, ajax: bool = True) -> Callable[[Route], Route]:
    """Registers ``route`` for ``method`` on ``path`` (relative to ``/api/2.0/mlflow`` unless it
    starts with ``/``), and under ``/ajax-api`` too."""

    def decorate(route: Route) -> Route:
        if path.startswith("/"):
            _ENDPOINTS.append((method, path, route))
        else:
            _ENDPOINTS.append((method, f"{API}/{path}", route))
            if ajax:
                _ENDPOINTS.append((method, f"{AJAX_API}/{path}", route))
        return route

    return decorate


def registered_endpoints() -> list[tuple[str, str, Route]]:
    return list(_ENDPOINTS)


def caller_metadata(request: Request) -> list[tuple[str, str]]:
    """The HTTP caller's credentials as keel call metadata: ``Authorization: Bearer T`` passes
    through; basic auth (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) uses the password as the keel
    token, the user name being informational. A request id passes through too."""
    metadata: list[tuple[str, str]] = []
    header = request.headers.get("Authorization", "").strip()
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer" and credential:
        metadata.append(("authorization", f"Bearer {credential}"))
    elif scheme.lower() == "basic" and credential:
        try:
            decoded = base64.b64decode(credential, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise server_errors.Unauthenticated(
                "the basic credentials are not valid base64 of user:password", reason="MALFORMED_CREDENTIALS"
            ) from None
        password = decoded.partition(":")[2]
        if password:
            metadata.append(("authorization", f"Bearer {password}"))
    elif header:
        metadata.append(("authorization", header))  # the server says what is wrong with it
    request_id = getattr(request, "request_id", "") or request.headers.get("X-Request-Id", "").strip()[:128]
    if request_id:
        metadata.append(("x-request-id", request_id))
    return metadata


def args(request: Request) -> dict[str, Any]:
    """MLflow's arguments: the query string for GET and DELETE-with-query, else the JSON body
    (merged over the query string: the client sends some DELETEs with a body)."""
    merged: dict[str, Any] = {}
    for key, values in request.query.items():
        merged[key] = values if key in LIST_ARGS else values[-1]
    if request.method in ("GET", "HEAD"):
        return merged
    merged.update(request.json(MAX_JSON_BODY))
    return merged


def required(data: dict[str, Any], name: str, kind: type = str) -> Any:
    """The argument ``name``; INVALID_PARAMETER_VALUE (as MLflow words it) when missing or mistyped."""
    value = data.get(name)
    if value is None or value == "":
        raise server_errors.InvalidArgument(
            f"Missing value for required parameter '{name}'. See the API docs for more information about "
            "request parameters.",
            reason="MISSING_PARAMETER",
            field=name,
        )
    return typed(name, value, kind)


def optional(data: dict[str, Any], name: str, kind: type = str, default: Any = None) -> Any:
    value = data.get(name)
    if value is None or value == "":
        return default
    return typed(name, value, kind)


def typed(name: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind``: numbers may come as JSON strings (the query string, proto3 JSON int64)."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false"):
                return str(value).lower() == "true"
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind is str:
            if isinstance(value, dict | list):
                raise ValueError(value)
            return str(value)
        if kind is list:
            if isinstance(value, str):
                return [value]
            if not isinstance(value, list):
                raise ValueError(value)
            return value
        if kind is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise server_errors.InvalidArgument(
        f"Invalid value {server_errors.quote(value)} for parameter '{name}' supplied: expected {kind.__name__}",
        reason="INVALID_PARAMETER",
        field=name,
    )


def ok(payload: dict[str, Any] | None = None) -> Response:
    return json_response(payload or {})


def error_response(code: grpc.StatusCode, message: str, reason: str = "") -> Response:
    """MLflow's error body ``{"error_code", "message"}`` (keel's reason alongside) and its HTTP status."""
    name, status = sdk_errors.MLFLOW_ERROR_CODES.get(code, ("INTERNAL_ERROR", 500))
    body: dict[str, Any] = {"error_code": name, "message": message}
    if reason:
        body["reason"] = reason
    headers = {"WWW-Authenticate": 'Basic realm="keel", Bearer realm="keel"'} if status == 401 else None
    return json_response(body, status, headers)


def render_error(exc: Exception, request: Request | None) -> Response:
    """Any failure of a route as MLflow's error shape; never a traceback."""
    if isinstance(exc, MethodNotAllowed):
        body = {"error_code": "BAD_REQUEST", "message": exc.message, "reason": exc.reason}
        return json_response(body, 405)
    if isinstance(exc, server_errors.NotFound) and exc.reason == "ENDPOINT_NOT_FOUND":
        return json_response({"error_code": "ENDPOINT_NOT_FOUND", "message": exc.message}, 404)
    if isinstance(exc, server_errors.KeelError | sdk_errors.KeelError):
        message = exc.message
        if exc.code == grpc.StatusCode.UNAUTHENTICATED:
            message += (
                " (an mlflow client sends a keel token with MLFLOW_TRACKING_TOKEN, or as the password of "
                "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)"
            )
        return error_response(exc.code, message, exc.reason)
    where = f"{request.method} {request.path}" if request is not None else "request"
    log.exception("MLflow REST %s failed", where)
    return error_response(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")


# -- where artifacts live, as the mlflow client sees them ---------------------------------------
# A run's artifact_uri on this port is ``mlflow-artifacts:/<experiment_id>/<run_id>/artifacts``
# (MLflow's own layout under --artifacts-destination), so the client uploads and downloads through
# ``/api/2.0/mlflow-artifacts/artifacts/<experiment_id>/<run_id>/artifacts/<path>``, which maps to
# keel's ``ArtifactRef(run_id, path)``: run permissions and keel's path checks apply.
ARTIFACTS_SCHEME = "mlflow-artifacts:"


def run_artifact_uri(experiment_id: str, run_id: str) -> str:
    return f"{ARTIFACTS_SCHEME}/{experiment_id}/{run_id}/artifacts"


@dataclass(frozen=True)
class ProxyPath:
    """A path under the artifact proxy, split into the run it belongs to and the path inside it."""

    experiment_id: str
    run_id: str
    path: str  # '' for the run's artifact root


def parse_proxy_path(raw: str) -> ProxyPath:
    """``<experiment_id>/<run_id>/artifacts[/<path>]`` → ProxyPath; INVALID_PARAMETER_VALUE for any
    other shape (keel keeps no artifacts outside runs)."""
    parts = raw.strip("/").split("/", 3)
    if len(parts) < 3 or parts[2] != "artifacts" or not parts[0] or not parts[1]:
        raise server_errors.InvalidArgument(
            f"artifact path {server_errors.quote(raw)} is not under a run: keel's MLflow port serves "
            "<experiment_id>/<run_id>/artifacts/<path> (the artifact_uri of a run)",
            reason="ARTIFACT_PATH_OUTSIDE_RUN",
        )
    return ProxyPath(parts[0], parts[1], parts[3] if len(parts) == 4 else "")


# A registered model version's files are keel's registry snapshot, outside any run, so they have
# a proxy path of their own: ``mlflow-artifacts:/model-versions/<name>/<version>[/<path>]`` (what
# ``model-versions/get-download-uri`` answers; the name percent-encoded). Experiment ids are
# decimal, so the first segment tells it from a run's path. The artifact routes resolve it with
# ``registry.model_version_artifact_ref``.
MODEL_VERSIONS_PROXY = "model-versions"


def model_version_artifact_uri(name: str, version: int | str) -> str:
    return f"{ARTIFACTS_SCHEME}/{MODEL_VERSIONS_PROXY}/{url_quote(name, safe='')}/{version}"


@dataclass(frozen=True)
class ModelVersionPath:
    """A path under the artifact proxy inside a registered model version's files."""

    name: str
    version: int
    path: str  # '' for the version's root


def parse_model_version_proxy_path(raw: str) -> ModelVersionPath | None:
    """``model-versions/<name>/<version>[/<path>]`` → ModelVersionPath; None for any other path
    (a run's: ``parse_proxy_path``). The name is percent-decoded here: a download URL reaches the
    route decoded once already and a listing's ``?path=`` keeps the URI's encoding, and decoding
    again only changes a name holding a literal ``%XX``."""
    parts = raw.strip("/").split("/", 3)
    if parts[0] != MODEL_VERSIONS_PROXY:
        return None
    if len(parts) < 3 or not parts[1] or not (parts[2].isascii() and parts[2].isdigit()):
        raise server_errors.InvalidArgument(
            f"artifact path {server_errors.quote(raw)} is not a model version's: keel's MLflow port serves "
            f"{MODEL_VERSIONS_PROXY}/<name>/<version>/<path> (a registered model version's download URI)",
            reason="INVALID_MODEL_VERSION_PATH",
        )
    return ModelVersionPath(url_unquote(parts[1]), int(parts[2]), parts[3] if len(parts) == 4 else "")
