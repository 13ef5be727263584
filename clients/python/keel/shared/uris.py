"""The grammar of keel's model URIs, the one both the SDK and the server use.

* ``models:/<name>/<version>``, ``models:/<name>/latest``, ``models:/<name>/<stage>`` (any case)
  and ``models:/<name>@<alias>``: one slash after the scheme; the name, alias and version obey
  the registry's rules (a URI that could never name a version is refused here, not looked up);
* ``runs:/<run_id>/<path>``: one slash after the scheme, a run id, then a path inside the run's
  artifacts (empty for the run's root; what a path may hold is checked where it is used).

Pure functions: a malformed URI raises ``keel.exceptions.InvalidArgument`` (reason
``INVALID_MODEL_URI`` unless the caller names another) saying which part is wrong and what the
valid forms are. Inputs are quoted in messages only up to a bounded length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keel.exceptions import InvalidArgument

# Canonical stage spellings, in the order the registry reports them.
STAGES: tuple[str, ...] = ("None", "Staging", "Production", "Archived")
LATEST = "latest"
MAX_VERSION = 2**63 - 1  # version numbers are 64-bit: 1..MAX_VERSION
MAX_MODEL_NAME = 256
MAX_ALIAS = 255
MODELS_URI_FORMS = (
    "models:/<name>/<version>, models:/<name>/latest, models:/<name>/<stage> or models:/<name>@<alias>"
)
INVALID_MODEL_URI = "INVALID_MODEL_URI"

# An alias (matched whole): letters, digits, '_' and '-'.
ALIAS_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
# 'latest' and 'v<digits>' name versions in models:/ URIs (MLflow's rule), so no alias may be one.
RESERVED_ALIAS_PATTERN = re.compile(r"latest|v\d+", re.IGNORECASE)
_QUOTE_CHARS = 200


@dataclass(frozen=True)
class ModelsUri:
    """A parsed ``models:/`` URI; exactly one of version, stage, alias and latest is set."""

    name: str
    version: int | None = None
    stage: str | None = None
    alias: str | None = None
    latest: bool = False


@dataclass(frozen=True)
class RunsUri:
    """A parsed ``runs:/`` URI; ``path`` is as written after the run id ('' for the root)."""

    run_id: str
    path: str


def quote(value: str, limit: int = _QUOTE_CHARS) -> str:
    """``repr(value)``, at most about ``limit`` characters of it (a huge input stays huge only
    where it is stored, never in an error message)."""
    if len(value) > limit:
        return f"{value[:limit]!r}…[{len(value):,} characters in all]"
    return repr(value)


def canonical_stage(text: str) -> str | None:
    """The canonical spelling of a stage written in any case; None if ``text`` is no stage."""
    for stage in STAGES:
        if text.lower() == stage.lower():
            return stage
    return None


def model_name_problem(name: str) -> str | None:
    """What is wrong with a registered model name written in a URI, or None."""
    if not name.strip():
        return "the model name is empty"
    if len(name) > MAX_MODEL_NAME:
        return f"the model name is {len(name):,} characters long; the limit is {MAX_MODEL_NAME}"
    if "/" in name:
        return f"the model name {quote(name)} contains '/'"
    return None


def alias_problem(alias: str) -> str | None:
    """What is wrong with an alias written in a URI, or None (the registry's alias rules)."""
    if not alias:
        return "the alias after '@' is empty"
    if len(alias) > MAX_ALIAS:
        return f"the alias is {len(alias):,} characters long; the limit is {MAX_ALIAS}"
    if not ALIAS_PATTERN.fullmatch(alias):
        return f"the alias {quote(alias)} may only hold letters, digits, '_' and '-'"
    if RESERVED_ALIAS_PATTERN.fullmatch(alias):
        return f"the alias {quote(alias)} is reserved ('latest' and 'v<digits>' name versions, not aliases)"
    return None


def version_in_uri(digits: str) -> int | str:
    """The version number an all-digits URI part names, or what is wrong with it: 0 and numbers
    beyond 64 bits name no version. Never converts an over-long digit string (CPython refuses
    more than 4,300 digits)."""
    significant = digits.lstrip("0")
    shown = digits if len(digits) <= 40 else f"{digits[:20]}...{digits[-8:]} ({len(digits):,} digits)"
    if not significant:
        return f"version {shown} is not a positive number"
    if len(significant) > len(str(MAX_VERSION)) or int(significant) > MAX_VERSION:
        return f"version {shown} is out of range: version numbers are 1..{MAX_VERSION} (64-bit)"
    return int(significant)


def parse_models_uri(uri: str, *, field: str = "") -> ModelsUri:
    """Parses ``models:/...``; INVALID_ARGUMENT (``INVALID_MODEL_URI``) naming the malformed part."""

    def bad(part: str) -> InvalidArgument:
        return InvalidArgument(
            f"invalid model URI {quote(uri)}: {part}; expected {MODELS_URI_FORMS}",
            reason=INVALID_MODEL_URI,
            field=field,
        )

    if not uri.startswith("models:"):
        raise bad("the scheme is not 'models:'")
    rest = uri[len("models:") :]
    if rest.startswith("//"):
        raise bad("use one slash after 'models:' (models:/<name>/...), not a host part")
    if rest in ("", "/"):
        raise bad("the model name is empty (nothing after 'models:/')")
    if not rest.startswith("/"):
        raise bad("'models:' must be followed by one slash (models:/<name>/...)")
    body = rest[1:]
    if "@" in body:
        name, alias = body.split("@", 1)
        problem = model_name_problem(name) or alias_problem(alias)
        if problem:
            raise bad(problem)
        return ModelsUri(name=name, alias=alias)
    parts = body.split("/")
    problem = model_name_problem(parts[0])
    if problem:
        raise bad(problem)
    name = parts[0]
    if len(parts) == 1:
        raise bad(f"no version, stage or alias after the model name {quote(name)}")
    if len(parts) > 2:
        if len(parts) == 3 and not parts[2]:
            raise bad(f"too many path parts after the model name {quote(name)} (a trailing '/')")
        raise bad(f"too many path parts after the model name {quote(name)}")
    suffix = parts[1]
    if not suffix:
        raise bad(f"the version or stage after {quote(name)} is empty")
    if suffix.isascii() and suffix.isdigit():
        version = version_in_uri(suffix)
        if isinstance(version, str):
            raise bad(version)
        return ModelsUri(name=name, version=version)
    if suffix.lower() == LATEST:
        return ModelsUri(name=name, latest=True)
    stage = canonical_stage(suffix)
    if stage is None:
        raise bad(f"{quote(suffix)} is neither a version number, 'latest' nor a stage ({', '.join(STAGES)})")
    return ModelsUri(name=name, stage=stage)


def is_runs_uri(uri: str) -> bool:
    """Whether ``uri`` is written in the ``runs:`` scheme (well formed or not)."""
    return uri.startswith("runs:")


def parse_runs_uri(uri: str, *, reason: str = INVALID_MODEL_URI, field: str = "") -> RunsUri:
    """Parses ``runs:/<run_id>/<path>``; INVALID_ARGUMENT with ``reason`` naming the malformed part.
    The run id and the path are checked where they are used (a run id that names no run is
    NOT_FOUND there; an unsafe path is refused by the artifact rules)."""

    def bad(part: str) -> InvalidArgument:
        return InvalidArgument(
            f"invalid URI {quote(uri)}: {part}; expected runs:/<run_id>/<path>", reason=reason, field=field
        )

    if not is_runs_uri(uri):
        raise bad("the scheme is not 'runs:'")
    body = uri[len("runs:") :]
    if body.startswith("//"):
        raise bad("use one slash after 'runs:' (runs:/<run_id>/<path>), not a host part")
    if not body.startswith("/"):
        raise bad("'runs:' must be followed by one slash")
    run_id, _, path = body[1:].partition("/")
    if not run_id:
        raise bad("the run id is empty")
    return RunsUri(run_id=run_id, path=path)
