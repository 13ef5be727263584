"""The SDK's transport: one gRPC channel per tracking URI, default deadlines, retries of
UNAVAILABLE on idempotent calls only, raised message limits, and status → typed error mapping.

Facade code calls ``transport(uri).call(stub.Method, request, idempotent=...)`` and never sees a
raw ``grpc.RpcError``.

Every channel comes from ``open_channel``: ``grpcs://`` URIs get TLS (``KEEL_TLS_CA`` for a private
CA, ``KEEL_TLS_CLIENT_CERT``/``KEEL_TLS_CLIENT_KEY`` for mutual TLS, read when the channel is
made), and every call on it, unary or streaming, carries the tracking token (``set_tracking_token``
/ ``KEEL_TRACKING_TOKEN``, read at call time) as ``authorization: Bearer <token>``.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from keel.channels import (  # noqa: F401 - re-exported: the SDK's modules and tests use them from here
    MAX_MESSAGE_BYTES,
    TLS_CA_VARIABLE,
    TLS_CLIENT_CERT_VARIABLE,
    TLS_CLIENT_KEY_VARIABLE,
    _has_replicas,
    channel_credentials,
    open_plain_channel,
    parse_target,
)
from keel.exceptions import InvalidArgument, KeelError, from_rpc_error

DEFAULT_TRACKING_URI = "grpc://127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 60.0
# Retries of UNAVAILABLE for idempotent calls: they go on for up to RETRY_BUDGET_S seconds after
# the first failure (long enough to cover a server restart), waiting RETRY_BASE_S doubling up to
# RETRY_MAX_S, jittered by ±50%, between attempts. A call to a server that stays down therefore
# fails UNAVAILABLE about RETRY_BUDGET_S seconds after its first attempt failed.
RETRY_BUDGET_S = 8.0
RETRY_BASE_S = 0.1
RETRY_MAX_S = 1.0
T = TypeVar("T")

TOKEN_VARIABLE = "KEEL_TRACKING_TOKEN"
# What a bearer token may hold: printable ASCII without spaces (a valid gRPC metadata value,
# and every token format in use: RFC 6750's b64token, JWTs, keel's own tokens).
_TOKEN_PATTERN = re.compile(r"[\x21-\x7e]+")

_lock = threading.Lock()
_transports: dict[str, Transport] = {}
_tracking_uri: str | None = None
_tracking_token: str | None = None


def set_tracking_uri(uri: str) -> None:
    """Sets the URI every later call of this process uses (``grpc://host:port``).

    An ``http(s)://host:port`` URI must be a keel server's MLflow REST port (``--mlflow-port``):
    it is asked once, now, where its gRPC service is, and that ``grpc://`` URI is used from then
    on (``get_tracking_uri()`` returns it). Any other address raises ``InvalidArgument``.
    """
    global _tracking_uri
    if _is_http(uri):
        uri = resolve_tracking_uri(uri)
    parse_target(uri)  # validate now, not at the first call
    _tracking_uri = uri


def get_tracking_uri() -> str:
    """The explicit URI, else ``KEEL_TRACKING_URI``, else ``grpc://127.0.0.1:50051``; an
    ``http://`` one (a keel server's MLflow port) as the ``grpc://`` URI that port names."""
    return _tracking_uri or resolve_tracking_uri(os.environ.get("KEEL_TRACKING_URI") or DEFAULT_TRACKING_URI)


# --- http:// tracking URIs: a keel server's MLflow REST port names its gRPC address ---------------
SERVER_INFO_PATH = "/api/2.0/keel/server-info"
SERVER_INFO_TIMEOUT_S = 10.0
_HTTP_ADVICE = (
    "keel speaks gRPC; use grpc://host:port (grpcs:// with TLS), or point at a keel server's "
    "--mlflow-port (its MLflow REST port), which tells the SDK where the gRPC service is"
)
_resolved_http: dict[str, str] = {}


def _is_http(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def resolve_tracking_uri(uri: str) -> str:
    """``uri`` itself, or for ``http(s)://host:port`` the ``grpc://`` URI that keel server's
    MLflow port reports at ``/api/2.0/keel/server-info`` (asked once per URI and process)."""
    if not _is_http(uri):
        return uri
    found = _resolved_http.get(uri)
    if found is None:
        found = _ask_server_info(uri)
        with _lock:
            _resolved_http[uri] = found
    return found


def _ask_server_info(uri: str) -> str:
    import json
    import ssl
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    base = uri.rstrip("/")
    try:
        parts = urlsplit(base)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        host = None
    if not host:
        raise InvalidArgument(
            f"tracking URI {uri!r} is not a URL of the form http://host:port; {_HTTP_ADVICE}",
            reason="INVALID_TRACKING_URI",
        )

    def fail(why: str) -> InvalidArgument:
        return InvalidArgument(f"tracking URI {uri!r}: {why}. {_HTTP_ADVICE}", reason="INVALID_TRACKING_URI")

    request = urllib.request.Request(base + SERVER_INFO_PATH, headers={"Accept": "application/json"})
    token = get_tracking_token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = None
    if parts.scheme.lower() == "https":
        context = ssl.create_default_context(cafile=os.environ.get(TLS_CA_VARIABLE) or None)
    try:
        with urllib.request.urlopen(request, timeout=SERVER_INFO_TIMEOUT_S, context=context) as reply:  # noqa: S310
            body = reply.read(65536)
    except urllib.error.HTTPError as exc:
        raise fail(f"{base}{SERVER_INFO_PATH} answered HTTP {exc.code}, so this is not a keel MLflow port") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise fail(f"cannot reach {base} ({reason})") from None
    try:
        info = json.loads(body)
        grpc_uri = info["grpc_uri"]
        if not isinstance(grpc_uri, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise fail(f"{base}{SERVER_INFO_PATH} did not answer keel's server info (JSON with grpc_uri)") from None
    scheme, sep, rest = grpc_uri.partition("://")
    target_host, colon, port = rest.rpartition(":")
    if sep and colon and target_host.strip("[]") in ("", "0.0.0.0", "::"):
        # the server listens on every address: reach it where its MLflow port was reached
        grpc_uri = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    try:
        parse_target(grpc_uri)
    except InvalidArgument:
        raise fail(f"its server info names {grpc_uri!r}, which is not a grpc:// URI") from None
    return grpc_uri


def set_tracking_token(token: str | None) -> None:
    """Sets the bearer token every later call of this process sends (as MLflow's
    ``MLFLOW_TRACKING_TOKEN``); None goes back to ``KEEL_TRACKING_TOKEN``.

    It applies at once to every channel, those already open included. Over ``grpc://`` the
    token crosses the network in clear text, readable by anyone on the path, which is only safe
    on loopback: use ``grpcs://`` (TLS) for any other host. keel does not refuse it, as MLflow
    does not refuse a token over plain http.
    """
    global _tracking_token
    _tracking_token = None if token is None else _checked_token(token, "the token given to set_tracking_token")


def get_tracking_token() -> str | None:
    """The explicit token, else ``KEEL_TRACKING_TOKEN`` (surrounding whitespace dropped), else None."""
    if _tracking_token is not None:
        return _tracking_token
    raw = os.environ.get(TOKEN_VARIABLE, "").strip()
    return _checked_token(raw, TOKEN_VARIABLE) if raw else None


def _checked_token(token: str, source: str) -> str:
    if not isinstance(token, str) or not _TOKEN_PATTERN.fullmatch(token):
        raise InvalidArgument(
            f"{source} is not a usable token: a token is non-empty printable ASCII without spaces "
            "(copy it exactly as `keel tokens create` printed it)",
            reason="INVALID_TRACKING_TOKEN",
        )
    return token


def new_request_id() -> str:
    """An idempotency key for one write that the SDK may retry (CreateRun, LogBatch,
    CreateModelVersion): the server applies it once however often it arrives."""
    return uuid.uuid4().hex


def transport(uri: str | None = None) -> Transport:
    """The shared transport (one channel) of a URI (an ``http://`` one: see ``set_tracking_uri``)."""
    key = resolve_tracking_uri(uri) if uri else get_tracking_uri()
    found = _transports.get(key)
    if found is not None:
        return found
    with _lock:
        found = _transports.get(key)
        if found is None:
            found = _transports[key] = Transport(key)
        return found


class _CallDetails(grpc.ClientCallDetails):
    """A call's details with other metadata (``grpc.ClientCallDetails`` is only an interface)."""

    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, str | bytes]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call, reading the token at call time; a
    call that brings its own ``authorization`` keeps it, and its other metadata stays."""

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        token = get_tracking_token()
        if not token:
            return details
        metadata = list(details.metadata or ())
        if any(key == "authorization" for key, _ in metadata):
            return details
        metadata.append(("authorization", f"Bearer {token}"))
        return _CallDetails(details, metadata)

    def intercept_unary_unary(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


def open_channel(uri: str) -> grpc.Channel:
    """The one way the SDK opens a channel: keel's limits, keepalive and reconnect pacing,
    round-robin over replicas, TLS for ``grpcs://`` and the tracking token on every call."""
    return grpc.intercept_channel(open_plain_channel(uri), _TokenInterceptor())


class Transport:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.channel = open_channel(uri)
        self._stubs: dict[type, Any] = {}

    def stub(self, stub_class: Callable[[grpc.Channel], T]) -> T:
        found = self._stubs.get(stub_class)  # type: ignore[call-overload]
        if found is None:
            found = self._stubs[stub_class] = stub_class(self.channel)  # type: ignore[index]
        return found

    def call(
        self,
        method: Callable[..., T],
        request: Any,
        *,
        idempotent: bool,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> T:
        """One unary call; UNAVAILABLE is retried with jittered backoff when ``idempotent``, for up
        to ``RETRY_BUDGET_S`` seconds after the first failure and never past ``timeout`` (the
        deadline of the whole call, retries included). Other calls are never retried."""
        deadline = None if timeout is None else time.monotonic() + timeout
        retries = RetryBudget()
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return method(request, timeout=remaining, metadata=metadata)
            except grpc.RpcError as exc:
                if idempotent and exc.code() == grpc.StatusCode.UNAVAILABLE and retries.wait(deadline):  # type: ignore[attr-defined]
                    continue
                raise from_rpc_error(exc) from None

    def close(self) -> None:
        self.channel.close()


class RetryBudget:
    """The pauses between the attempts of one retried operation: jittered backoff from
    ``RETRY_BASE_S`` doubling to ``RETRY_MAX_S``, for up to ``RETRY_BUDGET_S`` seconds after the
    first failure. For any code that retries a safe operation on UNAVAILABLE (streams too)."""

    def __init__(self, budget_s: float | None = None) -> None:
        self.budget_s = RETRY_BUDGET_S if budget_s is None else budget_s
        self.attempts = 0
        self._until: float | None = None

    def wait(self, deadline: float | None = None) -> bool:
        """After a failed attempt: sleeps before the next one and returns True, or returns False
        at once when the budget has run out (or the next attempt could not start before
        ``deadline``, a ``time.monotonic()`` value)."""
        now = time.monotonic()
        if self._until is None:
            self._until = now + self.budget_s
        if now >= self._until:
            return False
        self.attempts += 1
        delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(self.attempts - 1, 16)) * (0.5 + random.random())
        delay = min(delay, self._until - now)  # the last attempt starts when the budget ends
        if deadline is not None and now + delay >= deadline:
            return False  # no time left for another attempt
        time.sleep(delay)
        return True


def map_errors(iterator: Iterator[T]) -> Iterator[T]:
    """Wraps a streaming response so a failure mid-stream raises a typed ``KeelError``."""
    try:
        yield from iterator
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None


__all__ = [
    "DEFAULT_TRACKING_URI",
    "KeelError",
    "RetryBudget",
    "Transport",
    "channel_credentials",
    "get_tracking_token",
    "get_tracking_uri",
    "map_errors",
    "open_channel",
    "resolve_tracking_uri",
    "set_tracking_token",
    "set_tracking_uri",
    "transport",
]
