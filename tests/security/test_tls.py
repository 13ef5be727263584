"""TLS and mutual TLS on keel's gRPC and HTTP ports, and the SDK's side: ``grpcs://``,
``KEEL_TLS_CA``, client certificates, and the tracking token on every call (issue #14).

Certificates are made by the test (``certs.py``). Servers are real: in-process keel servers
(``running_server``), ``keel server`` processes, and, for what the SDK sends, a test-only gRPC
server that echoes the ``authorization`` metadata back.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import CertificateAuthority, Issued, make_ca
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_fixtures import free_port, running_server, server_process

import keel
from keel import _transport
from keel.exceptions import InvalidArgument, KeelError, Unavailable
from keel_server.common.config import Settings
from keel_server.common.tls import peer_certificate_name, server_credentials

CALL_TIMEOUT_S = 10.0
TLS_VARIABLES = ("KEEL_TLS_CA", "KEEL_TLS_CLIENT_CERT", "KEEL_TLS_CLIENT_KEY", "KEEL_TRACKING_TOKEN")


@dataclass(frozen=True)
class PKI:
    ca: CertificateAuthority
    server: Issued
    other_ca: CertificateAuthority
    # Signed by ``ca``: the service account "svc-trainer".
    client: Issued
    # Signed by ``other_ca``: a stranger with a certificate of its own.
    stranger: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca(root / "ca")
    other_ca = make_ca(root / "other-ca", name="other test CA")
    return PKI(
        ca=ca,
        server=ca.server(root / "server"),
        other_ca=other_ca,
        client=ca.client(root / "clients", "svc-trainer"),
        stranger=other_ca.client(root / "clients", "svc-trainer", stem="stranger"),
    )


@pytest.fixture(autouse=True)
def clean_client_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No TLS file or token from the environment unless the test sets one; no explicit token
    left behind."""
    for name in TLS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    keel.set_tracking_token(None)


def client_env(monkeypatch: pytest.MonkeyPatch, ca: Path | None = None, client: Issued | None = None) -> None:
    for name, value in (
        ("KEEL_TLS_CA", ca),
        ("KEEL_TLS_CLIENT_CERT", client.cert if client else None),
        ("KEEL_TLS_CLIENT_KEY", client.key if client else None),
    ):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))


def health_check(uri: str) -> int:
    """A health check over a fresh SDK channel to ``uri`` (TLS settings read now), not retried."""
    client = _transport.Transport(uri)
    try:
        stub = client.stub(health_pb2_grpc.HealthStub)
        reply = client.call(
            stub.Check, health_pb2.HealthCheckRequest(), idempotent=False, timeout=CALL_TIMEOUT_S
        )
        return int(reply.status)
    finally:
        client.close()


