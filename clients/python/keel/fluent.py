"""The fluent tracking API (``keel.start_run()``, ``keel.log_metric()``, ...) as MLflow users know it.

State: the active experiment (process-wide) and a stack of active runs per thread. Without
``set_experiment`` the "Default" experiment (id "0") is used, created when missing.
``log_metric(..., synchronous=False)`` queues points that a background thread sends in batches;
they are flushed by ``end_run`` and at interpreter exit, and errors surface there.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from keel._tracking_client import flush_all_async_logging
from keel._transport import get_tracking_uri, set_tracking_uri
from keel.client import Client
from keel.entities import Experiment, Metric, Param, Run, RunStatus, RunTag, ViewType
from keel.exceptions import FailedPrecondition, InvalidArgument, KeelError
from keel.shared import pages

DEFAULT_EXPERIMENT_NAME = "Default"

_state_lock = threading.Lock()
# Active experiment per tracking URI (an id means nothing on another server).
_active_experiments: dict[str, str] = {}
_last_active_run_id: str | None = None
_local = threading.local()


def _stack() -> list[ActiveRun]:
    stack: list[ActiveRun] | None = getattr(_local, "runs", None)
    if stack is None:
        stack = _local.runs = []
    return stack


def _client() -> Client:
    return Client(get_tracking_uri())


class ActiveRun(Run):
    """The run ``start_run`` returned; as a context manager it ends the run on exit:
    FINISHED normally, FAILED on an exception, KILLED on KeyboardInterrupt."""

    def __init__(self, run: Run) -> None:
        super().__init__(run.info, run.data)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            status = RunStatus.FINISHED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = RunStatus.KILLED
        else:
            status = RunStatus.FAILED
        if any(r.info.run_id == self.info.run_id for r in _stack()):
            end_run(status, _run_id=self.info.run_id, _raise_flush=exc_type is None)


# ---------------------------------------------------------------------------------------------
# Experiments
# ---------------------------------------------------------------------------------------------


def set_experiment(experiment_name: str | None = None, experiment_id: str | None = None) -> Experiment:
    """Makes an experiment the active one, creating it (by name) when missing."""
    if (experiment_name is None) == (experiment_id is None):
        raise InvalidArgument("pass exactly one of experiment_name and experiment_id", reason="INVALID_ARGUMENT")
    client = _client()
    if experiment_id is not None:
        experiment = client.get_experiment(experiment_id)
    else:
        assert experiment_name is not None
        experiment = client.get_or_create_experiment(experiment_name)
    if experiment.lifecycle_stage != "active":
        raise FailedPrecondition(
            f"experiment '{experiment.name}' (id {experiment.experiment_id}) is deleted: restore it first",
            reason="EXPERIMENT_DELETED",
        )
    with _state_lock:
        _active_experiments[get_tracking_uri()] = experiment.experiment_id
    return experiment


def get_experiment_by_name(name: str) -> Experiment | None:
    return _client().get_experiment_by_name(name)


def get_experiment(experiment_id: str) -> Experiment:
    return _client().get_experiment(experiment_id)


def create_experiment(
    name: str, artifact_location: str | None = None, tags: Mapping[str, Any] | None = None
) -> str:
    return _client().create_experiment(name, artifact_location, tags)


def _resolve_experiment_id() -> str:
    """set_experiment's choice, else KEEL_EXPERIMENT_ID / KEEL_EXPERIMENT_NAME, else Default."""
    found = _active_experiments.get(get_tracking_uri())
    if found is not None:
        return found
    env_id = os.environ.get("KEEL_EXPERIMENT_ID")
    if env_id:
        return env_id
    name = os.environ.get("KEEL_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT_NAME
    experiment = _client().get_or_create_experiment(name)
    with _state_lock:
        _active_experiments[get_tracking_uri()] = experiment.experiment_id
    return experiment.experiment_id


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def start_run(
    run_id: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> ActiveRun:
    """Starts a new run (or resumes ``run_id``) and makes it the active one.

    A second top-level run while one is active needs ``nested=True`` (it becomes a child of the
    active run) or ``end_run()`` first.
    """
    global _last_active_run_id
    stack = _stack()
    if stack and not nested:
        raise FailedPrecondition(
            f"run {stack[-1].info.run_id} is already active: call end_run() first, "
            "or start_run(nested=True) to start a child run",
            reason="RUN_ALREADY_ACTIVE",
        )
    client = _client()
    if run_id is None and not nested:
        # Set by `keel run` for the project's command (MLflow's MLFLOW_RUN_ID): continue that
        # run, once; a later start_run in this process starts a new one.
        run_id = os.environ.pop("KEEL_RUN_ID", None) or None
    if run_id is not None:
        existing = client.get_run(run_id)
        if existing.info.lifecycle_stage != "active":
            raise FailedPrecondition(f"cannot resume run {run_id}: it is deleted", reason="RUN_DELETED")
        client.update_run(run_id, status=RunStatus.RUNNING, name=run_name)
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        run = client.get_run(run_id)
    else:
        parent = parent_run_id or (stack[-1].info.run_id if stack and nested else None)
        exp_id = str(experiment_id) if experiment_id is not None else None
        if exp_id is None:
            exp_id = stack[-1].info.experiment_id if parent and stack else _resolve_experiment_id()
        run = client.create_run(exp_id, tags=tags, run_name=run_name, parent_run_id=parent)
    active = ActiveRun(run)
    stack.append(active)
    with _state_lock:
        _last_active_run_id = run.info.run_id
    return active


def active_run() -> ActiveRun | None:
    """The innermost active run of this thread, or None."""
    stack = _stack()
    return stack[-1] if stack else None


def last_active_run() -> Run | None:
    """The active run, else the last run started by this process (fetched fresh)."""
    current = active_run()
    if current is not None:
        return current
    if _last_active_run_id is None:
        return None
    return _client().get_run(_last_active_run_id)


def end_run(status: str = RunStatus.FINISHED, *, _run_id: str | None = None, _raise_flush: bool = True) -> None:
    """Ends the active run (flushing queued metrics first) with ``status`` (default FINISHED)."""
    stack = _stack()
    if not stack:
        return
    target = stack[-1] if _run_id is None else next(r for r in stack if r.info.run_id == _run_id)
    # Children still open end with their parent.
    while stack:
        run = stack.pop()
        flush_error: KeelError | None = None
        try:
            flush_all_async_logging()
        except KeelError as exc:
            flush_error = exc
        _client().set_terminated(run.info.run_id, status=status)
        if flush_error is not None and _raise_flush:
            raise flush_error
        if run is target:
            return


def _end_all_at_exit() -> None:
    try:
        while _stack():
            end_run(RunStatus.FINISHED, _raise_flush=False)
    except KeelError:
        pass


atexit.register(_end_all_at_exit)


def _require_run() -> str:
    run = active_run()
    if run is not None:
        return run.info.run_id
    # MLflow starts a run implicitly on the first log call.
    return start_run().info.run_id


def get_run(run_id: str) -> Run:
    return _client().get_run(run_id)


def delete_run(run_id: str) -> None:
    _client().delete_run(run_id)


# ---------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------


def log_param(key: str, value: Any) -> Any:
    return _client().log_param(_require_run(), key, value)


def log_params(params: Mapping[str, Any]) -> None:
    _client().log_batch(_require_run(), params=[Param(k, str(v)) for k, v in params.items()])


def log_metric(
    key: str, value: float, step: int | None = None, timestamp: int | None = None, synchronous: bool = True
) -> None:
    _client().log_metric(_require_run(), key, value, timestamp=timestamp, step=step, synchronous=synchronous)


def log_metrics(metrics: Mapping[str, float], step: int | None = None, synchronous: bool = True) -> None:
    points = [Metric(k, float(v), 0, int(step or 0)) for k, v in metrics.items()]
    _client().log_batch(_require_run(), metrics=points, synchronous=synchronous)


def set_tag(key: str, value: Any) -> None:
    _client().set_tag(_require_run(), key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    _client().log_batch(_require_run(), tags=[RunTag(k, str(v)) for k, v in tags.items()])


def delete_tag(key: str) -> None:
    _client().delete_tag(_require_run(), key)


def flush_async_logging() -> None:
    """Waits until every queued metric point is sent; raises the first error met."""
    flush_all_async_logging()


# ---------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------


def search_runs(
    experiment_ids: Sequence[str | int] | None = None,
    filter_string: str = "",
    run_view_type: int | str = ViewType.ACTIVE_ONLY,
    max_results: int = 1000,
    order_by: Sequence[str] | None = None,
    output_format: str = "pandas",
    experiment_names: Sequence[str] | None = None,
) -> Any:
    """Runs matching ``filter_string``, at most ``max_results``, as a pandas DataFrame (MLflow's
    default; columns ``run_id``, ``status``, ``metrics.x``, ``params.y``, ``tags.z``, ...) or, with
    ``output_format="list"``, as a list of ``Run``. Default experiments: the active one."""
    if output_format not in ("pandas", "list"):
        raise InvalidArgument(
            f"output_format must be 'pandas' or 'list', got {output_format!r}", reason="INVALID_ARGUMENT"
        )
    client = _client()
    ids = [str(e) for e in experiment_ids or []]
    for name in experiment_names or []:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            ids.append(experiment.experiment_id)
    if not ids and not experiment_names:
        ids = [_resolve_experiment_id()]
    runs: list[Run] = []
    token: str | None = ""
    while ids and len(runs) < max_results:
        page = client.search_runs(
            ids,
            filter_string,
            run_view_type,
            min(max_results - len(runs), pages.SEARCH_RUNS.maximum),
            order_by,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    if output_format == "list":
        return runs
    return runs_to_dataframe(runs)


def runs_to_dataframe(runs: Sequence[Run]) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("search_runs(output_format='pandas') needs pandas: pip install pandas, "
                          "or pass output_format='list'") from exc  # fmt: skip
    rows: list[dict[str, Any]] = []
    for run in runs:
        info = run.info
        row: dict[str, Any] = {
            "run_id": info.run_id,
            "experiment_id": info.experiment_id,
            "status": info.status,
            "artifact_uri": info.artifact_uri,
            "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True),
            "end_time": pd.to_datetime(info.end_time, unit="ms", utc=True) if info.end_time else pd.NaT,
            "run_name": info.run_name,
        }
        row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
        rows.append(row)
    base = ["run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time", "run_name"]
    frame = pd.DataFrame(rows, columns=None if rows else base)
    extra = sorted(c for c in frame.columns if c not in base)
    ordered = base + [c for p in ("metrics.", "params.", "tags.") for c in extra if c.startswith(p)]
    return frame[ordered]


__all__ = [
    "ActiveRun",
    "active_run",
    "create_experiment",
    "delete_tag",
    "end_run",
    "flush_async_logging",
    "get_experiment",
    "get_experiment_by_name",
    "get_run",
    "get_tracking_uri",
    "last_active_run",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "search_runs",
    "set_experiment",
    "set_tag",
    "set_tags",
    "set_tracking_uri",
    "start_run",
]
