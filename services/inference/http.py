"""MLflow's HTTP scoring protocol on an optional port of the inference process.

``GET /ping`` and ``GET /health`` (200 when every deployment is ready, else 503; /health lists
the deployments' states), ``GET /version``, ``POST /invocations`` with ``application/json``
(MLflow's formats) or ``text/csv``, answering ``{"predictions": ...}``. The headers
``X-Keel-Model-Name`` / ``X-Keel-Model-Version`` say which version answered.

With one deployment ``/invocations`` serves it; with several, name it with
``/deployments/<name>/invocations``, ``?deployment=<name>`` or an ``X-Keel-Deployment`` header.
Errors are ``{"error_code": ..., "message": ...}`` as MLflow writes them, with 400 for bad
input, 404 for an unknown deployment, 413 for an oversize body, 415 for an unsupported
content type and 503 for a deployment that is not ready.

The server is the standard library's threading HTTP/1.1 server (keep-alive, no Nagle delay):
no extra dependency, and the model call, not the HTTP parsing, dominates a request.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import grpc

import keel
from keel_server.auth import policy
from keel_server.common.errors import InvalidArgument, KeelError, ResourceExhausted
from keel_server.common.interceptors import translate
from keel_server.common.tls import TLSServerMixin, scheme
from keel_server.inference import codecs
from keel_server.inference.runtime import InferenceRuntime

if TYPE_CHECKING:
    from keel_server.auth.gate import Gate

log = logging.getLogger("keel.inference.http")
# The gRPC calls whose permission rules the HTTP routes share: scoring is Predict, /health is a
# server probe (any authenticated caller).
PREDICT_METHOD = policy.INFERENCE + "Predict"
AUTHENTICATED_PROBE = policy.KSERVE + "ServerReady"

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.FAILED_PRECONDITION: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
}
# MLflow's error_code names for the statuses above.
_MLFLOW_CODE = {
    400: "BAD_REQUEST",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    503: "TEMPORARILY_UNAVAILABLE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
}


class _UnsupportedMediaType(InvalidArgument):
    pass


class ScoringServer(TLSServerMixin, ThreadingHTTPServer):
    """Plain HTTP, or https when given the server's TLS context (``keel_server.common.tls``)."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        runtime: InferenceRuntime,
        max_body: int,
        reuse_port: bool,
        ssl_context: ssl.SSLContext | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.runtime = runtime
        # Auth (keel server --auth): the same checks as the gRPC Predict call.
        self.gate = gate if gate is not None and gate.auth else None
        self.max_body = max_body
        self.reuse_port = reuse_port
        self.ssl_context = ssl_context
        super().__init__(address, ScoringHandler)

    def server_bind(self) -> None:
        if self.reuse_port:
            # N worker processes share one port; the kernel spreads connections over them.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class ScoringHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: ScoringServer
    server_version = f"keel/{keel.__version__}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    # -- routes ----------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = urlsplit(self.path).path
        runtime = self.server.runtime
        if path == "/ping":
            ok = runtime.all_ready() and bool(runtime.views())
            self._send(200 if ok else 503, b"\n", "text/plain")
        elif path == "/health":
            try:
                self._authorize(AUTHENTICATED_PROBE, "")
            except KeelError as exc:
                self._refuse(exc)
                return
            views = runtime.views()
            ok = bool(views) and runtime.all_ready()
            body = {
                "status": "ok" if ok else "unavailable",
                "deployments": [
                    {
                        "name": v.name,
                        "state": v.state,
                        "message": v.message,
                        "model_name": v.model_name,
                        "model_version": v.version,
                    }
                    for v in views
                ],
            }
            self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
        elif path == "/version":
            self._send(200, keel.__version__.encode(), "text/plain")
        else:
            self._error(
                404,
                "RESOURCE_DOES_NOT_EXIST",
                f"no route GET {path}; use /ping, /health, /version or POST /invocations",
            )

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        parts = urlsplit(self.path)
        path = parts.path
        name = ""
        if path.startswith("/deployments/") and path.endswith("/invocations"):
            name = path[len("/deployments/") : -len("/invocations")]
        elif path != "/invocations":
            self._discard_body()
            self._error(404, "RESOURCE_DOES_NOT_EXIST", f"no route POST {path}; use /invocations")
            return
        name = (
            name
            or parse_qs(parts.query).get("deployment", [""])[0]
            or self.headers.get("X-Keel-Deployment", "")
        )
        try:
            self._authorize(PREDICT_METHOD, name)
        except KeelError as exc:
            self.close_connection = True  # the body of a refused request is never read
            self._refuse(exc)
            return
        try:
            self._invocations(name)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an HTTP error body
            error = translate(exc)
            if error is None:
                log.exception("POST %s failed", path)
                error = KeelError("internal error; the server log has the details")
            status = 415 if isinstance(error, _UnsupportedMediaType) else _HTTP_STATUS.get(error.code, 500)
            self._error(
                status, _MLFLOW_CODE.get(status, "INTERNAL_ERROR"), error.message, reason=error.reason
            )

    def _authorize(self, method: str, deployment: str) -> None:
        """UNAUTHENTICATED or PERMISSION_DENIED (as for gRPC) unless auth is off or the caller may
        call ``method`` on ``deployment`` (the only one when none is named)."""
        gate = self.server.gate
        if gate is None:
            return
        if not deployment and method == PREDICT_METHOD:
            views = self.server.runtime.views()
            deployment = views[0].name if len(views) == 1 else ""
        entered = gate.enter(
            method,
            {"authorization": self.headers.get("Authorization", "")},
            None,
            SimpleNamespace(deployment=deployment),
            peer=f"ipv4:{self.client_address[0]}:{self.client_address[1]}",
            certificate_name=_certificate_name(self.connection),
        )
        gate.leave(entered, True)

    def _refuse(self, exc: KeelError) -> None:
        status = _HTTP_STATUS.get(exc.code, 500)
        headers = {"WWW-Authenticate": 'Bearer realm="keel"'} if status == 401 else None
        body = {"error_code": _MLFLOW_CODE.get(status, "INTERNAL_ERROR"), "message": exc.message, "reason": exc.reason}
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _invocations(self, name: str) -> None:
        runtime = self.server.runtime
        length = self._content_length()
        if length > self.server.max_body:
            self.close_connection = True  # the unread body would be taken for the next request
            raise ResourceExhausted(
                f"the request body is {length} bytes, over the limit of {self.server.max_body}; split the batch",
                reason="PAYLOAD_TOO_LARGE",
            )
        body = self.rfile.read(length) if length else b""
        if not name:
            views = runtime.views()
            if len(views) != 1:
                raise InvalidArgument(
                    f"this server has {len(views)} deployments ({', '.join(v.name for v in views)}); name one with "
                    "/deployments/<name>/invocations, ?deployment=<name> or the X-Keel-Deployment header",
                    reason="DEPLOYMENT_REQUIRED",
                )
            name = views[0].name
        content_type = self.headers.get("Content-Type", "")
        media, _, options = content_type.partition(";")
        media = media.strip().lower()
        charset = options.strip().lower()
        if charset and charset.replace(" ", "") not in ("charset=utf-8", "charset=utf8"):
            raise _UnsupportedMediaType(
                f"unsupported content type parameter {charset!r}: only charset=utf-8 is accepted",
                reason="UNSUPPORTED_MEDIA_TYPE",
            )
        dep, served = runtime.model_for(name)
        if media == "application/json":
            data, params = codecs.parse_json(body, served.input_schema)
        elif media == "text/csv":
            data, params = codecs.parse_csv(body), None
        else:
            raise _UnsupportedMediaType(
                f"unsupported Content-Type {content_type!r}: use application/json or text/csv",
                reason="UNSUPPORTED_MEDIA_TYPE",
            )
        output = runtime.predict(dep, served, data, params)
        headers = {"X-Keel-Model-Name": served.model_name, "X-Keel-Model-Version": str(served.version)}
        self._send(200, codecs.predictions_json(output).encode(), "application/json", headers)

    # -- helpers ---------------------------------------------------------------------------

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                self.close_connection = True
                raise InvalidArgument(
                    "chunked request bodies are not supported: send Content-Length", reason="LENGTH_REQUIRED"
                )
            return 0
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise InvalidArgument(f"Content-Length {raw!r} is not a byte count", reason="BAD_CONTENT_LENGTH")
        return length

    def _discard_body(self) -> None:
        try:
            length = self._content_length()
        except KeelError:
            return
        if length <= self.server.max_body:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, reason: str = "") -> None:
        body = {"error_code": code, "message": message}
        if reason:
            body["reason"] = reason
        self._send(status, json.dumps(body).encode(), "application/json")


def start_http_server(
    runtime: InferenceRuntime,
    host: str,
    port: int,
    max_body: int,
    reuse_port: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    gate: Gate | None = None,
) -> ScoringServer:
    """Binds and serves on a background thread (https with ``ssl_context``); ``stop()`` shuts it
    down."""
    server = ScoringServer((host, port), runtime, max_body, reuse_port, ssl_context, gate)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="keel-http", daemon=True
    )
    thread.start()
    log.info("MLflow-compatible scoring on %s://%s:%d", scheme(ssl_context), host, server.server_address[1])
    return server


def _certificate_name(connection: Any) -> str | None:
    """The common name of a verified client certificate (mutual TLS), else None."""
    getpeercert = getattr(connection, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        certificate = getpeercert()
    except ValueError:  # the handshake has not completed
        return None
    for rdn in (certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