def plaintext_health_check(port: int) -> grpc.StatusCode:
    """A plain (no TLS) gRPC health check; its status code."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


def tls_settings(pki: PKI, mutual: bool = False) -> dict[str, Any]:
    settings: dict[str, Any] = {"tls_cert": str(pki.server.cert), "tls_key": str(pki.server.key)}
    if mutual:
        settings["tls_client_ca"] = str(pki.ca.cert_path)
    return settings


def https_get(port: int, path: str, ca: Path | None, client: Issued | None = None) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=CALL_TIMEOUT_S)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def plain_http_get(port: int, path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT_S)
    try:
        connection.request("GET", path)
        connection.getresponse().read()
    finally:
        connection.close()


# ---------------------------------------------------------------- keel server over TLS


def test_sdk_over_grpcs_logs_a_run_and_reads_it_back(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics_port = free_port()
    with running_server(
        f"sqlite:///{tmp_path}/keel.db",
        f"file://{tmp_path}/artifacts",
        metrics_port=metrics_port,
        **tls_settings(pki),
    ) as server:
        uri = f"grpcs://127.0.0.1:{server.port}"
        client_env(monkeypatch, ca=pki.ca.cert_path)
        keel.set_tracking_uri(uri)
        try:
            keel.set_experiment("tls")
            with keel.start_run() as run:
                keel.log_param("lr", 0.1)
                keel.log_metric("loss", 0.25, step=1)
                keel.log_text("over TLS", "notes/readme.txt")  # a client-streaming upload
            client = keel.Client(uri)
            got = client.get_run(run.info.run_id)
            assert got.data.params == {"lr": "0.1"} and got.data.metrics == {"loss": 0.25}
            local = client.download_artifacts(run.info.run_id, "notes/readme.txt", str(tmp_path / "dl"))
            assert Path(local).read_text() == "over TLS"  # a server-streaming download

            # A plaintext client cannot talk to the TLS port, and the server keeps serving.
            assert plaintext_health_check(server.port) == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(Unavailable):
                keel.Client(f"grpc://127.0.0.1:{server.port}").create_experiment("plaintext")
            assert health_check(uri) == health_pb2.HealthCheckResponse.SERVING

            # A client that does not trust the server's CA: the system roots, another CA.
            client_env(monkeypatch)
            with pytest.raises(Unavailable):
                health_check(uri)
            client_env(monkeypatch, ca=pki.other_ca.cert_path)
            with pytest.raises(Unavailable):
                health_check(uri)
            # The certificate names localhost too.
            client_env(monkeypatch, ca=pki.ca.cert_path)
            assert health_check(f"grpcs://localhost:{server.port}") == health_pb2.HealthCheckResponse.SERVING

            # The Prometheus endpoint is https too.
            status, body = https_get(metrics_port, "/metrics", pki.ca.cert_path)
            assert status == 200 and b"keel_rpc_duration_seconds" in body
            with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
                plain_http_get(metrics_port, "/metrics")
            with pytest.raises(ssl.SSLCertVerificationError):
                https_get(metrics_port, "/metrics", pki.other_ca.cert_path)
        finally:
            keel.set_tracking_uri(_transport.DEFAULT_TRACKING_URI)


def test_keel_server_process_with_tls_flags(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [
        "--db-url", f"sqlite:///{tmp_path}/keel.db",
        "--artifact-uri", f"file://{tmp_path}/artifacts",
        "--tls-cert", str(pki.server.cert),
        "--tls-key", str(pki.server.key),
    ]  # fmt: skip
    with server_process(args, cwd=tmp_path) as server:
        uri = f"grpcs://127.0.0.1:{server.port}"
        client_env(monkeypatch, ca=pki.ca.cert_path)
        client = keel.Client(uri)
        experiment_id = client.create_experiment("tls-process")
        run = client.create_run(experiment_id)
        client.log_param(run.info.run_id, "alpha", "0.5")
        assert client.get_run(run.info.run_id).data.params == {"alpha": "0.5"}
        assert plaintext_health_check(server.port) == grpc.StatusCode.UNAVAILABLE
        assert client.get_experiment(experiment_id).name == "tls-process"  # still serving
        assert server.process is not None and server.process.poll() is None


# ---------------------------------------------------------------- mutual TLS


def test_mutual_tls_needs_a_client_certificate_from_the_ca(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_server(
        f"sqlite:///{tmp_path}/keel.db",
        f"file://{tmp_path}/artifacts",
        services=("tracking", "inference"),
        http_port=free_port(),
        **tls_settings(pki, mutual=True),
    ) as server:
        uri = f"grpcs://127.0.0.1:{server.port}"
        client_env(monkeypatch, ca=pki.ca.cert_path, client=pki.client)
        assert health_check(uri) == health_pb2.HealthCheckResponse.SERVING
        assert keel.Client(uri).create_experiment("mtls")

        client_env(monkeypatch, ca=pki.ca.cert_path)  # no client certificate
        with pytest.raises(Unavailable):
            health_check(uri)
        client_env(monkeypatch, ca=pki.ca.cert_path, client=pki.stranger)  # signed by another CA
        with pytest.raises(Unavailable):
            health_check(uri)
        assert plaintext_health_check(server.port) == grpc.StatusCode.UNAVAILABLE

        # The HTTP endpoint asks for the same client certificates.
        http_port = server.settings.http_port
        status, _ = https_get(http_port, "/version", pki.ca.cert_path, pki.client)
        assert status == 200
        for stranger in (None, pki.stranger):
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                https_get(http_port, "/version", pki.ca.cert_path, stranger)
        status, _ = https_get(http_port, "/version", pki.ca.cert_path, pki.client)  # still serving
        assert status == 200


def test_peer_certificate_name_is_the_client_certificate_common_name(
    pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the auth code maps to a service account: CN of a verified client certificate under
    mutual TLS; None with TLS but no client certificates."""
    mutual = replace(Settings(), **tls_settings(pki, mutual=True))
    with echo_server(server_credentials(mutual)) as echo:
        client_env(monkeypatch, ca=pki.ca.cert_path, client=pki.client)
        assert echo.call_peer_name(f"grpcs://127.0.0.1:{echo.port}") == "svc-trainer"
    with echo_server(server_credentials(replace(Settings(), **tls_settings(pki)))) as echo:
        client_env(monkeypatch, ca=pki.ca.cert_path, client=pki.client)
        assert echo.call_peer_name(f"grpcs://127.0.0.1:{echo.port}") == ""
    with echo_server(None) as echo:
        assert echo.call_peer_name(f"grpc://127.0.0.1:{echo.port}") == ""


