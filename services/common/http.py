"""The HTTP plumbing keel's JSON endpoints share (the MLflow REST port and the web console).

``Router`` maps a method and a path pattern (``/api/runs/{run_id}/tags/{key}``, or
``{name:path}`` for a tail that may hold slashes) to a handler function ``(Request) -> Response``.
``HTTPApp`` is the standard library's threading HTTP/1.1 server (keep-alive, TLS through
``TLSServerMixin``) dispatching to a router; each app says how to render its errors.

Bodies are read only when a handler asks (``Request.json()``, ``Request.stream()``), so an
upload streams through in chunks, and a response body may be an iterator of chunks (sent with
``Content-Length`` when known, else chunked), so a download never sits whole in memory.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import ssl
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from keel_server.common.errors import (
    InvalidArgument,
    KeelError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from keel_server.common.tls import TLSServerMixin, scheme

log = logging.getLogger("keel.http")

# Seconds a connection may stay silent (idle keep-alive, or stalled mid-upload) before it is closed.
IDLE_TIMEOUT_S = 120.0
# How much of an upload body is read per chunk.
STREAM_CHUNK_BYTES = 1024 * 1024


class MethodNotAllowed(KeelError):
    """A known path called with a method it does not take (HTTP 405)."""


@dataclass
class Response:
    status: int = 200
    # bytes, or an iterator of chunks (streamed; sized by ``length`` when known).
    body: bytes | Iterable[bytes] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None


def json_number(value: float) -> float | str:
    """A double as proto JSON writes it: NaN and ±infinity as strings (JSON has no literal)."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode(), "application/json", headers or {})


class Request:
    """One HTTP request as a handler sees it: path parameters, query arguments, headers, and the
    body read on demand."""

    def __init__(self, handler: RequestHandler, method: str, path: str, query: str, params: dict[str, str]) -> None:
        self._handler = handler
        self.method = method
        self.path = path
        self.params = params
        self.query: dict[str, list[str]] = parse_qs(query, keep_blank_values=True)
        self.headers = handler.headers
        # One id for every gRPC call this request makes (the caller's own when it sent one).
        self.request_id = (self.headers.get("X-Request-Id") or "").strip()[:128] or uuid.uuid4().hex
        self._body_read = False
        # Bytes of a body that ``stream()`` started and has not yet read (drained or the
        # connection closed by ``discard_body`` when a handler stops early).
        self._stream_left = 0

    @property
    def client_address(self) -> tuple[str, int]:
        return self._handler.client_address  # type: ignore[return-value]

    @property
    def connection(self) -> Any:
        return self._handler.connection

    def arg(self, name: str, default: str = "") -> str:
        """The last value of query argument ``name``."""
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        """Every value of a repeated query argument."""
        return list(self.query.get(name, []))

    def content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                self._handler.close_connection = True
                raise InvalidArgument(
                    "chunked request bodies are not supported: send Content-Length", reason="LENGTH_REQUIRED"
                )
            return 0
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self._handler.close_connection = True
            raise InvalidArgument(f"Content-Length {raw!r} is not a byte count", reason="BAD_CONTENT_LENGTH")
        return length

    def body(self, limit: int) -> bytes:
        """The whole body; RESOURCE_EXHAUSTED over ``limit`` bytes (the connection is then closed,
        as the unread body would be taken for the next request)."""
        length = self.content_length()
        if length > limit:
            self._handler.close_connection = True
            raise ResourceExhausted(
                f"the request body is {length} bytes, over the limit of {limit}", reason="PAYLOAD_TOO_LARGE"
            )
        self._body_read = True
        return self._handler.rfile.read(length) if length else b""

    def json(self, limit: int) -> dict[str, Any]:
        """The body as a JSON object ({} when empty)."""
        raw = self.body(limit)
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidArgument(f"the request body is not valid JSON: {exc}", reason="MALFORMED_JSON") from None
        if not isinstance(value, dict):
            raise InvalidArgument("the request body must be a JSON object", reason="MALFORMED_JSON")
        return value

    def stream(self, chunk_bytes: int = STREAM_CHUNK_BYTES) -> Iterator[bytes]:
        """The body in chunks of at most ``chunk_bytes`` (flat memory for any size)."""
        remaining = self.content_length()
        self._body_read = True
        self._stream_left = remaining
        rfile = self._handler.rfile
        while remaining > 0:
            chunk = rfile.read(min(chunk_bytes, remaining))
            if not chunk:
                self._stream_left = 0
                self._handler.close_connection = True
                raise InvalidArgument(
                    f"the request body ended {remaining} bytes early", reason="TRUNCATED_BODY"
                )
            remaining -= len(chunk)
            self._stream_left = remaining
            yield chunk

    def discard_body(self, limit: int) -> None:
        """Reads and drops an unread body up to ``limit`` bytes (else closes the connection) so a
        keep-alive connection stays in step after an early error."""
        if self._stream_left:  # a stream() the handler stopped reading
            left, self._stream_left = self._stream_left, 0
            if left > limit:
                self._handler.close_connection = True
                return
            while left > 0:
                dropped = self._handler.rfile.read(min(STREAM_CHUNK_BYTES, left))
                if not dropped:
                    self._handler.close_connection = True
                    return
                left -= len(dropped)
            return
        if self._body_read:
            return
        self._body_read = True
        try:
            length = self.content_length()
        except KeelError:
            return
        if 0 < length <= limit:
            self._handler.rfile.read(length)
        elif length > limit:
            self._handler.close_connection = True


