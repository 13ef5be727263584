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
# Retries of UNAVAILABLE for idempotent calls: attempts and backoff bounds (seconds).
RETRY_ATTEMPTS = 5
RETRY_BASE_S = 0.1
RETRY_MAX_S = 2.0

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
        """One unary call; UNAVAILABLE is retried with jittered backoff when ``idempotent``."""
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as exc:
                attempt += 1
                if idempotent and exc.code() == grpc.StatusCode.UNAVAILABLE and attempt < RETRY_ATTEMPTS:  # type: ignore[attr-defined]
                    time.sleep(min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempt - 1)) * (0.5 + random.random()))
                    continue
                raise from_rpc_error(exc) from None

    def close(self) -> None:
        self.channel.close()


def map_errors(iterator: Iterator[T]) -> Iterator[T]:
    """Wraps a streaming response so a failure mid-stream raises a typed ``KeelError``."""
    try:
        yield from iterator
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None


__all__ = [
    "DEFAULT_TRACKING_URI",
    "KeelError",
    "Transport",
    "get_tracking_uri",
    "map_errors",
    "set_tracking_uri",
    "transport",
]
