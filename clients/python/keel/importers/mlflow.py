"""``keel import mlflow``: copies a running ``mlflow server``'s data into keel, idempotently.

    from keel.importers.mlflow import import_from
    summary = import_from("http://mlflow-host:5000", experiments=["fraud"], models=["fraud-model"])
    print(summary.describe())

Reads MLflow over its REST API (``keel.importers._mlflow_rest``) and writes through ``keel.Client``.
What is copied, and how a second run or a resumed one knows what is there already, is in
docs/mlflow-import.md. The identities, all recorded on the keel objects:

- an experiment is the keel experiment of the same name (created, or adopted when it exists);
- a run is the keel run tagged ``import.mlflow.run_id`` = the MLflow run id (set when the run is
  created, in the same transaction), complete once ``import.mlflow.complete`` holds the
  fingerprint of the MLflow run it copied (written last; a run without it is finished on the
  next import by copying only what is missing: params, tags, metric points, artifact files);
- a registered model is the keel model of the same name; a version is the keel version tagged
  ``import.mlflow.model_version`` = the MLflow version number (an initial tag of the version).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import signal
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from keel.artifacts import _transfer
from keel.client import Client
from keel.entities import Metric, Param, RunTag
from keel.exceptions import FailedPrecondition, InvalidArgument, KeelError, NotFound
from keel.importers._mlflow_rest import MlflowRest, SourceFile, tags_of
from keel.registry.entities import ModelVersion

# ---- the tags the importer writes (its bookkeeping; every other tag is MLflow's own) ----------
SOURCE_TAG = "import.mlflow.source"  # the MLflow server's URL
EXPERIMENT_TAG = "import.mlflow.experiment_id"  # the MLflow experiment id
RUN_TAG = "import.mlflow.run_id"  # the MLflow run id: what makes a keel run an imported one
COMPLETE_TAG = "import.mlflow.complete"  # written last: the fingerprint of the MLflow run copied
PARENT_TAG = "import.mlflow.parent_run_id"  # the MLflow parent run, when it was not imported
VERSION_TAG = "import.mlflow.model_version"  # the MLflow version number of a keel version
SOURCE_URI_TAG = "import.mlflow.source_uri"  # the MLflow version's source
CREATED_TAG = "import.mlflow.creation_time"  # MLflow's creation time (ms), which keel cannot set
USER_TAG = "import.mlflow.user_id"  # who created the version in MLflow

TERMINAL = ("FINISHED", "FAILED", "KILLED")
PARENT_RUN_TAG = "mlflow.parentRunId"  # keel sets it from the parent it is given
KEEL_RESERVED = "keel."  # run tags keel's server sets itself (and refuses from clients)
METRICS_PER_BATCH = 1000
PARALLEL_FILES = 4  # files of one run copied at once
WORKERS = 4  # runs copied at once (MLflow answers each request in ~10 ms: the import waits on it)
LOGGED_MODELS_FOLDER = "logged_models"


# ---- the summary ----------------------------------------------------------------------------
@dataclass
class Tally:
    """What happened to the objects of one kind. ``copied``: new in keel; ``resumed``: found
    half-copied and finished; ``updated``: there, changed to match MLflow (tags, description,
    stage, lifecycle); ``skipped``: there and equal, nothing written."""

    copied: int = 0
    resumed: int = 0
    updated: int = 0
    skipped: int = 0


@dataclass
class ImportSummary:
    source: str
    target: str
    dry_run: bool
    mlflow_version: str = ""
    experiments: Tally = field(default_factory=Tally)
    runs: Tally = field(default_factory=Tally)
    models: Tally = field(default_factory=Tally)
    versions: Tally = field(default_factory=Tally)
    aliases: Tally = field(default_factory=Tally)
    metric_points: int = 0
    params: int = 0
    tags: int = 0
    artifact_files: int = 0
    artifact_files_skipped: int = 0
    artifact_bytes: int = 0
    filler_versions: int = 0  # created and deleted again to keep MLflow's version numbers
    deleted_not_imported: dict[str, int] = field(default_factory=lambda: {"experiments": 0, "runs": 0})
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def nothing_copied(self) -> bool:
        """True when this import wrote nothing (everything was there already)."""
        kinds = (self.experiments, self.runs, self.models, self.versions, self.aliases)
        return not any(t.copied or t.resumed or t.updated for t in kinds) and not self.artifact_files

    @property
    def runs_per_second(self) -> float:
        return (self.runs.copied + self.runs.resumed) / self.seconds if self.seconds else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.artifact_bytes / 1e6 / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["nothing_copied"] = self.nothing_copied
        out["runs_per_second"] = round(self.runs_per_second, 2)
        out["megabytes_per_second"] = round(self.megabytes_per_second, 2)
        out["seconds"] = round(self.seconds, 3)
        return out

    def describe(self) -> str:
        """The summary as a few lines of text (what ``keel import mlflow`` prints)."""
        verb = "Would import" if self.dry_run else "Imported"
        version = f" (MLflow {self.mlflow_version})" if self.mlflow_version else ""
        lines = [f"{verb} from {self.source}{version} into {self.target} in {self.seconds:.1f} s", ""]
        lines.append(f"{'':<12}{'copied':>8}{'resumed':>9}{'updated':>9}{'skipped':>9}")
        for name in ("experiments", "runs", "models", "versions", "aliases"):
            t: Tally = getattr(self, name)
            lines.append(f"{name:<12}{t.copied:>8}{t.resumed:>9}{t.updated:>9}{t.skipped:>9}")
        lines.append("")
        if not self.dry_run:
            lines.append(f"metric points {self.metric_points}, params {self.params}, tags {self.tags}")
            lines.append(
                f"artifact files {self.artifact_files} copied ({self.artifact_bytes / 1e6:.1f} MB), "
                f"{self.artifact_files_skipped} already there"
            )
            lines.append(f"throughput {self.runs_per_second:.1f} runs/s, {self.megabytes_per_second:.1f} MB/s")
        gone = self.deleted_not_imported
        if gone["experiments"] or gone["runs"]:
            lines.append(
                f"deleted in MLflow, not imported: {gone['experiments']} experiments, {gone['runs']} runs "
                "(--include-deleted imports them as deleted)"
            )
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        return "\n".join(lines)


# ---- test-only fault hook ---------------------------------------------------------------------
_passes: Counter[str] = Counter()
_passes_lock = threading.Lock()


def _fault_point(name: str) -> None:
    """For the resume tests: with ``KEEL_IMPORT_CRASH_AT=name:N[,name:N]`` the process kills
    itself (SIGKILL: no cleanup, as a crash) the Nth time it passes ``name``. Unset: a no-op."""
    spec = os.environ.get("KEEL_IMPORT_CRASH_AT")
    if not spec:
        return
    for item in spec.split(","):
        point, _, count = item.strip().partition(":")
        if point == name:
            with _passes_lock:
                _passes[name] += 1
                if _passes[name] == int(count or 1):
                    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


# ---- helpers ----------------------------------------------------------------------------------
def _fingerprint(run: dict[str, Any]) -> str:
    """What an MLflow run looks like from a search (status, end time, params, tags, latest
    metrics): a completed import whose fingerprint differs is synced again."""
    info, data = run["info"], run.get("data", {})
    parts = [
        info.get("status", ""),
        str(info.get("end_time", "")),
        sorted((p["key"], p.get("value", "")) for p in data.get("params", [])),
        sorted((t["key"], t.get("value", "")) for t in data.get("tags", [])),
        sorted((m["key"], m.get("step", 0), m.get("timestamp", 0), str(m.get("value"))) for m in data.get("metrics", [])),
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def _value(raw: Any) -> float:
    """A metric value of MLflow's JSON ("NaN", "Infinity" and "-Infinity" come as strings)."""
    return float(raw)