# ---------------------------------------------------------------- HTTP scoring over https


def test_http_scoring_over_https(pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    import keel.sklearn

    features = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    model = LinearRegression().fit(features, np.array([2.0, 4.0, 6.0, 8.0]))
    model_path = tmp_path / "model"
    keel.sklearn.save_model(model, str(model_path), input_example=features.head(2))
    with running_server(
        f"sqlite:///{tmp_path}/keel.db",
        f"file://{tmp_path}/artifacts",
        services=("inference",),
        http_port=free_port(),
        **tls_settings(pki),
    ) as server:
        client_env(monkeypatch, ca=pki.ca.cert_path)
        keel.Client(f"grpcs://127.0.0.1:{server.port}").create_deployment("double", str(model_path))
        http_port = server.settings.http_port
        context = ssl.create_default_context(cafile=str(pki.ca.cert_path))
        connection = http.client.HTTPSConnection(
            "127.0.0.1", http_port, context=context, timeout=CALL_TIMEOUT_S
        )
        try:
            body = json.dumps({"dataframe_records": [{"x": 5.0}, {"x": 6.0}]})
            connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            reply = connection.getresponse()
            assert reply.status == 200
            assert json.loads(reply.read()) == {"predictions": pytest.approx([10.0, 12.0])}
            # keep-alive: a second request on the same TLS connection
            connection.request("GET", "/ping")
            assert connection.getresponse().status == 200
        finally:
            connection.close()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            plain_http_get(http_port, "/ping")
        with pytest.raises(ssl.SSLCertVerificationError):
            https_get(http_port, "/ping", None)  # the system roots do not know the test CA
        # A client that connects and never says anything holds up nobody.
        with socket.create_connection(("127.0.0.1", http_port), timeout=CALL_TIMEOUT_S):
            status, _ = https_get(http_port, "/ping", pki.ca.cert_path)
            assert status == 200


# ---------------------------------------------------------------- replicas over TLS


def test_replicas_over_tls_check_the_name_the_user_wrote(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas are resolved to addresses for round-robin; the certificate is still checked
    against the host name of the URI (a certificate for "localhost" only)."""
    if socket.getaddrinfo("localhost", 1, type=socket.SOCK_STREAM)[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    named = pki.ca.server(tmp_path / "named", stem="localhost-only", names=("localhost",))
    with running_server(
        f"sqlite:///{tmp_path}/keel.db",
        f"file://{tmp_path}/artifacts",
        services=("tracking",),
        tls_cert=str(named.cert),
        tls_key=str(named.key),
    ) as server:
        client_env(monkeypatch, ca=pki.ca.cert_path)
        replicas = f"grpcs://localhost:{server.port},localhost:{server.port}"
        assert health_check(replicas) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(Unavailable):  # the certificate is not for 127.0.0.1
            health_check(f"grpcs://127.0.0.1:{server.port}")


# ---------------------------------------------------------------- the tracking token

ECHO = "/keel.test.Echo/"


@dataclass
class Echo:
    """A test-only gRPC server: records each call's metadata and answers with its
    ``authorization`` value (bytes in, bytes out); ``Peer`` answers the client certificate's CN."""

    port: int = 0
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def authorization(self, method: str) -> str | None:
        found = [metadata for name, metadata in self.seen if name.endswith(method)]
        assert found, f"no call of {method} reached the server: {[name for name, _ in self.seen]}"
        return found[-1].get("authorization")

    def call_peer_name(self, uri: str) -> str:
        client = _transport.Transport(uri)
        try:
            return bytes(client.channel.unary_unary(ECHO + "Peer")(b"", timeout=CALL_TIMEOUT_S)).decode()
        finally:
            client.close()


class _EchoHandler(grpc.GenericRpcHandler):
    def __init__(self, echo: Echo) -> None:
        self.echo = echo

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        metadata = {key: str(value) for key, value in handler_call_details.invocation_metadata}  # type: ignore[attr-defined]
        self.echo.seen.append((method, metadata))
        answer = metadata.get("authorization", "").encode()
        if method == ECHO + "Unary":
            return grpc.unary_unary_rpc_method_handler(lambda request, context: answer)
        if method == ECHO + "ServerStream":
            return grpc.unary_stream_rpc_method_handler(lambda request, context: iter([answer, answer]))
        if method == ECHO + "ClientStream":
            return grpc.stream_unary_rpc_method_handler(lambda requests, context: (list(requests), answer)[1])
        if method == ECHO + "BidiStream":
            return grpc.stream_stream_rpc_method_handler(lambda requests, context: (answer for _ in requests))
        if method == ECHO + "Peer":
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: (peer_certificate_name(context) or "").encode()
            )
        return None  # UNIMPLEMENTED, after the metadata was recorded


@contextlib.contextmanager
def echo_server(credentials: grpc.ServerCredentials | None = None) -> Iterator[Echo]:
    echo = Echo()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[_EchoHandler(echo)])
    echo.port = (
        server.add_secure_port("127.0.0.1:0", credentials)
        if credentials is not None
        else server.add_insecure_port("127.0.0.1:0")
    )
    server.start()
    try:
        yield echo
    finally:
        server.stop(0)


