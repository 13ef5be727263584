"""Typed errors of the keel SDK.

Every failed call raises a ``KeelError`` subclass chosen by the gRPC status code, carrying the
server's ``reason`` (from ``google.rpc.ErrorInfo``), metadata and request id.

For code written against MLflow, ``KeelError`` is also ``MlflowException``: every error has an
``error_code`` under MLflow's name (``RESOURCE_DOES_NOT_EXIST`` ...) and an HTTP status
(``get_http_status_code()``), from the one table ``MLFLOW_ERROR_CODES`` that the MLflow REST port
also answers with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grpc

# gRPC status -> (MLflow ``error_code`` name, HTTP status). One table for the SDK's
# ``KeelError.error_code`` and the MLflow REST port's error replies.
MLFLOW_ERROR_CODES: dict[grpc.StatusCode, tuple[str, int]] = {
    grpc.StatusCode.NOT_FOUND: ("RESOURCE_DOES_NOT_EXIST", 404),
    grpc.StatusCode.ALREADY_EXISTS: ("RESOURCE_ALREADY_EXISTS", 400),
    grpc.StatusCode.INVALID_ARGUMENT: ("INVALID_PARAMETER_VALUE", 400),
    grpc.StatusCode.FAILED_PRECONDITION: ("INVALID_STATE", 400),
    grpc.StatusCode.OUT_OF_RANGE: ("INVALID_PARAMETER_VALUE", 400),
    grpc.StatusCode.PERMISSION_DENIED: ("PERMISSION_DENIED", 403),
    grpc.StatusCode.UNAUTHENTICATED: ("UNAUTHENTICATED", 401),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("RESOURCE_EXHAUSTED", 429),
    grpc.StatusCode.ABORTED: ("ABORTED", 409),
    grpc.StatusCode.UNAVAILABLE: ("TEMPORARILY_UNAVAILABLE", 503),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("DEADLINE_EXCEEDED", 504),
    grpc.StatusCode.UNIMPLEMENTED: ("NOT_IMPLEMENTED", 501),
    grpc.StatusCode.INTERNAL: ("INTERNAL_ERROR", 500),
    grpc.StatusCode.UNKNOWN: ("INTERNAL_ERROR", 500),
    grpc.StatusCode.DATA_LOSS: ("INTERNAL_ERROR", 500),
    grpc.StatusCode.CANCELLED: ("CANCELLED", 499),
}


class ErrorCode:
    """MLflow's error code names (``mlflow.protos.databricks_pb2``), as strings: compare with
    ``err.error_code == ErrorCode.RESOURCE_DOES_NOT_EXIST``."""

    INTERNAL_ERROR = "INTERNAL_ERROR"
    TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
    BAD_REQUEST = "BAD_REQUEST"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ABORTED = "ABORTED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
    ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    INVALID_STATE = "INVALID_STATE"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
    RESOURCE_CONFLICT = "RESOURCE_CONFLICT"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
    DATA_LOSS = "DATA_LOSS"
    RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
    RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"


# MLflow-style module constants: ``from keel.exceptions import RESOURCE_DOES_NOT_EXIST``.
INTERNAL_ERROR = ErrorCode.INTERNAL_ERROR
TEMPORARILY_UNAVAILABLE = ErrorCode.TEMPORARILY_UNAVAILABLE
BAD_REQUEST = ErrorCode.BAD_REQUEST
INVALID_PARAMETER_VALUE = ErrorCode.INVALID_PARAMETER_VALUE
INVALID_STATE = ErrorCode.INVALID_STATE
PERMISSION_DENIED = ErrorCode.PERMISSION_DENIED
UNAUTHENTICATED = ErrorCode.UNAUTHENTICATED
RESOURCE_ALREADY_EXISTS = ErrorCode.RESOURCE_ALREADY_EXISTS
RESOURCE_DOES_NOT_EXIST = ErrorCode.RESOURCE_DOES_NOT_EXIST
NOT_IMPLEMENTED = ErrorCode.NOT_IMPLEMENTED

# An MLflow code given to ``MlflowException(..., error_code=...)`` -> the gRPC status it stands
# for (first in MLFLOW_ERROR_CODES wins: INTERNAL_ERROR -> INTERNAL), plus MLflow-only names.
_GRPC_BY_MLFLOW_CODE: dict[str, grpc.StatusCode] = {}
for _status, (_name, _http) in MLFLOW_ERROR_CODES.items():
    _GRPC_BY_MLFLOW_CODE.setdefault(_name, _status)
_GRPC_BY_MLFLOW_CODE.update(
    {
        "BAD_REQUEST": grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_REQUEST": grpc.StatusCode.INVALID_ARGUMENT,
        "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
        "ENDPOINT_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
        "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
        "RESOURCE_CONFLICT": grpc.StatusCode.ABORTED,
        "REQUEST_LIMIT_EXCEEDED": grpc.StatusCode.RESOURCE_EXHAUSTED,
        "DATA_LOSS": grpc.StatusCode.DATA_LOSS,
    }
)
# HTTP statuses of MLflow-only names (MLflow's ERROR_CODE_TO_HTTP_STATUS).
_HTTP_BY_MLFLOW_CODE: dict[str, int] = {name: http for name, http in MLFLOW_ERROR_CODES.values()}
_HTTP_BY_MLFLOW_CODE.update(
    {
        "BAD_REQUEST": 400,
        "MALFORMED_REQUEST": 400,
        "NOT_FOUND": 404,
        "ENDPOINT_NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "RESOURCE_CONFLICT": 409,
        "REQUEST_LIMIT_EXCEEDED": 429,
    }
)


class KeelError(Exception):
    """Base of every keel SDK error."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __new__(cls, *args: Any, **kwargs: Any) -> KeelError:
        # MlflowException("...", error_code=RESOURCE_DOES_NOT_EXIST) builds the typed subclass
        # (NotFound), so ``except keel.exceptions.NotFound`` catches it too.
        error_code = kwargs.get("error_code")
        if cls is KeelError and error_code is not None:
            status = _GRPC_BY_MLFLOW_CODE.get(_mlflow_code_name(error_code))
            cls = _BY_CODE.get(status, KeelError) if status is not None else KeelError
        return super().__new__(cls, *args, **kwargs)

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
        field: str = "",
        error_code: str | int | None = None,
        **json_kwargs: Any,
    ) -> None:
        message = str(message)
        super().__init__(message)
        self.message = message
        if error_code is not None:
            # Raised by user code the MLflow way: MlflowException("...", error_code=...).
            name = _mlflow_code_name(error_code)
            self.code = _GRPC_BY_MLFLOW_CODE.get(name, grpc.StatusCode.INTERNAL)
            self._mlflow_code = name
        self.reason = reason or self.code.name
        self.metadata = dict(metadata or {})
        self.request_id = request_id
        self.field = field
        self.json_kwargs = json_kwargs

    def __str__(self) -> str:
        return f"{self.message} [{self.code.name}: {self.reason}]"

    @property
    def error_code(self) -> str:
        """MLflow's name for this error (``RESOURCE_DOES_NOT_EXIST``, ...)."""
        explicit = getattr(self, "_mlflow_code", None)
        if explicit:
            return str(explicit)
        return MLFLOW_ERROR_CODES.get(self.code, ("INTERNAL_ERROR", 500))[0]

    def get_http_status_code(self) -> int:
        """The HTTP status MLflow's server answers this error with."""
        return _HTTP_BY_MLFLOW_CODE.get(self.error_code, 500)

    def serialize_as_json(self) -> str:
        """The error as MLflow's REST API writes it: ``{"error_code": ..., "message": ...}``."""
        body: dict[str, Any] = {"error_code": self.error_code, "message": self.message}
        body.update(self.json_kwargs)
        return json.dumps(body)

    @classmethod
    def invalid_parameter_value(cls, message: str, **kwargs: Any) -> KeelError:
        """MLflow's helper: an ``INVALID_PARAMETER_VALUE`` error."""
        return InvalidArgument(message, **kwargs)


