"""MLflow's model registry routes (``/api/2.0/mlflow/registered-models/*``,
``/api/2.0/mlflow/model-versions/*``, as ``mlflow/protos/model_registry.proto`` defines them) over
keel's ``ModelRegistryService``.

Each route translates MLflow's arguments, makes the registry call with the caller's credentials
and answers MLflow's JSON (``registry_json``). keel's semantics hold: version numbers come from
the database, a registration snapshots the files (so a version is READY or FAILED_REGISTRATION
when ``create`` answers), stage changes and alias moves are recorded.

Where the files are, as the ``mlflow`` client sees them: ``get-download-uri`` answers
``mlflow-artifacts:/model-versions/<name>/<version>`` (``core.model_version_artifact_uri``), which
the client lists and downloads through the artifact proxy; the artifact routes turn it into a read
of the registry's snapshot with ``model_version_artifact_ref``. So ``mlflow.pyfunc.load_model``
of ``models:/<name>/<version>``, ``/latest``, ``/<Stage>`` and ``@<alias>`` reads what keel
registered, whichever door registered it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from keel.artifacts.v1 import artifacts_pb2 as apb
from keel.registry.v1 import registry_pb2 as pb
from keel_server.common import errors
from keel_server.common.http import Request, Response
from keel_server.mlflow_port import core
from keel_server.mlflow_port.artifacts import run_ref
from keel_server.mlflow_port.core import Port, args, endpoint, ok, optional, required
from keel_server.mlflow_port.logged_models import resolve_logged_model
from keel_server.mlflow_port.registry_json import (
    keel_source,
    model_version_json,
    registered_model_json,
    tag_pairs,
)

# MLflow's caps on one search page (``mlflow server`` refuses more); keel pages within them.
MAX_MODELS_PER_PAGE = 1000
MAX_VERSIONS_PER_PAGE = 200_000
# The clause MLflow 3's client appends to every registered model search to leave prompts out
# (``mlflow.prompt.registry_utils.add_prompt_filter_string``). A model without the tag is not a
# prompt; keel's ``!=`` on a tag needs the tag, so the clause is asked as MLflow means it.
_PROMPT_TAG = "mlflow.prompt.is_prompt"
_NOT_PROMPT = f"tag.`{_PROMPT_TAG}` != 'true'"
_NOT_PROMPT_KEEL = f"(tags.`{_PROMPT_TAG}` IS NULL OR tags.`{_PROMPT_TAG}` != 'true')"


def _registry(port: Port, request: Request, method: str, message: Any) -> Any:
    return port.call(request, "registry", method, message)


def _version(data: dict[str, Any]) -> int:
    """MLflow sends version numbers as strings."""
    return int(required(data, "version", int))


def _model_response(model: pb.RegisteredModel) -> Response:
    return ok({"registered_model": registered_model_json(model)})


def _version_response(version: pb.ModelVersion) -> Response:
    return ok({"model_version": model_version_json(version)})


def _page_size(data: dict[str, Any], cap: int) -> int:
    size = optional(data, "max_results", int, 0)
    if size > cap:
        raise errors.InvalidArgument(
            f"Invalid value {size} for parameter 'max_results' supplied. It must be at most {cap}",
            reason="INVALID_PARAMETER",
            field="max_results",
        )
    return int(size)


def _strings(data: dict[str, Any], name: str) -> list[str]:
    """A list argument of strings (``order_by``, ``stages``); a single query value is a list of one."""
    values = optional(data, name, list, [])
    if not all(isinstance(value, str) for value in values):
        raise errors.InvalidArgument(
            f"Invalid value {errors.quote(values)} for parameter '{name}' supplied: expected a list of strings",
            reason="INVALID_PARAMETER",
            field=name,
        )
    return list(values)


def _no_deployment_job(data: dict[str, Any]) -> None:
    """Deployment jobs are Databricks'; keel has none, and never drops an argument silently."""
    if optional(data, "deployment_job_id"):
        raise errors.InvalidArgument(
            "deployment_job_id is not supported: keel's registry has no deployment jobs (promote versions with "
            "stages, aliases or transition requests)",
            reason="UNSUPPORTED_PARAMETER",
            field="deployment_job_id",
        )


# -- registered models -----------------------------------------------------------------------------
@endpoint("POST", "registered-models/create")
def create_registered_model(port: Port, request: Request) -> Response:
    data = args(request)
    _no_deployment_job(data)
    message = pb.CreateRegisteredModelRequest(
        name=required(data, "name"),
        tags=[pb.RegisteredModelTag(key=k, value=v) for k, v in tag_pairs(data)],
        description=optional(data, "description", default=""),
    )
    return _model_response(_registry(port, request, "CreateRegisteredModel", message))


