"""Starts the web console: the JSON API (``api.py``) and the static front end, on one HTTP port.

The static files live in ``static/`` inside the installed package (shipped in the wheel), so a
console needs no CDN and no internet: ``/`` is ``static/index.html``, ``/static/<path>`` any other
file. Paths are resolved strictly inside that folder (no ``..``, no symlinks out, no hidden
files, no directory listings); every answer carries an ETag so the browser revalidates cheaply,
and ``?v=<keel version>`` URLs may be cached for a year.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import ssl
from pathlib import Path

import grpc

import keel
import keel.exceptions as sdk_errors
from keel_server.common import errors as server_errors
from keel_server.common.config import Settings
from keel_server.common.gateway import Gateway
from keel_server.common.http import HTTPApp, MethodNotAllowed, Request, Response, Router, json_response
from keel_server.console import api

log = logging.getLogger("keel.console")

STATIC_ROOT = Path(__file__).resolve().parent / "static"
# Largest JSON body the API takes (tags, names, descriptions: small).
MAX_JSON_BODY = 1024 * 1024
# Content types the front end's files may have; anything else is application/octet-stream.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
}
# Every page and asset: same-origin only, no inline scripts, no framing.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; object-src 'none'; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_MAX_STATIC_BYTES = 64 * 1024 * 1024


def start_console(settings: Settings, gateway: Gateway, ssl_context: ssl.SSLContext | None = None) -> HTTPApp:
    """Serves the console on ``settings.host:settings.ui_port`` in background threads."""
    if settings.ui_identity_header and not settings.ui_token:
        raise ValueError(
            "KEEL_UI_IDENTITY_HEADER needs KEEL_UI_TOKEN: the token of an admin service account the "
            "console acts for the proxy's user with (docs/console.md)"
        )
    console = api.Console(gateway=gateway, settings=settings)
    app = HTTPApp(
        (settings.host, settings.ui_port),
        build_router(console),
        render_error,
        name="console",
        max_body=MAX_JSON_BODY,
        ssl_context=ssl_context,
        server_header=f"keel/{keel.__version__}",
    )
    return app.start()


def build_router(console: api.Console, static_root: Path = STATIC_ROOT) -> Router:
    router = Router()
    api.register(router, console)
    files = StaticFiles(static_root)
    router.add("GET", "/", files.index)
    router.add("GET", "/index.html", files.index)
    router.add("GET", "/static/{path:path}", files.serve)
    router.add("GET", "/favicon.ico", files.favicon)
    return router


class StaticFiles:
    """The front end's files, from one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def index(self, request: Request) -> Response:
        response = self._file(request, self.root / "index.html", "index.html")
        # The page itself is always revalidated: a new keel brings new asset URLs.
        response.headers["Cache-Control"] = "no-cache"
        return response

    def favicon(self, request: Request) -> Response:
        return self.serve_path(request, "favicon.ico")

    def serve(self, request: Request) -> Response:
        return self.serve_path(request, request.params["path"])

    def serve_path(self, request: Request, relative: str) -> Response:
        path = self.resolve(relative)
        response = self._file(request, path, relative)
        versioned = request.arg("v") == keel.__version__
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if versioned else "no-cache"
        return response

    def resolve(self, relative: str) -> Path:
        """``relative`` inside the root, or NotFound: no empty, absolute, hidden or ``..`` parts,
        no NUL or backslash, and the real path (symlinks followed) must stay inside the root."""
        parts = relative.split("/")
        if (
            not relative
            or "\x00" in relative
            or "\\" in relative
            or any(part in ("", ".", "..") or part.startswith(".") for part in parts)
        ):
            raise _missing(relative)
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise _missing(relative)
        return path

    def _file(self, request: Request, path: Path, name: str) -> Response:
        try:
            stat = path.stat()
        except OSError:
            raise _missing(name) from None
        if not path.is_file() or stat.st_size > _MAX_STATIC_BYTES:
            raise _missing(name)
        etag = '"' + hashlib.sha256(f"{stat.st_mtime_ns}:{stat.st_size}:{keel.__version__}".encode()).hexdigest()[:24] + '"'
        headers = dict(PAGE_HEADERS)
        headers["ETag"] = etag
        if etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]:
            return Response(304, b"", content_type_of(path), headers)
        with open(path, "rb") as f:
            body = f.read()
        return Response(200, body, content_type_of(path), headers)


def content_type_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed = mimetypes.guess_type(path.name)[0]
    return guessed or "application/octet-stream"


def _missing(name: str) -> server_errors.NotFound:
    return server_errors.NotFound(f"no file {os.path.basename(name) or name!r} in the console", reason="STATIC_NOT_FOUND")


def error_body(code: grpc.StatusCode, message: str, reason: str = "", metadata: dict[str, str] | None = None,
               field: str = "") -> Response:  # fmt: skip
    """The contract's error shape: ``{"error_code", "message", "reason"[, "field"][, "position"]}``
    with the HTTP status of ``keel.exceptions.MLFLOW_ERROR_CODES``; a filter parse error carries
    the 0-based ``position`` of the fault in the filter text."""
    name, status = sdk_errors.MLFLOW_ERROR_CODES.get(code, ("INTERNAL_ERROR", 500))
    body: dict[str, object] = {"error_code": name, "message": message, "reason": reason or name}
    if field:
        body["field"] = field
    metadata = metadata or {}
    for key in ("position", "current_version"):
        # position: only a filter's parse errors (order_by errors have one inside their item).
        if key in metadata and (key != "position" or field == "filter"):
            try:
                body[key] = int(metadata[key])
            except ValueError:
                pass
    headers = {"WWW-Authenticate": 'Bearer realm="keel"'} if status == 401 else {}
    headers["Cache-Control"] = "no-store"
    return json_response(body, status, headers)


def render_error(exc: Exception, request: Request | None) -> Response:
    """Any failure as the contract's error body; never a traceback."""
    if isinstance(exc, MethodNotAllowed):
        return json_response({"error_code": "BAD_REQUEST", "message": exc.message, "reason": exc.reason}, 405)
    if isinstance(exc, server_errors.KeelError):
        return error_body(exc.code, exc.message, exc.reason, exc.metadata, exc.field or "")
    if isinstance(exc, sdk_errors.KeelError):
        return error_body(exc.code, exc.message, exc.reason, exc.metadata, exc.field)
    where = f"{request.method} {request.path}" if request is not None else "request"
    log.exception("console %s failed", where)
    return error_body(grpc.StatusCode.INTERNAL, "internal error; the server log has the details", "INTERNAL")
