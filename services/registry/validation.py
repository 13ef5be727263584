"""Input rules of the registry (MLflow's limits), each failure a precise InvalidArgument."""

from __future__ import annotations

import re
from collections.abc import Iterable

from keel.shared import uris
from keel_server.artifacts.store import check_reference_uri
from keel_server.artifacts.stores import ArtifactStore
from keel_server.common.errors import InvalidArgument, PermissionDenied, quote
from keel_server.registry.records import ARCHIVABLE_STAGES, STAGES

MAX_NAME = uris.MAX_MODEL_NAME
MAX_TAG_KEY = 250
MAX_TAG_VALUE = 100_000
MAX_DESCRIPTION = 100_000
MAX_ALIAS = uris.MAX_ALIAS
MAX_SOURCE = 4096
MAX_RUN_ID = 32
MAX_RUN_LINK = 4096
MAX_REQUEST_ID = 64
MAX_USER = 256
MAX_VERSION = uris.MAX_VERSION  # version numbers are 64-bit: 1..MAX_VERSION

_RUN_ID_RE = re.compile(r"[A-Za-z0-9][\w-]*", re.ASCII)


def _too_long(what: str, limit: int, got: int, field: str, reason: str) -> InvalidArgument:
    return InvalidArgument(
        f"{what} is {got} characters long; the limit is {limit}",
        reason=reason,
        field=field,
        metadata={"limit": limit},
    )


def model_name(name: str, field: str = "name") -> str:
    """A registered model name: 1..256 characters, no '/' or '@' (models:/ URIs could not name it)."""
    if not name or not name.strip():
        raise InvalidArgument(
            f"{field} is empty: pass the registered model's name", reason="INVALID_MODEL_NAME", field=field
        )
    if len(name) > MAX_NAME:
        raise _too_long(f"registered model {field}", MAX_NAME, len(name), field, "INVALID_MODEL_NAME")
    for bad in ("/", "@"):
        if bad in name:
            raise InvalidArgument(
                f"registered model {field} {name!r} contains {bad!r}, which models:/ URIs use as a separator; "
                "choose a name without '/' and '@'",
                reason="INVALID_MODEL_NAME",
                field=field,
            )
    return name


def version_number(version: int, field: str = "version") -> int:
    if version < 1:
        raise InvalidArgument(
            f"{field} must be a version number >= 1, got {version}", reason="INVALID_VERSION", field=field
        )
    if version > MAX_VERSION:
        raise InvalidArgument(
            f"{field} {version} is out of range: version numbers are 1..{MAX_VERSION} (64-bit)",
            reason="INVALID_VERSION",
            field=field,
        )
    return version


def stage(value: str, field: str = "stage") -> str:
    """The canonical spelling of a stage given in any case; INVALID_ARGUMENT listing the valid ones."""
    for canonical in STAGES:
        if value.strip().lower() == canonical.lower():
            return canonical
    raise InvalidArgument(
        f"unknown stage {value!r}: valid stages are {', '.join(STAGES)} (case-insensitive)",
        reason="INVALID_STAGE",
        field=field,
        metadata={"valid_stages": ",".join(STAGES)},
    )


def archive_target(target: str) -> None:
    if target not in ARCHIVABLE_STAGES:
        raise InvalidArgument(
            f"archive_existing_versions can only be used when moving to {' or '.join(ARCHIVABLE_STAGES)}, "
            f"not to {target}",
            reason="INVALID_ARCHIVE_EXISTING",
            field="archive_existing_versions",
        )


def tag(key: str, value: str, field: str = "tags") -> None:
    if not key or not key.strip():
        raise InvalidArgument(
            f"a tag key is empty: give every tag a key of 1..{MAX_TAG_KEY} characters",
            reason="INVALID_TAG",
            field=field,
        )
    if len(key) > MAX_TAG_KEY:
        raise _too_long(f"tag key {key[:40]!r}...", MAX_TAG_KEY, len(key), field, "INVALID_TAG")
    if len(value) > MAX_TAG_VALUE:
        raise _too_long(f"the value of tag {key!r}", MAX_TAG_VALUE, len(value), field, "INVALID_TAG")


