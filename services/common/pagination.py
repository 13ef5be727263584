"""The one pagination helper: page-size rules and opaque keyset page tokens.

A token is base64url(JSON) of the cursor (the sort key of the last row returned) plus a
fingerprint of the request's filter and order, so a token cannot be replayed against a
different query. Stores fetch ``page_size + 1`` rows and emit a token only if the extra row
exists, so an empty ``next_page_token`` means the end.

A token comes back from the caller, so it is decoded defensively: at most
``MAX_PAGE_TOKEN_CHARS`` characters, strict base64url, UTF-8, and JSON nested no deeper than
the one shape keel writes (an object holding a list of scalars: the nesting is checked before
the JSON parser runs, so a token of ten thousand ``[`` cannot make it recurse), then every
cursor element a string, a 64-bit integer or a float. Anything else is INVALID_ARGUMENT
``INVALID_PAGE_TOKEN`` on field ``page_token``, with a message that never quotes the token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from keel_server.common.errors import InvalidArgument

T = TypeVar("T")

# The longest page token keel writes or reads, in characters. The longest cursor keel builds is
# SearchRuns ordered by five tags (tracking's MAX_ORDER_KEYS) of 8,000 characters each
# (MAX_TAG_VALUE_LENGTH): 40,000 characters that JSON writes in at most 6 bytes each (control
# characters become \u00XX escapes; others take at most 4 bytes of UTF-8), 240 KB, 320,000
# characters of base64. The limit leaves room above that (a test keeps it true); a token over it
# is refused before any decoding.
MAX_PAGE_TOKEN_CHARS = 384 * 1024
_INT64 = (-(2**63), 2**63 - 1)
# A JSON string (the closing quote optional so that an unterminated one is consumed in one pass
# too: the pattern never backtracks, so stripping strings is linear in the token's length).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")

_MALFORMED = "page_token is malformed: pass the next_page_token of a previous response unchanged"


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
    """The token of ``cursor``. A cursor too long for a token (only a request that repeats sort
    keys many times can make one) is INVALID_ARGUMENT ``PAGE_TOKEN_TOO_LONG``: a token the server
    would refuse on the next page is never handed out."""
    raw = json.dumps(
        {"c": list(cursor), "f": request_fingerprint},
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=True,
    ).encode()
    token = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidArgument(
            f"the sort values of this page's last row make a page token of {len(token)} characters, over "
            f"the limit of {MAX_PAGE_TOKEN_CHARS}: order by fewer keys",
            reason="PAGE_TOKEN_TOO_LONG",
            field="order_by",
            metadata={"length": len(token), "limit": MAX_PAGE_TOKEN_CHARS},
        )
    return token


def malformed() -> InvalidArgument:
    return InvalidArgument(_MALFORMED, reason="INVALID_PAGE_TOKEN", field="page_token")


def _parse(token: str) -> Any:
    """The JSON value of ``token``, parsed only once its nesting is known to be shallow."""
    if not _BASE64URL.fullmatch(token):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    text = raw.decode("utf-8")
    # Outside its strings, the JSON of a token holds one object and one list: more brackets than
    # that is not a token, and refusing it here keeps json.loads from recursing.
    outside = _JSON_STRING.sub("", text)
    if outside.count("{") > 1 or outside.count("[") > 1:
        raise ValueError("nested too deep")
    return json.loads(text)


def _check_element(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("cursor elements must be strings or numbers")
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        raise ValueError("integer out of range")
    if isinstance(value, str):
        value.encode("utf-8")  # a lone surrogate (\ud800) cannot reach the database


def decode_token(token: str, request_fingerprint: str) -> list[Any] | None:
    """The cursor of ``token``; None for an empty token (first page)."""
    if not token:
        return None
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidArgument(
            f"page_token has {len(token)} characters, more than any page token (at most "
            f"{MAX_PAGE_TOKEN_CHARS}): pass the next_page_token of a previous response unchanged",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
            metadata={"length": len(token), "limit": MAX_PAGE_TOKEN_CHARS},
        )
    try:
        data = _parse(token)
        if not isinstance(data, dict) or set(data) != {"c", "f"}:
            raise ValueError("not a token object")
        cursor, bound_to = data["c"], data["f"]
        if not isinstance(cursor, list) or not isinstance(bound_to, str):
            raise ValueError("cursor is not a list")
        for value in cursor:
            _check_element(value)
    except (ValueError, RecursionError) as exc:  # binascii.Error and UnicodeError are ValueErrors
        raise malformed() from exc
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