def _bits(value: float) -> bytes:
    """A metric value as a dict key: NaN equals NaN, -0.0 equals 0.0."""
    if value != value:
        return b"nan"
    return struct.pack("<d", value + 0.0)


def _uri_path(uri: str) -> str:
    """An artifact URI to compare locations by: MLflow's proxy URIs by path alone
    (``mlflow-artifacts://h:p/1/x`` and ``mlflow-artifacts:/1/x`` are one place), others by
    scheme, host (an S3 bucket) and path."""
    parts = urlsplit(uri)
    if parts.scheme == "mlflow-artifacts":
        return "/" + parts.path.strip("/")
    if parts.scheme in ("", "file"):
        return "file:/" + parts.path.strip("/")
    return f"{parts.scheme}://{parts.netloc}/" + parts.path.strip("/")


def _under(uri: str, root: str) -> str | None:
    """``uri``'s path below ``root`` ('' for the root itself), or None when it is elsewhere."""
    if not uri or not root:
        return None
    path, base = _uri_path(uri), _uri_path(root).rstrip("/")
    if path.rstrip("/") == base:
        return ""
    if path.startswith(base + "/"):
        return path[len(base) + 1 :]
    return None


def _run_id(run: dict[str, Any]) -> str:
    return str(run["info"].get("run_id") or run["info"]["run_uuid"])


def _parent_of(run: dict[str, Any]) -> str | None:
    for tag in run.get("data", {}).get("tags", []):
        if tag["key"] == PARENT_RUN_TAG:
            return str(tag.get("value") or "") or None
    return None


def _filter_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "''")


@dataclass
class _KeelRun:
    run_id: str
    complete: str  # the COMPLETE_TAG value ('' until the copy finished)
    deleted: bool