def tags(pairs: Iterable[tuple[str, str]], field: str = "tags") -> dict[str, str]:
    """Validated tags as a dict (a repeated key keeps its last value)."""
    out: dict[str, str] = {}
    for key, value in pairs:
        tag(key, value, field)
        out[key] = value
    return out


def description(text: str, field: str = "description") -> str:
    if len(text) > MAX_DESCRIPTION:
        raise _too_long("description", MAX_DESCRIPTION, len(text), field, "INVALID_DESCRIPTION")
    return text


def alias(name: str, field: str = "alias") -> str:
    """MLflow's alias rules: 1..255 of letters, digits, '_' and '-'; 'latest' and 'v<digits>' are reserved."""
    if not name:
        raise InvalidArgument(
            "alias is empty: pass an alias such as 'champion'", reason="INVALID_ALIAS", field=field
        )
    if len(name) > MAX_ALIAS:
        raise _too_long("alias", MAX_ALIAS, len(name), field, "INVALID_ALIAS")
    if not uris.ALIAS_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f"alias {name!r} may only contain letters, digits, '_' and '-'",
            reason="INVALID_ALIAS",
            field=field,
        )
    if uris.RESERVED_ALIAS_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f"alias {name!r} is reserved ('latest' and 'v<digits>' name versions in models:/ URIs); choose another",
            reason="RESERVED_ALIAS",
            field=field,
        )
    return name


def bounded(value: str, limit: int, what: str, field: str, reason: str = "INVALID_ARGUMENT") -> str:
    if len(value) > limit:
        raise _too_long(what, limit, len(value), field, reason)
    return value


def source(value: str, store: ArtifactStore) -> str:
    """A model version's source, checked before anything is looked up: ``models:/...`` (a
    version the registry knows; resolved by name to its own snapshot, never read as a path),
    ``runs:/<run_id>/<path>``, or a URI inside the server's artifact store (``file:///<root>/...``
    on the local store, ``s3://<bucket>/<prefix>/...`` on S3). A bare local path, ``http(s)://``,
    another scheme or a ``file://`` URI of another host is INVALID_ARGUMENT
    (``INVALID_ARTIFACT_URI``); any spelling, percent-decoded until stable, with a ``..``
    segment, a control character, a backslash, ``#``, ``;`` or a drive prefix is
    ``UNSAFE_PATH``; a store URI outside the store's root (another folder or bucket, such as
    ``file:///etc/passwd``) is INVALID_ARGUMENT ``SOURCE_OUTSIDE_STORE``: a source is an
    argument, and unlike the artifact API (where reaching outside is PERMISSION_DENIED) nothing
    outside the store is ever a valid one."""
    if not value.strip():
        raise InvalidArgument(
            "source is empty: pass where the model files are (runs:/<run_id>/<path>, models:/<name>/<version> "
            "or an artifact URI)",
            reason="INVALID_SOURCE",
            field="source",
        )
    bounded(value, MAX_SOURCE, "source", "source", "INVALID_SOURCE")
    if value.startswith("models:"):
        return value
    try:
        return check_reference_uri(value, store, field="source")
    except PermissionDenied as exc:
        if exc.reason != "ARTIFACT_URI_OUTSIDE_ROOT":
            raise
        raise InvalidArgument(
            f"source {quote(value)} is outside this server's {store.describe()}: a model version's files must "
            f"come from the store ({store.root_uri}); log them to a run and register runs:/<run_id>/<path>",
            reason="SOURCE_OUTSIDE_STORE",
            field="source",
            metadata={"root": store.root_uri},
        ) from None


def run_id(value: str) -> str:
    if not value:
        return value
    if len(value) > MAX_RUN_ID or not _RUN_ID_RE.fullmatch(value):
        raise InvalidArgument(
            f"run_id {value[:80]!r} is not a run id (1..{MAX_RUN_ID} letters, digits, '_' or '-')",
            reason="INVALID_RUN_ID",
            field="run_id",
        )
    return value
