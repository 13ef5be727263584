"""The tracking store: experiments and runs (their params, tags, metrics and metric history)
over the shared metadata database. It owns every transaction and every domain rule; it never
imports grpc. The metric write path is ``tracking/metrics.py``; search planning is
``tracking/search.py``.

Concurrency rules (several server replicas share one database):
- uniqueness (experiment names, param keys, latest metric per key) is enforced by the database;
- a lost race on insert is resolved by reading back (get-or-create, params) inside a retry loop
  (``db.retry_transaction``);
- the latest value per (run, key) is maintained with one conditional upsert, so concurrent
  writers never move it backwards (``metrics.write_points``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import peewee as pw

from keel.shared import pages
from keel_server.artifacts.store import REGISTRY_FOLDER
from keel_server.artifacts.stores.local import STAGING_DIR
from keel_server.audit import recorder
from keel_server.auth import visibility
from keel_server.common import filters, pagination, querying
from keel_server.common.db import (
    TRANSACTION_ATTEMPTS,
    VALUE_FINITE,
    Experiment,
    ExperimentTag,
    LatestMetric,
    Metric,
    Param,
    Run,
    RunTag,
    db,
    is_mysql,
    is_retryable,
    now_ms,
    retry_transaction,
    write_transaction,
)
from keel_server.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from keel_server.common.idempotency import check_request_id, claim, earlier_result
from keel_server.common.prepared import Prepared, slot
from keel_server.tracking import search, summaries
from keel_server.tracking.downsample import min_max_indices
from keel_server.tracking.metrics import MetricLog, Point, lock_active_run, write_points
from keel_server.tracking.records import (
    ACTIVE,
    DELETED,
    MAX_BATCH_METRICS,
    MAX_BATCH_PARAMS,
    MAX_BATCH_TAGS,
    MAX_USER_ID_LENGTH,
    ExperimentRecord,
    MetricPoint,
    RunInfoRecord,
    RunRecord,
    check_artifact_location,
    check_experiment_name,
    check_experiment_tag,
    check_key,
    check_param,
    check_run_accepts,
    check_run_id,
    check_run_name,
    check_run_tag,
    check_status,
    check_time,
    decode_value,
    encode_value,
    normalise_artifact_root,
    parse_experiment_id,
    run_not_found,
)

# Folders of the artifact store's root that no experiment may use: runs must never write there.
RESERVED_ARTIFACT_FOLDERS = (REGISTRY_FOLDER, STAGING_DIR)

DEFAULT_EXPERIMENT_NAME = "Default"
DEFAULT_EXPERIMENT_ID = 0  # as in MLflow
PARENT_RUN_TAG = "keel.parentRunId"

# Page sizes (default, maximum): one table with the SDK (keel.shared.pages).
SEARCH_RUNS_DEFAULT_PAGE, SEARCH_RUNS_MAX_PAGE = pages.SEARCH_RUNS
SEARCH_EXPERIMENTS_DEFAULT_PAGE, SEARCH_EXPERIMENTS_MAX_PAGE = pages.SEARCH_EXPERIMENTS
HISTORY_DEFAULT_PAGE, HISTORY_MAX_PAGE = pages.METRIC_HISTORY
MAX_SEARCH_EXPERIMENTS = 100
MAX_ORDER_KEYS = filters.MAX_ORDER_KEYS  # enforced by filters.parse_order_by (FILTER_TOO_COMPLEX)
MAX_BULK_RUNS = MAX_BULK_KEYS = 100
# Rows per IN (...) list when reading the data of a page of runs (SQLite's variable limit).
_IN_CHUNK = 500
# Up to this many (run, key) series, metric histories are read one series per query.
_PER_SERIES_QUERIES = 100

_ADJECTIVES = (
    "able", "bold", "brave", "bright", "calm", "clever", "crisp", "eager", "fair", "fast", "fierce",
    "gentle", "glad", "grand", "keen", "kind", "lucid", "merry", "nimble", "noble", "quick", "quiet",
    "rare", "sharp", "shy", "silent", "smart", "steady", "swift", "tidy", "vivid", "warm", "wise",
)  # fmt: skip
_NOUNS = (
    "ant", "bass", "bear", "cat", "crane", "deer", "dove", "eel", "elk", "finch", "fox", "frog", "goat",
    "hawk", "heron", "ibis", "koi", "lark", "lynx", "mole", "moth", "newt", "owl", "panda", "quail",
    "ram", "seal", "shrew", "slug", "snail", "squid", "stork", "swan", "toad", "trout", "wasp", "wolf",
)  # fmt: skip


def generate_run_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(0, 999)}"


class TrackingStore:
    """Domain logic of the tracking service. ``artifact_root`` returns the artifact store's root URI
    (called only when an experiment is created without an explicit location)."""

    def __init__(self, artifact_root: Callable[[], str]) -> None:
        self._artifact_root = artifact_root
        self._metric_log = MetricLog()

    # -----------------------------------------------------------------------------------------
    # Experiments
    # -----------------------------------------------------------------------------------------

    def create_experiment(
        self, name: str, artifact_location: str = "", tags: Sequence[tuple[str, str]] = ()
    ) -> ExperimentRecord:
        check_experiment_name(name)
        for i, (key, value) in enumerate(tags):
            check_experiment_tag(key, value, f"tags[{i}]")
        location = (
            check_artifact_location(artifact_location, self._artifact_root(), RESERVED_ARTIFACT_FOLDERS)
            if artifact_location
            else ""
        )
        now = now_ms()
        try:
            with write_transaction():
                fields: dict[str, Any] = {
                    "name": name,
                    "artifact_location": location,
                    "creation_time": now,
                    "last_update_time": now,
                }
                if name == DEFAULT_EXPERIMENT_NAME and not _experiment_id_taken(DEFAULT_EXPERIMENT_ID):
                    fields["experiment_id"] = DEFAULT_EXPERIMENT_ID
                experiment_id = _insert_experiment(fields)
                visibility.record_creation("experiment", experiment_id, name)
                if not location:
                    location = f"{normalise_artifact_root(self._artifact_root())}/{experiment_id}"
                    Experiment.update(artifact_location=location).where(
                        Experiment.experiment_id == experiment_id
                    ).execute()
                if tags:
                    ExperimentTag.insert_many(
                        [{"experiment": experiment_id, "key": k, "value": v} for k, v in dict(tags).items()]
                    ).execute()
        except pw.IntegrityError as exc:
            if is_retryable(exc):
                raise
            existing = self._find_experiment_by_name(name)
            if existing is None:
                raise
            suffix = (
                f" by deleted experiment {existing.experiment_id}: restore it or choose another name"
                if existing.lifecycle_stage == DELETED
                else f" by experiment {existing.experiment_id}"
            )
            raise AlreadyExists(
                f"experiment name '{name}' is already taken{suffix}",
                reason="EXPERIMENT_ALREADY_EXISTS",
                field="name",
                metadata={"name": name, "experiment_id": existing.experiment_id},
            ) from None
        return ExperimentRecord(
            experiment_id=str(experiment_id),
            name=name,
            artifact_location=location,
            lifecycle_stage=ACTIVE,
            creation_time=now,
            last_update_time=now,
            tags=dict(tags),
        )

    def get_or_create_experiment(
        self, name: str, artifact_location: str = "", tags: Sequence[tuple[str, str]] = ()
    ) -> tuple[ExperimentRecord, bool]:
        """Race-free: concurrent callers all end with the one experiment the database kept."""
        check_experiment_name(name)
        for _attempt in range(TRANSACTION_ATTEMPTS):
            found = self._find_experiment_by_name(name)
            if found is not None:
                if found.lifecycle_stage == DELETED:
                    raise FailedPrecondition(
                        f"experiment '{name}' (id {found.experiment_id}) is deleted: restore it or use another name",
                        reason="EXPERIMENT_DELETED",
                        metadata={"name": name, "experiment_id": found.experiment_id},
                    )
                return found, False
            try:
                return self.create_experiment(name, artifact_location, tags), True
            except AlreadyExists:
                continue  # lost the race: read the winner back
            except pw.DatabaseError as exc:
                if not is_retryable(exc):
                    raise
        raise pw.OperationalError(f"could not get or create experiment '{name}': deadlock, retry")

    def get_experiment(self, experiment_id: str) -> ExperimentRecord:
        eid = parse_experiment_id(experiment_id)
        row = Experiment.get_or_none(Experiment.experiment_id == eid)
        if row is None:
            raise NotFound(
                f"experiment {experiment_id} does not exist",
                reason="EXPERIMENT_NOT_FOUND",
                metadata={"experiment_id": experiment_id},
            )
        return self._experiment_records([row])[0]

    def get_experiment_by_name(self, name: str) -> ExperimentRecord:
        check_experiment_name(name)
        found = self._find_experiment_by_name(name)
        if found is None:
            raise NotFound(
                f"experiment named '{name}' does not exist",
                reason="EXPERIMENT_NOT_FOUND",
                metadata={"name": name},
            )
        return found

    def _find_experiment_by_name(self, name: str) -> ExperimentRecord | None:
        row = Experiment.get_or_none(Experiment.name == name)
        return None if row is None else self._experiment_records([row])[0]

    def _experiment_records(self, rows: Sequence[Experiment]) -> list[ExperimentRecord]:
        tags: dict[int, dict[str, str]] = {r.experiment_id: {} for r in rows}
        if rows:
            for t in (
                ExperimentTag.select()
                .where(ExperimentTag.experiment.in_(list(tags)))
                .order_by(ExperimentTag.key)
            ):
                tags[t.experiment_id][t.key] = t.value
        return [
            ExperimentRecord(
                experiment_id=str(r.experiment_id),
                name=r.name,
                artifact_location=r.artifact_location,
                lifecycle_stage=r.lifecycle_stage,
                creation_time=r.creation_time,
                last_update_time=r.last_update_time,
                tags=tags[r.experiment_id],
            )
            for r in rows
        ]

    def _active_experiment(self, experiment_id: str, action: str) -> Experiment:
        return active_experiment(experiment_id, action)

    def rename_experiment(self, experiment_id: str, new_name: str) -> ExperimentRecord:
        check_experiment_name(new_name, "new_name")
        try:
            with write_transaction():
                row = self._active_experiment(experiment_id, "rename the experiment")
                Experiment.update(name=new_name, last_update_time=now_ms()).where(
                    Experiment.experiment_id == row.experiment_id
                ).execute()
        except pw.IntegrityError as exc:
            if is_retryable(exc):
                raise
            raise AlreadyExists(
                f"cannot rename experiment {experiment_id}: the name '{new_name}' is already taken",
                reason="EXPERIMENT_ALREADY_EXISTS",
                field="new_name",
                metadata={"name": new_name},
            ) from None
        return self.get_experiment(experiment_id)

    def delete_experiment(self, experiment_id: str) -> None:
        """Soft delete; its active runs are deleted with it (and restored with it)."""
        with write_transaction():
            row = self._active_experiment(experiment_id, "delete the experiment")
            Experiment.update(lifecycle_stage=DELETED, last_update_time=now_ms()).where(
                Experiment.experiment_id == row.experiment_id
            ).execute()
            Run.update(lifecycle_stage=DELETED, deleted_with_experiment=True).where(
                (Run.experiment == row.experiment_id) & (Run.lifecycle_stage == ACTIVE)
            ).execute()

    def restore_experiment(self, experiment_id: str) -> ExperimentRecord:
        eid = parse_experiment_id(experiment_id)
        with write_transaction():
            row = Experiment.get_or_none(Experiment.experiment_id == eid)
            if row is None:
                raise NotFound(
                    f"experiment {experiment_id} does not exist",
                    reason="EXPERIMENT_NOT_FOUND",
                    metadata={"experiment_id": experiment_id},
                )
            if row.lifecycle_stage == ACTIVE:
                raise FailedPrecondition(
                    f"experiment {experiment_id} is not deleted; only a deleted experiment can be restored",
                    reason="EXPERIMENT_ACTIVE",
                    metadata={"experiment_id": experiment_id},
                )
            Experiment.update(lifecycle_stage=ACTIVE, last_update_time=now_ms()).where(
                Experiment.experiment_id == eid
            ).execute()
            Run.update(lifecycle_stage=ACTIVE, deleted_with_experiment=False).where(
                (Run.experiment == eid) & (Run.deleted_with_experiment == True)  # noqa: E712
            ).execute()
        return self.get_experiment(experiment_id)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        check_experiment_tag(key, value, "key")
        with write_transaction():
            row = self._active_experiment(experiment_id, "set a tag")
            querying.upsert(ExperimentTag, [{"experiment": row.experiment_id, "key": key, "value": value}],
                    [ExperimentTag.experiment, ExperimentTag.key], [ExperimentTag.value])  # fmt: skip
            Experiment.update(last_update_time=now_ms()).where(
                Experiment.experiment_id == row.experiment_id
            ).execute()

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        with write_transaction():
            row = self._active_experiment(experiment_id, "delete a tag")
            deleted = (
                ExperimentTag.delete()
                .where((ExperimentTag.experiment == row.experiment_id) & (ExperimentTag.key == key))
                .execute()
            )
            if not deleted:
                raise NotFound(
                    f"experiment {experiment_id} has no tag '{key}'",
                    reason="TAG_NOT_FOUND",
                    metadata={"experiment_id": experiment_id, "key": key},
                )
            Experiment.update(last_update_time=now_ms()).where(
                Experiment.experiment_id == row.experiment_id
            ).execute()

    def search_experiments(
        self, filter_text: str, order_by: Sequence[str], view: str, page_size: int, page_token: str
    ) -> tuple[list[ExperimentRecord], str]:
        size = pagination.page_size(page_size, SEARCH_EXPERIMENTS_DEFAULT_PAGE, SEARCH_EXPERIMENTS_MAX_PAGE)
        rows, token = search.search_experiments(filter_text, order_by, view, size, page_token)
        return self._experiment_records(rows), token

    # -----------------------------------------------------------------------------------------
    # Runs
    # -----------------------------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        run_name: str = "",
        start_time: int | None = None,
        user_id: str = "",
        tags: Sequence[tuple[str, str]] = (),
        parent_run_id: str = "",
        request_id: str = "",
    ) -> RunRecord:
        """A new RUNNING run. With a ``request_id`` already used, the run that request created
        (nothing new is written): a retry after a lost reply never makes a second run."""
        check_request_id(request_id)
        check_run_name(run_name)
        if len(user_id) > MAX_USER_ID_LENGTH:
            raise InvalidArgument(
                f"user_id is {len(user_id)} characters long; the limit is {MAX_USER_ID_LENGTH}",
                reason="INVALID_USER_ID",
                field="user_id",
            )
        for i, (key, value) in enumerate(tags):
            check_run_tag(key, value, f"tags[{i}]")
        if parent_run_id:
            check_run_id(parent_run_id, "parent_run_id")
        start = now_ms() if start_time is None else check_time(start_time, "start_time")
        name = run_name or generate_run_name()
        run_id = uuid.uuid4().hex
        all_tags = dict(tags)

        def insert() -> str | tuple[int, str]:
            """(experiment id, artifact URI) of the new run, or the id of the run an earlier
            request with the same request id created."""
            with write_transaction():
                if request_id:
                    earlier = earlier_result(request_id, "CreateRun")
                    if earlier is not None:
                        return earlier
                    claim(request_id, "CreateRun", run_id)
                experiment = self._active_experiment(experiment_id, "create a run")
                if parent_run_id:
                    parent = Run.get_or_none(Run.run_id == parent_run_id)
                    if parent is None or parent.experiment_id != experiment.experiment_id:
                        raise InvalidArgument(
                            f"parent run {parent_run_id} does not exist in experiment {experiment_id}: "
                            "a nested run must belong to its parent's experiment",
                            reason="INVALID_PARENT_RUN",
                            field="parent_run_id",
                            metadata={"parent_run_id": parent_run_id},
                        )
                    all_tags[PARENT_RUN_TAG] = parent_run_id
                artifact_uri = f"{experiment.artifact_location}/{run_id}/artifacts"
                Run.insert(
                    run_id=run_id,
                    experiment=experiment.experiment_id,
                    run_name=name,
                    user_id=user_id,
                    status="RUNNING",
                    start_time=start,
                    end_time=None,
                    artifact_uri=artifact_uri,
                    lifecycle_stage=ACTIVE,
                    parent_run_id=parent_run_id or None,
                ).execute()
                recorder.note(resource_id=run_id)
                if all_tags:
                    RunTag.insert_many(
                        [{"run": run_id, "key": k, "value": v} for k, v in all_tags.items()]
                    ).execute()
                return experiment.experiment_id, artifact_uri

        # A concurrent twin of this request id makes the insert fail: the retry finds its run.
        written = retry_transaction(insert, unique_violations=True)
        if isinstance(written, str):
            return self.get_run(written)
        experiment_key, artifact_uri = written
        info = RunInfoRecord(
            run_id=run_id,
            run_name=name,
            experiment_id=str(experiment_key),
            user_id=user_id,
            status="RUNNING",
            start_time=start,
            end_time=None,
            artifact_uri=artifact_uri,
            lifecycle_stage=ACTIVE,
            parent_run_id=parent_run_id,
        )
        return RunRecord(info=info, params={}, metrics=[], tags=all_tags)

    def get_run(self, run_id: str) -> RunRecord:
        check_run_id(run_id)
        return self._records_of([_read_run_info(run_id)])[0]

    def update_run(
        self, run_id: str, status: str | None = None, end_time: int | None = None, run_name: str | None = None
    ) -> RunInfoRecord:
        check_run_id(run_id)
        changes: dict[Any, Any] = {}
        if status is not None:
            changes[Run.status] = check_status(status)
        if end_time is not None:
            changes[Run.end_time] = check_time(end_time, "end_time")
        if run_name is not None:
            check_run_name(run_name)
            changes[Run.run_name] = run_name or generate_run_name()
        with write_transaction():
            _require_active_run(run_id, "update")
            if changes:
                Run.update(changes).where(Run.run_id == run_id).execute()
            return _read_run_info(run_id)

    def delete_run(self, run_id: str) -> None:
        """Soft delete (deleting a deleted run is a no-op)."""
        check_run_id(run_id)
        with write_transaction():
            # Existence is checked apart: MySQL counts changed rows, not matched ones.
            if not Run.select(Run.run_id).where(Run.run_id == run_id).exists():
                raise run_not_found(run_id)
            Run.update(lifecycle_stage=DELETED, deleted_with_experiment=False).where(
                Run.run_id == run_id
            ).execute()

    def restore_run(self, run_id: str) -> None:
        check_run_id(run_id)
        with write_transaction():
            row = Run.get_or_none(Run.run_id == run_id)
            if row is None:
                raise run_not_found(run_id)
            experiment = Experiment.get_by_id(row.experiment_id)
            if experiment.lifecycle_stage != ACTIVE:
                raise FailedPrecondition(
                    f"cannot restore run {run_id}: its experiment {row.experiment_id} is deleted (restore it first)",
                    reason="EXPERIMENT_DELETED",
                    metadata={"run_id": run_id, "experiment_id": row.experiment_id},
                )
            Run.update(lifecycle_stage=ACTIVE, deleted_with_experiment=False).where(
                Run.run_id == run_id
            ).execute()

    # -----------------------------------------------------------------------------------------
    # Logging
    # -----------------------------------------------------------------------------------------

    def log_metric(self, run_id: str, key: str, value: float, timestamp: int | None, step: int) -> None:
        """The hot path: a PK lookup, an insert and an upsert, in a transaction shared with
        concurrent callers (``metrics.MetricLog``)."""
        check_run_id(run_id)
        check_key(key, "metric", "key")
        ts = now_ms() if timestamp is None else check_time(timestamp, "timestamp")
        stored, kind = encode_value(value)
        self._metric_log.log((run_id, key, stored, kind, ts, step))

    def log_param(self, run_id: str, key: str, value: str) -> None:
        check_run_id(run_id)
        check_param(key, value, "key")
        retry_transaction(
            lambda: self._write_batch(run_id, [], {key: value}, {}, "param"), unique_violations=True
        )

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        check_run_id(run_id)
        check_run_tag(key, value, "key")
        retry_transaction(
            lambda: self._write_batch(run_id, [], {}, {key: value}, "tag"), unique_violations=True
        )

    def delete_tag(self, run_id: str, key: str) -> None:
        check_run_id(run_id)
        with write_transaction():
            _require_active_run(run_id, "delete a tag of")
            if not RunTag.delete().where((RunTag.run == run_id) & (RunTag.key == key)).execute():
                raise NotFound(
                    f"run {run_id} has no tag '{key}'",
                    reason="TAG_NOT_FOUND",
                    metadata={"run_id": run_id, "key": key},
                )

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[MetricPoint],
        params: Sequence[tuple[str, str]],
        tags: Sequence[tuple[str, str]],
        request_id: str = "",
    ) -> None:
        """All or nothing. Items are validated before anything is written; the first bad one is
        named in the error (``metrics[12]``). A batch whose ``request_id`` was already applied
        writes nothing (a retry after a lost reply)."""
        check_run_id(run_id)
        check_request_id(request_id)
        for name, items, limit in (
            ("metrics", metrics, MAX_BATCH_METRICS),
            ("params", params, MAX_BATCH_PARAMS),
            ("tags", tags, MAX_BATCH_TAGS),
        ):
            if len(items) > limit:
                raise InvalidArgument(
                    f"a batch may hold at most {limit} {name}, got {len(items)}: split it into several LogBatch calls",
                    reason="BATCH_TOO_LARGE",
                    field=name,
                    metadata={"count": len(items), "limit": limit},
                )
        now = now_ms()
        rows: list[Point] = []
        for i, m in enumerate(metrics):
            check_key(m.key, "metric", f"metrics[{i}]")
            ts = now if m.timestamp == 0 else check_time(m.timestamp, f"metrics[{i}].timestamp")
            stored, kind = encode_value(m.value)
            rows.append((run_id, m.key, stored, kind, ts, m.step))
        param_map: dict[str, str] = {}
        for i, (key, value) in enumerate(params):
            check_param(key, value, f"params[{i}]")
            if key in param_map and param_map[key] != value:
                raise InvalidArgument(
                    f"params[{i}]: param '{key}' appears twice in the batch with different values "
                    f"('{param_map[key]}' and '{value}')",
                    reason="PARAM_CONFLICT",
                    field=f"params[{i}]",
                    metadata={"key": key},
                )
            param_map[key] = value
        tag_map: dict[str, str] = {}
        for i, (key, value) in enumerate(tags):
            check_run_tag(key, value, f"tags[{i}]")
            tag_map[key] = value  # the last value of a repeated key wins, as in MLflow
        if not rows and not param_map and not tag_map:
            with db.connection_context():
                _require_active_run(run_id, "log to")
            return
        retry_transaction(
            lambda: self._write_batch(run_id, rows, param_map, tag_map, "params", request_id),
            unique_violations=True,  # a concurrent writer of the same param: the rerun compares with it
        )

    def _write_batch(
        self,
        run_id: str,
        rows: list[Point],
        params: dict[str, str],
        tags: dict[str, str],
        _what: str,
        request_id: str = "",
    ) -> None:
        with write_transaction():
            if request_id:
                if earlier_result(request_id, "LogBatch") is not None:
                    return  # applied already, by the first delivery of this request
                claim(request_id, "LogBatch")
            lock_active_run(run_id)
            if params:
                existing: dict[str, str] = dict(
                    Param.select(Param.key, Param.value)
                    .where((Param.run == run_id) & (Param.key.in_(list(params))))
                    .tuples()  # type: ignore[arg-type]  # peewee's stubs type rows as models
                )
                for index, (key, value) in enumerate(params.items()):
                    if key in existing and existing[key] != value:
                        raise InvalidArgument(
                            f"param '{key}' of run {run_id} is already '{existing[key]}' and cannot be changed "
                            f"to '{value}': params are write-once (log a new run, or use a tag or metric)",
                            reason="PARAM_ALREADY_SET",
                            field=f"params[{index}]" if _what == "params" else "value",
                            metadata={
                                "run_id": run_id,
                                "key": key,
                                "old_value": existing[key],
                                "new_value": value,
                            },
                        )
                new = [{"run": run_id, "key": k, "value": v} for k, v in params.items() if k not in existing]
                if new:
                    Param.insert_many(new).execute()  # a concurrent writer makes this fail: retried
            if tags:
                querying.upsert(RunTag, [{"run": run_id, "key": k, "value": v} for k, v in tags.items()],
                        [RunTag.run, RunTag.key], [RunTag.value])  # fmt: skip
            if rows:
                write_points(rows)

    # -----------------------------------------------------------------------------------------
    # Metric history
    # -----------------------------------------------------------------------------------------

    def get_metric_history(
        self, run_id: str, key: str, page_size: int, page_token: str
    ) -> tuple[list[MetricPoint], str]:
        check_run_id(run_id)
        check_key(key, "metric", "metric_key")
        size = pagination.page_size(page_size, HISTORY_DEFAULT_PAGE, HISTORY_MAX_PAGE)
        fp = pagination.fingerprint("history", run_id, key)
        cursor = pagination.decode_token(page_token, fp)
        if not Run.select(Run.run_id).where(Run.run_id == run_id).exists():
            raise run_not_found(run_id)
        query = Metric.select(
            Metric.id, Metric.value, Metric.value_kind, Metric.timestamp, Metric.step
        ).where((Metric.run == run_id) & (Metric.key == key))
        if cursor is not None:
            querying.check_cursor(cursor, 3)
            query = query.where(pw.Tuple(Metric.step, Metric.timestamp, Metric.id) > pw.Tuple(*cursor))
        rows: list[Any] = list(
            query.order_by(Metric.step, Metric.timestamp, Metric.id).limit(size + 1).tuples()
        )
        rows, token = pagination.trim(rows, size, lambda last: [last[4], last[3], last[0]], fp)
        return [MetricPoint(key, decode_value(v, k), ts, step) for _id, v, k, ts, step in rows], token

    def get_metric_history_bulk(
        self, run_ids: Sequence[str], keys: Sequence[str], max_points: int
    ) -> list[MetricPoint]:
        return self.get_metric_history_bulk_sized(run_ids, keys, max_points)[0]

    def get_metric_history_bulk_sized(
        self, run_ids: Sequence[str], keys: Sequence[str], max_points: int
    ) -> tuple[list[MetricPoint], dict[tuple[str, str], int]]:
        """The points of each (run, key) history, downsampled to ``max_points`` per history when
        longer (``downsample.min_max_indices``: spikes survive), and each history's full length."""
        if not run_ids or len(run_ids) > MAX_BULK_RUNS:
            raise InvalidArgument(
                f"run_ids must hold 1..{MAX_BULK_RUNS} ids, got {len(run_ids)}",
                reason="INVALID_RUN_IDS",
                field="run_ids",
            )
        if not keys or len(keys) > MAX_BULK_KEYS:
            raise InvalidArgument(
                f"metric_keys must hold 1..{MAX_BULK_KEYS} keys, got {len(keys)}",
                reason="INVALID_METRIC_KEYS",
                field="metric_keys",
            )
        if max_points < 0:
            raise InvalidArgument(
                f"max_points_per_series must be >= 0 (0 means all), got {max_points}",
                reason="INVALID_MAX_POINTS",
                field="max_points_per_series",
            )
        for i, run_id in enumerate(run_ids):
            check_run_id(run_id, f"run_ids[{i}]")
        for i, key in enumerate(keys):
            check_key(key, "metric", f"metric_keys[{i}]")
        known = set(Run.select(Run.run_id).where(Run.run_id.in_(list(run_ids))).tuples().iterator())
        missing = [r for r in run_ids if (r,) not in known]
        if missing:
            raise run_not_found(missing[0])
        # Raw rows (value, value_kind, timestamp, step) per series; MetricPoints only for the
        # points kept (a 100,000-point history drawn at 1000 points builds 1000 objects).
        series = _metric_series(sorted(set(run_ids)), sorted(set(keys)))
        out: list[MetricPoint] = []
        sizes: dict[tuple[str, str], int] = {}
        for (run, key), rows in series.items():
            sizes[(run, key)] = len(rows)
            values = [r[0] if r[1] == VALUE_FINITE else decode_value(r[0], r[1]) for r in rows]
            for i in min_max_indices(values, max_points):
                out.append(MetricPoint(key, values[i], rows[i][2], rows[i][3], run))
        return out, sizes

    def get_metric_ranges(self, run_ids: Sequence[str], keys: Sequence[str]) -> list[summaries.MetricRange]:
        return summaries.metric_ranges(run_ids, keys)

    def list_run_data_keys(self, experiment_ids: Sequence[str], max_keys: int) -> summaries.RunDataKeys:
        return summaries.run_data_keys(experiment_ids, max_keys)

    # -----------------------------------------------------------------------------------------
    # Search
    # -----------------------------------------------------------------------------------------

    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_text: str,
        view: str,
        page_size: int,
        order_by: Sequence[str],
        page_token: str,
    ) -> tuple[list[RunRecord], str]:
        if not experiment_ids or len(experiment_ids) > MAX_SEARCH_EXPERIMENTS:
            raise InvalidArgument(
                f"experiment_ids must hold 1..{MAX_SEARCH_EXPERIMENTS} ids, got {len(experiment_ids)}",
                reason="INVALID_EXPERIMENT_IDS",
                field="experiment_ids",
            )
        eids = sorted({parse_experiment_id(e, "experiment_ids") for e in experiment_ids})
        size = pagination.page_size(page_size, SEARCH_RUNS_DEFAULT_PAGE, SEARCH_RUNS_MAX_PAGE)
        infos, token = search.search_runs(eids, filter_text, view, size, order_by, page_token)
        return self._records_of(infos), token

    def _records_of(self, infos: Sequence[RunInfoRecord]) -> list[RunRecord]:
        """Runs with their data: three queries for the whole page (prepared: building IN lists
        through Peewee cost more than running them)."""
        ids = [i.run_id for i in infos]
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        latest: dict[str, list[MetricPoint]] = {i: [] for i in ids}
        for chunk in _chunks(ids, _IN_CHUNK):
            for run, key, value in db.execute_sql(_PARAMS_OF.sql(len(chunk)), chunk).fetchall():
                params[run][key] = value
            for run, key, value in db.execute_sql(_TAGS_OF.sql(len(chunk)), chunk).fetchall():
                tags[run][key] = value
            for run, key, value, kind, ts, step in db.execute_sql(
                _LATEST_OF.sql(len(chunk)), chunk
            ).fetchall():
                latest[run].append(MetricPoint(key, decode_value(value, kind), ts, step))
        return [
            RunRecord(
                info=info,
                params=dict(sorted(params[info.run_id].items())),
                metrics=sorted(latest[info.run_id], key=lambda m: m.key),
                tags=dict(sorted(tags[info.run_id].items())),
            )
            for info in infos
        ]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _read_run_info(run_id: str) -> RunInfoRecord:
    row = Run.select(*search.RUN_INFO_COLUMNS).where(Run.run_id == run_id).tuples().first()
    if row is None:
        raise run_not_found(run_id)
    return search.run_info(row)


