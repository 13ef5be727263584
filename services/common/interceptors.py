"""The server interceptor every keel server installs.

It gives each call a request id (from the ``x-request-id`` metadata or a fresh one, returned in
the trailing metadata and put in every log line), and it is the one place where exceptions
become gRPC statuses: domain errors (``errors.py``) keep their code and reason; database
outages become UNAVAILABLE and lost races ABORTED; anything else becomes INTERNAL with a
generic message and the request id, logged with its traceback. Callers never see UNKNOWN or
a traceback.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import peewee as pw
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from keel_server.common import db as dbmod
from keel_server.common import metrics
from keel_server.common.errors import ERROR_DOMAIN, Aborted, InvalidArgument, KeelError, Unavailable
from keel_server.common.logs import request_id_var

if TYPE_CHECKING:
    from keel_server.auth.gate import Entered, Gate

log = logging.getLogger("keel.rpc")


def to_status(error: KeelError) -> status_pb2.Status:
    """The google.rpc.Status of a domain error: ErrorInfo always, BadRequest for a field error."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    details = [info]
    if error.field:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
                ]
            )
        )
    packed = []
    for detail in details:
        any_msg = any_pb2.Any()
        any_msg.Pack(detail)
        packed.append(any_msg)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=packed)


def translate(exc: BaseException) -> KeelError | None:
    """Maps an exception to the domain error the caller sees; None means INTERNAL.

    It is also the one place where the SDK's errors become the server's: the shared layer
    (``keel.shared``: URI grammar, tensor codec), ``keel.pyfunc`` and the flavors raise
    ``keel.exceptions`` errors, which keep their code, reason, field and metadata here."""
    if isinstance(exc, KeelError):
        return exc
    from keel.exceptions import KeelError as SdkError
    from keel_server.common import errors

    if isinstance(exc, SdkError):
        kinds = (
            errors.NotFound, errors.AlreadyExists, errors.InvalidArgument, errors.FailedPrecondition,
            errors.Aborted, errors.Unavailable, errors.PermissionDenied, errors.Unauthenticated,
            errors.Unimplemented, errors.DataLoss, errors.ResourceExhausted,
        )  # fmt: skip
        kind = next((k for k in kinds if k.code == exc.code), KeelError)
        error = kind(exc.message, reason=exc.reason, field=exc.field or None, metadata=exc.metadata)
        if kind is KeelError and exc.code not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN):
            error.code = exc.code  # DEADLINE_EXCEEDED, INTERNAL, ...: as it was; never UNKNOWN
        return error
    if isinstance(exc, pw.PeeweeException) and dbmod.is_retryable(exc):
        return Aborted(
            f"the operation lost a race with a concurrent change, retry it ({exc})",
            reason="CONCURRENT_MODIFICATION",
        )
    if isinstance(exc, pw.OperationalError | pw.InterfaceError):
        _drop_connection()
        return Unavailable(
            f"the metadata database is unavailable: {exc}".strip(), reason="DATABASE_UNAVAILABLE"
        )
    return None


def _drop_connection() -> None:
    """Discards this thread's (possibly broken) connection so the next call reconnects."""
    try:
        database = dbmod.db.obj
        if database is not None and not database.is_closed():
            if hasattr(database, "manual_close"):
                database.manual_close()
            else:
                database.close()
    except Exception:  # noqa: BLE001 - best effort on an already broken connection
        pass


class _Undecodable:
    """Stands in for a request message whose bytes did not parse (grpc itself would answer
    INTERNAL "Exception deserializing request!" before any keel code runs)."""

    def __init__(self, method: str) -> None:
        self.method = method

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"the request to {self.method} could not be parsed: a string field holds bytes that are not "
            "valid UTF-8, or the message does not match the method's request type; send UTF-8 text in "
            "string fields",
            reason="MALFORMED_REQUEST",
        )


