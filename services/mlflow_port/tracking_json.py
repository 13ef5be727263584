"""keel tracking messages ⇄ MLflow's REST JSON, one converter per entity.

MLflow's server writes proto JSON (``mlflow/protos/service.proto``) through
``mlflow.utils.proto_json_utils.message_to_json``: snake_case field names, int64 as JSON numbers,
enums by name, NaN and ±infinity as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, unset
fields left out. The client parses it with protobuf's ``ParseDict`` (unknown fields ignored), so
the names here must be exactly MLflow's.

MLflow's run inputs (datasets, logged models) have no column in keel's tracking store: the port
keeps them as run tags under ``mlflow.inputs.`` (one tag per input, so concurrent writers never
overwrite each other's) and gives them back as the run's ``inputs``, not as tags. keel's gRPC
door shows them as those tags. ``mlflow.*`` keys are what MLflow's UI treats as system tags and
hides. A run's outputs are the logged models created from it (keel's LoggedModel.source_run_id).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from keel.tracking.v1 import tracking_pb2 as pb
from keel_server.common.errors import InvalidArgument, quote
from keel_server.common.http import json_number as number  # NaN, ±infinity as strings
from keel_server.mlflow_port.core import ARTIFACTS_SCHEME, run_artifact_uri, typed

# MLflow's system tags (mlflow/utils/mlflow_tags.py) that the port keeps in step with keel's
# own run attributes.
RUN_NAME_TAG = "mlflow.runName"
PARENT_RUN_TAG = "mlflow.parentRunId"
LOGGED_MODELS_TAG = "mlflow.log-model.history"  # what runs/log-model appends to (MLflow 2)

# Where the port keeps a run's MLflow inputs (see the module docstring).
DATASET_INPUT_TAG = "mlflow.inputs.dataset."  # + a digest of (name, digest); value: JSON
MODEL_INPUT_TAG = "mlflow.inputs.model."  # + model_id; value: ""
_INPUT_PREFIX = "mlflow.inputs."
MAX_TAG_VALUE_LENGTH = 8000  # keel's (and MLflow's) limit on a run tag value

_STAGES = {pb.LIFECYCLE_STAGE_ACTIVE: "active", pb.LIFECYCLE_STAGE_DELETED: "deleted"}
_STATUS_NAMES = {
    pb.RUN_STATUS_RUNNING: "RUNNING",
    pb.RUN_STATUS_SCHEDULED: "SCHEDULED",
    pb.RUN_STATUS_FINISHED: "FINISHED",
    pb.RUN_STATUS_FAILED: "FAILED",
    pb.RUN_STATUS_KILLED: "KILLED",
}
_STATUS_BY_NAME = {name: number for number, name in _STATUS_NAMES.items()}
_VIEW_TYPES = {
    "ACTIVE_ONLY": pb.VIEW_TYPE_ACTIVE_ONLY,
    "DELETED_ONLY": pb.VIEW_TYPE_DELETED_ONLY,
    "ALL": pb.VIEW_TYPE_ALL,
}


# -- out: keel → MLflow JSON ---------------------------------------------------------------------


def experiment_artifact_location(experiment_id: str) -> str:
    """Every experiment's runs upload through this port's artifact proxy, wherever keel keeps
    the bytes (see ``core.run_artifact_uri``)."""
    return f"{ARTIFACTS_SCHEME}/{experiment_id}"


def experiment_json(e: pb.Experiment) -> dict[str, Any]:
    out: dict[str, Any] = {
        "experiment_id": e.experiment_id,
        "name": e.name,
        "artifact_location": experiment_artifact_location(e.experiment_id),
        "lifecycle_stage": _STAGES.get(e.lifecycle_stage, "deleted"),
        "last_update_time": e.last_update_time,
        "creation_time": e.creation_time,
    }
    if e.tags:
        out["tags"] = [{"key": t.key, "value": t.value} for t in e.tags]
    return out


def run_info_json(i: pb.RunInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run_id": i.run_id,
        "run_uuid": i.run_id,  # MLflow still sends the old name; 2.x clients read it
        "run_name": i.run_name,
        "experiment_id": i.experiment_id,
        "user_id": i.user_id,
        "status": _STATUS_NAMES.get(i.status, "RUNNING"),
        "start_time": i.start_time,
        "artifact_uri": run_artifact_uri(i.experiment_id, i.run_id),
        "lifecycle_stage": _STAGES.get(i.lifecycle_stage, "deleted"),
    }
    if i.end_time:  # 0 while the run is not terminated: MLflow leaves it out
        out["end_time"] = i.end_time
    return out


def metric_json(m: pb.Metric) -> dict[str, Any]:
    return {"key": m.key, "value": number(m.value), "timestamp": m.timestamp, "step": m.step}


def run_json(run: pb.Run) -> dict[str, Any]:
    """A run with its data, and its inputs taken out of the port's tags."""
    info = run.info
    tags: list[dict[str, str]] = []
    datasets: list[Any] = []
    model_inputs: list[dict[str, str]] = []
    has_parent_tag = False
    for tag in run.data.tags:
        key = tag.key
        if key.startswith(_INPUT_PREFIX) and _take_input_tag(key, tag.value, datasets, model_inputs):
            continue
        if key == RUN_NAME_TAG:
            continue  # the run's name is the truth (keel may have renamed it): added below
        has_parent_tag = has_parent_tag or key == PARENT_RUN_TAG
        tags.append({"key": key, "value": tag.value})
    if info.run_name:
        tags.append({"key": RUN_NAME_TAG, "value": info.run_name})
    if info.parent_run_id and not has_parent_tag:
        tags.append({"key": PARENT_RUN_TAG, "value": info.parent_run_id})
    data: dict[str, Any] = {}
    if run.data.metrics:
        data["metrics"] = [metric_json(m) for m in run.data.metrics]
    if run.data.params:
        data["params"] = [{"key": p.key, "value": p.value} for p in run.data.params]
    data["tags"] = tags
    out: dict[str, Any] = {"info": run_info_json(info), "data": data}
    inputs: dict[str, Any] = {}
    if datasets:
        inputs["dataset_inputs"] = datasets
    if model_inputs:
        inputs["model_inputs"] = model_inputs
    out["inputs"] = inputs
    out["outputs"] = {}
    return out


