"""MLflow 3's logged models on the MLflow REST port: ``/mlflow/logged-models`` and its
sub-resources, and ``runs/outputs``, over keel's ``TrackingService`` logged-model RPCs.

A logged model's files live inside a keel run's artifacts at ``<name>`` (the run the client named
as its source, or one keel created to hold them), so its ``artifact_uri`` on this port is the
run's proxied artifact URI plus ``/<name>``: the mlflow client uploads and downloads its files
through the artifact proxy as for any run, and ``runs:/<run_id>/<name>`` loads the same model.

``resolve_logged_model`` is what the registry routes call to turn a ``models:/<model_id>``
source into the run and path keel registers from.
"""

from __future__ import annotations

from typing import Any

from keel.artifacts.v1 import artifacts_pb2
from keel.tracking.v1 import tracking_pb2 as pb
from keel_server.common.errors import InvalidArgument, Unimplemented
from keel_server.common.http import Request, Response
from keel_server.mlflow_port.artifacts import download, file_info_json, list_all
from keel_server.mlflow_port.core import Port, args, endpoint, ok, optional, required, run_artifact_uri, typed

# keel's status ⇄ MLflow's LoggedModelStatus names (mlflow/protos/service.proto).
_STATUS_TO_MLFLOW = {
    pb.LOGGED_MODEL_STATUS_UNSPECIFIED: "LOGGED_MODEL_STATUS_UNSPECIFIED",
    pb.LOGGED_MODEL_STATUS_PENDING: "LOGGED_MODEL_PENDING",
    pb.LOGGED_MODEL_STATUS_READY: "LOGGED_MODEL_READY",
    pb.LOGGED_MODEL_STATUS_FAILED: "LOGGED_MODEL_UPLOAD_FAILED",
}
# What a finalize may ask for, by name or by MLflow's enum number (proto JSON allows both).
_FINAL_STATUS_FROM_MLFLOW = {
    "LOGGED_MODEL_READY": pb.LOGGED_MODEL_STATUS_READY,
    "LOGGED_MODEL_UPLOAD_FAILED": pb.LOGGED_MODEL_STATUS_FAILED,
    "2": pb.LOGGED_MODEL_STATUS_READY,
    "3": pb.LOGGED_MODEL_STATUS_FAILED,
}
# MLflow's order_by field names that keel spells differently.
_ORDER_FIELDS = {"creation_timestamp": "creation_time", "last_updated_timestamp": "last_updated_time"}


# ---------------------------------------------------------------------------------------------
# The registry's entry point
# ---------------------------------------------------------------------------------------------


def resolve_logged_model(port: Port, request: Request, model_id: str) -> tuple[str, str, str]:
    """``(experiment_id, run_id, artifact_path)`` of the logged model ``model_id``, read with the
    HTTP caller's credentials: its files are ``runs:/<run_id>/<artifact_path>``. Raises keel's
    typed errors (NOT_FOUND for an unknown or deleted model, INVALID_ARGUMENT for a malformed
    id, PERMISSION_DENIED), which ``render_error`` turns into MLflow's error shape. The model's
    status is not checked: a caller that needs READY looks at it itself."""
    model = _get(port, request, model_id)
    return model.experiment_id, model.run_id, model.artifact_path


def _get(port: Port, request: Request, model_id: str) -> pb.LoggedModel:
    return port.call(request, "tracking", "GetLoggedModel", pb.GetLoggedModelRequest(model_id=model_id))


# ---------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------


def artifact_location(model: pb.LoggedModel) -> str:
    """The model's folder as the mlflow client reaches it (through the artifact proxy)."""
    return f"{run_artifact_uri(model.experiment_id, model.run_id)}/{model.artifact_path}"


def logged_model_json(model: pb.LoggedModel) -> dict[str, Any]:
    """A keel LoggedModel as MLflow's ``LoggedModel`` JSON (``{"info", "data"}``)."""
    info: dict[str, Any] = {
        "model_id": model.model_id,
        "experiment_id": model.experiment_id,
        "name": model.name,
        "creation_timestamp_ms": model.creation_time,
        "last_updated_timestamp_ms": model.last_updated_time,
        "artifact_uri": artifact_location(model),
        "status": _STATUS_TO_MLFLOW.get(model.status, "LOGGED_MODEL_STATUS_UNSPECIFIED"),
        "tags": [{"key": t.key, "value": t.value} for t in model.tags],
    }
    for name in ("model_type", "source_run_id", "status_message"):
        if getattr(model, name):
            info[name] = getattr(model, name)
    return {"info": info, "data": {"params": [{"key": p.key, "value": p.value} for p in model.params]}}


