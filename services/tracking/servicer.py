"""keel.tracking.v1.TrackingService: thin gRPC layer over ``TrackingStore``.

It converts protobuf ⇄ domain records and calls the store; errors are domain exceptions that the
shared interceptor turns into statuses.
"""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from keel.tracking.v1 import tracking_pb2 as pb
from keel.tracking.v1 import tracking_pb2_grpc
from keel_server.common.app import App
from keel_server.common.errors import InvalidArgument
from keel_server.tracking.logged_models import LoggedModelRecord, LoggedModelStore
from keel_server.tracking.records import (
    ACTIVE,
    ExperimentRecord,
    MetricPoint,
    RunInfoRecord,
    RunRecord,
    normalise_artifact_root,
)
from keel_server.tracking.store import TrackingStore

_EMPTY = empty_pb2.Empty()
_STAGE = {ACTIVE: pb.LIFECYCLE_STAGE_ACTIVE}
_STATUS_TO_PB = {
    "RUNNING": pb.RUN_STATUS_RUNNING,
    "SCHEDULED": pb.RUN_STATUS_SCHEDULED,
    "FINISHED": pb.RUN_STATUS_FINISHED,
    "FAILED": pb.RUN_STATUS_FAILED,
    "KILLED": pb.RUN_STATUS_KILLED,
}
_STATUS_FROM_PB: dict[int, str] = {v: k for k, v in _STATUS_TO_PB.items()}
_VIEWS: dict[int, str] = {
    pb.VIEW_TYPE_UNSPECIFIED: "ACTIVE_ONLY",
    pb.VIEW_TYPE_ACTIVE_ONLY: "ACTIVE_ONLY",
    pb.VIEW_TYPE_DELETED_ONLY: "DELETED_ONLY",
    pb.VIEW_TYPE_ALL: "ALL",
}


def artifact_root_of(app: App) -> str:
    """The artifact store's root URI; falls back to the configured URI while the artifact
    service's store module is not available (or cannot be opened in this process)."""
    try:
        return str(app.artifact_store.root_uri)
    except (ImportError, AttributeError):
        return normalise_artifact_root(app.settings.artifact_uri)


# ---------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------


def experiment_pb(e: ExperimentRecord) -> pb.Experiment:
    return pb.Experiment(
        experiment_id=e.experiment_id,
        name=e.name,
        artifact_location=e.artifact_location,
        lifecycle_stage=_STAGE.get(e.lifecycle_stage, pb.LIFECYCLE_STAGE_DELETED),
        creation_time=e.creation_time,
        last_update_time=e.last_update_time,
        tags=[pb.ExperimentTag(key=k, value=v) for k, v in e.tags.items()],
    )


def fill_run_info(info: pb.RunInfo, i: RunInfoRecord) -> None:
    info.run_id = i.run_id
    info.run_name = i.run_name
    info.experiment_id = i.experiment_id
    info.user_id = i.user_id
    info.status = _STATUS_TO_PB[i.status]
    info.start_time = i.start_time
    info.end_time = i.end_time or 0
    info.artifact_uri = i.artifact_uri
    info.lifecycle_stage = _STAGE.get(i.lifecycle_stage, pb.LIFECYCLE_STAGE_DELETED)
    info.parent_run_id = i.parent_run_id


def run_info_pb(i: RunInfoRecord) -> pb.RunInfo:
    info = pb.RunInfo()
    fill_run_info(info, i)
    return info


def metric_pb(m: MetricPoint) -> pb.Metric:
    return pb.Metric(key=m.key, value=m.value, timestamp=m.timestamp, step=m.step, run_id=m.run_id)


def fill_run(run: pb.Run, r: RunRecord) -> None:
    """Fills ``run`` in place: building sub-messages separately and assigning them would copy
    each one again (this is most of SearchRuns' conversion cost)."""
    fill_run_info(run.info, r.info)
    data = run.data
    for m in r.metrics:
        data.metrics.add(key=m.key, value=m.value, timestamp=m.timestamp, step=m.step, run_id=m.run_id)
    for key, value in r.params.items():
        data.params.add(key=key, value=value)
    for key, value in r.tags.items():
        data.tags.add(key=key, value=value)


