"""The one pagination helper: page-size rules and opaque keyset page tokens.

A token is base64url(JSON) of the cursor (the sort key of the last row returned) plus a
fingerprint of the request's filter and order, so a token cannot be replayed against a
different query. Stores fetch ``page_size + 1`` rows and emit a token only if the extra row
exists, so an empty ``next_page_token`` means the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from keel_server.common.errors import InvalidArgument

T = TypeVar("T")


def page_size(requested: int, default: int, maximum: int) -> int:
    """0 means the default, values above the maximum are capped, negatives are refused."""
    if requested < 0:
        raise InvalidArgument(
            f"page_size must be >= 0 (0 means the default of {default}), got {requested}",
            reason="INVALID_PAGE_SIZE",
            field="page_size",
        )
    return default if requested == 0 else min(requested, maximum)


def fingerprint(*parts: Any) -> str:
    """A short digest of the request parameters a token is bound to."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_token(cursor: Sequence[Any], request_fingerprint: str) -> str:
    raw = json.dumps({"c": list(cursor), "f": request_fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, request_fingerprint: str) -> list[Any] | None:
    """The cursor of ``token``; None for an empty token (first page)."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor, bound_to = data["c"], data["f"]
        if not isinstance(cursor, list):
            raise ValueError("cursor is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            "page_token is malformed: pass the next_page_token of a previous response unchanged",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
        ) from exc
    if bound_to != request_fingerprint:
        raise InvalidArgument(
            "page_token belongs to a different query: keep filter, order and other parameters unchanged between pages",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
        )
    return cursor


def trim(
    rows: list[T], size: int, cursor_of: Callable[[T], Sequence[Any]], request_fingerprint: str
) -> tuple[list[T], str]:
    """The page out of ``size + 1`` fetched rows, and the token after its last row ('' when the
    extra row is absent, i.e. at the end)."""
    if len(rows) <= size:
        return rows, ""
    page = rows[:size]
    return page, encode_token(cursor_of(page[-1]), request_fingerprint)