def _pairs(data: dict[str, Any], name: str, message: type) -> list[Any]:
    """A list argument of ``{"key", "value"}`` objects as keel messages."""
    items = typed(name, data.get(name) or [], list)
    out = []
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        if not isinstance(item, dict):
            raise InvalidArgument(
                f"{where} must be an object with 'key' and 'value'", reason="INVALID_PARAMETER", field=where
            )
        key = typed(f"{where}.key", item.get("key", ""), str)
        value = typed(f"{where}.value", item.get("value", ""), str)
        out.append(message(key=key, value=value))
    return out


def _final_status(value: Any) -> pb.LoggedModelStatus.ValueType:
    status = _FINAL_STATUS_FROM_MLFLOW.get(str(value))
    if status is None:
        raise InvalidArgument(
            f"status {value!r} cannot be set: a logged model is finalized as LOGGED_MODEL_READY or "
            "LOGGED_MODEL_UPLOAD_FAILED",
            reason="INVALID_PARAMETER",
            field="status",
        )
    return status


def _order_by(data: dict[str, Any]) -> list[str]:
    """MLflow's structured order_by (``{field_name, ascending, dataset_*}``) as keel's strings."""
    keys = []
    for index, item in enumerate(typed("order_by", data.get("order_by") or [], list)):
        where = f"order_by[{index}]"
        if not isinstance(item, dict):
            raise InvalidArgument(
                f"{where} must be an object with 'field_name'", reason="INVALID_PARAMETER", field=where
            )
        if item.get("dataset_name") or item.get("dataset_digest"):
            raise Unimplemented(
                f"{where}: ordering by a metric on a dataset is not supported by keel's logged models",
                reason="NOT_SUPPORTED",
            )
        field = required(item, "field_name")
        ascending = typed(f"{where}.ascending", item.get("ascending", True), bool)
        keys.append(f"{_ORDER_FIELDS.get(field, field)} {'ASC' if ascending else 'DESC'}")
    return keys


# ---------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------


