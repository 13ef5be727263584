"""The one check of untrusted paths and URIs: percent-decode until stable, then refuse anything
that could name a place other than the one it seems to name.

MLflow's registry and artifact server were broken again and again (CVE-2023-1177, -2356, -2780,
-6909, CVE-2024-1558, -1560, -1593, -3573) by checks that looked at one spelling of a path while
the store, a proxy or a URL parser read another: ``%2e%2e%2f`` decoded after the check, twice
encoded ``%252e``, a backslash that Windows takes for a separator, ``#`` hiding the rest of a
URL, ``;`` path parameters, ``C:`` drives. So every spelling is looked at: the value as given
and each percent-decoding of it, at most ``MAX_DECODE_ROUNDS`` rounds (one still changing after
that is refused), and the value is refused when any spelling breaks a rule. Nothing is rewritten:
a value that passes is used exactly as given.

Used for the artifact service's paths and URIs and for model version sources; failures are
INVALID_ARGUMENT ``UNSAFE_PATH`` with the field, the rule (``metadata["rule"]``) and how to fix it.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

from keel_server.common.errors import InvalidArgument, quote

REASON = "UNSAFE_PATH"
# More rounds than any honest client needs (one; two when a URL is built from an encoded path).
MAX_DECODE_ROUNDS = 8

# The rules, as reported in metadata["rule"], and what each tells the caller to do.
ENCODING = "ENCODING"
DOT_DOT = "DOT_DOT_SEGMENT"
CONTROL = "CONTROL_CHARACTER"
BACKSLASH = "BACKSLASH"
FRAGMENT = "FRAGMENT"
PATH_PARAMETER = "PATH_PARAMETER"
DRIVE = "DRIVE_PREFIX"
ABSOLUTE = "ABSOLUTE_PATH"

_FIXES = {
    ENCODING: "send it decoded (keel keeps names exactly as sent)",
    DOT_DOT: "name the file by its path under the root, without '..' segments",
    CONTROL: "remove control characters (NUL, newline, tab, ...) from the name",
    BACKSLASH: "separate folders with '/', not '\\'",
    FRAGMENT: "'#' starts a URL fragment that hides the rest of the path; rename the file without '#'",
    PATH_PARAMETER: "';' starts URL path parameters; rename the file without ';'",
    DRIVE: "a drive letter ('C:') names a local disk; give a path relative to the root",
    ABSOLUTE: "paths are relative to the root: drop the leading '/'",
}
_PROBLEMS = {
    DOT_DOT: "has a '..' segment",
    CONTROL: "has a NUL or control character",
    BACKSLASH: "has a backslash",
    FRAGMENT: "has a '#'",
    PATH_PARAMETER: "has a ';'",
    DRIVE: "has a drive prefix",
    ABSOLUTE: "is absolute",
}
_DRIVE_RE = re.compile(r"[A-Za-z]:")


def _spellings(value: str) -> list[str] | None:
    """``value`` and each percent-decoding of it until stable; None when it never settles."""
    forms = [value]
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            return forms
        forms.append(decoded)
    return forms if unquote(forms[-1]) == forms[-1] else None


def _split_uri(text: str) -> tuple[list[str], str]:
    """(every segment after the scheme, authority included; the path below the root) of a URI.

    ``scheme://authority/path`` has root ``authority`` (a bucket, a host); ``runs:/<id>/path``
    has the run's root. The path below is what must stay relative."""
    scheme_end = text.find(":")
    rest = text[scheme_end + 1 :] if scheme_end > 0 else text
    if rest.startswith("//"):
        segments = rest[2:].split("/")
        return segments, "/".join(segments[1:])
    if text.startswith("runs:/"):
        run_and_path = rest[1:]
        return run_and_path.split("/"), run_and_path.partition("/")[2]
    return rest.split("/"), ""


def _broken_rule(text: str, is_uri: bool) -> str:
    """The first rule ``text`` (one spelling) breaks, or ''."""
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        return CONTROL
    if "\\" in text:
        return BACKSLASH
    if "#" in text:
        return FRAGMENT
    if ";" in text:
        return PATH_PARAMETER
    segments, below_root = _split_uri(text) if is_uri else (text.split("/"), text)
    if ".." in segments:
        return DOT_DOT
    if any(_DRIVE_RE.match(segment) for segment in segments[1 if is_uri else 0 :]):
        return DRIVE
    if below_root.startswith("/") and (not is_uri or text.startswith("runs:/")):
        return ABSOLUTE
    return ""


def check_safe(value: str, field: str, *, uri: bool = False) -> str:
    """Returns ``value`` unchanged when no spelling of it (as given, then decoded up to
    ``MAX_DECODE_ROUNDS`` times) has a ``..`` segment, a NUL or control character, a backslash,
    ``#``, ``;``, a drive prefix (``C:``) or, for a relative path (``uri=False``, or the path of
    a ``runs:/`` URI), a leading ``/``. Raises INVALID_ARGUMENT ``UNSAFE_PATH`` otherwise.

    With ``uri``, ``value`` is ``scheme://authority/path`` or ``runs:/<run_id>/<path>``: the
    scheme and authority are not path segments (``s3://b/c:x`` keeps its ``c:`` segment check,
    the ``s3:`` scheme is not a drive)."""
    spellings = _spellings(value)
    if spellings is None:
        _refuse(value, field, ENCODING, value, MAX_DECODE_ROUNDS)
        return value
    for rounds, text in enumerate(spellings):
        rule = _broken_rule(text, uri)
        if rule:
            _refuse(value, field, rule, text, rounds)
    return value


def _refuse(value: str, field: str, rule: str, spelling: str, rounds: int) -> None:
    what = "URI" if field.endswith("uri") or field == "source" else "path"
    if rule == ENCODING:
        problem = f"still changes after {MAX_DECODE_ROUNDS} rounds of percent-decoding"
    elif rounds:
        times = "once" if rounds == 1 else f"{rounds} times"
        problem = f"{_PROBLEMS[rule]} after percent-decoding {times} ({quote(spelling)})"
    else:
        problem = _PROBLEMS[rule]
    raise InvalidArgument(
        f"{field} {quote(value)} is refused: the {what} {problem}; {_FIXES[rule]}",
        reason=REASON,
        field=field,
        metadata={"rule": rule, "field": field, "value": value, "decoded": spelling, "decode_rounds": rounds},
    )
