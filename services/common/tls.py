"""TLS and mutual TLS for every port a keel server opens (gRPC, HTTP scoring, metrics).

``--tls-cert``/``--tls-key`` (``KEEL_TLS_CERT``/``KEEL_TLS_KEY``, PEM files) turn TLS on;
``--tls-client-ca`` (``KEEL_TLS_CLIENT_CA``) also requires every client to present a certificate
signed by that CA (mutual TLS), whose subject common name can then be the caller's identity
(``peer_certificate_name``: service accounts without tokens).

The files are read and checked once at start-up (``server_credentials`` and ``ssl_context``
raise ``ValueError`` naming the setting and the path, which ``keel server`` prints as one
"cannot start" line) so a bad file never surfaces later as failing handshakes.
"""

from __future__ import annotations

import logging
import re
import socket
import socketserver
import ssl
from dataclasses import dataclass
from typing import Any

import grpc

from keel_server.common.config import Settings

log = logging.getLogger("keel.tls")

# A client of an HTTP endpoint gets this long to finish its TLS handshake; the handshake runs in
# the connection's own thread, so a slow or silent client never holds up the others.
HANDSHAKE_TIMEOUT_S = 10.0

_CERT_SETTING = "--tls-cert (KEEL_TLS_CERT)"
_KEY_SETTING = "--tls-key (KEEL_TLS_KEY)"
_CLIENT_CA_SETTING = "--tls-client-ca (KEEL_TLS_CLIENT_CA)"


@dataclass(frozen=True)
class ServerPems:
    """The PEM bytes of the server's TLS settings, checked to be what they claim to be."""

    cert: bytes
    key: bytes
    client_ca: bytes | None


def _read_pem(setting: str, path: str, kind: str) -> bytes:
    """The bytes of ``path`` when it holds a PEM ``kind`` block ("CERTIFICATE", "PRIVATE KEY")."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ValueError(f"{setting} file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{setting} {path!r} is a directory, not a PEM file") from None
    except OSError as exc:
        raise ValueError(f"{setting} file {path!r} cannot be read: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data or kind.encode() + b"-----" not in data:
        article = "an" if kind[0] in "AEIOU" else "a"
        raise ValueError(
            f"{setting} file {path!r} is not {article} PEM {kind.lower()} (no '-----BEGIN ...{kind}-----' block)"
        )
    if kind == "PRIVATE KEY" and b"ENCRYPTED" in data:
        raise ValueError(
            f"{setting} file {path!r} is an encrypted key, which keel cannot use: decrypt it "
            f"(openssl pkey -in {path} -out key.pem)"
        )
    return data


def _no_password() -> bytes:
    # Never let OpenSSL prompt on the terminal for a pass phrase (encrypted keys are refused above).
    raise ValueError("the private key is encrypted")


def read_server_pems(settings: Settings) -> ServerPems | None:
    """The checked PEM files of ``settings`` (None when TLS is off). Raises ``ValueError`` naming
    the setting and the path: a missing or unreadable file, a file that is not a PEM certificate
    or key, or a key that does not belong to the certificate."""
    if not settings.tls_enabled:
        return None
    if not settings.tls_key:
        raise ValueError(f"TLS needs both {_CERT_SETTING} and {_KEY_SETTING}")
    cert = _read_pem(_CERT_SETTING, settings.tls_cert, "CERTIFICATE")
    key = _read_pem(_KEY_SETTING, settings.tls_key, "PRIVATE KEY")
    client_ca = (
        _read_pem(_CLIENT_CA_SETTING, settings.tls_client_ca, "CERTIFICATE")
        if settings.tls_client_ca
        else None
    )
    # OpenSSL parses the files (and checks that the key matches the certificate) the way both the
    # gRPC and the HTTP endpoints will.
    _check_certificates(_CERT_SETTING, settings.tls_cert, cert)
    if client_ca is not None:
        _check_certificates(_CLIENT_CA_SETTING, settings.tls_client_ca, client_ca)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            settings.tls_cert, settings.tls_key, password=_no_password
        )
    except (ssl.SSLError, ValueError) as exc:
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"{_KEY_SETTING} file {settings.tls_key!r} is not the private key of the certificate in "
                f"{_CERT_SETTING} file {settings.tls_cert!r}"
            ) from None
        raise ValueError(
            f"{_KEY_SETTING} file {settings.tls_key!r} holds no valid private key: {_ssl_reason(exc)}"
        ) from None
    return ServerPems(cert=cert, key=key, client_ca=client_ca)


def _check_certificates(setting: str, path: str, data: bytes) -> None:
    """Raises ``ValueError`` when a PEM file's certificates do not decode."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f"{setting} file {path!r} holds no valid certificate: {_ssl_reason(exc)}") from None


def _ssl_reason(exc: Exception) -> str:
    """OpenSSL's complaint without its source location ("[SSL] ... (_ssl.c:3905)")."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"^\[\w+\]\s*|\s*\(_ssl\.c:\d+\)$", "", text) or type(exc).__name__


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The gRPC port's credentials (None when TLS is off); with a client CA, clients must present
    a certificate it signed."""
    pems = read_server_pems(settings)
    if pems is None:
        return None
    return grpc.ssl_server_credentials(
        [(pems.key, pems.cert)],
        root_certificates=pems.client_ca,
        require_client_auth=pems.client_ca is not None,
    )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The HTTP endpoints' TLS context (None when TLS is off); with a client CA, CERT_REQUIRED."""
    pems = read_server_pems(settings)
    if pems is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key, password=_no_password)
    if pems.client_ca is not None:
        context.load_verify_locations(cadata=pems.client_ca.decode("ascii", "replace"))
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def peer_certificate_name(context: grpc.ServicerContext) -> str | None:
    """Under mutual TLS, the common name of the subject of the client's (verified) certificate;
    None without TLS, without a client certificate, or for a certificate without a common name."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    name = names[0] if names else None
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return name or None


def http_peer_certificate_name(connection: Any) -> str | None:
    """The same for a connection of an HTTP endpoint (an ``ssl.SSLSocket`` under mutual TLS)."""
    if not isinstance(connection, ssl.SSLSocket):
        return None
    cert: dict[str, Any] = dict(connection.getpeercert() or {})
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return str(value)
    return None


class TLSServerMixin(socketserver.BaseServer):
    """TLS for a threading ``socketserver`` (the HTTP endpoints): set ``ssl_context`` (None
    serves plain HTTP). The listening socket stays plain and each connection is wrapped in its
    own thread, with ``HANDSHAKE_TIMEOUT_S`` to finish the handshake: wrapping the listening
    socket would do every handshake in the accept loop, where one silent client stalls them all.
    A client that fails the handshake (plain HTTP, an untrusted or missing client certificate)
    is dropped."""

    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        timeout = request.gettimeout()
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            # Detaches ``request``: the TLS socket now owns the connection (and closes it on failure).
            connection = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        connection.settimeout(timeout)
        try:
            super().finish_request(connection, client_address)
        finally:
            self.shutdown_request(connection)


def scheme(context: ssl.SSLContext | None) -> str:
    """ "https" or "http", for log lines."""
    return "http" if context is None else "https"


def listening_family(host: str) -> socket.AddressFamily:
    """The address family to listen on ``host`` with (IPv6 for an IPv6 literal or name)."""
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
    except OSError:
        return socket.AF_INET
