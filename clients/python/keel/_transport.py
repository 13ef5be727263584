"""The SDK's transport: one gRPC channel per tracking URI, default deadlines, retries of
UNAVAILABLE on idempotent calls only, raised message limits, and status → typed error mapping.

Facade code calls ``transport(uri).call(stub.Method, request, idempotent=...)`` and never sees a
raw ``grpc.RpcError``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc

from keel.exceptions import InvalidArgument, KeelError, from_rpc_error

DEFAULT_TRACKING_URI = "grpc://127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 60.0
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# Retries of UNAVAILABLE for idempotent calls: they go on for up to RETRY_BUDGET_S seconds after
# the first failure (long enough to cover a server restart), waiting RETRY_BASE_S doubling up to
# RETRY_MAX_S, jittered by ±50%, between attempts. A call to a server that stays down therefore
# fails UNAVAILABLE about RETRY_BUDGET_S seconds after its first attempt failed.
RETRY_BUDGET_S = 8.0
RETRY_BASE_S = 0.1
RETRY_MAX_S = 1.0
# How soon a channel that lost its server tries to connect again. gRPC's defaults (1 s, growing
# 1.6x per failed attempt up to 120 s) leave a channel that saw its server go away unable to reach
# the restarted server for seconds, longer than the retries above wait; keel's channels try again
# after 0.1 s, growing to at most 1 s (both ±20% jitter).
RECONNECT_INITIAL_MS = 100
RECONNECT_MAX_MS = 1000

T = TypeVar("T")

_lock = threading.Lock()
_transports: dict[str, Transport] = {}
_tracking_uri: str | None = None


def set_tracking_uri(uri: str) -> None:
    """Sets the URI every later call of this process uses (``grpc://host:port``)."""
    global _tracking_uri
    parse_target(uri)  # validate now, not at the first call
    _tracking_uri = uri


def get_tracking_uri() -> str:
    """The explicit URI, else ``KEEL_TRACKING_URI``, else ``grpc://127.0.0.1:50051``."""
    return _tracking_uri or os.environ.get("KEEL_TRACKING_URI") or DEFAULT_TRACKING_URI


def parse_target(uri: str) -> tuple[str, bool]:
    """``grpc://host:port`` → (``host:port``, secure=False); ``grpcs://`` → secure."""
    parts = urlsplit(uri)
    if parts.scheme not in ("grpc", "grpcs") or not parts.hostname:
        raise InvalidArgument(
            f"tracking URI {uri!r} is not supported: use grpc://host:port (or grpcs://host:port for TLS)",
            reason="INVALID_TRACKING_URI",
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 50051}", parts.scheme == "grpcs"


def transport(uri: str | None = None) -> Transport:
    """The shared transport (one channel) of a URI."""
    key = uri or get_tracking_uri()
    found = _transports.get(key)
    if found is not None:
        return found
    with _lock:
        found = _transports.get(key)
        if found is None:
            found = _transports[key] = Transport(key)
        return found


class Transport:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        target, secure = parse_target(uri)
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30000),
            ("grpc.enable_retries", 0),  # we retry ourselves, idempotent calls only
            # (grpc.min_reconnect_backoff_ms stays at its default: gRPC takes it as the least time
            # a connection attempt is given, which must suit slow links and TLS handshakes.)
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
        ]
        self.channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
            if secure
            else grpc.insecure_channel(target, options=options)
        )
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
    "get_tracking_uri",
    "map_errors",
    "set_tracking_uri",
    "transport",
]
