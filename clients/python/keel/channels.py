"""How a keel client opens a gRPC channel to a ``grpc://`` or ``grpcs://`` URI: the target
(replicas resolved for round-robin), TLS credentials from ``KEEL_TLS_*``, and keel's limits,
keepalive and reconnect pacing.

Shared by the SDK's transport (which adds the tracking token to every call) and by server-side
clients of other keel services (the MLflow REST port and the console forward each caller's own
token per call), so both reach services the same way.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import grpc

from keel.exceptions import InvalidArgument

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# How soon a channel that lost its server tries to connect again. gRPC's defaults (1 s, growing
# 1.6x per failed attempt up to 120 s) leave a channel that saw its server go away unable to reach
# the restarted server for seconds, longer than the retries above wait; keel's channels try again
# after 0.1 s, growing to at most 1 s (both ±20% jitter).
RECONNECT_INITIAL_MS = 100
RECONNECT_MAX_MS = 1000

# Client TLS files (PEM), read when a grpcs:// channel is made.
TLS_CA_VARIABLE = "KEEL_TLS_CA"
TLS_CLIENT_CERT_VARIABLE = "KEEL_TLS_CLIENT_CERT"
TLS_CLIENT_KEY_VARIABLE = "KEEL_TLS_CLIENT_KEY"

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


def channel_options(target: str, uri: str, secure: bool) -> list[tuple[str, Any]]:
    """keel's channel options for ``target`` (from ``parse_target(uri)``)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30000),
        ("grpc.enable_retries", 0),  # keel retries itself, idempotent calls only
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
    return options


def open_plain_channel(uri: str) -> grpc.Channel:
    """A channel to ``uri`` with keel's options and TLS for ``grpcs://``, without any token
    (callers that forward per-call credentials add them as call metadata)."""
    target, secure = parse_target(uri)
    options = channel_options(target, uri, secure)
    if secure:
        return grpc.secure_channel(target, channel_credentials(), options=options)
    return grpc.insecure_channel(target, options=options)
