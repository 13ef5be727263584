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

from keel._tracking_client import _default_user, flush_all_async_logging
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
        _ensure_default_experiment(client, [str(experiment_id)])
        experiment = client.get_experiment(str(experiment_id))
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


DEFAULT_EXPERIMENT_ID = "0"  # as in MLflow
_default_ready: set[str] = set()


def _ensure_default_experiment(client: Client, experiment_ids: Sequence[str]) -> None:
    """MLflow's server always has experiment "0" (Default); keel's creates it on first use by
    name, so code that names id 0 (``start_run(experiment_id=0)``, ``search_runs([0])``) gets it
    created first, once per server."""
    if DEFAULT_EXPERIMENT_ID not in experiment_ids or client.tracking_uri in _default_ready:
        return
    client.get_or_create_experiment(DEFAULT_EXPERIMENT_NAME)
    with _state_lock:
        _default_ready.add(client.tracking_uri)


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
        _ensure_default_experiment(client, [exp_id])
        # MLflow's client tags every new run with who, what and which commit started it
        all_tags = {**_context_tags(), **(tags or {})}
        run = client.create_run(exp_id, tags=all_tags, run_name=run_name, parent_run_id=parent)
    active = ActiveRun(run)
    stack.append(active)
    with _state_lock:
        _last_active_run_id = run.info.run_id
    return active


# MLflow's system tags (mlflow.utils.mlflow_tags), set on runs the fluent API creates.
TAG_RUN_NAME = "mlflow.runName"
TAG_USER = "mlflow.user"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_BRANCH = "mlflow.source.git.branch"
TAG_GIT_REPO_URL = "mlflow.source.git.repoURL"
GIT_TIMEOUT_S = 5.0
_git_tags: dict[str, dict[str, str]] = {}


def _context_tags() -> dict[str, str]:
    """The tags MLflow's default and git context providers put on a new run: the user (the OS
    user, as the run's user_id), the program (``sys.argv[0]``, else ``<console>``), source type
    LOCAL, and the commit, branch and remote of the program's git checkout when there is one."""
    import sys

    user = _default_user() or "unknown"
    main_file = sys.argv[0] if sys.argv and sys.argv[0] else ""
    tags = {TAG_USER: user, TAG_SOURCE_NAME: main_file or "<console>", TAG_SOURCE_TYPE: "LOCAL"}
    if main_file and os.path.isfile(main_file):
        found = _git_tags.get(main_file)
        if found is None:
            found = _git_tags[main_file] = _git_context(os.path.dirname(os.path.abspath(main_file)))
        tags.update(found)
    return tags


def _git_context(folder: str) -> dict[str, str]:
    """The commit, branch and first remote of the git checkout holding ``folder`` ({} when none,
    or when git is not installed); credentials in the remote's URL are dropped."""
    import subprocess
    from urllib.parse import urlsplit, urlunsplit

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", folder, *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    tags = {TAG_GIT_COMMIT: commit}
    branch = git("symbolic-ref", "--short", "-q", "HEAD")
    if branch:
        tags[TAG_GIT_BRANCH] = branch
    remote = next(iter(git("remote").split()), "")
    url = git("remote", "get-url", remote) if remote else ""
    if url:
        parts = urlsplit(url)
        if parts.scheme and "@" in parts.netloc:
            url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
        tags[TAG_GIT_REPO_URL] = url
    return tags


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
    _ensure_default_experiment(client, ids)
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


# MLflow's DataFrame columns before metrics.*, params.* and tags.*; then keel's run_name.
RUN_COLUMNS = ("run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time")


def runs_to_dataframe(runs: Sequence[Run]) -> Any:
    """Runs as MLflow's ``search_runs`` DataFrame: ``run_id``, ``experiment_id``, ``status``,
    ``artifact_uri``, ``start_time`` and ``end_time`` (UTC pandas datetimes, NaT while running),
    then ``metrics.*`` (NaN where a run lacks one), ``params.*`` and ``tags.*`` (None where
    missing); ``tags.mlflow.runName`` and ``tags.mlflow.user`` come from the run's name and user
    when they are not tags; keel adds ``run_name`` last."""
    try:
        import numpy as np
        import pandas as pd
    except ImportError as exc:
        raise ImportError("search_runs(output_format='pandas') needs pandas: pip install pandas, "
                          "or pass output_format='list'") from exc  # fmt: skip
    info: dict[str, list[Any]] = {column: [] for column in RUN_COLUMNS}
    names: list[str] = []
    # column -> (values so far, the value of a run without it), in order of first appearance
    columns: dict[str, tuple[list[Any], Any]] = {}
    for i, run in enumerate(runs):
        r = run.info
        info["run_id"].append(r.run_id)
        info["experiment_id"].append(r.experiment_id)
        info["status"].append(r.status)
        info["artifact_uri"].append(r.artifact_uri)
        info["start_time"].append(pd.to_datetime(r.start_time, unit="ms", utc=True))
        info["end_time"].append(pd.to_datetime(r.end_time, unit="ms", utc=True) if r.end_time else pd.NaT)
        names.append(r.run_name)
        tags = dict(run.data.tags)
        # the server keeps these as the run's attributes; MLflow's server also shows them as tags
        if r.run_name:
            tags.setdefault(TAG_RUN_NAME, r.run_name)
        if r.user_id:
            tags.setdefault(TAG_USER, r.user_id)
        row: list[tuple[str, Mapping[str, Any], Any]] = [
            ("metrics.", run.data.metrics, np.nan),
            ("params.", run.data.params, None),
            ("tags.", tags, None),
        ]
        for prefix, logged, missing in row:
            for key, value in logged.items():
                column = prefix + key
                if column not in columns:
                    columns[column] = ([missing] * i, missing)
                columns[column][0].append(value)
        for values, missing in columns.values():  # columns this run lacks
            if len(values) == i:
                values.append(missing)
    data: dict[str, Any] = dict(info)
    data["start_time"] = pd.Series(info["start_time"], dtype="datetime64[ns, UTC]")
    data["end_time"] = pd.Series(info["end_time"], dtype="datetime64[ns, UTC]")
    for prefix in ("metrics.", "params.", "tags."):
        data.update({c: v for c, (v, _) in columns.items() if c.startswith(prefix)})
    data["run_name"] = names
    return pd.DataFrame(data)


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
