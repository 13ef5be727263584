"""The SDK's transport: one gRPC channel per tracking URI, default deadlines, retries of
UNAVAILABLE on idempotent calls only, raised message limits, and status → typed error mapping.

Facade code calls ``transport(uri).call(stub.Method, request, idempotent=...)`` and never sees a
raw ``grpc.RpcError``.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import threading
import time
import uuid
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


_URI_FORMS = "use grpc://host:port (or grpcs://host:port for TLS; grpc://host1:port1,host2:port2 for replicas)"


def parse_target(uri: str) -> tuple[str, bool]:
    """``grpc://host:port`` → (the gRPC target, secure=False); ``grpcs://`` → secure.

    Several replicas, ``grpc://host1:port1,host2:port2``, become one ``ipv4:``/``ipv6:`` target
    of their addresses (names resolved now), over which the channel spreads calls round-robin.
    """
    scheme, sep, rest = uri.partition("://")
    hosts = [_host_port(uri, part) for part in rest.split(",")] if sep and scheme in ("grpc", "grpcs") else []
    if not hosts:
        raise InvalidArgument(f"tracking URI {uri!r} is not supported: {_URI_FORMS}", reason="INVALID_TRACKING_URI")
    secure = scheme == "grpcs"
    if len(hosts) == 1:
        host, port = hosts[0]
        return f"{f'[{host}]' if ':' in host else host}:{port}", secure
    addresses = [_resolve(uri, host, port) for host, port in hosts]
    families = {family for family, _ in addresses}
    if len(families) != 1:
        raise InvalidArgument(
            f"tracking URI {uri!r} mixes IPv4 and IPv6 replicas: list replicas of one family",
            reason="INVALID_TRACKING_URI",
        )
    return f"{families.pop()}:{','.join(address for _, address in addresses)}", secure


def _has_replicas(target: str) -> bool:
    """A list of replicas, or a DNS name (which may have several A records); not an IP literal
    or localhost, where round-robin has nothing to spread over."""
    if target.startswith(("ipv4:", "ipv6:")):
        return True
    host = target.rsplit(":", 1)[0].strip("[]")
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        return host != "localhost"


def _host_port(uri: str, part: str) -> tuple[str, int]:
    parts = urlsplit(f"grpc://{part.strip()}")
    try:
        port = parts.port or 50051
    except ValueError:
        port = 0
    if not parts.hostname or not port or parts.path or parts.query:
        raise InvalidArgument(
            f"tracking URI {uri!r}: {part!r} is not host:port; {_URI_FORMS}", reason="INVALID_TRACKING_URI"
        )
    return parts.hostname, port


def _resolve(uri: str, host: str, port: int) -> tuple[str, str]:
    """("ipv4" or "ipv6", the address as a gRPC ipv4:/ipv6: target lists it)."""
    try:
        family, *_, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        raise InvalidArgument(
            f"tracking URI {uri!r}: cannot resolve replica {host!r}: {exc}", reason="INVALID_TRACKING_URI"
        ) from None
    if family == socket.AF_INET6:
        return "ipv6", f"[{sockaddr[0]}]:{port}"
    return "ipv4", f"{sockaddr[0]}:{port}"


def new_request_id() -> str:
    """An idempotency key for one write that the SDK may retry (CreateRun, LogBatch,
    CreateModelVersion): the server applies it once however often it arrives."""
    return uuid.uuid4().hex


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
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30000),
            ("grpc.enable_retries", 0),  # we retry ourselves, idempotent calls only
            # (grpc.min_reconnect_backoff_ms stays at its default: gRPC takes it as the least time
            # a connection attempt is given, which must suit slow links and TLS handshakes.)
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
        ]
        if _has_replicas(target):
            # Replicas: spread calls over every connected one; a retry after UNAVAILABLE lands on
            # another replica when one dies.
            options.append(("grpc.lb_policy_name", "round_robin"))
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