Handler = Callable[[Request], Response]
_PARAM = re.compile(r"\{(\w+)(?::path)?\}")


class Router:
    """Method + path pattern → handler. ``{name}`` matches one path segment, ``{name:path}`` the
    rest of the path; both are percent-decoded."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = ""
        position = 0
        for match in _PARAM.finditer(pattern):
            regex += re.escape(pattern[position : match.start()])
            tail = match.group(0).endswith(":path}")
            regex += f"(?P<{match.group(1)}>{'.*' if tail else '[^/]+'})"
            position = match.end()
        regex += re.escape(pattern[position:])
        self._routes.append((method.upper(), re.compile(regex + r"\Z"), handler))

    def route(self, method: str, *patterns: str) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            for pattern in patterns:
                self.add(method, pattern, handler)
            return handler

        return decorate

    def include(self, other: Router) -> None:
        self._routes.extend(other._routes)

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and its path parameters; NotFound for an unknown path, MethodNotAllowed
        for a known path with another method."""
        allowed: list[str] = []
        for route_method, regex, handler in self._routes:
            found = regex.match(path)
            if found is None:
                continue
            if route_method == method:
                return handler, {k: unquote(v) for k, v in found.groupdict().items()}
            allowed.append(route_method)
        if allowed:
            raise MethodNotAllowed(
                f"{method} is not allowed on {path}; use {' or '.join(sorted(set(allowed)))}",
                reason="METHOD_NOT_ALLOWED",
            )
        raise NotFound(f"no endpoint {method} {path}", reason="ENDPOINT_NOT_FOUND")


ErrorRenderer = Callable[[Exception, Request | None], Response]


class HTTPApp(TLSServerMixin, ThreadingHTTPServer):
    """A threading HTTP/1.1 server over one router (https with ``ssl_context``)."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        router: Router,
        render_error: ErrorRenderer,
        *,
        name: str,
        max_body: int = 64 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        server_header: str = "keel",
    ) -> None:
        self.router = router
        self.render_error = render_error
        self.app_name = name
        self.max_body = max_body
        self.ssl_context = ssl_context
        self.server_header = server_header
        # Bound to loopback, the app answers loopback names only: a web page the user visits
        # cannot reach it by rebinding its own DNS name to 127.0.0.1 (DNS rebinding).
        self.loopback_only = _is_loopback(address[0])
        super().__init__(address, RequestHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> HTTPApp:
        """Serves on a daemon thread; returns self."""
        thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.5}, name=f"keel-{self.app_name}", daemon=True
        )
        thread.start()
        log.info("%s on %s://%s:%d", self.app_name, scheme(self.ssl_context), self.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Seconds a connection may sit idle or stall mid-body before its thread gives up on it.
    timeout = IDLE_TIMEOUT_S
    server: HTTPApp

    @property
    def server_version(self) -> str:  # type: ignore[override]
        return self.server.server_header

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib names
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        request: Request | None = None
        try:
            host = self.headers.get("Host", "")
            # (No Host header at all is an HTTP/1.0 client, never a browser: DNS rebinding needs one.)
            if self.server.loopback_only and host and not _is_loopback(_host_name(host)):
                raise PermissionDenied(
                    f"Host {self.headers.get('Host', '')!r} is not a loopback name and this server listens on "
                    "loopback only: use localhost or 127.0.0.1 (to serve other names, bind --host to them)",
                    reason="HOST_NOT_ALLOWED",
                )
            match_method = "GET" if method == "HEAD" else method
            handler, params = self.server.router.match(match_method, parts.path)
            request = Request(self, method, parts.path, parts.query, params)
            response = handler(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error body
            if request is None:
                request = Request(self, method, parts.path, parts.query, {})
            request.discard_body(self.server.max_body)
            response = self.server.render_error(exc, request)
        else:
            request.discard_body(self.server.max_body)
        try:
            self._send(response, head_only=method == "HEAD")
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    def _send(self, response: Response, head_only: bool) -> None:
        body = response.body
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if isinstance(body, bytes | bytearray | memoryview):
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head_only:
                self.wfile.write(body)
            return
        chunks = iter(body)
        if response.length is not None:
            self.send_header("Content-Length", str(response.length))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if head_only:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            return
        sent = 0
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                if response.length is None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                else:
                    self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError) as exc:
            log.debug("client of %s went away after %d bytes: %s", self.path, sent, exc)
            self.close_connection = True
            return
        except Exception:
            # Headers are out: the only honest signal left is a cut connection.
            log.exception("streaming %s failed after %d bytes", self.path, sent)
            self.close_connection = True
            return
        if response.length is None:
            self.wfile.write(b"0\r\n\r\n")
        elif sent != response.length:
            self.close_connection = True


def _host_name(header: str) -> str:
    """The host of a Host header (``[::1]:80`` → ``::1``, ``a:80`` → ``a``)."""
    header = header.strip()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