def echo_all_kinds(channel: grpc.Channel) -> list[str]:
    """The ``authorization`` each kind of call carried, as the echo server saw it."""
    unary = channel.unary_unary(ECHO + "Unary")(b"x", timeout=CALL_TIMEOUT_S)
    server_stream = list(channel.unary_stream(ECHO + "ServerStream")(b"x", timeout=CALL_TIMEOUT_S))
    client_stream = channel.stream_unary(ECHO + "ClientStream")(iter([b"a", b"b"]), timeout=CALL_TIMEOUT_S)
    bidi = list(channel.stream_stream(ECHO + "BidiStream")(iter([b"a"]), timeout=CALL_TIMEOUT_S))
    return [bytes(unary).decode(), *{bytes(m).decode() for m in server_stream}, bytes(client_stream).decode(),
            *{bytes(m).decode() for m in bidi}]  # fmt: skip


def test_token_reaches_the_server_on_every_kind_of_call(monkeypatch: pytest.MonkeyPatch) -> None:
    with echo_server() as echo:
        uri = f"grpc://127.0.0.1:{echo.port}"
        channel = _transport.transport(uri).channel
        assert echo_all_kinds(channel) == ["", "", "", ""]  # no token: no header

        monkeypatch.setenv("KEEL_TRACKING_TOKEN", " env-token-1 \n")  # read at call time, trimmed
        assert echo_all_kinds(channel) == ["Bearer env-token-1"] * 4

        keel.set_tracking_token("explicit.token_2~")  # after the channel exists; wins over the env
        assert keel.get_tracking_token() == "explicit.token_2~"
        assert echo_all_kinds(channel) == ["Bearer explicit.token_2~"] * 4

        # keel's own calls: a unary call through the facade and a streaming artifact upload.
        client = keel.Client(uri)
        with pytest.raises(KeelError):
            client.get_experiment("1")
        assert echo.authorization("/GetExperiment") == "Bearer explicit.token_2~"
        with pytest.raises(KeelError):
            client.log_text("0" * 32, "hello", "a.txt")
        assert echo.authorization("/UploadArtifact") == "Bearer explicit.token_2~"

        # A call's own metadata stays, and its own authorization is not replaced.
        _transport.transport(uri).call(
            channel.unary_unary(ECHO + "Unary"), b"x", idempotent=False, metadata=(("x-keel-test", "kept"),)
        )
        assert echo.seen[-1][1]["x-keel-test"] == "kept"
        assert echo.seen[-1][1]["authorization"] == "Bearer explicit.token_2~"
        answer = channel.unary_unary(ECHO + "Unary")(b"x", metadata=(("authorization", "Bearer mine"),))
        assert bytes(answer) == b"Bearer mine"

        keel.set_tracking_token(None)  # back to the environment
        assert echo_all_kinds(channel) == ["Bearer env-token-1"] * 4