def _take_input_tag(key: str, value: str, datasets: list[Any], model_inputs: list[dict[str, str]]) -> bool:
    """Adds the input a port tag holds to its list; False when the tag is not one the port
    wrote (then it is shown as the plain tag it is)."""
    if key.startswith(MODEL_INPUT_TAG):
        model_inputs.append({"model_id": key[len(MODEL_INPUT_TAG) :]})
        return True
    if key.startswith(DATASET_INPUT_TAG):
        try:
            stored = json.loads(value)
        except ValueError:
            return False
        if not isinstance(stored, dict) or not isinstance(stored.get("dataset"), dict):
            return False
        datasets.append(stored)
        return True
    return False


# -- in: MLflow JSON → keel ----------------------------------------------------------------------


def parse_status(value: Any, name: str = "status") -> pb.RunStatus.ValueType:
    """A RunStatus by MLflow's name (``FINISHED``) or number (the same numbers as keel's)."""
    if isinstance(value, str) and value in _STATUS_BY_NAME:
        return _STATUS_BY_NAME[value]
    if isinstance(value, int | str) and not isinstance(value, bool) and str(value).isdigit():
        if int(value) in _STATUS_NAMES:
            return pb.RunStatus.ValueType(int(value))
    raise InvalidArgument(
        f"Invalid value {quote(value)} for parameter '{name}' supplied: use one of {', '.join(_STATUS_BY_NAME)}",
        reason="INVALID_RUN_STATUS",
        field=name,
    )


def parse_view_type(value: Any, name: str) -> pb.ViewType.ValueType:
    """A ViewType by MLflow's name (``ACTIVE_ONLY``) or number (the same numbers as keel's)."""
    if value is None or value == "":
        return pb.VIEW_TYPE_ACTIVE_ONLY
    if isinstance(value, str) and value in _VIEW_TYPES:
        return _VIEW_TYPES[value]
    if isinstance(value, int | str) and not isinstance(value, bool) and str(value).isdigit():
        if int(value) in _VIEW_TYPES.values():
            return pb.ViewType.ValueType(int(value))
    raise InvalidArgument(
        f"Invalid value {quote(value)} for parameter '{name}' supplied: use one of {', '.join(_VIEW_TYPES)}",
        reason="INVALID_VIEW_TYPE",
        field=name,
    )


_MISSING = object()


