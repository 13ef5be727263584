"""MLflow's tracking REST API (``/api/2.0/mlflow/experiments/*``, ``runs/*``, ``metrics/*``) over
keel's TrackingService.

Each route translates MLflow's request into one keel call (a few make two, said where), and the
answer back with ``tracking_json``. What MLflow does that keel's store does not, the port does
here, as MLflow's own server would:

- experiment ``0`` is created (as ``Default``) the first time a client uses it, as MLflow's
  client assumes it exists;
- a new run always carries the ``mlflow.runName`` tag (the name is generated here when the
  client gives none, so filters on ``tags.mlflow.runName`` match), and ``mlflow.parentRunId``
  makes it a nested run in keel when the parent is in the same experiment;
- log-batch applies MLflow's limits with MLflow's messages, total included;
- run inputs (datasets, logged models) are kept as run tags (``tracking_json``); a run's
  outputs are the logged models created from it (``runs/outputs`` is the logged-model routes');
- a malformed run or experiment id is "not found", and writing to a deleted one an invalid
  parameter, as MLflow answers.
"""

from __future__ import annotations

import json
from typing import Any

import keel.exceptions as sdk_errors
from keel.tracking.v1 import tracking_pb2 as pb
from keel_server.common import errors as server_errors
from keel_server.common.http import Request, Response
from keel_server.mlflow_port.core import Port, args, endpoint, ok, optional, required
from keel_server.mlflow_port.tracking_json import (
    LOGGED_MODELS_TAG,
    MODEL_INPUT_TAG,
    PARENT_RUN_TAG,
    RUN_NAME_TAG,
    dataset_input_tag,
    entries,
    experiment_json,
    field,
    key_values,
    metric_json,
    metric_pb,
    model_tag,
    parse_status,
    parse_view_type,
    run_info_json,
    run_json,
    tags_pb,
)
from keel_server.tracking.store import DEFAULT_EXPERIMENT_ID, DEFAULT_EXPERIMENT_NAME, generate_run_name

# MLflow's limits on one log-batch request (mlflow/utils/validation.py).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_DATASETS_PER_BATCH = 1000
# MLflow's limit on search-runs' max_results.
MAX_SEARCH_RUNS_RESULTS = 50000
# metrics/get-history-bulk-interval: runs per request, points per run (MLflow's handlers.py).
MAX_BULK_RUNS = 100
MAX_POINTS_PER_RUN = 2500
# Mandatory fields of the model runs/log-model records (MLflow's handler checks the same).
LOG_MODEL_FIELDS = ("artifact_path", "flavors", "utc_time_created", "run_id")
DEFAULT_EXPERIMENT = str(DEFAULT_EXPERIMENT_ID)


def _tracking(port: Port, request: Request, method: str, message: Any) -> Any:
    return port.call(request, "tracking", method, message)


def _run_id(data: dict[str, Any]) -> str:
    """MLflow sends the run id as ``run_id`` and, for older servers, ``run_uuid``."""
    if data.get("run_id") in (None, "") and data.get("run_uuid") not in (None, ""):
        return str(required(data, "run_uuid"))
    return str(required(data, "run_id"))


def _on_run(port: Port, request: Request, method: str, message: Any, run_id: str) -> Any:
    """A call about one run: a malformed id is RESOURCE_DOES_NOT_EXIST and a deleted run
    INVALID_PARAMETER_VALUE, as MLflow answers."""
    try:
        return _tracking(port, request, method, message)
    except sdk_errors.KeelError as exc:
        if exc.reason == "INVALID_RUN_ID":
            raise server_errors.NotFound(f"Run with id={run_id} not found", reason="RUN_NOT_FOUND") from None
        raise _as_mlflow_state_error(exc) from None


def _as_mlflow_state_error(exc: sdk_errors.KeelError) -> Exception:
    """keel's FAILED_PRECONDITION (a deleted run or experiment...) is MLflow's
    INVALID_PARAMETER_VALUE (MLflow's INVALID_STATE is a 500 to its client); MLflow's sentence
    first, keel's hint after."""
    if not isinstance(exc, sdk_errors.FailedPrecondition):
        return exc
    what = {"RUN_DELETED": "run", "EXPERIMENT_DELETED": "experiment"}.get(exc.reason)
    message = exc.message
    if what is not None:
        resource = exc.metadata.get(f"{what}_id", "")
        message = (
            f"The {what} {resource} must be in the 'active' state. Current state is deleted. ({message})"
        )
    return server_errors.InvalidArgument(message, reason=exc.reason)


