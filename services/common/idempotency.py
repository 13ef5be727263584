"""Client request ids: what makes a retried non-idempotent write safe.

A client that may retry a write after a lost reply (the SDK does for CreateRun and LogBatch)
sends a ``request_id``. The store claims it inside the write's own transaction, so either the
write and its claim both exist or neither does; a second request with the same id finds the
claim, writes nothing, and answers with what the first one returned. Replicas share the
database, so this holds whichever replica the retry reaches.
"""

from __future__ import annotations

from keel_server.common.db import ClientRequest, now_ms
from keel_server.common.errors import InvalidArgument, quote

MAX_REQUEST_ID_LENGTH = 64


def check_request_id(request_id: str) -> str:
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument(
            f"request_id {quote(request_id, 80)} is {len(request_id)} characters long; the limit is "
            f"{MAX_REQUEST_ID_LENGTH} (a UUID fits)",
            reason="INVALID_REQUEST_ID",
            field="request_id",
        )
    return request_id


def earlier_result(request_id: str, method: str) -> str | None:
    """What the request with this id returned, when it already ran (None otherwise). Call it
    inside the write's transaction, before writing."""
    row = ClientRequest.get_or_none(ClientRequest.request_id == request_id)
    if row is None:
        return None
    if row.method != method:
        raise InvalidArgument(
            f"request_id {quote(request_id, 80)} was already used for {row.method}: use a new id for each "
            "call (retries of one call keep theirs)",
            reason="REQUEST_ID_REUSED",
            field="request_id",
        )
    return str(row.result)


def claim(request_id: str, method: str, result: str = "") -> None:
    """Records the id inside the caller's transaction (with the write it protects). A
    concurrent request with the same id makes one of the two transactions fail with an
    IntegrityError; the caller retries it, and ``earlier_result`` then finds the winner."""
    ClientRequest.insert(request_id=request_id, method=method, result=result, created_time=now_ms()).execute()