@dataclass
class _Experiment:
    """One MLflow experiment and its keel twin (``keel_id`` None in a dry run when absent)."""

    source: dict[str, Any]
    keel_id: str | None
    keel_deleted: bool
    runs: dict[str, _KeelRun] = field(default_factory=dict)  # MLflow run id -> keel run
    deleted_runs: set[str] = field(default_factory=set)  # MLflow run ids deleted there
    logged_models: dict[str, list[dict[str, Any]]] | None = None  # source run id -> its logged models

    @property
    def source_deleted(self) -> bool:
        return self.source.get("lifecycle_stage") == "deleted"


# ---- the importer -----------------------------------------------------------------------------
class MlflowImporter:
    """One import: ``run()`` copies what is selected and returns the summary."""

    def __init__(
        self, source: MlflowRest, client: Client, *, include_deleted: bool = False, dry_run: bool = False,
        progress: bool = True, workers: int = WORKERS,
    ) -> None:
        if workers < 1:
            raise InvalidArgument(f"workers must be >= 1, got {workers}", reason="INVALID_WORKERS", field="workers")
        self.source = source
        self.client = client
        self.include_deleted = include_deleted
        self.dry_run = dry_run
        self.progress = progress
        self.summary = ImportSummary(source=source.url, target=client.tracking_uri, dry_run=dry_run)
        self._experiments: dict[str, _Experiment] = {}  # MLflow experiment id -> context
        self._placements: dict[str, dict[str, str]] = {}  # MLflow run id -> logged model id -> path
        self._seen: set[str] = set()  # MLflow run ids this import has handled
        self._bar: Any = None
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # the summary's counters, written by the run workers

    def _add(self, target: Any, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(target, name, getattr(target, name) + n)

    # ---- entry point -----------------------------------------------------------------------
    def run(self, experiments: Sequence[str] | None = None, models: Sequence[str] | None = None) -> ImportSummary:
        started = time.monotonic()
        self.summary.mlflow_version = self.source.check()
        everything = experiments is None and models is None
        # Named things are looked up before anything is written: a typo fails the whole import.
        chosen_experiments = [self.source.experiment_by_name_or_id(str(e)) for e in experiments or ()]
        chosen_models = [self.source.registered_model(str(m)) for m in models or ()]
        from tqdm import tqdm

        self._bar = tqdm(
            desc="runs", unit="run", disable=None if self.progress else True, dynamic_ncols=True, leave=False
        )
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="keel-import-run")
        try:
            if everything:
                view = "ALL" if self.include_deleted else "ACTIVE_ONLY"
                chosen_experiments = list(self.source.experiments(view))
                if not self.include_deleted:
                    for gone in self.source.experiments("DELETED_ONLY"):
                        self._deleted_since(gone)
            for experiment in chosen_experiments:
                self._import_experiment(experiment)
            model_names = (
                [m["name"] for m in self.source.registered_models()] if everything else [m["name"] for m in chosen_models]
            )
            for name in model_names:
                self._import_model(name)
            self._apply_lifecycles()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._bar.close()
            self.summary.seconds = time.monotonic() - started
        return self.summary

    def _warn(self, message: str) -> None:
        self.summary.warnings.append(message)

    # ---- experiments ----------------------------------------------------------------------
    def _experiment(self, source: dict[str, Any]) -> _Experiment:
        """The context of an MLflow experiment: its keel twin created, or adopted and its tags
        brought up to date, and the imported runs already in it."""
        found = self._experiments.get(source["experiment_id"])
        if found is not None:
            return found
        tally = self.summary.experiments
        name = source["name"]
        tags = tags_of(source)
        keel = self.client.get_experiment_by_name(name)
        if keel is None:
            tally.copied += 1
            ctx = _Experiment(source, None, False)
            if not self.dry_run:
                keel_id = self.client.create_experiment(
                    name,
                    tags={
                        **tags,
                        SOURCE_TAG: self.source.url,
                        EXPERIMENT_TAG: source["experiment_id"],
                        CREATED_TAG: str(source.get("creation_time", "")),
                    },
                )
                ctx = _Experiment(source, keel_id, False)
            self._experiments[source["experiment_id"]] = ctx
            return ctx
        ctx = _Experiment(source, keel.experiment_id, keel.lifecycle_stage == "deleted")
        self._experiments[source["experiment_id"]] = ctx
        stale = {k: v for k, v in tags.items() if keel.tags.get(k) != v}
        # Lifecycles mirror MLflow's: restored now, or deleted at the end (_apply_lifecycles).
        relive = ctx.keel_deleted and not ctx.source_deleted
        if stale or relive or ctx.source_deleted != ctx.keel_deleted:
            tally.updated += 1
            if stale or relive:
                self._make_active(ctx)
            if not self.dry_run:
                for key, value in stale.items():
                    self.client.set_experiment_tag(keel.experiment_id, key, value)
        else:
            tally.skipped += 1
        for page in self._keel_run_pages(keel.experiment_id):
            for run in page:
                mlflow_id = run.data.tags.get(RUN_TAG)
                if mlflow_id:
                    ctx.runs[mlflow_id] = _KeelRun(
                        run.info.run_id, run.data.tags.get(COMPLETE_TAG, ""), run.info.lifecycle_stage == "deleted"
                    )
        return ctx

    def _deleted_since(self, source: dict[str, Any]) -> None:
        """A deleted MLflow experiment, when deleted ones are not imported: deleted in keel too
        if an earlier import copied it, else only counted."""
        keel = self.client.get_experiment_by_name(source["name"])
        if keel is None or keel.tags.get(EXPERIMENT_TAG) != source["experiment_id"]:
            self.summary.deleted_not_imported["experiments"] += 1
            return
        if keel.lifecycle_stage == "deleted":
            self.summary.experiments.skipped += 1
            return
        self.summary.experiments.updated += 1
        self._experiments[source["experiment_id"]] = _Experiment(source, keel.experiment_id, False)

    def _keel_run_pages(self, experiment_id: str) -> Iterable[list[Any]]:
        token: str | None = None
        while True:
            page = self.client.search_runs(experiment_id, run_view_type="ALL", max_results=1000, page_token=token)
            yield list(page)
            token = page.token
            if not token:
                return

    def _make_active(self, ctx: _Experiment) -> None:
        """Runs can be written only in an active experiment: restored for the copy (and deleted
        again at the end when MLflow's is deleted)."""
        if ctx.keel_deleted and not self.dry_run and ctx.keel_id:
            with self._lock:  # once, whichever run worker comes first
                if ctx.keel_deleted:
                    self.client.restore_experiment(ctx.keel_id)
                    ctx.keel_deleted = False

    def _import_experiment(self, source: dict[str, Any]) -> None:
        ctx = self._experiment(source)
        view = "ALL" if self.include_deleted else "ACTIVE_ONLY"
        for page in self.source.run_pages(source["experiment_id"], view):
            self._import_page(ctx, page)
        if not self.include_deleted:
            # Not imported, but a run imported earlier and deleted in MLflow since is deleted in keel.
            for page in self.source.run_pages(source["experiment_id"], "DELETED_ONLY"):
                for run in page:
                    mlflow_id = run["info"]["run_id"]
                    if mlflow_id in ctx.runs:
                        ctx.deleted_runs.add(mlflow_id)
                        if not ctx.runs[mlflow_id].deleted:
                            self.summary.runs.updated += 1
                    else:
                        self.summary.deleted_not_imported["runs"] += 1

    # ---- runs -----------------------------------------------------------------------------
    def _import_page(self, ctx: _Experiment, page: list[dict[str, Any]]) -> None:
        """One page of runs, ``workers`` at a time, in waves: a nested run after its parent (keel
        takes the parent when the run is created). MLflow lists parents first (by start time)."""
        pending = {_run_id(r): r for r in page}
        while pending:
            wave = [r for r in pending.values() if _parent_of(r) not in pending] or list(pending.values())
            for run in wave:
                del pending[_run_id(run)]
            if self._pool is None or self.workers == 1 or len(wave) == 1:
                for run in wave:
                    self._import_run(ctx, run)
            else:
                for _ in self._pool.map(partial(self._import_run, ctx), wave):
                    pass

    def _import_run(self, ctx: _Experiment, source: dict[str, Any]) -> _KeelRun | None:
        info = source["info"]
        mlflow_id = _run_id(source)
        if mlflow_id in self._seen:  # a version's run, imported already by this import
            return ctx.runs.get(mlflow_id)
        self._seen.add(mlflow_id)
        tally = self.summary.runs
        deleted = info.get("lifecycle_stage") == "deleted"
        if deleted:
            ctx.deleted_runs.add(mlflow_id)
        found = ctx.runs.get(mlflow_id)
        fingerprint = _fingerprint(source)
        if found is not None and found.complete == fingerprint:
            if found.deleted != deleted:
                self._add(tally, "updated")  # its lifecycle changed in MLflow (or in keel): mirror MLflow
                if found.deleted and not self.dry_run:
                    self._make_active(ctx)
                    self.client.restore_run(found.run_id)
                    found.deleted = False
            else:
                self._add(tally, "skipped")
            self._bar.update(1)
            return found
        if self.dry_run:
            self._add(tally, "copied" if found is None else "resumed")
            self._bar.update(1)
            return found
        copied = self._copy_run(ctx, source, found, fingerprint)
        self._bar.update(1)
        return copied

    def _copy_run(self, ctx: _Experiment, source: dict[str, Any], found: _KeelRun | None, fingerprint: str) -> _KeelRun:
        """Copies a run, or finishes one an earlier import left half-copied: each step writes only
        what keel lacks, and the fingerprint tag comes last."""
        info, data = source["info"], source.get("data", {})
        mlflow_id = _run_id(source)
        tags = tags_of(data)
        params = {p["key"]: p.get("value", "") for p in data.get("params", [])}
        parent = tags.pop(PARENT_RUN_TAG, None)
        for key in [k for k in tags if k.startswith(KEEL_RESERVED)]:
            self._warn(f"run {mlflow_id}: tag {key!r} not copied (keel reserves tags starting with {KEEL_RESERVED!r})")
            del tags[key]
        keel_parent = ctx.runs[parent].run_id if parent and parent in ctx.runs else None
        self._make_active(ctx)
        assert ctx.keel_id is not None
        wrote = False
        if found is None:
            first_tags = {RUN_TAG: mlflow_id, SOURCE_TAG: self.source.url}
            if parent and not keel_parent:
                first_tags[PARENT_TAG] = parent  # the parent was not imported (deleted, elsewhere)
            created = self.client.create_run(
                ctx.keel_id,
                start_time=int(info["start_time"]) if info.get("start_time") else None,
                tags=first_tags,
                run_name=info.get("run_name") or None,
                parent_run_id=keel_parent,
                user_id=info.get("user_id", ""),
            )
            found = ctx.runs[mlflow_id] = _KeelRun(created.info.run_id, "", False)
            fresh, run = True, created
            _fault_point("run-created")
        else:
            if found.deleted:
                self.client.restore_run(found.run_id)
                found.deleted, wrote = False, True
            fresh, run = False, self.client.get_run(found.run_id)
        have_params, have_tags = run.data.params, run.data.tags
        new_params = [Param(k, v) for k, v in params.items() if k not in have_params]
        for key in sorted(k for k, v in params.items() if k in have_params and have_params[k] != v):
            self._warn(f"run {mlflow_id}: param {key!r} is {have_params[key]!r} in keel, {params[key]!r} in MLflow (kept)")
        new_tags = [RunTag(k, v) for k, v in tags.items() if have_tags.get(k) != v]
        if new_params or new_tags:
            self.client.log_batch(found.run_id, params=new_params, tags=new_tags)
            self._add(self.summary, "params", len(new_params))
            self._add(self.summary, "tags", len(new_tags))
            wrote = True
        keys = list(dict.fromkeys(m["key"] for m in data.get("metrics", [])))
        points = self._copy_metrics(mlflow_id, found.run_id, keys, fresh)
        _fault_point("run-metrics")
        files = self._copy_artifacts(ctx, mlflow_id, found.run_id, fresh)
        _fault_point("run-artifacts")
        status, end_time = info.get("status", "FINISHED"), info.get("end_time")
        if status != run.info.status or (end_time and int(end_time) != run.info.end_time):
            self.client.update_run(found.run_id, status=status, end_time=int(end_time) if end_time else None)
            wrote = True
        if status in TERMINAL:  # a RUNNING run may still change: synced again by the next import
            self.client.set_tag(found.run_id, COMPLETE_TAG, fingerprint)
            found.complete = fingerprint
        tally = self.summary.runs
        self._add(tally, "copied" if fresh else "resumed" if wrote or points or files else "skipped")
        return found

    def _copy_metrics(self, mlflow_id: str, keel_id: str, keys: Sequence[str], fresh: bool) -> int:
        """Every point of every metric (step, timestamp, value), page by page; on a resumed run
        only the points keel lacks (compared as a multiset: a metric may repeat a point)."""
        batch: list[Metric] = []
        written = 0

        def flush() -> None:
            nonlocal batch, written
            if batch:
                self.client.log_batch(keel_id, metrics=batch)
                written += len(batch)
                batch = []

        for key in keys:
            have: Counter[tuple[int, int, bytes]] = Counter()
            loose: Counter[tuple[int, bytes]] = Counter()  # keel stamps a 0 timestamp with "now"
            if not fresh:
                for m in self.client.get_metric_history(keel_id, key):
                    have[(m.step, m.timestamp, _bits(m.value))] += 1
                    loose[(m.step, _bits(m.value))] += 1
            for page in self.source.metric_history(mlflow_id, key):
                for point in page:
                    value, step, ts = _value(point.get("value", 0.0)), int(point.get("step", 0)), int(point.get("timestamp", 0))
                    exact, near = (step, ts, _bits(value)), (step, _bits(value))
                    if have[exact] > 0 or (ts == 0 and loose[near] > 0):
                        have[exact] -= 1
                        loose[near] -= 1
                        continue
                    batch.append(Metric(key, value, ts, step))
                    if len(batch) >= METRICS_PER_BATCH:
                        flush()
        flush()
        self._add(self.summary, "metric_points", written)
        return written

    # ---- artifacts ------------------------------------------------------------------------
    def _logged_models_of(self, ctx: _Experiment, mlflow_run_id: str) -> list[dict[str, Any]]:
        if ctx.logged_models is None:
            by_run: dict[str, list[dict[str, Any]]] = {}
            for model in self.source.logged_models(ctx.source["experiment_id"]):
                if model.get("source_run_id"):
                    by_run.setdefault(model["source_run_id"], []).append(model)
            ctx.logged_models = by_run  # published whole: run workers read it
        return ctx.logged_models.get(mlflow_run_id, [])

    def _placement(self, ctx: _Experiment, mlflow_run_id: str, top: set[str] | None = None) -> dict[str, str]:
        """Where each MLflow 3 logged model of a run goes among the keel run's artifacts: under its
        name (so ``runs:/<run>/<name>`` finds it as in MLflow 2) unless the run has an artifact of
        that name or an earlier model took it, else ``logged_models/<model id>``."""
        found = self._placements.get(mlflow_run_id)
        if found is not None:
            return found
        models = sorted(
            self._logged_models_of(ctx, mlflow_run_id), key=lambda m: (int(m.get("creation_timestamp_ms", 0)), m["model_id"])
        )
        if top is None and models:
            listing = self.source.get("/artifacts/list", run_id=mlflow_run_id)
            top = {f["path"].split("/")[0] for f in listing.get("files", [])}
        taken = set(top or ())
        placed: dict[str, str] = {}
        for model in models:
            name = model.get("name") or ""
            safe = name and "/" not in name and name not in (".", "..", LOGGED_MODELS_FOLDER)
            if safe and name not in taken:
                placed[model["model_id"]] = name
                taken.add(name)
            else:
                placed[model["model_id"]] = f"{LOGGED_MODELS_FOLDER}/{model['model_id']}"
        self._placements[mlflow_run_id] = placed
        return placed

    def _copy_artifacts(self, ctx: _Experiment, mlflow_id: str, keel_id: str, fresh: bool) -> int:
        """Every file of the run, and of its MLflow 3 logged models, streamed from MLflow into
        keel (a few at a time; memory stays at a few chunks per file). A file keel has already,
        at the same size, is skipped: an interrupted upload leaves nothing behind."""
        have: dict[str, int | None] = {}
        if not fresh:
            have = {
                f.path: f.file_size
                for f in self.client.list_artifacts_under(run_id=keel_id, recursive=True)
                if not f.is_dir
            }
        jobs: list[tuple[str, int, Callable[[], Any]]] = []
        top: set[str] = set()

        def want(dest: str, f: SourceFile, opener: Callable[[], Any]) -> None:
            if have.get(dest) == f.size:
                self._add(self.summary, "artifact_files_skipped")
            else:
                jobs.append((dest, f.size, opener))

        for f in self.source.run_files(mlflow_id):
            top.add(f.path.split("/")[0])
            want(f.path, f, partial(self.source.open_run_file, mlflow_id, f.path))
        for model_id, folder in self._placement(ctx, mlflow_id, top).items():
            for f in self.source.logged_model_files(model_id):
                want(posixpath.join(folder, f.path), f, partial(self.source.open_logged_model_file, model_id, f.path))
        if not jobs:
            return 0
        transport = self.client._artifact_transport

        def upload(job: tuple[str, int, Callable[[], Any]]) -> int:
            dest, size, opener = job
            # Straight from MLflow's HTTP response into keel's upload stream: no local copy.
            _transfer.upload_stream(transport, _transfer.ref(run_id=keel_id, path=dest), opener, size, desc=dest)
            return size

        pool = ThreadPoolExecutor(max_workers=PARALLEL_FILES, thread_name_prefix="keel-import")
        try:
            for size in pool.map(upload, jobs):
                self._add(self.summary, "artifact_bytes", size)
                self._add(self.summary, "artifact_files")
                self._bar.set_postfix_str(f"{self.summary.artifact_bytes / 1e6:.1f} MB", refresh=False)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on an error, the files not started stay so
        return len(jobs)

    # ---- registered models ----------------------------------------------------------------
    def _keel_run_for(self, mlflow_run_id: str) -> str | None:
        """The keel run of an MLflow run, imported now if it was not (a version's run may lie
        outside the experiments chosen). None when it cannot be (dry run: not there yet)."""
        ctx = self._context_of_run(mlflow_run_id)
        if ctx is not None and mlflow_run_id in self._seen:
            found = ctx.runs.get(mlflow_run_id)
            return found.run_id if found is not None else None
        try:
            source = self.source.run(mlflow_run_id)
        except NotFound:
            return None
        experiment_id = source["info"]["experiment_id"]
        ctx = self._experiments.get(experiment_id) or self._experiment(self.source.experiment(experiment_id))
        imported = self._import_run(ctx, source)
        return imported.run_id if imported is not None else None

    def _context_of_run(self, mlflow_run_id: str) -> _Experiment | None:
        for ctx in self._experiments.values():
            if mlflow_run_id in ctx.runs:
                return ctx
        return None

    def _version_source(self, version: dict[str, Any], depth: int = 0) -> tuple[str, str] | None:
        """(keel source URI, keel run id) for an MLflow version: its files as the imported run
        holds them. None when the files are not a run's (the version is then not imported)."""
        source, run_id = version.get("source", ""), version.get("run_id") or ""
        if source.startswith("models:/"):
            rest = source[len("models:/") :]
            if "/" not in rest and "@" not in rest:  # an MLflow 3 logged model id
                try:
                    model = self.source.logged_model(rest)
                except NotFound:
                    return None
                run_id = model.get("source_run_id") or run_id
                if not run_id:
                    return None
                keel_run = self._keel_run_for(run_id)
                ctx = self._context_of_run(run_id)
                if keel_run is None or ctx is None:
                    return None
                folder = self._placement(ctx, run_id).get(rest)
                return (f"runs:/{keel_run}/{folder}", keel_run) if folder else None
            name, _, number = rest.rpartition("/")
            if depth < 3 and name and number.isdigit():  # registered from another model's version
                return self._version_source(self.source.model_version(name, number), depth + 1)
            return None
        if source.startswith("runs:/"):
            run_id, _, path = source[len("runs:/") :].partition("/")
            keel_run = self._keel_run_for(run_id)
            return (f"runs:/{keel_run}/{path}".rstrip("/"), keel_run) if keel_run else None
        if not run_id:
            return None
        keel_run = self._keel_run_for(run_id)
        if keel_run is None:
            return None
        run_info = self.source.run(run_id)["info"]
        below = _under(source, run_info.get("artifact_uri", ""))
        if below is not None:
            return f"runs:/{keel_run}/{below}".rstrip("/"), keel_run
        ctx = self._context_of_run(run_id)
        if ctx is not None:
            placed = self._placement(ctx, run_id)
            for model in self._logged_models_of(ctx, run_id):
                inner = _under(source, model.get("artifact_uri", ""))
                if inner is not None and model["model_id"] in placed:
                    return posixpath.join(f"runs:/{keel_run}", placed[model["model_id"]], inner).rstrip("/"), keel_run
        return None

    def _import_model(self, name: str) -> None:
        source = self.source.registered_model(name)
        versions = self.source.model_versions(name)
        tally = self.summary.models
        tags = tags_of(source)
        description = source.get("description") or ""
        try:
            keel = self.client.get_registered_model(name)
        except NotFound:
            keel = None
        if keel is None:
            tally.copied += 1
            if self.dry_run:
                self.summary.versions.copied += len(versions)
                self.summary.aliases.copied += len(source.get("aliases") or [])
                return
            keel = self.client.create_registered_model(
                name,
                tags={**tags, SOURCE_TAG: self.source.url, CREATED_TAG: str(source.get("creation_timestamp", ""))},
                description=description or None,
            )
        else:
            stale = {k: v for k, v in tags.items() if keel.tags.get(k) != v}
            if stale or (keel.description or "") != description:
                tally.updated += 1
                if not self.dry_run:
                    if (keel.description or "") != description:
                        self.client.update_registered_model(name, description=description)
                    for key, value in stale.items():
                        self.client.set_registered_model_tag(name, key, value)
            else:
                tally.skipped += 1
        mine: dict[int, list[ModelVersion]] = {}
        for v in self.client.search_model_versions(f"name = '{_filter_quote(name)}'", max_results=10**9):
            if v.name == name and v.tags.get(VERSION_TAG, "").isdigit():
                mine.setdefault(int(v.tags[VERSION_TAG]), []).append(v)
        numbers: dict[str, str] = {}  # MLflow version -> keel version
        for version in versions:
            files = partial(self._version_source, version)
            placed = self._import_version(name, version, mine.get(int(version["version"]), []), files)
            if placed is not None:
                numbers[version["version"]] = placed
        self._import_aliases(name, source, numbers)

    def _import_version(
        self, name: str, source: dict[str, Any], mine: list[ModelVersion], files: Callable[[], tuple[str, str] | None]
    ) -> str | None:
        """Copies one version (or brings it up to date): numbers as in MLflow, where keel can."""
        tally = self.summary.versions
        number = int(source["version"])
        real = next((v for v in mine if int(v.version) == number), None)
        if real is None:
            later = [v for v in mine if int(v.version) > number]
            real = max(later, key=lambda v: int(v.version)) if later else None
        for stale in mine:  # fillers an interrupted import created and had no time to delete
            if stale is not real and not self.dry_run:
                self.client.delete_model_version(name, stale.version)
        tags = tags_of(source)
        description = source.get("description") or ""
        stage = source.get("current_stage") or "None"
        fresh = False
        if real is None:
            placed = files()  # imports the version's run first when it is not in keel yet
            if self.dry_run:
                tally.copied += 1
                return None
            if placed is None:
                self._warn(
                    f"version {number} of model {name!r} not imported: its source {source.get('source')!r} "
                    "is not the files of a run keel could import"
                )
                return None
            keel_source, keel_run = placed
            first_tags = {
                **tags,
                VERSION_TAG: str(number),
                SOURCE_URI_TAG: source.get("source", ""),
                CREATED_TAG: str(source.get("creation_timestamp", "")),
            }
            if source.get("user_id"):  # keel records its own caller as the version's user_id
                first_tags[USER_TAG] = source["user_id"]
            while True:
                try:
                    created = self.client.create_model_version(
                        name, keel_source, run_id=keel_run, tags=first_tags, description=description or None,
                        run_link=source.get("run_link") or None,
                    )
                except (NotFound, FailedPrecondition) as exc:
                    self._warn(f"version {number} of model {name!r} not imported: {exc}")
                    return None
                _fault_point("version-created")
                got = int(created.version)
                if got >= number:
                    break
                # MLflow's deleted versions left a gap: burn keel's number too, so that
                # models:/<name>/<n> means the same version in both.
                self.client.delete_model_version(name, created.version)
                self.summary.filler_versions += 1
            if got > number:
                self._warn(
                    f"version {number} of model {name!r} is version {got} in keel "
                    "(keel's model had handed out that number already)"
                )
            real, fresh = created, True
        changed = False
        if (real.description or "") != description:
            changed = True
            if not self.dry_run:
                self.client.update_model_version(name, real.version, description=description)
        for key, value in tags.items():
            if real.tags.get(key) != value:
                changed = True
                if not self.dry_run:
                    self.client.set_model_version_tag(name, real.version, key, value)
        if real.current_stage != stage:
            changed = True
            if not self.dry_run:
                # In version order and without archiving the others: each ends in MLflow's stage.
                self.client.transition_model_version_stage(name, real.version, stage, archive_existing_versions=False)
        if fresh:
            tally.copied += 1
        elif changed:
            tally.updated += 1
        else:
            tally.skipped += 1
        return real.version

    def _import_aliases(self, name: str, source: dict[str, Any], numbers: dict[str, str]) -> None:
        tally = self.summary.aliases
        wanted = {a["alias"]: str(a["version"]) for a in source.get("aliases") or []}
        if not wanted:
            return
        if self.dry_run:
            tally.copied += len(wanted)
            return
        have = self.client.get_registered_model(name).aliases
        for alias, version in sorted(wanted.items()):
            target = numbers.get(version)
            if target is None:
                self._warn(f"alias {alias!r} of model {name!r} not set: version {version} was not imported")
                continue
            if have.get(alias) == target:
                tally.skipped += 1
                continue
            self.client.set_registered_model_alias(name, alias, target)
            if alias in have:
                tally.updated += 1
            else:
                tally.copied += 1

    # ---- lifecycles, last -----------------------------------------------------------------
    def _apply_lifecycles(self) -> None:
        """Deleted in MLflow, deleted in keel: done last, since only active runs and experiments
        take writes (a crash before this step leaves them active; the next import deletes them)."""
        if self.dry_run:
            return
        for ctx in self._experiments.values():
            for mlflow_id in sorted(ctx.deleted_runs):
                found = ctx.runs.get(mlflow_id)
                if found is not None and not found.deleted and found.complete:
                    self.client.delete_run(found.run_id)
                    found.deleted = True
            if ctx.source_deleted and not ctx.keel_deleted and ctx.keel_id:
                self.client.delete_experiment(ctx.keel_id)
                ctx.keel_deleted = True