@endpoint("POST", "logged-models")
def create_logged_model(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.CreateLoggedModelRequest(
        experiment_id=required(data, "experiment_id"),
        name=optional(data, "name", default=""),
        source_run_id=optional(data, "source_run_id", default=""),
        model_type=optional(data, "model_type", default=""),
        tags=_pairs(data, "tags", pb.LoggedModelTag),
        params=_pairs(data, "params", pb.LoggedModelParam),
    )
    model = port.call(request, "tracking", "CreateLoggedModel", message)
    return ok({"model": logged_model_json(model)})


@endpoint("POST", "logged-models/search")
def search_logged_models(port: Port, request: Request) -> Response:
    data = args(request)
    if "experiment_ids" not in data:
        required(data, "experiment_ids")
    experiment_ids = [
        typed("experiment_ids", e, str) for e in typed("experiment_ids", data["experiment_ids"], list)
    ]
    if data.get("datasets"):
        raise Unimplemented(
            "datasets: filtering logged models by the datasets of their metrics is not supported by keel",
            reason="NOT_SUPPORTED",
        )
    answer = port.call(
        request,
        "tracking",
        "SearchLoggedModels",
        pb.SearchLoggedModelsRequest(
            experiment_ids=experiment_ids,
            filter=optional(data, "filter", default=""),
            order_by=_order_by(data),
            page_size=optional(data, "max_results", int, default=0),
            page_token=optional(data, "page_token", default=""),
        ),
    )
    payload: dict[str, Any] = {"models": [logged_model_json(m) for m in answer.models]}
    if answer.next_page_token:
        payload["next_page_token"] = answer.next_page_token
    return ok(payload)


@endpoint("GET", "logged-models/{model_id}")
def get_logged_model(port: Port, request: Request) -> Response:
    allow_deleted = typed("allow_deleted", request.arg("allow_deleted", "false"), bool)
    message = pb.GetLoggedModelRequest(model_id=request.params["model_id"], allow_deleted=allow_deleted)
    return ok({"model": logged_model_json(port.call(request, "tracking", "GetLoggedModel", message))})


@endpoint("PATCH", "logged-models/{model_id}")
def finalize_logged_model(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.UpdateLoggedModelRequest(
        model_id=request.params["model_id"], status=_final_status(required(data, "status"))
    )
    return ok({"model": logged_model_json(port.call(request, "tracking", "UpdateLoggedModel", message))})


@endpoint("DELETE", "logged-models/{model_id}")
def delete_logged_model(port: Port, request: Request) -> Response:
    port.call(
        request,
        "tracking",
        "DeleteLoggedModel",
        pb.DeleteLoggedModelRequest(model_id=request.params["model_id"]),
    )
    return ok()


@endpoint("PATCH", "logged-models/{model_id}/tags")
def set_logged_model_tags(port: Port, request: Request) -> Response:
    message = pb.SetLoggedModelTagsRequest(
        model_id=request.params["model_id"], tags=_pairs(args(request), "tags", pb.LoggedModelTag)
    )
    port.call(request, "tracking", "SetLoggedModelTags", message)
    return ok()


@endpoint("DELETE", "logged-models/{model_id}/tags/{tag_key:path}")
def delete_logged_model_tag(port: Port, request: Request) -> Response:
    message = pb.DeleteLoggedModelTagRequest(
        model_id=request.params["model_id"], key=request.params["tag_key"]
    )
    port.call(request, "tracking", "DeleteLoggedModelTag", message)
    return ok()


@endpoint("POST", "logged-models/{model_id}/params")
def log_logged_model_params(port: Port, request: Request) -> Response:
    message = pb.LogLoggedModelParamsRequest(
        model_id=request.params["model_id"], params=_pairs(args(request), "params", pb.LoggedModelParam)
    )
    port.call(request, "tracking", "LogLoggedModelParams", message)
    return ok()


@endpoint("GET", "logged-models/{model_id}/artifacts/directories")
def list_logged_model_artifacts(port: Port, request: Request) -> Response:
    """The files of a logged model (MLflow's UI lists them here): the direct children of a folder
    of the model (``artifact_directory_path``), with paths relative to the model's folder."""
    model = _get(port, request, request.params["model_id"])
    below = request.arg("artifact_directory_path").strip("/")
    ref = artifacts_pb2.ArtifactRef(
        run_id=model.run_id, path=f"{model.artifact_path}/{below}" if below else model.artifact_path
    )
    prefix = model.artifact_path + "/"
    files = [file_info_json(info, info.path.removeprefix(prefix)) for info in list_all(port, request, ref)]
    return ok({"root_uri": artifact_location(model), "files": files})


@endpoint("GET", "/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files")
def get_logged_model_artifact(port: Port, request: Request) -> Response:
    """The UI's read of one file of a logged model (``artifact_file_path``), streamed."""
    model = _get(port, request, request.params["model_id"])
    path = required({"artifact_file_path": request.arg("artifact_file_path")}, "artifact_file_path")
    return download(
        port, request, artifacts_pb2.ArtifactRef(run_id=model.run_id, path=f"{model.artifact_path}/{path}")
    )


@endpoint("POST", "runs/outputs")
def log_outputs(port: Port, request: Request) -> Response:
    """MLflow records which models a run produced. In keel a logged model knows its run (it was
    created with ``source_run_id``), so an output naming a model of this run is already on
    record; one naming a model of another run cannot be recorded and is refused."""
    data = args(request)
    run_id = required(data, "run_id")
    if "models" not in data:
        required(data, "models")
    outputs = typed("models", data["models"], list)
    port.call(request, "tracking", "GetRun", pb.GetRunRequest(run_id=run_id))
    for index, output in enumerate(outputs):
        where = f"models[{index}]"
        if not isinstance(output, dict):
            raise InvalidArgument(
                f"{where} must be an object with 'model_id'", reason="INVALID_PARAMETER", field=where
            )
        model_id = required(output, "model_id")
        typed(f"{where}.step", output.get("step", 0), int)
        model = _get(port, request, model_id)
        if model.source_run_id != run_id:
            raise InvalidArgument(
                f"{where}: logged model {model_id} was created from run {model.source_run_id or '(none)'}, not "
                f"{run_id}; keel records a model as the output of the run it was created from only",
                reason="OUTPUT_OF_ANOTHER_RUN",
                field=where,
            )
    return ok()
