"""Domain errors: the one place that decides which gRPC status a failure becomes.

Stores and servicers raise these; the error interceptor (``interceptors.py``) turns each into a
``google.rpc.Status`` with an ``ErrorInfo`` (reason, domain, metadata) and, for field errors, a
``BadRequest``. Nothing else in the server chooses status codes.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

ERROR_DOMAIN = "keel.dev"


class KeelError(Exception):
    """Base of every error a caller may see. Subclasses fix the gRPC code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        # The request field at fault, reported as a google.rpc.BadRequest field violation.
        self.field = field
        self.metadata: dict[str, str] = {k: str(v) for k, v in (metadata or {}).items()}

    def __str__(self) -> str:
        return self.message


class NotFound(KeelError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(KeelError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class InvalidArgument(KeelError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class FailedPrecondition(KeelError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(KeelError):
    """A lost race (compare-and-set mismatch, serialization failure): retry the whole operation."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class Unavailable(KeelError):
    """A backend (database, artifact store, model worker) cannot be reached: retry the call."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class PermissionDenied(KeelError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class ResourceExhausted(KeelError):
    """A request over a size limit (payload too large for the model worker, too many items)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"