def _tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning an ``_Undecodable`` instead of raising on bad bytes."""
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return _Undecodable(method)

    return deserialize


def _checked(request: Any) -> Any:
    """Raises the INVALID_ARGUMENT of an undecodable unary request."""
    if isinstance(request, _Undecodable):
        raise request.error()
    return request


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    """A request stream that raises INVALID_ARGUMENT at the first undecodable message."""
    for request in requests:
        yield _checked(request)


class KeelServerInterceptor(grpc.ServerInterceptor):
    def __init__(self, gate: Gate | None = None) -> None:
        # Auth and audit (``keel_server.auth.gate``); None or inactive: every call goes through.
        self.gate = gate if gate is not None and gate.active else None

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method  # type: ignore[attr-defined]
        incoming = dict(details.invocation_metadata or ())  # type: ignore[attr-defined]
        given_id = incoming.get("x-request-id", "")
        request_deserializer = _tolerant(handler.request_deserializer, method)
        # Bind the metadata now: the wrappers run later, in a worker thread.
        admit = self._admission(method, incoming)

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary
            wrapped_unary = self._wrap_unary(inner, method, given_id, streaming=bool(handler.stream_unary), admit=admit)
            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            return factory(
                wrapped_unary,
                request_deserializer=request_deserializer,
                response_serializer=handler.response_serializer,
            )
        inner_stream = handler.unary_stream or handler.stream_stream
        wrapped_stream = self._wrap_stream(
            inner_stream, method, given_id, streaming=bool(handler.stream_stream), admit=admit
        )
        factory = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        return factory(
            wrapped_stream,
            request_deserializer=request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _admission(self, method: str, metadata: dict[str, Any]) -> Admission | None:
        if self.gate is None:
            return None
        return Admission(self.gate, method, metadata)

    def _wrap_unary(
        self, behavior: Callable[..., Any], method: str, given_id: str, streaming: bool, admit: Admission | None
    ) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            token = _begin(context, given_id)
            started = time.perf_counter()
            try:
                request = _checked_stream(request) if streaming else _checked(request)
                if admit is not None:
                    request = admit.enter(request, context, streaming)
                response = behavior(request, context)
                _leave(admit, True)
            except Exception as exc:  # noqa: BLE001 - the one place exceptions become statuses
                _leave(admit, False)
                _abort(context, exc, method, started)
                raise  # not reached: _abort always raises
            finally:
                request_id_var.reset(token)
            metrics.observe(method, "OK", started)
            return response

        return call

    def _wrap_stream(
        self, behavior: Callable[..., Any], method: str, given_id: str, streaming: bool, admit: Admission | None
    ) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            token = _begin(context, given_id)
            started = time.perf_counter()
            try:
                request = _checked_stream(request) if streaming else _checked(request)
                if admit is not None:
                    request = admit.enter(request, context, streaming)
                yield from behavior(request, context)
                _leave(admit, True)
            except Exception as exc:  # noqa: BLE001
                _leave(admit, False)
                _abort(context, exc, method, started)
            finally:
                _leave(admit, False)  # no-op unless the client went away mid-stream (GeneratorExit)
                request_id_var.reset(token)
            metrics.observe(method, "OK", started)

        return call


class Admission:
    """The gate's part of one call: ``enter`` with the decoded request (the first message of a
    request stream), ``leave`` once the handler is done."""

    def __init__(self, gate: Gate, method: str, metadata: dict[str, Any]) -> None:
        self.gate = gate
        self.method = method
        self.metadata = metadata
        self.entered: Entered | None = None

    def enter(self, request: Any, context: grpc.ServicerContext, streaming: bool) -> Any:
        if not streaming:
            self.entered = self.gate.enter(self.method, self.metadata, context, request)
            return request
        # A request stream: the first message decides (an upload's header); PredictStream checks
        # every message.
        first = next(request, None)
        self.entered = self.gate.enter(self.method, self.metadata, context, first)
        rest = request if first is None else itertools.chain((first,), request)
        return self.gate.guarded_stream(self.entered, rest)

    def leave(self, succeeded: bool) -> None:
        entered, self.entered = self.entered, None
        self.gate.leave(entered, succeeded)


def _leave(admit: Admission | None, succeeded: bool) -> None:
    if admit is not None and admit.entered is not None:
        admit.leave(succeeded)


def _begin(context: grpc.ServicerContext, given_id: str) -> contextvars.Token[str]:
    request_id = given_id or uuid.uuid4().hex[:16]
    context.set_trailing_metadata((("x-request-id", request_id),))
    return request_id_var.set(request_id)


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str, started: float) -> None:
    if _is_grpc_abort(exc, context):
        metrics.observe(method, _code_name(context.code()), started)
        raise exc  # context.abort() already set the status
    error = translate(exc)
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    if error is None:
        log.error(
            "unhandled error in %s",
            method,
            exc_info=exc,
            extra={"method": method, "duration_ms": duration_ms},
        )
        error = KeelError(
            f"internal error (request id {request_id_var.get()}); the server log has the details"
        )
    else:
        level = logging.ERROR if isinstance(error, Unavailable) else logging.INFO
        log.log(
            level,
            "%s failed: %s",
            method,
            error.message,
            extra={"method": method, "code": error.code.name, "duration_ms": duration_ms},
        )
    metrics.observe(method, error.code.name, started)
    status = rpc_status.to_status(to_status(error))
    # abort_with_status replaces the trailing metadata, so the request id travels with the details.
    context.abort_with_status(
        _Status(
            status.code, status.details, (*status.trailing_metadata, ("x-request-id", request_id_var.get()))
        )
    )


class _Status(grpc.Status):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, Any], ...]
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def _code_name(code: Any) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def _is_grpc_abort(exc: BaseException, context: grpc.ServicerContext) -> bool:
    """True for the exception grpc raises inside context.abort()."""
    code = context.code() if hasattr(context, "code") else None
    return type(exc) is Exception and code not in (None, grpc.StatusCode.OK, code_pb2.OK)
