"""Typed errors of the keel SDK.

Every failed call raises a ``KeelError`` subclass chosen by the gRPC status code, carrying the
server's ``reason`` (from ``google.rpc.ErrorInfo``), metadata and request id.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc


class KeelError(Exception):
    """Base of every keel SDK error."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
        field: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.code.name
        self.metadata = dict(metadata or {})
        self.request_id = request_id
        self.field = field

    def __str__(self) -> str:
        return f"{self.message} [{self.code.name}: {self.reason}]"


class NotFound(KeelError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(KeelError):
    code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(KeelError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(KeelError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(KeelError):
    code = grpc.StatusCode.ABORTED


class Unavailable(KeelError):
    code = grpc.StatusCode.UNAVAILABLE


class PermissionDenied(KeelError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(KeelError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(KeelError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(KeelError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(KeelError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(KeelError):
    code = grpc.StatusCode.INTERNAL


class DataLoss(KeelError):
    """Stored data is gone (a READY model version whose files were removed outside keel)."""

    code = grpc.StatusCode.DATA_LOSS


# MLflow users catch this name.
MlflowException = KeelError

_BY_CODE: dict[grpc.StatusCode, type[KeelError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidArgument,
        FailedPrecondition,
        Aborted,
        Unavailable,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        DeadlineExceeded,
        Unimplemented,
        Internal,
        DataLoss,
    )
}


def from_rpc_error(error: grpc.RpcError) -> KeelError:
    """Rebuilds the typed error of a failed call from its status and ``google.rpc`` details."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    message: str = (error.details() if hasattr(error, "details") else "") or code.name  # type: ignore[attr-defined]
    reason, metadata, field, request_id = "", {}, "", ""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                if bad.field_violations:
                    field = bad.field_violations[0].field
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None  # type: ignore[attr-defined]
    for key, value in trailing or ():
        if key == "x-request-id":
            request_id = str(value)
    cls = _BY_CODE.get(code, KeelError)
    err = cls(message, reason=reason, metadata=metadata, request_id=request_id, field=field)
    if cls is KeelError:
        err.code = code
    return err


class MissingExtra(FailedPrecondition, ImportError):
    """An optional package is not installed; the message names the ``keel-ml`` extra that brings
    it (``pip install 'keel-ml[sklearn]'``). Raised by ``keel.extras.require``; it is also an
    ``ImportError``, so code that guards an optional import keeps working."""

    def __init__(
        self,
        message: str,
        *,
        extra: str = "",
        package: str = "",
        reason: str = "MISSING_EXTRA",
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
        field: str = "",
    ) -> None:
        info = dict(metadata or {})
        if extra:
            info.setdefault("extra", extra)
        if package:
            info.setdefault("package", package)
        super().__init__(message, reason=reason, metadata=info, request_id=request_id, field=field)
        self.extra = extra
        self.package = package