def _on_experiment(port: Port, request: Request, method: str, message: Any, experiment_id: str) -> Any:
    """A call about one experiment: a malformed id is RESOURCE_DOES_NOT_EXIST (as MLflow
    answers), and experiment 0 is created as ``Default`` on first use (MLflow's client takes it
    for granted)."""
    try:
        return _tracking(port, request, method, message)
    except sdk_errors.NotFound:
        if experiment_id != DEFAULT_EXPERIMENT or not _create_default_experiment(port, request):
            raise
        return _tracking(port, request, method, message)
    except sdk_errors.KeelError as exc:
        if exc.reason == "INVALID_EXPERIMENT_ID":
            raise server_errors.NotFound(
                f"No Experiment with id={experiment_id} exists", reason="EXPERIMENT_NOT_FOUND"
            ) from None
        raise _as_mlflow_state_error(exc) from None


def _create_default_experiment(port: Port, request: Request) -> bool:
    """Gets or creates ``Default``; True when it is experiment 0."""
    answer = _tracking(
        port, request, "GetOrCreateExperiment", pb.GetOrCreateExperimentRequest(name=DEFAULT_EXPERIMENT_NAME)
    )
    return bool(answer.experiment.experiment_id == DEFAULT_EXPERIMENT)


# -- experiments ---------------------------------------------------------------------------------


