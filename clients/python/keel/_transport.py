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

import ipaddress
import os
import random
import re
import socket
import ssl
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

# Client TLS files (PEM), read when a grpcs:// channel is made.
TLS_CA_VARIABLE = "KEEL_TLS_CA"
TLS_CLIENT_CERT_VARIABLE = "KEEL_TLS_CLIENT_CERT"
TLS_CLIENT_KEY_VARIABLE = "KEEL_TLS_CLIENT_KEY"
TOKEN_VARIABLE = "KEEL_TRACKING_TOKEN"
# What a bearer token may hold: printable ASCII without spaces (a valid gRPC metadata value,
# and every token format in use: RFC 6750's b64token, JWTs, keel's own tokens).
_TOKEN_PATTERN = re.compile(r"[\x21-\x7e]+")

_lock = threading.Lock()
_transports: dict[str, Transport] = {}
_tracking_uri: str | None = None
_tracking_token: str | None = None


def set_tracking_uri(uri: str) -> None:
    """Sets the URI every later call of this process uses (``grpc://host:port``)."""
    global _tracking_uri
    parse_target(uri)  # validate now, not at the first call
    _tracking_uri = uri


def get_tracking_uri() -> str:
    """The explicit URI, else ``KEEL_TRACKING_URI``, else ``grpc://127.0.0.1:50051``."""
    return _tracking_uri or os.environ.get("KEEL_TRACKING_URI") or DEFAULT_TRACKING_URI


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


def _read_tls_file(variable: str, kind: str) -> bytes | None:
    """The PEM bytes of the file named by ``variable`` (None when unset)."""
    path = os.environ.get(variable, "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InvalidArgument(
            f"{variable}={path!r} cannot be read: {exc.strerror or exc}", reason="INVALID_TLS_CONFIG"
        ) from None
    if b"-----BEGIN " not in data or kind.encode() + b"-----" not in data:
        raise InvalidArgument(
            f"{variable}={path!r} is not a PEM {kind.lower()} (no '-----BEGIN ...{kind}-----' block)",
            reason="INVALID_TLS_CONFIG",
        )
    return data


def _no_password() -> bytes:
    raise ValueError("the private key is encrypted; keel needs an unencrypted key")


def channel_credentials() -> grpc.ChannelCredentials:
    """TLS credentials of a ``grpcs://`` channel: the server is verified against ``KEEL_TLS_CA``
    (a PEM bundle: a private CA) or else the system's roots; ``KEEL_TLS_CLIENT_CERT`` and
    ``KEEL_TLS_CLIENT_KEY`` (both or neither) present a client certificate (mutual TLS)."""
    root = _read_tls_file(TLS_CA_VARIABLE, "CERTIFICATE")
    cert = _read_tls_file(TLS_CLIENT_CERT_VARIABLE, "CERTIFICATE")
    key = _read_tls_file(TLS_CLIENT_KEY_VARIABLE, "PRIVATE KEY")
    if (cert is None) != (key is None):
        given, missing = (
            (TLS_CLIENT_CERT_VARIABLE, TLS_CLIENT_KEY_VARIABLE)
            if key is None
            else (TLS_CLIENT_KEY_VARIABLE, TLS_CLIENT_CERT_VARIABLE)
        )
        raise InvalidArgument(
            f"{given} is set but {missing} is not: a client certificate (mutual TLS) needs both",
            reason="INVALID_TLS_CONFIG",
        )
    if cert is not None:
        # A bad pair would only show as a failed handshake, far from its cause: say so now.
        cert_path = os.environ[TLS_CLIENT_CERT_VARIABLE].strip()
        key_path = os.environ[TLS_CLIENT_KEY_VARIABLE].strip()
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_path, key_path, password=_no_password)
        except (ssl.SSLError, ValueError) as exc:
            if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
                problem = f"{TLS_CLIENT_KEY_VARIABLE}={key_path!r} is not the private key of {TLS_CLIENT_CERT_VARIABLE}={cert_path!r}"
            else:
                detail = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else exc
                problem = (
                    f"{TLS_CLIENT_CERT_VARIABLE}={cert_path!r} and {TLS_CLIENT_KEY_VARIABLE}={key_path!r} are not "
                    f"a valid certificate and private key ({detail})"
                )
            raise InvalidArgument(problem, reason="INVALID_TLS_CONFIG") from None
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)


def open_channel(uri: str) -> grpc.Channel:
    """The one way the SDK opens a channel: keel's limits, keepalive and reconnect pacing,
    round-robin over replicas, TLS for ``grpcs://`` and the tracking token on every call."""
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
    if secure and target.startswith(("ipv4:", "ipv6:")):
        # Replicas were resolved to addresses; their certificate is checked against the name the
        # user wrote (the first replica's), not an IP address.
        host, port = _host_port(uri, uri.partition("://")[2].split(",")[0])
        options.append(("grpc.default_authority", f"{f'[{host}]' if ':' in host else host}:{port}"))
    channel = (
        grpc.secure_channel(target, channel_credentials(), options=options)
        if secure
        else grpc.insecure_channel(target, options=options)
    )
    return grpc.intercept_channel(channel, _TokenInterceptor())


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
    "set_tracking_token",
    "set_tracking_uri",
    "transport",
]
