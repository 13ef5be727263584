"""Tracking methods of ``keel.Client`` (MLflow's ``MlflowClient`` names) and the asynchronous
metric logger behind ``log_metric(..., synchronous=False)``."""

from __future__ import annotations

import atexit
import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keel._transport import Transport, new_request_id
from keel.entities import Experiment, Metric, Param, Run, RunInfo, RunStatus, RunTag, ViewType
from keel.exceptions import KeelError, NotFound
from keel.paging import PagedList
from keel.tracking.v1 import tracking_pb2 as pb
from keel.tracking.v1 import tracking_pb2_grpc

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100


def _now_ms() -> int:
    return int(time.time() * 1000)


def _tags(tags: Mapping[str, Any] | None) -> list[pb.RunTag]:
    return [pb.RunTag(key=str(k), value=str(v)) for k, v in (tags or {}).items()]


def _view(view_type: int | str) -> int:
    return ViewType.from_string(view_type) if isinstance(view_type, str) else int(view_type)


class AsyncMetricLogger:
    """Queues metric points and sends them in LogBatch calls (<= 1000 points) from one daemon
    thread, so a training loop never waits for the network. ``flush()`` waits until everything
    queued so far is sent and raises the first error a batch met."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._queue: queue.Queue[tuple[str, pb.Metric]] = queue.Queue()
        self._errors: list[KeelError] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def log(self, run_id: str, metric: pb.Metric) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._worker, name="keel-async-metrics", daemon=True)
                    self._thread.start()
        self._queue.put((run_id, metric))

    def flush(self) -> None:
        if self._thread is not None:
            self._queue.join()
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def _worker(self) -> None:
        stub = self._transport.stub(tracking_pb2_grpc.TrackingServiceStub)
        while True:
            first = self._queue.get()
            items = [first]
            while len(items) < MAX_METRICS_PER_BATCH * 4:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            by_run: dict[str, list[pb.Metric]] = {}
            for run_id, metric in items:
                by_run.setdefault(run_id, []).append(metric)
            for run_id, metrics in by_run.items():
                for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                    chunk = metrics[start : start + MAX_METRICS_PER_BATCH]
                    try:
                        # The request id makes the retry after a lost reply safe (written once).
                        request = pb.LogBatchRequest(run_id=run_id, metrics=chunk, request_id=new_request_id())
                        self._transport.call(stub.LogBatch, request, idempotent=True)
                    except KeelError as exc:
                        with self._lock:
                            self._errors.append(exc)
            for _ in items:
                self._queue.task_done()


# One logger (one sender thread) per tracking URI, for the life of the process.
_async_loggers: dict[str, AsyncMetricLogger] = {}
_loggers_lock = threading.Lock()


def async_logger(transport: Transport) -> AsyncMetricLogger:
    with _loggers_lock:
        found = _async_loggers.get(transport.uri)
        if found is None:
            found = AsyncMetricLogger(transport)
            _async_loggers[transport.uri] = found
        return found


def flush_all_async_logging() -> None:
    """Sends every queued metric point of every client; raises the first error met."""
    errors: list[KeelError] = []
    for logger in list(_async_loggers.values()):
        try:
            logger.flush()
        except KeelError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def _flush_at_exit() -> None:
    try:
        flush_all_async_logging()
    except KeelError as exc:  # the interpreter is exiting: report, do not raise
        import sys

        print(f"keel: queued metrics could not be logged: {exc}", file=sys.stderr)


atexit.register(_flush_at_exit)


class TrackingClientMixin:
    _transport: Transport

    @property
    def _tracking(self) -> tracking_pb2_grpc.TrackingServiceStub:
        return self._transport.stub(tracking_pb2_grpc.TrackingServiceStub)

    def _call(self, method: Any, request: Any, idempotent: bool) -> Any:
        return self._transport.call(method, request, idempotent=idempotent)

    # experiments ------------------------------------------------------------------------------

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> str:
        """Creates an experiment and returns its id."""
        request = pb.CreateExperimentRequest(
            name=name,
            artifact_location=artifact_location or "",
            tags=[pb.ExperimentTag(key=str(k), value=str(v)) for k, v in (tags or {}).items()],
        )
        return str(self._call(self._tracking.CreateExperiment, request, idempotent=False).experiment_id)

    def get_experiment(self, experiment_id: str | int) -> Experiment:
        request = pb.GetExperimentRequest(experiment_id=str(experiment_id))
        return Experiment.from_proto(self._call(self._tracking.GetExperiment, request, idempotent=True))

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The experiment named ``name``, or None (as in MLflow)."""
        try:
            response = self._call(self._tracking.GetExperimentByName, pb.GetExperimentByNameRequest(name=name), True)
        except NotFound:
            return None
        return Experiment.from_proto(response)

    def get_or_create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Mapping[str, Any] | None = None
    ) -> Experiment:
        """The experiment named ``name``, created when missing (race-free on the server)."""
        request = pb.GetOrCreateExperimentRequest(
            name=name,
            artifact_location=artifact_location or "",
            tags=[pb.ExperimentTag(key=str(k), value=str(v)) for k, v in (tags or {}).items()],
        )
        return Experiment.from_proto(self._call(self._tracking.GetOrCreateExperiment, request, True).experiment)

    def search_experiments(
        self,
        view_type: int | str = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Experiment]:
        request = pb.SearchExperimentsRequest(
            filter=filter_string or "",
            order_by=list(order_by or []),
            view_type=_view(view_type),  # type: ignore[arg-type]
            page_size=max_results,
            page_token=page_token or "",
        )
        response = self._call(self._tracking.SearchExperiments, request, idempotent=True)
        return PagedList([Experiment.from_proto(e) for e in response.experiments], response.next_page_token)

    def rename_experiment(self, experiment_id: str | int, new_name: str) -> None:
        request = pb.UpdateExperimentRequest(experiment_id=str(experiment_id), new_name=new_name)
        self._call(self._tracking.UpdateExperiment, request, idempotent=True)

    def delete_experiment(self, experiment_id: str | int) -> None:
        request = pb.DeleteExperimentRequest(experiment_id=str(experiment_id))
        self._call(self._tracking.DeleteExperiment, request, idempotent=False)

    def restore_experiment(self, experiment_id: str | int) -> None:
        request = pb.RestoreExperimentRequest(experiment_id=str(experiment_id))
        self._call(self._tracking.RestoreExperiment, request, idempotent=False)

    def set_experiment_tag(self, experiment_id: str | int, key: str, value: Any) -> None:
        request = pb.SetExperimentTagRequest(experiment_id=str(experiment_id), key=key, value=str(value))
        self._call(self._tracking.SetExperimentTag, request, idempotent=True)

    def delete_experiment_tag(self, experiment_id: str | int, key: str) -> None:
        request = pb.DeleteExperimentTagRequest(experiment_id=str(experiment_id), key=key)
        self._call(self._tracking.DeleteExperimentTag, request, idempotent=False)

    # runs -------------------------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str | int,
        start_time: int | None = None,
        tags: Mapping[str, Any] | None = None,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        user_id: str | None = None,
    ) -> Run:
        request = pb.CreateRunRequest(
            experiment_id=str(experiment_id),
            run_name=run_name or "",
            user_id=user_id if user_id is not None else _default_user(),
            tags=_tags(tags),
            parent_run_id=parent_run_id or "",
            request_id=new_request_id(),  # a retry after a lost reply returns the same run
        )
        if start_time is not None:
            request.start_time = int(start_time)
        return Run.from_proto(self._call(self._tracking.CreateRun, request, idempotent=True))

    def get_run(self, run_id: str) -> Run:
        return Run.from_proto(self._call(self._tracking.GetRun, pb.GetRunRequest(run_id=run_id), idempotent=True))

    def update_run(
        self, run_id: str, status: str | None = None, name: str | None = None, end_time: int | None = None
    ) -> RunInfo:
        request = pb.UpdateRunRequest(run_id=run_id)
        if status is not None:
            request.status = RunStatus.to_proto(status)  # type: ignore[assignment]
        if name is not None:
            request.run_name = name
        if end_time is not None:
            request.end_time = int(end_time)
        return RunInfo.from_proto(self._call(self._tracking.UpdateRun, request, idempotent=True))

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        """Ends a run: status FINISHED by default, end time now by default."""
        self.update_run(run_id, status=status or RunStatus.FINISHED, end_time=end_time or _now_ms())

    def delete_run(self, run_id: str) -> None:
        self._call(self._tracking.DeleteRun, pb.DeleteRunRequest(run_id=run_id), idempotent=True)

    def restore_run(self, run_id: str) -> None:
        self._call(self._tracking.RestoreRun, pb.RestoreRunRequest(run_id=run_id), idempotent=True)

    # logging ----------------------------------------------------------------------------------

    def log_param(self, run_id: str, key: str, value: Any) -> Any:
        """Logs a write-once param (stringified as MLflow does); returns ``value``."""
        request = pb.LogParamRequest(run_id=run_id, key=key, value=str(value))
        self._call(self._tracking.LogParam, request, idempotent=True)
        return value

    def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        timestamp: int | None = None,
        step: int | None = None,
        synchronous: bool = True,
    ) -> None:
        """Logs one point; ``synchronous=False`` queues it for the background sender."""
        if synchronous:
            request = pb.LogMetricRequest(run_id=run_id, key=key, value=float(value), step=int(step or 0))
            if timestamp is not None:
                request.timestamp = int(timestamp)
            self._call(self._tracking.LogMetric, request, idempotent=False)
            return
        point = pb.Metric(key=key, value=float(value), timestamp=int(timestamp or _now_ms()), step=int(step or 0))
        async_logger(self._transport).log(run_id, point)

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Metric] = (),
        params: Iterable[Param] = (),
        tags: Iterable[RunTag] = (),
        synchronous: bool = True,
    ) -> None:
        """Logs metrics, params and tags atomically (split into server-sized calls when larger)."""
        now = _now_ms()
        metric_pbs = [
            pb.Metric(key=m.key, value=float(m.value), timestamp=int(m.timestamp or now), step=int(m.step or 0))
            for m in metrics
        ]
        if not synchronous:
            logger = async_logger(self._transport)
            for m in metric_pbs:
                logger.log(run_id, m)
            metric_pbs = []
        param_pbs = [pb.Param(key=p.key, value=str(p.value)) for p in params]
        tag_pbs = [pb.RunTag(key=t.key, value=str(t.value)) for t in tags]
        if not synchronous and not param_pbs and not tag_pbs:
            return
        first = True
        while first or metric_pbs or param_pbs or tag_pbs:
            first = False
            request = pb.LogBatchRequest(
                run_id=run_id,
                metrics=metric_pbs[:MAX_METRICS_PER_BATCH],
                params=param_pbs[:MAX_PARAMS_PER_BATCH],
                tags=tag_pbs[:MAX_TAGS_PER_BATCH],
                request_id=new_request_id(),  # a retry after a lost reply writes nothing twice
            )
            metric_pbs = metric_pbs[MAX_METRICS_PER_BATCH:]
            param_pbs = param_pbs[MAX_PARAMS_PER_BATCH:]
            tag_pbs = tag_pbs[MAX_TAGS_PER_BATCH:]
            self._call(self._tracking.LogBatch, request, idempotent=True)

    def flush_async_logging(self) -> None:
        """Waits until queued metric points are sent; raises the first error met."""
        async_logger(self._transport).flush()

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        request = pb.SetTagRequest(run_id=run_id, key=key, value=str(value))
        self._call(self._tracking.SetTag, request, idempotent=True)

    def delete_tag(self, run_id: str, key: str) -> None:
        self._call(self._tracking.DeleteTag, pb.DeleteTagRequest(run_id=run_id, key=key), idempotent=False)

    # history and search -----------------------------------------------------------------------

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every point of one metric, ordered by (step, timestamp); all pages are fetched."""
        points: list[Metric] = []
        token = ""
        while True:
            request = pb.GetMetricHistoryRequest(run_id=run_id, metric_key=key, page_token=token)
            response = self._call(self._tracking.GetMetricHistory, request, idempotent=True)
            points.extend(Metric(m.key, m.value, m.timestamp, m.step, run_id) for m in response.metrics)
            token = response.next_page_token
            if not token:
                return points

    def get_metric_history_bulk(
        self, run_ids: Sequence[str], keys: Sequence[str], max_points_per_series: int = 0
    ) -> list[Metric]:
        """Points of several metrics of several runs (for plotting), each carrying its run_id."""
        request = pb.GetMetricHistoryBulkRequest(
            run_ids=list(run_ids), metric_keys=list(keys), max_points_per_series=max_points_per_series
        )
        response = self._call(self._tracking.GetMetricHistoryBulk, request, idempotent=True)
        return [Metric.from_proto(m) for m in response.metrics]

    def search_runs(
        self,
        experiment_ids: str | int | Sequence[str | int],
        filter_string: str = "",
        run_view_type: int | str = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Run]:
        """One page of runs (at most ``max_results``); ``.token`` fetches the next page."""
        if isinstance(experiment_ids, str | int):
            experiment_ids = [experiment_ids]
        request = pb.SearchRunsRequest(
            experiment_ids=[str(e) for e in experiment_ids],
            filter=filter_string or "",
            run_view_type=_view(run_view_type),  # type: ignore[arg-type]
            page_size=max_results,
            order_by=list(order_by or []),
            page_token=page_token or "",
        )
        response = self._call(self._tracking.SearchRuns, request, idempotent=True)
        return PagedList([Run.from_proto(r) for r in response.runs], response.next_page_token)


def _default_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""