@endpoint("GET", "registered-models/get")
def get_registered_model(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.GetRegisteredModelRequest(name=required(data, "name"))
    return _model_response(_registry(port, request, "GetRegisteredModel", message))


@endpoint("POST", "registered-models/rename")
def rename_registered_model(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.RenameRegisteredModelRequest(
        name=required(data, "name"), new_name=required(data, "new_name")
    )
    return _model_response(_registry(port, request, "RenameRegisteredModel", message))


@endpoint("PATCH", "registered-models/update")
def update_registered_model(port: Port, request: Request) -> Response:
    data = args(request)
    _no_deployment_job(data)
    message = pb.UpdateRegisteredModelRequest(
        name=required(data, "name"), description=optional(data, "description", default="")
    )
    return _model_response(_registry(port, request, "UpdateRegisteredModel", message))


@endpoint("DELETE", "registered-models/delete")
def delete_registered_model(port: Port, request: Request) -> Response:
    data = args(request)
    _registry(
        port, request, "DeleteRegisteredModel", pb.DeleteRegisteredModelRequest(name=required(data, "name"))
    )
    return ok({})


def registered_models_filter(text: str) -> str:
    """MLflow's registered model filter as keel asks it (only the prompt clause differs)."""
    if text == _NOT_PROMPT:
        return _NOT_PROMPT_KEEL
    suffix = f" AND {_NOT_PROMPT}"
    if text.endswith(suffix):
        return f"({text[: -len(suffix)]}) AND {_NOT_PROMPT_KEEL}"
    return text


@endpoint("GET", "registered-models/search")
def search_registered_models(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.SearchRegisteredModelsRequest(
        filter=registered_models_filter(optional(data, "filter", default="")),
        order_by=_strings(data, "order_by"),
        page_size=_page_size(data, MAX_MODELS_PER_PAGE),
        page_token=optional(data, "page_token", default=""),
    )
    page = _registry(port, request, "SearchRegisteredModels", message)
    payload: dict[str, Any] = {
        "registered_models": [registered_model_json(m) for m in page.registered_models]
    }
    if page.next_page_token:
        payload["next_page_token"] = page.next_page_token
    return ok(payload)


@endpoint("POST", "registered-models/get-latest-versions")
@endpoint("GET", "registered-models/get-latest-versions")
def get_latest_versions(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.GetLatestVersionsRequest(name=required(data, "name"), stages=_strings(data, "stages"))
    found = _registry(port, request, "GetLatestVersions", message)
    return ok({"model_versions": [model_version_json(v) for v in found.model_versions]})


@endpoint("POST", "registered-models/set-tag")
def set_registered_model_tag(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.SetRegisteredModelTagRequest(
        name=required(data, "name"), key=required(data, "key"), value=optional(data, "value", default="")
    )
    _registry(port, request, "SetRegisteredModelTag", message)
    return ok({})


@endpoint("DELETE", "registered-models/delete-tag")
def delete_registered_model_tag(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.DeleteRegisteredModelTagRequest(name=required(data, "name"), key=required(data, "key"))
    _registry(port, request, "DeleteRegisteredModelTag", message)
    return ok({})


# -- aliases ---------------------------------------------------------------------------------------
@endpoint("POST", "registered-models/alias")
def set_registered_model_alias(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.SetRegisteredModelAliasRequest(
        name=required(data, "name"), alias=required(data, "alias"), version=_version(data)
    )
    _registry(port, request, "SetRegisteredModelAlias", message)
    return ok({})


@endpoint("DELETE", "registered-models/alias")
def delete_registered_model_alias(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.DeleteRegisteredModelAliasRequest(name=required(data, "name"), alias=required(data, "alias"))
    _registry(port, request, "DeleteRegisteredModelAlias", message)
    return ok({})


@endpoint("GET", "registered-models/alias")
def get_model_version_by_alias(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.GetModelVersionByAliasRequest(name=required(data, "name"), alias=required(data, "alias"))
    return _version_response(_registry(port, request, "GetModelVersionByAlias", message))


# -- model versions --------------------------------------------------------------------------------
@endpoint("POST", "model-versions/create")
def create_model_version(port: Port, request: Request) -> Response:
    """``source`` as the client sends it (``runs:/``, a run's ``mlflow-artifacts:`` location, a
    version's download URI, ``models:/<name>/<version>``, or MLflow 3's logged model
    ``models:/<model_id>``) is translated to keel's form; the version answers with what keel
    recorded."""
    data = args(request)
    source = required(data, "source")
    run_id = optional(data, "run_id", default="")
    model_id = optional(data, "model_id", default="")
    if _is_logged_model_uri(source):
        source, run_id = _logged_model_source(port, request, source, model_id, run_id)
    message = pb.CreateModelVersionRequest(
        name=required(data, "name"),
        source=_keel_source(port, request, source),
        run_id=run_id,
        tags=[pb.ModelVersionTag(key=k, value=v) for k, v in tag_pairs(data)],
        description=optional(data, "description", default=""),
        run_link=optional(data, "run_link", default=""),
    )
    return _version_response(_registry(port, request, "CreateModelVersion", message))


def _keel_source(port: Port, request: Request, source: str) -> str:
    """``registry_json.keel_source``, after checking that a run's proxied location names the run's
    own experiment (as the artifact proxy does for the files themselves): the path names files
    only there."""
    if source.startswith(core.ARTIFACTS_SCHEME):
        path = urlsplit(source).path
        if core.parse_model_version_proxy_path(path) is None:
            run_ref(port, request, path)
    return keel_source(source)


def _is_logged_model_uri(source: str) -> bool:
    """``models:/<model_id>``: MLflow 3's logged model (one segment, no ``@alias``)."""
    if not source.startswith("models:/"):
        return False
    rest = source[len("models:/") :].strip("/")
    return bool(rest) and "/" not in rest and "@" not in rest


def _logged_model_source(
    port: Port, request: Request, source: str, model_id: str, run_id: str
) -> tuple[str, str]:
    """MLflow 3 registers a logged model (``models:/<model_id>``, with ``model_id``): its files are
    ``runs:/<run>/<path>`` in keel (``logged_models.resolve_logged_model``), registered from there
    with that run."""
    named = source[len("models:/") :].strip("/")
    if model_id and model_id != named:
        raise errors.InvalidArgument(
            f"model_id {errors.quote(model_id)} is not the logged model the source {errors.quote(source)} names",
            reason="INVALID_SOURCE",
            field="model_id",
        )
    _, model_run, path = resolve_logged_model(port, request, named)
    return (f"runs:/{model_run}/{path}" if path else f"runs:/{model_run}"), run_id or model_run


@endpoint("GET", "model-versions/get")
def get_model_version(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.GetModelVersionRequest(name=required(data, "name"), version=_version(data))
    return _version_response(_registry(port, request, "GetModelVersion", message))


@endpoint("PATCH", "model-versions/update")
def update_model_version(port: Port, request: Request) -> Response:
    """Only the description is updatable; without one MLflow changes nothing, and neither does keel."""
    data = args(request)
    name, version = required(data, "name"), _version(data)
    if data.get("description") is None:
        found = _registry(
            port, request, "GetModelVersion", pb.GetModelVersionRequest(name=name, version=version)
        )
        return _version_response(found)
    message = pb.UpdateModelVersionRequest(
        name=name, version=version, description=optional(data, "description", default="")
    )
    return _version_response(_registry(port, request, "UpdateModelVersion", message))


@endpoint("DELETE", "model-versions/delete")
def delete_model_version(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.DeleteModelVersionRequest(name=required(data, "name"), version=_version(data))
    _registry(port, request, "DeleteModelVersion", message)
    return ok({})


@endpoint("GET", "model-versions/search")
def search_model_versions(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.SearchModelVersionsRequest(
        filter=optional(data, "filter", default=""),
        order_by=_strings(data, "order_by"),
        page_size=_page_size(data, MAX_VERSIONS_PER_PAGE),
        page_token=optional(data, "page_token", default=""),
    )
    page = _registry(port, request, "SearchModelVersions", message)
    payload: dict[str, Any] = {"model_versions": [model_version_json(v) for v in page.model_versions]}
    if page.next_page_token:
        payload["next_page_token"] = page.next_page_token
    return ok(payload)


@endpoint("POST", "model-versions/transition-stage")
def transition_model_version_stage(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.TransitionModelVersionStageRequest(
        name=required(data, "name"),
        version=_version(data),
        stage=required(data, "stage"),
        archive_existing_versions=optional(data, "archive_existing_versions", bool, False),
    )
    return _version_response(_registry(port, request, "TransitionModelVersionStage", message))


@endpoint("POST", "model-versions/set-tag")
def set_model_version_tag(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.SetModelVersionTagRequest(
        name=required(data, "name"),
        version=_version(data),
        key=required(data, "key"),
        value=optional(data, "value", default=""),
    )
    _registry(port, request, "SetModelVersionTag", message)
    return ok({})


@endpoint("DELETE", "model-versions/delete-tag")
def delete_model_version_tag(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.DeleteModelVersionTagRequest(
        name=required(data, "name"), version=_version(data), key=required(data, "key")
    )
    _registry(port, request, "DeleteModelVersionTag", message)
    return ok({})


@endpoint("GET", "model-versions/get-download-uri")
def get_model_version_download_uri(port: Port, request: Request) -> Response:
    """The version's files on this port's artifact proxy. Asked of keel first, so a version that
    does not exist, is not READY or lost its files fails here as it would over gRPC."""
    data = args(request)
    name, version = required(data, "name"), _version(data)
    message = pb.GetModelVersionDownloadUriRequest(name=name, version=version)
    _registry(port, request, "GetModelVersionDownloadUri", message)
    return ok({"artifact_uri": core.model_version_artifact_uri(name, version)})


def model_version_artifact_ref(port: Port, request: Request, where: core.ModelVersionPath) -> apb.ArtifactRef:
    """The artifact reference of a path inside a version's files (a ``model-versions/...`` proxy
    path): the registry's snapshot, read with the caller's credentials (a caller who may not read
    the model gets the registry's refusal)."""
    message = pb.GetModelVersionDownloadUriRequest(name=where.name, version=where.version)
    found = _registry(port, request, "GetModelVersionDownloadUri", message)
    return apb.ArtifactRef(artifact_uri=found.artifact_uri, path=where.path)