def _require_active_run(run_id: str, action: str) -> None:
    """A primary-key lookup: the run must exist and not be deleted (checked on every write, so a
    run deleted through another replica refuses data at once; the logging paths use
    ``metrics.lock_active_run``)."""
    check_run_accepts(run_id, Run.select(Run.lifecycle_stage).where(Run.run_id == run_id).scalar(), action)


def _of_runs(model: Any, *columns: Any) -> Prepared:
    """``columns`` of ``model``'s rows that belong to a list of runs (``run_id IN (...)``)."""
    return Prepared(lambda n: model.select(*columns).where(model.run.in_([slot(i) for i in range(n)])))


_PARAMS_OF = _of_runs(Param, Param.run, Param.key, Param.value)
_TAGS_OF = _of_runs(RunTag, RunTag.run, RunTag.key, RunTag.value)
_LATEST_OF = _of_runs(
    LatestMetric,
    LatestMetric.run,
    LatestMetric.key,
    LatestMetric.value,
    LatestMetric.value_kind,
    LatestMetric.timestamp,
    LatestMetric.step,
)


def _experiment_id_taken(experiment_id: int) -> bool:
    return (
        Experiment.select(Experiment.experiment_id).where(Experiment.experiment_id == experiment_id).exists()
    )


def _insert_experiment(fields: dict[str, Any]) -> int:
    if is_mysql() and fields.get("experiment_id") == 0:
        # MySQL treats an explicit 0 as "generate one" unless told otherwise (session only).
        db.execute_sql("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
        try:
            Experiment.insert(**fields).execute()
        finally:
            db.execute_sql("SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_AUTO_VALUE_ON_ZERO', '')")
        return 0
    inserted = Experiment.insert(**fields).execute()
    return int(fields.get("experiment_id", inserted))


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _metric_series(run_ids: list[str], keys: list[str]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    """The full histories of each (run, key) that has points, as raw (value, value_kind, timestamp,
    step) rows in (step, timestamp, id) order. Raw SQL: Peewee's per-row conversion costs more
    than the query at 100,000 rows. One query per series when there are few (the chart of a run,
    a compare), so that no row carries its run id and key: those two strings cost a third of the
    time of a 100,000-point read; one query for all of them otherwise."""
    columns = (Metric.value, Metric.value_kind, Metric.timestamp, Metric.step)
    order = (Metric.step, Metric.timestamp, Metric.id)
    series: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    if len(run_ids) * len(keys) <= _PER_SERIES_QUERIES:
        # One SQL text, bound to each series in turn (its only parameters are the run and key).
        sql, params = (
            Metric.select(*columns)
            .where((Metric.run == run_ids[0]) & (Metric.key == keys[0]))
            .order_by(*order)
            .sql()
        )
        assert params == [run_ids[0], keys[0]]
        for run in run_ids:
            for key in keys:
                rows = db.execute_sql(sql, [run, key]).fetchall()
                if rows:
                    series[(run, key)] = rows
        return series
    query = (
        Metric.select(Metric.run, Metric.key, *columns)
        .where(Metric.run.in_(run_ids) & Metric.key.in_(keys))
        .order_by(Metric.run, Metric.key, *order)
    )
    for row in db.execute_sql(*query.sql()).fetchall():
        series.setdefault((row[0], row[1]), []).append(row[2:])
    return series


def active_experiment(experiment_id: str, action: str, eid: int | None = None) -> Experiment:
    """The experiment row, NOT_FOUND when it does not exist and FAILED_PRECONDITION when it is
    deleted (``action`` says what could not be done). ``eid``: the id already parsed."""
    eid = parse_experiment_id(experiment_id) if eid is None else eid
    row = Experiment.get_or_none(Experiment.experiment_id == eid)
    if row is None:
        raise NotFound(
            f"experiment {experiment_id} does not exist",
            reason="EXPERIMENT_NOT_FOUND",
            metadata={"experiment_id": experiment_id},
        )
    if row.lifecycle_stage != ACTIVE:
        raise FailedPrecondition(
            f"cannot {action}: experiment {experiment_id} is deleted (restore it first)",
            reason="EXPERIMENT_DELETED",
            metadata={"experiment_id": experiment_id},
        )
    return row