def _mlflow_code_name(error_code: str | int) -> str:
    """MLflow passes its codes as proto enum ints; keel's are names. Accept both."""
    if isinstance(error_code, str):
        return error_code
    try:  # the numbers of mlflow.protos.databricks_pb2.ErrorCode, without importing mlflow
        return _MLFLOW_CODE_NUMBERS[int(error_code)]
    except (KeyError, ValueError, TypeError):
        return "INTERNAL_ERROR"


_MLFLOW_CODE_NUMBERS: dict[int, str] = {
    1: "INTERNAL_ERROR",
    2: "TEMPORARILY_UNAVAILABLE",
    4: "BAD_REQUEST",
    7: "DEADLINE_EXCEEDED",
    8: "CANCELLED",
    9: "RESOURCE_EXHAUSTED",
    10: "ABORTED",
    11: "NOT_FOUND",
    12: "ALREADY_EXISTS",
    13: "UNAUTHENTICATED",
    1000: "INVALID_PARAMETER_VALUE",
    1001: "ENDPOINT_NOT_FOUND",
    1002: "MALFORMED_REQUEST",
    1003: "INVALID_STATE",
    1004: "PERMISSION_DENIED",
    1007: "REQUEST_LIMIT_EXCEEDED",
    1008: "RESOURCE_CONFLICT",
    1010: "NOT_IMPLEMENTED",
    1011: "DATA_LOSS",
    3001: "RESOURCE_ALREADY_EXISTS",
    3002: "RESOURCE_DOES_NOT_EXIST",
}


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


# MLflow users catch and raise this name: ``except MlflowException as e: e.error_code``.
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