def import_from(
    url: str,
    *,
    experiments: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    include_deleted: bool = False,
    dry_run: bool = False,
    tracking_uri: str | None = None,
    client: Client | None = None,
    progress: bool = False,
    workers: int = WORKERS,
) -> ImportSummary:
    """Copies an MLflow server's experiments, runs, artifacts and registered models into keel.

    ``url``: the MLflow server (``http://mlflow-host:5000``). ``experiments``: names or ids to copy
    (with their runs); ``models``: registered model names to copy (with the runs their versions
    come from). Neither: everything. ``include_deleted``: also the experiments and runs deleted
    in MLflow (copied, then deleted in keel). ``dry_run``: count what would be copied, write
    nothing. The keel server is ``client``'s, else ``tracking_uri``'s, else the current one.
    ``workers``: runs copied at once; ``progress``: a progress bar on stderr (on a terminal).

    Safe to run again: what is there already is skipped, and a half-copied run or version is
    finished. Raises ``keel.exceptions.KeelError`` (``Unavailable``: the server cannot be reached;
    ``FailedPrecondition``: it is not an MLflow server; ``NotFound``: a named experiment or model
    does not exist)."""
    if experiments is not None and isinstance(experiments, str):
        raise InvalidArgument("experiments must be a list of names or ids", reason="INVALID_EXPERIMENTS")
    if models is not None and isinstance(models, str):
        raise InvalidArgument("models must be a list of names", reason="INVALID_MODELS")
    source = MlflowRest(url)
    importer = MlflowImporter(
        source,
        client or Client(tracking_uri),
        include_deleted=include_deleted,
        dry_run=dry_run,
        progress=progress,
        workers=workers,
    )
    return importer.run(experiments, models)


__all__ = ["ImportSummary", "KeelError", "MlflowImporter", "Tally", "import_from"]