def run_pb(r: RunRecord) -> pb.Run:
    run = pb.Run()
    fill_run(run, r)
    return run


_MODEL_STATUS_TO_PB = {
    "PENDING": pb.LOGGED_MODEL_STATUS_PENDING,
    "READY": pb.LOGGED_MODEL_STATUS_READY,
    "FAILED": pb.LOGGED_MODEL_STATUS_FAILED,
}
_MODEL_STATUS_FROM_PB: dict[int, str] = {v: k for k, v in _MODEL_STATUS_TO_PB.items()}


def logged_model_pb(m: LoggedModelRecord) -> pb.LoggedModel:
    return pb.LoggedModel(
        model_id=m.model_id,
        experiment_id=m.experiment_id,
        name=m.name,
        source_run_id=m.source_run_id,
        run_id=m.run_id,
        artifact_path=m.artifact_path,
        artifact_uri=m.artifact_uri,
        status=_MODEL_STATUS_TO_PB[m.status],
        status_message=m.status_message,
        model_type=m.model_type,
        creation_time=m.creation_time,
        last_updated_time=m.last_updated_time,
        tags=[pb.LoggedModelTag(key=k, value=v) for k, v in m.tags.items()],
        params=[pb.LoggedModelParam(key=k, value=v) for k, v in m.params.items()],
        lifecycle_stage=_STAGE.get(m.lifecycle_stage, pb.LIFECYCLE_STAGE_DELETED),
    )


def _view(value: int, field: str) -> str:
    view = _VIEWS.get(value)
    if view is None:
        raise InvalidArgument(f"{field} {value} is not a known ViewType", reason="INVALID_VIEW_TYPE", field=field)
    return view


# ---------------------------------------------------------------------------------------------
# Servicer
# ---------------------------------------------------------------------------------------------


