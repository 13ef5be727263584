"""keel's protobuf messages as the console API's JSON rows (docs/console.md, "API").

Times are epoch milliseconds (null where unset). JSON has no NaN or infinity: a metric value that
is not finite is written as the string "NaN", "Infinity" or "-Infinity" in table rows, and as
null (a gap) in chart points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from keel.inference.v1 import inference_pb2 as ipb
from keel.registry.v1 import registry_pb2 as rpb
from keel.tracking.v1 import tracking_pb2 as tpb
from keel_server.common.http import json_number as number  # NaN, ±infinity as strings

RUN_STATUS = {
    tpb.RUN_STATUS_RUNNING: "RUNNING",
    tpb.RUN_STATUS_SCHEDULED: "SCHEDULED",
    tpb.RUN_STATUS_FINISHED: "FINISHED",
    tpb.RUN_STATUS_FAILED: "FAILED",
    tpb.RUN_STATUS_KILLED: "KILLED",
}
LIFECYCLE = {tpb.LIFECYCLE_STAGE_ACTIVE: "active", tpb.LIFECYCLE_STAGE_DELETED: "deleted"}
VERSION_STATUS = {
    rpb.MODEL_VERSION_STATUS_PENDING_REGISTRATION: "PENDING_REGISTRATION",
    rpb.MODEL_VERSION_STATUS_FAILED_REGISTRATION: "FAILED_REGISTRATION",
    rpb.MODEL_VERSION_STATUS_READY: "READY",
}
HISTORY_KIND = {
    rpb.MODEL_HISTORY_EVENT_TYPE_STAGE_TRANSITION: "stage",
    rpb.MODEL_HISTORY_EVENT_TYPE_ALIAS_SET: "alias",
    rpb.MODEL_HISTORY_EVENT_TYPE_ALIAS_DELETED: "alias_deleted",
    rpb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_REQUESTED: "transition_requested",
    rpb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_APPROVED: "transition_approved",
    rpb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_REJECTED: "transition_rejected",
    rpb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_CANCELLED: "transition_cancelled",
}
DEPLOYMENT_STATE = {
    ipb.DEPLOYMENT_STATE_PENDING: "PENDING",
    ipb.DEPLOYMENT_STATE_LOADING: "LOADING",
    ipb.DEPLOYMENT_STATE_READY: "READY",
    ipb.DEPLOYMENT_STATE_FAILED: "FAILED",
}
# The run tags that say where a run came from (set by the SDK, as MLflow's).
SOURCE_TAGS = {"name": "mlflow.source.name", "type": "mlflow.source.type", "git_commit": "mlflow.source.git.commit"}


def point(value: float) -> float | None:
    """A metric value for a chart: finite as is, else null (a gap)."""
    return value if math.isfinite(value) else None


def time_or_null(ms: int) -> int | None:
    return int(ms) if ms else None


def experiment(e: tpb.Experiment, permission: str | None = None) -> dict[str, Any]:
    return {
        "experiment_id": e.experiment_id,
        "name": e.name,
        "artifact_location": e.artifact_location,
        "lifecycle_stage": LIFECYCLE.get(e.lifecycle_stage, "active"),
        "creation_time": time_or_null(e.creation_time),
        "last_update_time": time_or_null(e.last_update_time),
        "tags": {t.key: t.value for t in e.tags},
        "permission": permission,
    }


def run_row(run: tpb.Run, ranges: Mapping[str, tpb.MetricRange] | None = None) -> dict[str, Any]:
    """A run as a table row: its metrics with last value, step, and (given ``ranges``) min/max."""
    info, data = run.info, run.data
    metrics: dict[str, dict[str, Any]] = {}
    for m in data.metrics:
        found = (ranges or {}).get(m.key)
        metrics[m.key] = {
            "last": number(m.value),
            "min": number(found.min_value) if found is not None else number(m.value),
            "max": number(found.max_value) if found is not None else number(m.value),
            "step": int(m.step),
            "timestamp": int(m.timestamp),
            "count": int(found.count) if found is not None else None,
        }
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": RUN_STATUS.get(info.status, "RUNNING"),
        "start_time": time_or_null(info.start_time),
        "end_time": time_or_null(info.end_time),
        "user_id": info.user_id,
        "lifecycle_stage": LIFECYCLE.get(info.lifecycle_stage, "active"),
        "params": {p.key: p.value for p in data.params},
        "tags": {t.key: t.value for t in data.tags},
        "metrics": metrics,
    }


def ranges_by_run(ranges: Iterable[tpb.MetricRange]) -> dict[str, dict[str, tpb.MetricRange]]:
    found: dict[str, dict[str, tpb.MetricRange]] = {}
    for r in ranges:
        found.setdefault(r.run_id, {})[r.key] = r
    return found


def run_detail(run: tpb.Run, ranges: Mapping[str, tpb.MetricRange], children: list[tpb.Run]) -> dict[str, Any]:
    row = run_row(run, ranges)
    tags = row["tags"]
    info = run.info
    row.update(
        {
            "artifact_uri": info.artifact_uri,
            "source": {name: tags.get(tag, "") for name, tag in SOURCE_TAGS.items()},
            "parent_run_id": info.parent_run_id or None,
            "children": [
                {"run_id": c.info.run_id, "run_name": c.info.run_name, "status": RUN_STATUS.get(c.info.status, "RUNNING")}
                for c in children
            ],
            "duration_ms": (info.end_time - info.start_time) if info.end_time and info.start_time else None,
        }
    )
    return row


def version(v: rpb.ModelVersion, signature: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": int(v.version),
        "stage": v.current_stage or "None",
        "aliases": list(v.aliases),
        "tags": {t.key: t.value for t in v.tags},
        "description": v.description,
        "source": v.source,
        "run_id": v.run_id,
        "run_link": v.run_link,
        "user_id": v.user_id,
        "status": VERSION_STATUS.get(v.status, "READY"),
        "status_message": v.status_message,
        "creation_time": time_or_null(v.creation_timestamp),
        "last_updated_time": time_or_null(v.last_updated_timestamp),
        "signature": signature,
    }


def model(m: rpb.RegisteredModel) -> dict[str, Any]:
    return {
        "name": m.name,
        "description": m.description,
        "tags": {t.key: t.value for t in m.tags},
        "aliases": {a.alias: int(a.version) for a in m.aliases},
        "latest_versions": [{"version": int(v.version), "stage": v.current_stage or "None"} for v in m.latest_versions],
        "creation_time": time_or_null(m.creation_timestamp),
        "last_updated_time": time_or_null(m.last_updated_timestamp),
        "approval_required_stages": list(m.policy.approval_required_stages),
    }


def history_event(e: rpb.ModelHistoryEvent) -> dict[str, Any]:
    kind = HISTORY_KIND.get(e.event_type, "other")
    if kind in ("alias", "alias_deleted"):
        before: Any = int(e.from_version) or None
        after: Any = int(e.version) or None
    else:
        before, after = e.from_stage or None, e.to_stage or None
    return {
        "time": time_or_null(e.timestamp),
        "kind": kind,
        "version": int(e.version) or None,
        "from": before,
        "to": after,
        "user": e.actor,
        "alias": e.alias or None,
        "comment": e.comment or None,
        "transition_request_id": e.transition_request_id or None,
    }


def follows(model_uri: str) -> str:
    """What a deployment's model URI follows: ``stage:<Stage>``, ``alias:<alias>``, ``latest``,
    ``version`` (one fixed version), ``run`` or ``path``."""
    if not model_uri.startswith("models:/"):
        return "run" if model_uri.startswith("runs:/") else "path"
    rest = model_uri[len("models:/") :]
    if "@" in rest:
        return "alias:" + rest.split("@", 1)[1]
    target = rest.rsplit("/", 1)[-1] if "/" in rest else ""
    if target.isdigit():
        return "version"
    if target.lower() == "latest":
        return "latest"
    return "stage:" + target if target else "version"


def deployment(d: ipb.Deployment) -> dict[str, Any]:
    return {
        "name": d.name,
        "model_uri": d.model_uri,
        "model_name": d.model_name,
        "version": int(d.model_version) or None,
        "state": DEPLOYMENT_STATE.get(d.state, "PENDING"),
        "message": d.state_message,
        "follows": follows(d.model_uri),
        "flavors": list(d.flavors),
        "creation_time": time_or_null(d.creation_timestamp),
        "last_updated_time": time_or_null(d.last_updated_timestamp),
    }
