"""Plain domain records the tracking store returns (no Peewee, no protobuf), plus the limits
and validation rules every write path shares."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from keel_server.common.db import MAX_DOUBLE, VALUE_FINITE, VALUE_NAN, VALUE_NEG_INF, VALUE_POS_INF
from keel_server.common.errors import FailedPrecondition, InvalidArgument, NotFound, quote

# Limits as MLflow users know them (mlflow/utils/validation.py).
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_EXPERIMENT_NAME_LENGTH = 500
MAX_EXPERIMENT_TAG_VALUE_LENGTH = 20000
MAX_RUN_NAME_LENGTH = 250
MAX_USER_ID_LENGTH = 256
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
# A run's artifacts live at <location>/<run id>/artifacts/<path>, and S3 keys end at 1,024 bytes:
# 500 leaves room for the run's own paths.
MAX_ARTIFACT_LOCATION_LENGTH = 500
MAX_NAME_BYTES = 255  # one file or folder name (NAME_MAX of local filesystems)
ARTIFACT_SCHEMES = ("file", "s3")
RESERVED_TAG_PREFIX = "keel."

ACTIVE, DELETED = "active", "deleted"
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")

# MLflow's key rule: word characters, '.', '-', '/', ' ' (and ':'); no path tricks.
_KEY_RE = re.compile(r"^[\w.\-/ :]+$")


@dataclass(frozen=True, slots=True)
class ExperimentRecord:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int
    last_update_time: int
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunInfoRecord:
    run_id: str
    run_name: str
    experiment_id: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str
    parent_run_id: str


@dataclass(frozen=True, slots=True)
class MetricPoint:
    key: str
    value: float
    timestamp: int
    step: int = 0
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class RunRecord:
    info: RunInfoRecord
    params: dict[str, str]
    metrics: list[MetricPoint]
    tags: dict[str, str]


# ---------------------------------------------------------------------------------------------
# Values that MySQL cannot store (NaN, +/-inf) travel with a kind flag.
# ---------------------------------------------------------------------------------------------


def encode_value(value: float) -> tuple[float, int]:
    if math.isnan(value):
        return 0.0, VALUE_NAN
    if math.isinf(value):
        return (MAX_DOUBLE, VALUE_POS_INF) if value > 0 else (-MAX_DOUBLE, VALUE_NEG_INF)
    return value, VALUE_FINITE


def decode_value(stored: float, kind: int) -> float:
    if kind == VALUE_FINITE:
        return stored
    if kind == VALUE_NAN:
        return math.nan
    return math.inf if kind == VALUE_POS_INF else -math.inf


# ---------------------------------------------------------------------------------------------
# Validation: precise messages that say what was wrong and how to fix it.
# ---------------------------------------------------------------------------------------------


def check_key(key: str, what: str, field_name: str) -> None:
    """A metric/param/tag key: 1..250 characters of MLflow's allowed set."""
    if not key:
        raise InvalidArgument(f"{what} key must not be empty", reason="INVALID_KEY", field=field_name)
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(
            f"{what} key '{key[:40]}...' is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}",
            reason="KEY_TOO_LONG",
            field=field_name,
            metadata={"key": key[:40], "length": len(key), "limit": MAX_KEY_LENGTH},
        )
    if not _KEY_RE.match(key) or key.startswith("/") or ".." in key.split("/"):
        raise InvalidArgument(
            f"{what} key {key!r} is invalid: use letters, digits, '_', '-', '.', ' ', ':' and '/' "
            "(no leading '/' and no '..' path segment)",
            reason="INVALID_KEY",
            field=field_name,
            metadata={"key": key},
        )


def check_value_length(value: str, limit: int, what: str, key: str, field_name: str) -> None:
    if len(value) > limit:
        raise InvalidArgument(
            f"{what} value of key '{key}' is {len(value)} characters long; the limit is {limit} "
            "(keel never truncates: shorten it or log it as an artifact)",
            reason="VALUE_TOO_LONG",
            field=field_name,
            metadata={"key": key, "length": len(value), "limit": limit},
        )


def check_run_tag(key: str, value: str, field_name: str, system: bool = False) -> None:
    check_key(key, "tag", field_name)
    if key.startswith(RESERVED_TAG_PREFIX) and not system:
        raise InvalidArgument(
            f"tag key '{key}' is reserved: keys starting with '{RESERVED_TAG_PREFIX}' are set by keel itself",
            reason="RESERVED_TAG_KEY",
            field=field_name,
            metadata={"key": key},
        )
    check_value_length(value, MAX_TAG_VALUE_LENGTH, "tag", key, field_name)


def check_param(key: str, value: str, field_name: str) -> None:
    check_key(key, "param", field_name)
    check_value_length(value, MAX_PARAM_VALUE_LENGTH, "param", key, field_name)


def check_experiment_tag(key: str, value: str, field_name: str) -> None:
    check_key(key, "experiment tag", field_name)
    check_value_length(value, MAX_EXPERIMENT_TAG_VALUE_LENGTH, "experiment tag", key, field_name)


def normalise_artifact_root(uri: str) -> str:
    """``file://./x`` or a plain path → ``file:///abs/x``; other schemes lose a trailing '/'."""
    if uri.startswith("file://"):
        return "file://" + os.path.abspath(uri[len("file://") :])
    if "://" not in uri:
        return "file://" + os.path.abspath(uri)
    return uri.rstrip("/")