class TrackingServicer(tracking_pb2_grpc.TrackingServiceServicer):
    def __init__(self, store: TrackingStore, logged_models: LoggedModelStore | None = None) -> None:
        self.store = store
        self.logged_models = logged_models or LoggedModelStore()

    # experiments ------------------------------------------------------------------------------

    def CreateExperiment(self, request: pb.CreateExperimentRequest, context: grpc.ServicerContext) -> pb.Experiment:
        tags = [(t.key, t.value) for t in request.tags]
        return experiment_pb(self.store.create_experiment(request.name, request.artifact_location, tags))

    def GetExperiment(self, request: pb.GetExperimentRequest, context: grpc.ServicerContext) -> pb.Experiment:
        return experiment_pb(self.store.get_experiment(request.experiment_id))

    def GetExperimentByName(
        self, request: pb.GetExperimentByNameRequest, context: grpc.ServicerContext
    ) -> pb.Experiment:
        return experiment_pb(self.store.get_experiment_by_name(request.name))

    def GetOrCreateExperiment(
        self, request: pb.GetOrCreateExperimentRequest, context: grpc.ServicerContext
    ) -> pb.GetOrCreateExperimentResponse:
        tags = [(t.key, t.value) for t in request.tags]
        experiment, created = self.store.get_or_create_experiment(request.name, request.artifact_location, tags)
        return pb.GetOrCreateExperimentResponse(experiment=experiment_pb(experiment), created=created)

    def SearchExperiments(
        self, request: pb.SearchExperimentsRequest, context: grpc.ServicerContext
    ) -> pb.SearchExperimentsResponse:
        experiments, token = self.store.search_experiments(
            request.filter,
            list(request.order_by),
            _view(request.view_type, "view_type"),
            request.page_size,
            request.page_token,
        )
        return pb.SearchExperimentsResponse(experiments=[experiment_pb(e) for e in experiments], next_page_token=token)

    def UpdateExperiment(self, request: pb.UpdateExperimentRequest, context: grpc.ServicerContext) -> pb.Experiment:
        return experiment_pb(self.store.rename_experiment(request.experiment_id, request.new_name))

    def DeleteExperiment(self, request: pb.DeleteExperimentRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.delete_experiment(request.experiment_id)
        return _EMPTY

    def RestoreExperiment(self, request: pb.RestoreExperimentRequest, context: grpc.ServicerContext) -> pb.Experiment:
        return experiment_pb(self.store.restore_experiment(request.experiment_id))

    def SetExperimentTag(self, request: pb.SetExperimentTagRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.set_experiment_tag(request.experiment_id, request.key, request.value)
        return _EMPTY

    def DeleteExperimentTag(
        self, request: pb.DeleteExperimentTagRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.store.delete_experiment_tag(request.experiment_id, request.key)
        return _EMPTY

    # runs -------------------------------------------------------------------------------------

    def CreateRun(self, request: pb.CreateRunRequest, context: grpc.ServicerContext) -> pb.Run:
        run = self.store.create_run(
            request.experiment_id,
            run_name=request.run_name,
            start_time=request.start_time if request.HasField("start_time") else None,
            user_id=request.user_id,
            tags=[(t.key, t.value) for t in request.tags],
            parent_run_id=request.parent_run_id,
            request_id=request.request_id,
        )
        return run_pb(run)

    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pb.Run:
        return run_pb(self.store.get_run(request.run_id))

    def UpdateRun(self, request: pb.UpdateRunRequest, context: grpc.ServicerContext) -> pb.RunInfo:
        status = None
        if request.HasField("status"):
            status = _STATUS_FROM_PB.get(request.status)
            if status is None:
                raise InvalidArgument(
                    "status must be one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED",
                    reason="INVALID_RUN_STATUS",
                    field="status",
                )
        info = self.store.update_run(
            request.run_id,
            status=status,
            end_time=request.end_time if request.HasField("end_time") else None,
            run_name=request.run_name if request.HasField("run_name") else None,
        )
        return run_info_pb(info)

    def DeleteRun(self, request: pb.DeleteRunRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.delete_run(request.run_id)
        return _EMPTY

    def RestoreRun(self, request: pb.RestoreRunRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.restore_run(request.run_id)
        return _EMPTY

    # logging ----------------------------------------------------------------------------------

    def LogParam(self, request: pb.LogParamRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.log_param(request.run_id, request.key, request.value)
        return _EMPTY

    def LogMetric(self, request: pb.LogMetricRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        timestamp = request.timestamp if request.HasField("timestamp") else None
        self.store.log_metric(request.run_id, request.key, request.value, timestamp, request.step)
        return _EMPTY

    def SetTag(self, request: pb.SetTagRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.set_tag(request.run_id, request.key, request.value)
        return _EMPTY

    def DeleteTag(self, request: pb.DeleteTagRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.delete_tag(request.run_id, request.key)
        return _EMPTY

    def LogBatch(self, request: pb.LogBatchRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.store.log_batch(
            request.run_id,
            [MetricPoint(m.key, m.value, m.timestamp, m.step) for m in request.metrics],
            [(p.key, p.value) for p in request.params],
            [(t.key, t.value) for t in request.tags],
            request_id=request.request_id,
        )
        return _EMPTY

    # history and search -----------------------------------------------------------------------

    def GetMetricHistory(
        self, request: pb.GetMetricHistoryRequest, context: grpc.ServicerContext
    ) -> pb.GetMetricHistoryResponse:
        points, token = self.store.get_metric_history(
            request.run_id, request.metric_key, request.page_size, request.page_token
        )
        return pb.GetMetricHistoryResponse(metrics=[metric_pb(m) for m in points], next_page_token=token)

    def GetMetricHistoryBulk(
        self, request: pb.GetMetricHistoryBulkRequest, context: grpc.ServicerContext
    ) -> pb.GetMetricHistoryBulkResponse:
        points, sizes = self.store.get_metric_history_bulk_sized(
            list(request.run_ids), list(request.metric_keys), request.max_points_per_series
        )
        return pb.GetMetricHistoryBulkResponse(
            metrics=[metric_pb(m) for m in points],
            series_sizes=[pb.MetricSeriesSize(run_id=r, key=k, total_points=n) for (r, k), n in sizes.items()],
        )

    def GetMetricRanges(
        self, request: pb.GetMetricRangesRequest, context: grpc.ServicerContext
    ) -> pb.GetMetricRangesResponse:
        ranges = self.store.get_metric_ranges(list(request.run_ids), list(request.metric_keys))
        return pb.GetMetricRangesResponse(
            ranges=[
                pb.MetricRange(run_id=r.run_id, key=r.key, min_value=r.min_value, max_value=r.max_value, count=r.count)
                for r in ranges
            ]
        )

    def ListRunDataKeys(
        self, request: pb.ListRunDataKeysRequest, context: grpc.ServicerContext
    ) -> pb.ListRunDataKeysResponse:
        keys = self.store.list_run_data_keys(list(request.experiment_ids), request.max_keys)
        return pb.ListRunDataKeysResponse(
            param_keys=keys.params, metric_keys=keys.metrics, tag_keys=keys.tags, truncated=keys.truncated
        )

    def SearchRuns(self, request: pb.SearchRunsRequest, context: grpc.ServicerContext) -> pb.SearchRunsResponse:
        runs, token = self.store.search_runs(
            list(request.experiment_ids),
            request.filter,
            _view(request.run_view_type, "run_view_type"),
            request.page_size,
            list(request.order_by),
            request.page_token,
        )
        response = pb.SearchRunsResponse(next_page_token=token)
        for record in runs:
            fill_run(response.runs.add(), record)
        return response

    # logged models -------------------------------------------------------------------------

    def CreateLoggedModel(self, request: pb.CreateLoggedModelRequest, context: grpc.ServicerContext) -> pb.LoggedModel:
        model = self.logged_models.create(
            request.experiment_id,
            name=request.name,
            source_run_id=request.source_run_id,
            model_type=request.model_type,
            tags=[(t.key, t.value) for t in request.tags],
            params=[(p.key, p.value) for p in request.params],
        )
        return logged_model_pb(model)

    def GetLoggedModel(self, request: pb.GetLoggedModelRequest, context: grpc.ServicerContext) -> pb.LoggedModel:
        return logged_model_pb(self.logged_models.get(request.model_id, allow_deleted=request.allow_deleted))

    def UpdateLoggedModel(self, request: pb.UpdateLoggedModelRequest, context: grpc.ServicerContext) -> pb.LoggedModel:
        status = _MODEL_STATUS_FROM_PB.get(request.status, "")
        return logged_model_pb(self.logged_models.update_status(request.model_id, status, request.status_message))

    def DeleteLoggedModel(self, request: pb.DeleteLoggedModelRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.logged_models.delete(request.model_id)
        return _EMPTY

    def SearchLoggedModels(
        self, request: pb.SearchLoggedModelsRequest, context: grpc.ServicerContext
    ) -> pb.SearchLoggedModelsResponse:
        models, token = self.logged_models.search(
            list(request.experiment_ids), request.filter, list(request.order_by), request.page_size, request.page_token
        )
        return pb.SearchLoggedModelsResponse(models=[logged_model_pb(m) for m in models], next_page_token=token)

    def SetLoggedModelTags(self, request: pb.SetLoggedModelTagsRequest, context: grpc.ServicerContext) -> pb.LoggedModel:
        tags = [(t.key, t.value) for t in request.tags]
        return logged_model_pb(self.logged_models.set_tags(request.model_id, tags))

    def DeleteLoggedModelTag(
        self, request: pb.DeleteLoggedModelTagRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.logged_models.delete_tag(request.model_id, request.key)
        return _EMPTY

    def LogLoggedModelParams(
        self, request: pb.LogLoggedModelParamsRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.logged_models.log_params(request.model_id, [(p.key, p.value) for p in request.params])
        return _EMPTY


def add_to_server(server: grpc.Server, app: App) -> list[str]:
    store = TrackingStore(artifact_root=lambda: artifact_root_of(app))
    tracking_pb2_grpc.add_TrackingServiceServicer_to_server(TrackingServicer(store), server)
    return [pb.DESCRIPTOR.services_by_name["TrackingService"].full_name]
