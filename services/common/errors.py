"""Domain errors: the one place that decides which gRPC status a failure becomes.

Stores and servicers raise these; the error interceptor (``interceptors.py``) turns each into a
``google.rpc.Status`` with an ``ErrorInfo`` (reason, domain, metadata) and, for field errors, a
``BadRequest``. Nothing else in the server chooses status codes.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

ERROR_DOMAIN = "keel.dev"

# Bounds on what an error carries back, whatever the caller sent: a huge input quoted whole would
# overflow gRPC's metadata limit (the caller would see RESOURCE_EXHAUSTED instead of the real
# error) and write megabyte log lines.
MAX_MESSAGE_CHARS = 1024
MAX_METADATA_CHARS = 256
QUOTE_CHARS = 200


def clip(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, keeping its start and its end (where messages
    say what to do), with the number of characters left out in the middle."""
    if len(text) <= limit:
        return text
    tail = limit // 3
    head = limit - tail
    return f"{text[:head]}…[{len(text) - head - tail} characters left out]…{text[-tail:]}"


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for a message, at most about ``limit`` characters of it."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}…[{len(value)} characters in all]"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…[{len(text)} characters in all]"


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
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        # The request field at fault, reported as a google.rpc.BadRequest field violation.
        self.field = field
        self.metadata: dict[str, str] = {k: clip(str(v), MAX_METADATA_CHARS) for k, v in (metadata or {}).items()}

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


class Unauthenticated(KeelError):
    """No credentials, or ones that are unknown, expired, revoked or of a disabled user."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class Unimplemented(KeelError):
    """A keel service this server does not run (it runs elsewhere, or nowhere known here)."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


class DataLoss(KeelError):
    """Stored data that keel promised to keep is gone (files of a READY model version removed
    behind keel's back): retrying will not help."""

    code = grpc.StatusCode.DATA_LOSS
    default_reason = "DATA_LOSS"


class ResourceExhausted(KeelError):
    """A request over a size limit (payload too large for the model worker, too many items)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"