@endpoint("POST", "experiments/create")
def create_experiment(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.CreateExperimentRequest(
        name=required(data, "name"),
        artifact_location=optional(data, "artifact_location", str, ""),
        tags=[pb.ExperimentTag(key=k, value=v) for k, v in key_values(data, "tags")],
    )
    experiment = _tracking(port, request, "CreateExperiment", message)
    return ok({"experiment_id": experiment.experiment_id})


@endpoint("GET", "experiments/get")
def get_experiment(port: Port, request: Request) -> Response:
    experiment_id = required(args(request), "experiment_id")
    message = pb.GetExperimentRequest(experiment_id=experiment_id)
    experiment = _on_experiment(port, request, "GetExperiment", message, experiment_id)
    return ok({"experiment": experiment_json(experiment)})


@endpoint("GET", "experiments/get-by-name")
def get_experiment_by_name(port: Port, request: Request) -> Response:
    """RESOURCE_DOES_NOT_EXIST (404) when absent: ``mlflow.set_experiment`` then creates it."""
    name = required(args(request), "experiment_name")
    experiment = _tracking(port, request, "GetExperimentByName", pb.GetExperimentByNameRequest(name=name))
    return ok({"experiment": experiment_json(experiment)})


def _search_experiments(port: Port, request: Request) -> Response:
    data = args(request)
    message = pb.SearchExperimentsRequest(
        filter=optional(data, "filter", str, ""),
        order_by=[str(key) for key in optional(data, "order_by", list, [])],
        view_type=parse_view_type(data.get("view_type"), "view_type"),
        page_size=_page_size(data),
        page_token=optional(data, "page_token", str, ""),
    )
    answer = _tracking(port, request, "SearchExperiments", message)
    out: dict[str, Any] = {"experiments": [experiment_json(e) for e in answer.experiments]}
    if answer.next_page_token:
        out["next_page_token"] = answer.next_page_token
    return ok(out)


endpoint("POST", "experiments/search")(_search_experiments)
endpoint("GET", "experiments/search")(_search_experiments)


def _page_size(data: dict[str, Any], limit: int | None = None) -> int:
    """``max_results`` as a keel page size (keel caps it and hands back a page token for the
    rest, which MLflow's client follows)."""
    size = optional(data, "max_results", int, 0)
    if size < 0 or (limit is not None and size > limit):
        raise server_errors.InvalidArgument(
            f"Invalid value {size} for parameter 'max_results' supplied: it must be between 0 and "
            f"{limit if limit is not None else 'the server limit'}. See the API docs for more information "
            "about request parameters.",
            reason="INVALID_PARAMETER",
            field="max_results",
        )
    return int(min(size, 2**31 - 1))


@endpoint("POST", "experiments/update")
def update_experiment(port: Port, request: Request) -> Response:
    data = args(request)
    experiment_id = required(data, "experiment_id")
    message = pb.UpdateExperimentRequest(experiment_id=experiment_id, new_name=required(data, "new_name"))
    _on_experiment(port, request, "UpdateExperiment", message, experiment_id)
    return ok()


@endpoint("POST", "experiments/delete")
def delete_experiment(port: Port, request: Request) -> Response:
    experiment_id = required(args(request), "experiment_id")
    message = pb.DeleteExperimentRequest(experiment_id=experiment_id)
    _on_experiment(port, request, "DeleteExperiment", message, experiment_id)
    return ok()


@endpoint("POST", "experiments/restore")
def restore_experiment(port: Port, request: Request) -> Response:
    experiment_id = required(args(request), "experiment_id")
    message = pb.RestoreExperimentRequest(experiment_id=experiment_id)
    _on_experiment(port, request, "RestoreExperiment", message, experiment_id)
    return ok()


@endpoint("POST", "experiments/set-experiment-tag")
def set_experiment_tag(port: Port, request: Request) -> Response:
    data = args(request)
    experiment_id = required(data, "experiment_id")
    message = pb.SetExperimentTagRequest(
        experiment_id=experiment_id, key=required(data, "key"), value=optional(data, "value", str, "")
    )
    _on_experiment(port, request, "SetExperimentTag", message, experiment_id)
    return ok()


@endpoint("POST", "experiments/delete-experiment-tag")
def delete_experiment_tag(port: Port, request: Request) -> Response:
    data = args(request)
    experiment_id = required(data, "experiment_id")
    message = pb.DeleteExperimentTagRequest(experiment_id=experiment_id, key=required(data, "key"))
    _on_experiment(port, request, "DeleteExperimentTag", message, experiment_id)
    return ok()


# -- runs ----------------------------------------------------------------------------------------


@endpoint("POST", "runs/create")
def create_run(port: Port, request: Request) -> Response:
    data = args(request)
    experiment_id = optional(data, "experiment_id", str, DEFAULT_EXPERIMENT)
    tags = key_values(data, "tags")
    run_name = optional(data, "run_name", str, "")
    tag_map = dict(tags)
    tagged_name = tag_map.get(RUN_NAME_TAG, "")
    if run_name and tagged_name and run_name != tagged_name:
        raise server_errors.InvalidArgument(
            "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values "
            f"(run_name='{run_name}', mlflow.runName='{tagged_name}').",
            reason="RUN_NAME_CONFLICT",
            field="run_name",
        )
    # Named here, not by the store, so the mlflow.runName tag (which MLflow's server always sets)
    # is written in the same call.
    name = run_name or tagged_name or generate_run_name()
    tag_map[RUN_NAME_TAG] = name
    message = pb.CreateRunRequest(
        experiment_id=experiment_id,
        run_name=name,
        user_id=optional(data, "user_id", str, ""),
        tags=tags_pb(tag_map.items()),
        parent_run_id=tag_map.get(PARENT_RUN_TAG, ""),
    )
    start_time = optional(data, "start_time", int)
    if start_time is not None:
        message.start_time = start_time
    try:
        run = _on_experiment(port, request, "CreateRun", message, experiment_id)
    except sdk_errors.InvalidArgument as exc:
        # MLflow keeps any parent as a plain tag; keel nests only under a run of the same
        # experiment. Otherwise the tag stays, and the run is top-level in keel.
        if not message.parent_run_id or exc.reason not in ("INVALID_PARENT_RUN", "INVALID_RUN_ID"):
            raise
        message.parent_run_id = ""
        run = _on_experiment(port, request, "CreateRun", message, experiment_id)
    return ok({"run": run_json(run)})


@endpoint("GET", "runs/get")
def get_run(port: Port, request: Request) -> Response:
    """The run, with its outputs: the logged models created from it (a second call)."""
    run_id = _run_id(args(request))
    run = _on_run(port, request, "GetRun", pb.GetRunRequest(run_id=run_id), run_id)
    out = run_json(run)
    outputs = _logged_model_outputs(port, request, run.info.experiment_id, run_id)
    if outputs:
        out["outputs"] = {"model_outputs": outputs}
    return ok({"run": out})


def _logged_model_outputs(
    port: Port, request: Request, experiment_id: str, run_id: str
) -> list[dict[str, Any]]:
    """MLflow's ``ModelOutput`` of each logged model whose source is ``run_id`` (keel keeps no
    step for them: 0). At most the first page (100): a run rarely logs more models."""
    message = pb.SearchLoggedModelsRequest(
        experiment_ids=[experiment_id], filter=f"source_run_id = '{run_id}'"
    )
    try:
        answer = _tracking(port, request, "SearchLoggedModels", message)
    except sdk_errors.Unimplemented:  # a tracking service without logged models (an older server)
        return []
    return [{"model_id": model.model_id, "step": 0} for model in answer.models]


@endpoint("POST", "runs/update")
def update_run(port: Port, request: Request) -> Response:
    data = args(request)
    run_id = _run_id(data)
    message = pb.UpdateRunRequest(run_id=run_id)
    if data.get("status") not in (None, ""):
        message.status = parse_status(data["status"])
    end_time = optional(data, "end_time", int)
    if end_time is not None:
        message.end_time = end_time
    run_name = optional(data, "run_name", str, "")  # '' keeps the name, as in MLflow
    if run_name:
        message.run_name = run_name
    info = _on_run(port, request, "UpdateRun", message, run_id)
    if run_name:
        # MLflow's server renames the tag with the run (a second call, only on renames).
        tag = pb.SetTagRequest(run_id=run_id, key=RUN_NAME_TAG, value=run_name)
        _on_run(port, request, "SetTag", tag, run_id)
    return ok({"run_info": run_info_json(info)})


@endpoint("POST", "runs/delete")
def delete_run(port: Port, request: Request) -> Response:
    run_id = _run_id(args(request))
    _on_run(port, request, "DeleteRun", pb.DeleteRunRequest(run_id=run_id), run_id)
    return ok()


@endpoint("POST", "runs/restore")
def restore_run(port: Port, request: Request) -> Response:
    run_id = _run_id(args(request))
    _on_run(port, request, "RestoreRun", pb.RestoreRunRequest(run_id=run_id), run_id)
    return ok()


@endpoint("POST", "runs/log-metric")
def log_metric(port: Port, request: Request) -> Response:
    data = args(request)
    run_id = _run_id(data)
    message = pb.LogMetricRequest(
        run_id=run_id,
        key=required(data, "key"),
        value=required(data, "value", float),
        step=optional(data, "step", int, 0),
    )
    timestamp = optional(data, "timestamp", int)
    if timestamp is not None:
        message.timestamp = timestamp
    _on_run(port, request, "LogMetric", message, run_id)
    return ok()


@endpoint("POST", "runs/log-parameter")
def log_param(port: Port, request: Request) -> Response:
    data = args(request)
    run_id = _run_id(data)
    message = pb.LogParamRequest(
        run_id=run_id, key=required(data, "key"), value=optional(data, "value", str, "")
    )
    _on_run(port, request, "LogParam", message, run_id)
    return ok()


@endpoint("POST", "runs/set-tag")
def set_tag(port: Port, request: Request) -> Response:
    data = args(request)
    run_id = _run_id(data)
    key = required(data, "key")
    value = optional(data, "value", str, "")
    if key == RUN_NAME_TAG and value:
        # MLflow's server renames the run with its tag; keel keeps the name as an attribute.
        rename = pb.UpdateRunRequest(run_id=run_id, run_name=value)
        _on_run(port, request, "UpdateRun", rename, run_id)
    _on_run(port, request, "SetTag", pb.SetTagRequest(run_id=run_id, key=key, value=value), run_id)
    return ok()


@endpoint("POST", "runs/delete-tag")
def delete_tag(port: Port, request: Request) -> Response:
    data = args(request)
    run_id = _run_id(data)
    message = pb.DeleteTagRequest(run_id=run_id, key=required(data, "key"))
    _on_run(port, request, "DeleteTag", message, run_id)
    return ok()


@endpoint("POST", "runs/log-batch")
def log_batch(port: Port, request: Request) -> Response:
    """All or nothing, within MLflow's limits (checked here so the messages are MLflow's)."""
    data = args(request)
    run_id = _run_id(data)
    metrics = entries(data, "metrics")
    params = key_values(data, "params")
    tags = key_values(data, "tags")
    _check_batch_limits(len(metrics), len(params), len(tags))
    message = pb.LogBatchRequest(
        run_id=run_id,
        metrics=[metric_pb(m, f"metrics[{i}]") for i, m in enumerate(metrics)],
        params=[pb.Param(key=k, value=v) for k, v in params],
        tags=tags_pb(tags),
    )
    _on_run(port, request, "LogBatch", message, run_id)
    return ok()


def _check_batch_limits(metrics: int, params: int, tags: int) -> None:
    for what, limit, count in (
        ("metrics", MAX_METRICS_PER_BATCH, metrics),
        ("params", MAX_PARAMS_TAGS_PER_BATCH, params),
        ("tags", MAX_PARAMS_TAGS_PER_BATCH, tags),
        ("metrics, params, and tags", MAX_ENTITIES_PER_BATCH, metrics + params + tags),
    ):
        if count > limit:
            raise server_errors.InvalidArgument(
                f"A batch logging request can contain at most {limit} {what}. Got {count} {what}. "
                f"Please split up {what} across multiple requests and try again.",
                reason="BATCH_TOO_LARGE",
                field=what.split(",")[0],
            )


@endpoint("POST", "runs/log-inputs")
def log_inputs(port: Port, request: Request) -> Response:
    """Datasets and logged models a run used, kept as run tags (``tracking_json``)."""
    data = args(request)
    run_id = _run_id(data)
    datasets = entries(data, "datasets")
    if len(datasets) > MAX_DATASETS_PER_BATCH:
        raise server_errors.InvalidArgument(
            f"A batch logging request can contain at most {MAX_DATASETS_PER_BATCH} datasets. Got "
            f"{len(datasets)} datasets. Please split up datasets across multiple requests and try again.",
            reason="BATCH_TOO_LARGE",
            field="datasets",
        )
    tags = [dataset_input_tag(entry, f"datasets[{i}]") for i, entry in enumerate(datasets)]
    for i, entry in enumerate(entries(data, "models")):
        path = f"models[{i}]"
        tags.append((model_tag(MODEL_INPUT_TAG, field(entry, "model_id", str, path), path), ""))
    _log_tags(port, request, run_id, tags)
    return ok()


def _log_tags(port: Port, request: Request, run_id: str, tags: list[tuple[str, str]]) -> None:
    """Run tags in LogBatch calls of at most 100 (an empty list still checks the run is active)."""
    for start in range(0, max(len(tags), 1), MAX_PARAMS_TAGS_PER_BATCH):
        chunk = tags[start : start + MAX_PARAMS_TAGS_PER_BATCH]
        _on_run(port, request, "LogBatch", pb.LogBatchRequest(run_id=run_id, tags=tags_pb(chunk)), run_id)


@endpoint("POST", "runs/log-model")
def log_model(port: Port, request: Request) -> Response:
    """MLflow 2's record of a logged model: appended to the run's ``mlflow.log-model.history``
    tag (a JSON list), as MLflow's server does. Two calls: read the tag, write it."""
    data = args(request)
    run_id = _run_id(data)
    raw = required(data, "model_json")
    try:
        model = json.loads(raw)
    except ValueError:
        model = None
    if not isinstance(model, dict):
        raise server_errors.InvalidArgument(
            f"Malformed model info. \n {raw[:200]} \n is not a valid JSON.", reason="MALFORMED_MODEL_JSON"
        )
    missing = sorted(set(LOG_MODEL_FIELDS) - set(model))
    if missing:
        raise server_errors.InvalidArgument(
            f"Model json is missing mandatory fields: {set(missing)}", reason="MALFORMED_MODEL_JSON"
        )
    # What MLflow keeps of it (Model.get_tags_dict): no signature, input example or flavor config.
    record = {
        k: model[k] for k in ("run_id", "utc_time_created", "artifact_path", "model_uuid") if k in model
    }
    flavors = model.get("flavors") or {}
    record["flavors"] = {
        name: ({k: v for k, v in conf.items() if k != "config"} if isinstance(conf, dict) else conf)
        for name, conf in (flavors.items() if isinstance(flavors, dict) else [])
    }
    run = _on_run(port, request, "GetRun", pb.GetRunRequest(run_id=run_id), run_id)
    history: list[Any] = []
    for tag in run.data.tags:
        if tag.key == LOGGED_MODELS_TAG:
            try:
                previous = json.loads(tag.value)
            except ValueError:
                previous = []
            history = previous if isinstance(previous, list) else []
    history.append(record)
    value = json.dumps(history)
    _on_run(
        port, request, "SetTag", pb.SetTagRequest(run_id=run_id, key=LOGGED_MODELS_TAG, value=value), run_id
    )
    return ok()


@endpoint("POST", "runs/search")
def search_runs(port: Port, request: Request) -> Response:
    data = args(request)
    experiment_ids = [str(e) for e in optional(data, "experiment_ids", list, [])]
    if not experiment_ids:
        return ok({})  # MLflow searches nothing and finds nothing
    message = pb.SearchRunsRequest(
        experiment_ids=experiment_ids,
        filter=optional(data, "filter", str, ""),
        run_view_type=parse_view_type(data.get("run_view_type"), "run_view_type"),
        page_size=_page_size(data, MAX_SEARCH_RUNS_RESULTS),
        order_by=[str(key) for key in optional(data, "order_by", list, [])],
        page_token=optional(data, "page_token", str, ""),
    )
    answer = _tracking(port, request, "SearchRuns", message)
    out: dict[str, Any] = {}
    if answer.runs:
        out["runs"] = [run_json(run) for run in answer.runs]
    if answer.next_page_token:
        out["next_page_token"] = answer.next_page_token
    return ok(out)


# -- metric history ------------------------------------------------------------------------------


@endpoint("GET", "metrics/get-history")
def get_metric_history(port: Port, request: Request) -> Response:
    data = args(request)
    run_id = _run_id(data)
    message = pb.GetMetricHistoryRequest(
        run_id=run_id,
        metric_key=required(data, "metric_key"),
        page_size=_page_size(data),
        page_token=optional(data, "page_token", str, ""),
    )
    answer = _on_run(port, request, "GetMetricHistory", message, run_id)
    out: dict[str, Any] = {"metrics": [metric_json(m) for m in answer.metrics]}
    if answer.next_page_token:
        out["next_page_token"] = answer.next_page_token
    return ok(out)


@endpoint("GET", "metrics/get-history-bulk-interval")
def get_metric_history_bulk_interval(port: Port, request: Request) -> Response:
    """One metric of up to 100 runs, at most ``max_results`` points per run (evenly sampled,
    first and last kept), optionally between ``start_step`` and ``end_step``: MLflow UI's charts."""
    data = args(request)
    run_ids = [str(r) for r in required(data, "run_ids", list)]
    if len(run_ids) > MAX_BULK_RUNS:
        raise server_errors.InvalidArgument(
            f"GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} run_ids. "
            f"Received {len(run_ids)} run_ids.",
            reason="INVALID_PARAMETER",
            field="run_ids",
        )
    key = required(data, "metric_key")
    max_results = optional(data, "max_results", int, MAX_POINTS_PER_RUN)
    if not 1 <= max_results <= MAX_POINTS_PER_RUN:
        raise server_errors.InvalidArgument(
            f"max_results must be between 1 and {MAX_POINTS_PER_RUN}.",
            reason="INVALID_PARAMETER",
            field="max_results",
        )
    start, end = optional(data, "start_step", int), optional(data, "end_step", int)
    if (start is None) != (end is None):
        raise server_errors.InvalidArgument(
            "If either start step or end step are specified, both must be specified.",
            reason="INVALID_PARAMETER",
        )
    if start is not None and end is not None and start > end:
        raise server_errors.InvalidArgument(
            f"end_step must be greater than start_step. Found start_step={start} and end_step={end}.",
            reason="INVALID_PARAMETER",
        )
    # Without a step range keel samples; with one, the range is cut first, then sampled here.
    message = pb.GetMetricHistoryBulkRequest(
        run_ids=run_ids, metric_keys=[key], max_points_per_series=max_results if start is None else 0
    )
    answer = _tracking(port, request, "GetMetricHistoryBulk", message)
    by_run: dict[str, list[pb.Metric]] = {}
    for point in answer.metrics:
        if start is None or start <= point.step <= end:  # type: ignore[operator]
            by_run.setdefault(point.run_id, []).append(point)
    out = [
        {**metric_json(point), "run_id": run_id}
        for run_id, points in by_run.items()
        for point in _sample(points, max_results)
    ]
    return ok({"metrics": out})


def _sample(points: list[pb.Metric], limit: int) -> list[pb.Metric]:
    """At most ``limit`` evenly spread points, with the first and the last."""
    if len(points) <= limit:
        return points
    if limit == 1:
        return [points[-1]]
    last = len(points) - 1
    return [points[i] for i in sorted({round(i * last / (limit - 1)) for i in range(limit)})]
