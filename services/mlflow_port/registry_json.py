"""keel's registry messages as MLflow's registry JSON, and MLflow's arguments as keel's.

One converter per entity (``registered_model_json``, ``model_version_json``), shaped as
``mlflow server`` answers (``mlflow/protos/model_registry.proto`` through MLflow's
``message_to_json``: snake_case names, int64 timestamps as numbers, a version number as a
string, empty optional fields left out), and the translation of a registration ``source`` from
the forms the ``mlflow`` client sends to the forms keel's CreateModelVersion accepts.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from keel.registry.v1 import registry_pb2 as pb
from keel_server.common import errors
from keel_server.mlflow_port import core

# keel's ModelVersionStatus → MLflow's enum name (mlflow.protos.model_registry_pb2.ModelVersionStatus).
STATUS_NAMES = {
    pb.MODEL_VERSION_STATUS_PENDING_REGISTRATION: "PENDING_REGISTRATION",
    pb.MODEL_VERSION_STATUS_FAILED_REGISTRATION: "FAILED_REGISTRATION",
    pb.MODEL_VERSION_STATUS_READY: "READY",
}


def model_version_json(mv: pb.ModelVersion) -> dict[str, Any]:
    """A keel ModelVersion as MLflow's ``ModelVersion``."""
    out: dict[str, Any] = {
        "name": mv.name,
        "version": str(mv.version),
        "creation_timestamp": mv.creation_timestamp,
        "last_updated_timestamp": mv.last_updated_timestamp,
        "current_stage": mv.current_stage or "None",
        "source": mv.source,
    }
    optional = {
        "user_id": mv.user_id,
        "description": mv.description,
        "run_id": mv.run_id,
        "status": STATUS_NAMES.get(mv.status, ""),
        "status_message": mv.status_message,
        "run_link": mv.run_link,
    }
    out.update({key: value for key, value in optional.items() if value})
    if mv.tags:
        out["tags"] = [{"key": t.key, "value": t.value} for t in mv.tags]
    if mv.aliases:
        out["aliases"] = list(mv.aliases)
    return out


def registered_model_json(rm: pb.RegisteredModel) -> dict[str, Any]:
    """A keel RegisteredModel as MLflow's ``RegisteredModel`` (latest version per stage, tags, aliases)."""
    out: dict[str, Any] = {
        "name": rm.name,
        "creation_timestamp": rm.creation_timestamp,
        "last_updated_timestamp": rm.last_updated_timestamp,
    }
    if rm.description:
        out["description"] = rm.description
    if rm.latest_versions:
        out["latest_versions"] = [model_version_json(v) for v in rm.latest_versions]
    if rm.tags:
        out["tags"] = [{"key": t.key, "value": t.value} for t in rm.tags]
    if rm.aliases:
        out["aliases"] = [{"alias": a.alias, "version": str(a.version)} for a in rm.aliases]
    return out


def tag_pairs(data: dict[str, Any], field: str = "tags") -> list[tuple[str, str]]:
    """MLflow's ``[{"key": k, "value": v}, ...]`` as pairs; INVALID_PARAMETER_VALUE naming the
    entry when one is not an object with a string key (a missing value is MLflow's empty string)."""
    pairs: list[tuple[str, str]] = []
    for index, entry in enumerate(core.optional(data, field, list, [])):
        key = entry.get("key") if isinstance(entry, dict) else None
        value = entry.get("value", "") if isinstance(entry, dict) else None
        if (
            not isinstance(key, str)
            or not key
            or not isinstance(value, str | int | float)
            or isinstance(value, bool)
        ):
            raise errors.InvalidArgument(
                f"Invalid value {errors.quote(entry)} for parameter '{field}[{index}]' supplied: expected "
                '{"key": <string>, "value": <string>}',
                reason="INVALID_PARAMETER",
                field=f"{field}[{index}]",
            )
        pairs.append((key, str(value)))
    return pairs


def keel_source(source: str) -> str:
    """The registration source keel understands for one the ``mlflow`` client sends.

    ``mlflow.register_model("runs:/<run>/model")`` sends the run's artifact location,
    ``mlflow-artifacts:/<experiment>/<run>/artifacts/model`` (this port's run artifact URIs; an
    ``mlflow-artifacts://host:port/...`` form names the same place): that is keel's
    ``runs:/<run>/model``. A model version's download URI on this port
    (``mlflow-artifacts:/model-versions/<name>/<version>``) is ``models:/<name>/<version>``.
    Anything else (``runs:/``, ``models:/<name>/<version>``, a URI inside keel's artifact store)
    goes to keel as sent, whose checks say what is wrong with it."""
    if not source.startswith(core.ARTIFACTS_SCHEME):
        return source
    path = urlsplit(source).path
    version = core.parse_model_version_proxy_path(path)
    if version is not None:
        if version.path:
            raise errors.InvalidArgument(
                f"source {errors.quote(source)} names a file inside a model version; register the "
                f"version itself ({core.model_version_artifact_uri(version.name, version.version)})",
                reason="INVALID_SOURCE",
                field="source",
            )
        return f"models:/{version.name}/{version.version}"
    run = core.parse_proxy_path(path)
    return f"runs:/{run.run_id}/{run.path}" if run.path else f"runs:/{run.run_id}"