def check_artifact_location(location: str, store_root: str, reserved: tuple[str, ...]) -> str:
    """An experiment's artifact location, normalised, after checking its length and form: a
    folder of a known scheme, no control characters, backslashes, '.' or '..' segments or
    over-long names, and never inside one of the store's ``reserved`` folders (relative to
    ``store_root``, such as the registry's snapshots), where runs must not write."""

    def bad(problem: str) -> InvalidArgument:
        return InvalidArgument(
            f"artifact_location {quote(location)} {problem}",
            reason="INVALID_ARTIFACT_LOCATION",
            field="artifact_location",
        )

    if len(location) > MAX_ARTIFACT_LOCATION_LENGTH:
        raise bad(
            f"is {len(location)} characters long; the limit is {MAX_ARTIFACT_LOCATION_LENGTH} "
            "(runs add their own folders and file paths under it)"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in location) or "\\" in location:
        raise bad("holds a control character or a backslash: use '/' between folders")
    scheme, sep, rest = location.partition("://")
    if sep and scheme not in ARTIFACT_SCHEMES:
        raise bad(f"has scheme {scheme!r}; use one of {', '.join(s + '://' for s in ARTIFACT_SCHEMES)} or a local path")
    body = rest if sep else location
    if not body.strip("/"):
        raise bad("names no folder: use file:///abs/path, s3://bucket/prefix or a local path")
    segments = [s for s in body.split("/") if s]
    if ".." in segments or "." in segments:
        raise bad("has a '.' or '..' segment: give the folder's plain path")
    if any(len(s.encode("utf-8")) > MAX_NAME_BYTES for s in segments):
        raise bad(f"has a folder name longer than {MAX_NAME_BYTES} bytes")
    normal = normalise_artifact_root(location)
    root = normalise_artifact_root(store_root)
    for folder in reserved:
        inside = f"{root}/{folder}"
        if normal == inside or normal.startswith(inside + "/"):
            raise bad(f"is inside {inside}, which keel keeps for itself: choose another folder")
    return normal


def check_experiment_name(name: str, field_name: str = "name") -> str:
    if not name or not name.strip():
        raise InvalidArgument("experiment name must not be empty", reason="INVALID_EXPERIMENT_NAME", field=field_name)
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise InvalidArgument(
            f"experiment name is {len(name)} characters long; the limit is {MAX_EXPERIMENT_NAME_LENGTH}",
            reason="INVALID_EXPERIMENT_NAME",
            field=field_name,
            metadata={"length": len(name), "limit": MAX_EXPERIMENT_NAME_LENGTH},
        )
    return name


def check_run_name(name: str, field_name: str = "run_name") -> None:
    if len(name) > MAX_RUN_NAME_LENGTH:
        raise InvalidArgument(
            f"run name is {len(name)} characters long; the limit is {MAX_RUN_NAME_LENGTH}",
            reason="INVALID_RUN_NAME",
            field=field_name,
            metadata={"length": len(name), "limit": MAX_RUN_NAME_LENGTH},
        )


def parse_experiment_id(experiment_id: str, field_name: str = "experiment_id") -> int:
    """Experiment ids are decimal digits (``"0"`` is the Default experiment)."""
    text = str(experiment_id).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # '²' is a digit to isdigit()
        raise InvalidArgument(
            f"experiment_id {quote(experiment_id)} is not valid: experiment ids are decimal digits such as '0' or '12'",
            reason="INVALID_EXPERIMENT_ID",
            field=field_name,
            metadata={"experiment_id": str(experiment_id)[:64]},
        )
    return int(text)


_RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def check_run_id(run_id: str, field_name: str = "run_id") -> str:
    if not _RUN_ID_RE.match(run_id):
        raise InvalidArgument(
            f"run_id {run_id[:80]!r} is not valid: run ids are 32 lowercase hex characters",
            reason="INVALID_RUN_ID",
            field=field_name,
            metadata={"run_id": run_id[:80]},
        )
    return run_id


def run_not_found(run_id: str) -> NotFound:
    return NotFound(f"run {run_id} does not exist", reason="RUN_NOT_FOUND", metadata={"run_id": run_id})


def check_run_accepts(run_id: str, stage: str | None, action: str) -> None:
    """A write to a run (``action``: "update", "log to"...) needs the run to exist (``stage`` is
    None when it does not) and not to be deleted."""
    if stage is None:
        raise run_not_found(run_id)
    if stage != ACTIVE:
        raise FailedPrecondition(
            f"cannot {action} run {run_id}: it is deleted (restore it with RestoreRun first)",
            reason="RUN_DELETED",
            metadata={"run_id": run_id},
        )


def check_status(status: str, field_name: str = "status") -> str:
    if status not in RUN_STATUSES:
        raise InvalidArgument(
            f"run status {status!r} is not valid; use one of {', '.join(RUN_STATUSES)}",
            reason="INVALID_RUN_STATUS",
            field=field_name,
        )
    return status


def check_time(value: int, field_name: str) -> int:
    if value < 0:
        raise InvalidArgument(
            f"{field_name} must be milliseconds since the Unix epoch (>= 0), got {value}",
            reason="INVALID_TIMESTAMP",
            field=field_name,
        )
    return value
