"""The one error mapping: domain error → google.rpc.Status → typed SDK error, per status code.

A tiny generic service behind the real interceptor raises each domain error; the SDK transport
must rebuild the same code, reason, message and field.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import peewee as pw
import pytest

from keel import exceptions as sdk
from keel._transport import Transport
from keel_server.common import errors
from keel_server.common.interceptors import KeelServerInterceptor

CASES = {
    "NotFound": (errors.NotFound("run 'abc' not found", reason="RUN_NOT_FOUND"), sdk.NotFound),
    "AlreadyExists": (
        errors.AlreadyExists("experiment 'x' already exists", reason="EXPERIMENT_EXISTS"),
        sdk.AlreadyExists,
    ),
    "InvalidArgument": (
        errors.InvalidArgument(
            "invalid filter at position 3: expected a value",
            reason="INVALID_FILTER",
            field="filter",
            metadata={"position": 3},
        ),
        sdk.InvalidArgument,
    ),
    "FailedPrecondition": (
        errors.FailedPrecondition("run 'abc' is deleted", reason="RUN_DELETED"),
        sdk.FailedPrecondition,
    ),
    "Aborted": (errors.Aborted("alias moved to version 3, expected 2", reason="ALIAS_MOVED"), sdk.Aborted),
    "Unavailable": (
        errors.Unavailable("artifact store s3://b is unavailable", reason="STORE_UNAVAILABLE"),
        sdk.Unavailable,
    ),
    "PermissionDenied": (
        errors.PermissionDenied("path escapes the run root", reason="PATH_OUTSIDE_ROOT"),
        sdk.PermissionDenied,
    ),
    "ResourceExhausted": (
        errors.ResourceExhausted("payload of 300 MB exceeds 256 MB", reason="PAYLOAD_TOO_LARGE"),
        sdk.ResourceExhausted,
    ),
}

_identity = (lambda b: b, lambda b: b)


class _Behaviour:
    """Per-method behaviours of the test service; unavailable_left counts injected UNAVAILABLEs."""

    def __init__(self) -> None:
        self.unavailable_left = 0
        self.calls = 0

    def handle(self, method: str, request: bytes) -> bytes:
        self.calls += 1
        name = method.rsplit("/", 1)[-1]
        if name in CASES:
            raise CASES[name][0]
        if name == "DatabaseDown":
            raise pw.OperationalError("could not connect to server: Connection refused")
        if name == "Deadlock":
            raise pw.OperationalError("deadlock detected")
        if name == "Crash":
            raise ZeroDivisionError("secret internal detail")
        if name == "Flaky":
            if self.unavailable_left > 0:
                self.unavailable_left -= 1
                raise errors.Unavailable("try again", reason="FLAKY")
            return b"ok"
        if name == "Stream":
            raise errors.NotFound("stream target missing", reason="GONE")
        return request


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, behaviour: _Behaviour) -> None:
        self.behaviour = behaviour

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method  # type: ignore[attr-defined]
        if method.endswith("/Stream"):

            def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                yield b"first"
                self.behaviour.handle(method, request)

            return grpc.unary_stream_rpc_method_handler(stream, *_identity)
        return grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: self.behaviour.handle(method, req), *_identity
        )


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[Transport, _Behaviour]]:
    behaviour = _Behaviour()
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[KeelServerInterceptor()])
    server.add_generic_rpc_handlers([_Handler(behaviour)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    transport = Transport(f"grpc://127.0.0.1:{port}")
    yield transport, behaviour
    transport.close()
    server.stop(None)


def _unary(transport: Transport, name: str):
    return transport.channel.unary_unary(f"/test.Errors/{name}", *_identity)


@pytest.mark.parametrize("name", sorted(CASES))
def test_domain_error_maps_to_code_reason_and_message(
    service: tuple[Transport, _Behaviour], name: str
) -> None:
    transport, _ = service
    domain_error, sdk_class = CASES[name]
    with pytest.raises(sdk_class) as caught:
        transport.call(_unary(transport, name), b"x", idempotent=False)
    error = caught.value
    assert error.code == domain_error.code
    assert error.reason == domain_error.reason
    assert error.message == domain_error.message
    assert error.metadata == domain_error.metadata
    assert error.request_id  # every call carries a request id back
    if domain_error.field:
        assert error.field == domain_error.field


def test_database_outage_is_unavailable(service: tuple[Transport, _Behaviour]) -> None:
    transport, _ = service
    with pytest.raises(sdk.Unavailable) as caught:
        transport.call(_unary(transport, "DatabaseDown"), b"", idempotent=False)
    assert caught.value.reason == "DATABASE_UNAVAILABLE"
    assert "metadata database is unavailable" in caught.value.message


def test_lost_race_is_aborted(service: tuple[Transport, _Behaviour]) -> None:
    transport, _ = service
    with pytest.raises(sdk.Aborted) as caught:
        transport.call(_unary(transport, "Deadlock"), b"", idempotent=False)
    assert caught.value.reason == "CONCURRENT_MODIFICATION"


def test_unexpected_exception_is_internal_without_details(service: tuple[Transport, _Behaviour]) -> None:
    transport, _ = service
    with pytest.raises(sdk.Internal) as caught:
        transport.call(_unary(transport, "Crash"), b"", idempotent=False)
    assert caught.value.code == grpc.StatusCode.INTERNAL
    assert "secret internal detail" not in caught.value.message
    assert "Traceback" not in caught.value.message
    assert caught.value.request_id in caught.value.message


def test_error_in_a_server_stream_is_mapped(service: tuple[Transport, _Behaviour]) -> None:
    from keel._transport import map_errors

    transport, _ = service
    call = transport.channel.unary_stream("/test.Errors/Stream", *_identity)
    received = []
    with pytest.raises(sdk.NotFound) as caught:
        for item in map_errors(call(b"")):
            received.append(item)
    assert received == [b"first"]
    assert caught.value.reason == "GONE"


def test_unavailable_is_retried_for_idempotent_calls_only(service: tuple[Transport, _Behaviour]) -> None:
    transport, behaviour = service
    behaviour.unavailable_left, behaviour.calls = 2, 0
    assert transport.call(_unary(transport, "Flaky"), b"", idempotent=True) == b"ok"
    assert behaviour.calls == 3

    behaviour.unavailable_left, behaviour.calls = 1, 0
    with pytest.raises(sdk.Unavailable):
        transport.call(_unary(transport, "Flaky"), b"", idempotent=False)
    assert behaviour.calls == 1


def test_large_messages_pass() -> None:
    """The transport's raised limits let a 20 MiB message through (the gRPC default is 4 MiB)."""
    from keel_server.common.config import Settings

    limit = Settings().max_message_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(2),
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
    )
    server.add_generic_rpc_handlers([_Handler(_Behaviour())])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        transport = Transport(f"grpc://127.0.0.1:{port}")
        payload = b"x" * (20 * 1024 * 1024)
        assert transport.call(_unary(transport, "Echo"), payload, idempotent=True) == payload
        transport.close()
    finally:
        server.stop(None)


@pytest.mark.parametrize("uri", ["http://localhost:5000", "localhost:50051", "grpc://"])
def test_bad_tracking_uri_is_explained(uri: str) -> None:
    import keel

    with pytest.raises(sdk.InvalidArgument, match="grpc://host:port"):
        keel.set_tracking_uri(uri)