def field(entry: dict[str, Any], name: str, kind: type, path: str, default: Any = _MISSING) -> Any:
    """``entry[name]`` as ``kind``; MLflow's missing-value message naming ``path.name``."""
    value = entry.get(name)
    if value is None or value == "":
        if default is _MISSING:
            raise InvalidArgument(
                f"Missing value for required parameter '{path}.{name}'. See the API docs for more "
                "information about request parameters.",
                reason="MISSING_PARAMETER",
                field=f"{path}.{name}",
            )
        return default
    return typed(f"{path}.{name}", value, kind)


def entries(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The list argument ``name`` of objects (``tags``, ``metrics``...); [] when absent."""
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(
            f"Invalid value {quote(value)} for parameter '{name}' supplied: expected a list",
            reason="INVALID_PARAMETER",
            field=name,
        )
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidArgument(
                f"Invalid value {quote(item)} for parameter '{name}[{i}]' supplied: expected an object",
                reason="INVALID_PARAMETER",
                field=f"{name}[{i}]",
            )
    return value


def key_values(data: dict[str, Any], name: str) -> list[tuple[str, str]]:
    """A list of ``{"key", "value"}`` objects (tags, params): key required, value '' by default."""
    return [
        (field(item, "key", str, f"{name}[{i}]"), field(item, "value", str, f"{name}[{i}]", ""))
        for i, item in enumerate(entries(data, name))
    ]


def metric_pb(entry: dict[str, Any], path: str) -> pb.Metric:
    """One MLflow metric point. ``timestamp`` 0 or absent: the server's now (MLflow's client
    always sends one). ``model_id``/``dataset_*`` (MLflow 3) link a point to a logged model or
    dataset: keel's metric points have no such fields, so the link is kept per run instead, as
    the run's inputs and outputs (which the client logs alongside)."""
    return pb.Metric(
        key=field(entry, "key", str, path),
        value=field(entry, "value", float, path),
        timestamp=field(entry, "timestamp", int, path, 0),
        step=field(entry, "step", int, path, 0),
    )


def dataset_input_tag(entry: dict[str, Any], path: str) -> tuple[str, str]:
    """The run tag that keeps one MLflow ``DatasetInput`` (``{"dataset": {...}, "tags": [...]}``)."""
    raw = entry.get("dataset")
    if not isinstance(raw, dict):
        raise InvalidArgument(
            f"Missing value for required parameter '{path}.dataset'. See the API docs for more "
            "information about request parameters.",
            reason="MISSING_PARAMETER",
            field=f"{path}.dataset",
        )
    where = f"{path}.dataset"
    dataset = {
        "name": field(raw, "name", str, where),
        "digest": field(raw, "digest", str, where),
        "source_type": field(raw, "source_type", str, where),
        "source": field(raw, "source", str, where),
    }
    for optional_field in ("schema", "profile"):
        value = field(raw, optional_field, str, where, None)
        if value is not None:
            dataset[optional_field] = value
    stored: dict[str, Any] = {"dataset": dataset}
    input_tags = [{"key": k, "value": v} for k, v in key_values(entry, "tags")]
    if input_tags:
        stored["tags"] = input_tags
    value = json.dumps(stored, separators=(",", ":"))
    if len(value) > MAX_TAG_VALUE_LENGTH:
        raise InvalidArgument(
            f"{path}: dataset '{dataset['name']}' takes {len(value)} characters with its schema, profile "
            f"and source; keel's MLflow port keeps a dataset input as a run tag of at most "
            f"{MAX_TAG_VALUE_LENGTH} characters and never truncates: log a smaller schema or profile",
            reason="DATASET_TOO_LARGE",
            field=path,
        )
    identity = hashlib.sha256(f"{dataset['name']}\0{dataset['digest']}".encode()).hexdigest()[:24]
    return DATASET_INPUT_TAG + identity, value


def model_tag(prefix: str, model_id: str, path: str) -> str:
    """The run tag key of a logged model input; the id must be usable in a key."""
    if not model_id or not all(c.isalnum() or c in "-_.:" for c in model_id) or len(model_id) > 200:
        raise InvalidArgument(
            f"Invalid value {quote(model_id)} for parameter '{path}.model_id' supplied: a logged model "
            "id is letters, digits, '-', '_', '.' and ':' (at most 200 characters)",
            reason="INVALID_MODEL_ID",
            field=f"{path}.model_id",
        )
    return prefix + model_id


def tags_pb(pairs: Iterable[tuple[str, str]]) -> list[pb.RunTag]:
    return [pb.RunTag(key=k, value=v) for k, v in pairs]