def test_token_over_tls(pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = server_credentials(replace(Settings(), **tls_settings(pki)))
    with echo_server(credentials) as echo:
        client_env(monkeypatch, ca=pki.ca.cert_path)
        keel.set_tracking_token("tls-token")
        client = _transport.Transport(f"grpcs://127.0.0.1:{echo.port}")
        try:
            assert echo_all_kinds(client.channel) == ["Bearer tls-token"] * 4
        finally:
            client.close()


@pytest.mark.parametrize("token", ["", "has space", "line\nbreak", "naïve", "tab\tinside"])
def test_unusable_tokens_are_refused(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgument) as raised:
        keel.set_tracking_token(token)
    assert raised.value.reason == "INVALID_TRACKING_TOKEN"
    assert keel.get_tracking_token() is None  # nothing was set
    if token.strip():
        monkeypatch.setenv("KEEL_TRACKING_TOKEN", token)
        with echo_server() as echo:
            with pytest.raises(InvalidArgument, match="KEEL_TRACKING_TOKEN"):
                _transport.transport(f"grpc://127.0.0.1:{echo.port}").channel.unary_unary(ECHO + "Unary")(
                    b"x"
                )
            assert echo.seen == []  # nothing was sent


def test_token_and_client_certificate_are_identities_of_a_keel_server(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keel server with auth under mutual TLS: the token (unary and streaming calls) or, with
    no token, the client certificate's common name says who calls."""
    from keel.auth import AuthClient
    from keel.exceptions import Unauthenticated

    with running_server(
        f"sqlite:///{tmp_path}/keel.db",
        f"file://{tmp_path}/artifacts",
        auth=True,
        admin_token="admin-secret-1",
        **tls_settings(pki, mutual=True),
    ) as server:
        uri = f"grpcs://127.0.0.1:{server.port}"
        client_env(monkeypatch, ca=pki.ca.cert_path, client=pki.client)
        auth = AuthClient(uri)
        with pytest.raises(Unauthenticated, match="svc-trainer"):  # a certificate of nobody yet
            auth.whoami()

        keel.set_tracking_token("admin-secret-1")  # after the channel exists
        me = auth.whoami()
        assert (me.name, me.auth_method, me.auth_enabled) == ("admin", "admin-token", True)
        auth.create_user("svc-trainer", service_account=True)
        client = keel.Client(uri)
        run = client.create_run(client.create_experiment("mtls-auth"))
        client.log_text(run.info.run_id, "by token", "note.txt")  # a client-streaming call

        keel.set_tracking_token(None)  # no token: the certificate is the identity
        me = auth.whoami()
        assert (me.name, me.service_account, me.auth_method) == ("svc-trainer", True, "certificate")


# ---------------------------------------------------------------- bad client TLS settings


def test_bad_client_tls_settings_are_clear_errors(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    garbage_pem = tmp_path / "garbage-block.pem"
    garbage_pem.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    uri = "grpcs://127.0.0.1:1"
    cases: list[tuple[dict[str, str], str]] = [
        ({"KEEL_TLS_CA": str(tmp_path / "missing.pem")}, "KEEL_TLS_CA=.*cannot be read"),
        ({"KEEL_TLS_CA": str(tmp_path)}, "KEEL_TLS_CA=.*cannot be read"),
        ({"KEEL_TLS_CA": str(garbage)}, "KEEL_TLS_CA=.*is not a PEM certificate"),
        ({"KEEL_TLS_CLIENT_CERT": str(pki.client.cert)}, "KEEL_TLS_CLIENT_KEY is not"),
        ({"KEEL_TLS_CLIENT_KEY": str(pki.client.key)}, "KEEL_TLS_CLIENT_CERT is not"),
        (
            {"KEEL_TLS_CLIENT_CERT": str(pki.client.cert), "KEEL_TLS_CLIENT_KEY": str(garbage)},
            "not a PEM private key",
        ),
        (
            {"KEEL_TLS_CLIENT_CERT": str(garbage_pem), "KEEL_TLS_CLIENT_KEY": str(pki.client.key)},
            "are not a valid certificate",
        ),
        (
            {"KEEL_TLS_CLIENT_CERT": str(pki.client.cert), "KEEL_TLS_CLIENT_KEY": str(pki.stranger.key)},
            "KEEL_TLS_CLIENT_KEY=.* is not the private key of KEEL_TLS_CLIENT_CERT=",
        ),
    ]
    for env, message in cases:
        client_env(monkeypatch)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(InvalidArgument, match=message) as raised:
            _transport.Transport(uri)
        assert raised.value.reason == "INVALID_TLS_CONFIG"
    # The files only matter for grpcs://: a plaintext URI ignores them.
    _transport.Transport("grpc://127.0.0.1:1").close()


# ---------------------------------------------------------------- bad server TLS settings


def _encrypted_key(pki: PKI, tmp_path: Path) -> Path:
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    path = tmp_path / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return path


def _bad_server_cases(pki: PKI, tmp_path: Path) -> list[tuple[list[str], str]]:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    garbage_key = tmp_path / "garbage.key"
    garbage_key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    text = tmp_path / "text.pem"
    text.write_text("hello\n")
    cert, key = str(pki.server.cert), str(pki.server.key)
    return [
        (["--tls-cert", cert], "TLS needs both --tls-cert and --tls-key"),
        (["--tls-key", key], "TLS needs both --tls-cert and --tls-key"),
        (["--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", key], r"--tls-cert \(KEEL_TLS_CERT\) file .*nope.crt' does not exist"),
        (["--tls-cert", cert, "--tls-key", str(tmp_path)], r"--tls-key \(KEEL_TLS_KEY\) .* is a directory"),
        (["--tls-cert", str(text), "--tls-key", key], "is not a PEM certificate"),
        (["--tls-cert", cert, "--tls-key", str(text)], "is not a PEM private key"),
        (["--tls-cert", str(garbage), "--tls-key", key], r"--tls-cert .*garbage.pem' holds no valid certificate"),
        (["--tls-cert", cert, "--tls-key", str(garbage_key)], r"--tls-key .*garbage.key' holds no valid private key"),
        (["--tls-cert", cert, "--tls-key", str(pki.stranger.key)], "is not the private key of the certificate"),
        (["--tls-cert", cert, "--tls-key", str(_encrypted_key(pki, tmp_path))], "is an encrypted key"),
        (["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", str(garbage)], r"--tls-client-ca .* holds no valid certificate"),
        (["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", key], r"--tls-client-ca .* is not a PEM certificate"),
        (["--tls-client-ca", str(pki.ca.cert_path)], "needs --tls-cert and --tls-key"),
    ]  # fmt: skip


def test_bad_server_tls_settings_fail_start_up_with_one_line(pki: PKI, tmp_path: Path) -> None:
    base = [
        sys.executable,
        "-m",
        "keel.cli",
        "server",
        "--port",
        "0",
        "--db-url",
        f"sqlite:///{tmp_path}/keel.db",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_TLS_")}
    for args, message in _bad_server_cases(pki, tmp_path):
        done = subprocess.run(
            [*base, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0, (args, done.stdout)
        assert "listening" not in done.stdout
        assert len(lines) == 1 and lines[0].startswith("keel server: "), (args, done.stderr)
        assert re.search(message, lines[0]), (args, lines[0])


def test_bad_server_tls_settings_in_process(pki: PKI, tmp_path: Path) -> None:
    """build_server checks the files before it opens the database or any port."""
    from keel_server.common.server import build_server

    missing = replace(
        Settings(),
        db_url=f"sqlite:///{tmp_path}/never.db",
        port=0,
        tls_cert=str(tmp_path / "x.crt"),
        tls_key=str(pki.server.key),
    )
    with pytest.raises(ValueError, match="does not exist"):
        build_server(missing)
    assert not (tmp_path / "never.db").exists()
