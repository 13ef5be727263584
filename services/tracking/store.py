"""The tracking store: experiments, runs, params, metrics, tags and search over the shared
metadata database. It owns every transaction and every domain rule; it never imports grpc.

Concurrency rules (several server replicas share one database):
- uniqueness (experiment names, param keys, latest metric per key) is enforced by the database;
- a lost race on insert is resolved by reading back (get-or-create, params) inside a retry loop;
- the latest value per (run, key) is maintained with one conditional upsert, so concurrent
  writers never move it backwards.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import peewee as pw

from keel.shared import pages
from keel_server.artifacts.store import REGISTRY_FOLDER
from keel_server.artifacts.stores.local import STAGING_DIR
from keel_server.audit import recorder
from keel_server.auth import visibility
from keel_server.common import filters, pagination, querying
from keel_server.common.db import (
    VALUE_NAN,
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
    write_transaction,
)
from keel_server.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from keel_server.common.filters import (
    EXPERIMENTS_SCHEMA,
    RUNS_SCHEMA,
    And,
    Comparison,
    Node,
    parse_and_validate,
    parse_order_by,
)
from keel_server.common.idempotency import check_request_id, claim, earlier_result
from keel_server.tracking import search
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
    check_run_id,
    check_run_name,
    check_run_tag,
    check_status,
    check_time,
    decode_value,
    encode_value,
    normalise_artifact_root,
    parse_experiment_id,
)

T = TypeVar("T")

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
_RETRIES = 5

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
        self._metric_committer = _GroupCommit(self._commit_metric_group)

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
        for _attempt in range(_RETRIES):
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
        eid = parse_experiment_id(experiment_id)
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

    @querying.search_guard()
    def search_experiments(
        self, filter_text: str, order_by: Sequence[str], view: str, page_size: int, page_token: str
    ) -> tuple[list[ExperimentRecord], str]:
        size = pagination.page_size(page_size, SEARCH_EXPERIMENTS_DEFAULT_PAGE, SEARCH_EXPERIMENTS_MAX_PAGE)
        node = parse_and_validate(filter_text, EXPERIMENTS_SCHEMA)
        keys = parse_order_by(list(order_by), EXPERIMENTS_SCHEMA)
        for index, key in enumerate(keys):
            if key.entity != "attribute":
                raise InvalidArgument(
                    f"invalid order_by item {order_by[index]!r}: experiments can be ordered by name, "
                    "experiment_id, creation_time and last_update_time only",
                    reason="INVALID_ORDER_BY",
                    field="order_by",
                )
        columns = search.experiment_ordering(keys)
        fp = pagination.fingerprint("experiments", filter_text, list(order_by), view)
        cursor = pagination.decode_token(page_token, fp)
        query = Experiment.select(Experiment, *[c.expr.alias(f"_s{i}") for i, c in enumerate(columns)])
        conditions = [_lifecycle_condition(Experiment.lifecycle_stage, view)]
        compiled = search.compile_experiment_filter(node)
        if compiled is not None:
            conditions.append(compiled)
        conditions.append(visibility.readable_condition("experiment", Experiment.experiment_id))
        if cursor is not None:
            _check_cursor(cursor, len(columns))
            conditions.append(querying.keyset_after(columns, cursor))
        for cond in conditions:
            if cond is not None:
                query = query.where(cond)
        rows = list(query.order_by(*querying.order_clauses(columns)).limit(size + 1))
        rows, token = pagination.trim(
            rows, size, lambda last: [getattr(last, f"_s{i}") for i in range(len(columns))], fp
        )
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

        written = self._retry(insert)  # a concurrent twin of this request id: the retry finds it
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
        row = Run.get_or_none(Run.run_id == run_id)
        if row is None:
            raise _run_not_found(run_id)
        return self._run_records([row])[0]

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
            row = Run.get(Run.run_id == run_id)
        return _run_info(row)

    def delete_run(self, run_id: str) -> None:
        """Soft delete (deleting a deleted run is a no-op)."""
        check_run_id(run_id)
        with write_transaction():
            # Existence is checked apart: MySQL counts changed rows, not matched ones.
            if not Run.select(Run.run_id).where(Run.run_id == run_id).exists():
                raise _run_not_found(run_id)
            Run.update(lifecycle_stage=DELETED, deleted_with_experiment=False).where(
                Run.run_id == run_id
            ).execute()

    def restore_run(self, run_id: str) -> None:
        check_run_id(run_id)
        with write_transaction():
            row = Run.get_or_none(Run.run_id == run_id)
            if row is None:
                raise _run_not_found(run_id)
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
        """The hot path: one transaction of a PK lookup, an insert and an upsert."""
        check_run_id(run_id)
        check_key(key, "metric", "key")
        ts = now_ms() if timestamp is None else check_time(timestamp, "timestamp")
        stored, kind = encode_value(value)
        # The caller's audit event travels with its point: the group is committed on another
        # caller's thread, where this call's context is not visible.
        self._metric_committer.submit((run_id, key, stored, kind, ts, step), recorder.current())

    def log_param(self, run_id: str, key: str, value: str) -> None:
        check_run_id(run_id)
        check_param(key, value, "key")
        self._retry(lambda: self._write_batch(run_id, [], {key: value}, {}, "param"))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        check_run_id(run_id)
        check_run_tag(key, value, "key")
        self._retry(lambda: self._write_batch(run_id, [], {}, {key: value}, "tag"))

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
        rows: list[tuple[Any, ...]] = []
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
        self._retry(lambda: self._write_batch(run_id, rows, param_map, tag_map, "params", request_id))

    def _commit_metric_group(self, items: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Exception]:
        """One transaction for the LogMetric points of concurrent callers: each run is checked,
        points of runs that refuse data get that run's error, the rest are written together,
        with the audit events of their callers (``(point, event or None)`` items)."""
        rows = [row for row, _ in items]

        def attempt() -> dict[str, Exception]:
            errors: dict[str, Exception] = {}
            sql = hot_sql()
            with write_transaction():
                for run_id in sorted({r[0] for r in rows}):  # one lock order for every writer
                    try:
                        _require_active_run_fast(sql, run_id)
                    except (NotFound, FailedPrecondition) as exc:
                        errors[run_id] = exc
                accepted = [r for r in rows if r[0] not in errors]
                if accepted:
                    _insert_metrics(accepted)
                events = [event for row, event in items if event is not None and row[0] not in errors]
                if events:
                    recorder.write_in_transaction(events)
            return errors

        # This thread's own event is among the items: keep the transaction hook from writing it
        # again (or at all, when its point was refused).
        with recorder.detached():
            return self._retry(attempt)

    def _write_batch(
        self,
        run_id: str,
        rows: list[tuple[Any, ...]],
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
            _require_active_run_fast(hot_sql(), run_id)
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
                _insert_metrics(rows)

    def _retry(self, operation: Callable[[], T]) -> T:
        """Reruns a write transaction that lost a race (unique violation, deadlock)."""
        for attempt in range(_RETRIES):
            try:
                return operation()
            except pw.IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
            except pw.DatabaseError as exc:
                if not is_retryable(exc) or attempt == _RETRIES - 1:
                    raise
            time.sleep(random.uniform(0, 0.005 * 2**attempt))  # de-synchronise the racers
        raise AssertionError("unreachable")

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
            raise _run_not_found(run_id)
        query = Metric.select(
            Metric.id, Metric.value, Metric.value_kind, Metric.timestamp, Metric.step
        ).where((Metric.run == run_id) & (Metric.key == key))
        if cursor is not None:
            _check_cursor(cursor, 3)
            query = query.where(pw.Tuple(Metric.step, Metric.timestamp, Metric.id) > pw.Tuple(*cursor))
        rows: list[Any] = list(
            query.order_by(Metric.step, Metric.timestamp, Metric.id).limit(size + 1).tuples()
        )
        rows, token = pagination.trim(rows, size, lambda last: [last[4], last[3], last[0]], fp)
        return [MetricPoint(key, decode_value(v, k), ts, step) for _id, v, k, ts, step in rows], token

    def get_metric_history_bulk(
        self, run_ids: Sequence[str], keys: Sequence[str], max_points: int
    ) -> list[MetricPoint]:
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
            raise _run_not_found(missing[0])
        query = (
            Metric.select(
                Metric.run, Metric.key, Metric.value, Metric.value_kind, Metric.timestamp, Metric.step
            )
            .where(Metric.run.in_(list(run_ids)) & Metric.key.in_(list(keys)))
            .order_by(Metric.run, Metric.key, Metric.step, Metric.timestamp, Metric.id)
            .tuples()
        )
        series: dict[tuple[str, str], list[MetricPoint]] = {}
        for run, key, value, kind, ts, step in query.iterator():
            series.setdefault((run, key), []).append(
                MetricPoint(key, decode_value(value, kind), ts, step, run)
            )
        out: list[MetricPoint] = []
        for points in series.values():
            out.extend(_sample(points, max_points))
        return out

    # -----------------------------------------------------------------------------------------
    # Search
    # -----------------------------------------------------------------------------------------

    @querying.search_guard()
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
        node = parse_and_validate(filter_text, RUNS_SCHEMA)
        keys = parse_order_by(list(order_by), RUNS_SCHEMA)
        ordering = search.run_ordering(keys)
        fp = pagination.fingerprint("runs", eids, filter_text, view, list(order_by))
        cursor = pagination.decode_token(page_token, fp)
        readable = visibility.readable_ids("experiment")
        if readable is not None:  # the experiments the caller cannot read hold no runs for it
            allowed = set(readable)
            eids = [eid for eid in eids if eid in allowed]
            if not eids:
                return [], ""

        compiled = search.compile_run_filter(node)
        lifecycle = _lifecycle_condition(Run.lifecycle_stage, view)
        base = [Run.experiment.in_(eids)] + [c for c in (lifecycle, compiled) if c is not None]
        if len(keys) == 1 and keys[0].entity == "metric":
            bounds = _metric_bounds(node, keys[0].key)
            # First pages of the same search (dashboards poll them) reuse their SQL text.
            cache_key = None if cursor is not None else (tuple(eids), filter_text, view, tuple(order_by))
            infos, last = _search_by_one_metric(
                keys[0].key, keys[0].ascending, base, cursor, size, bounds, cache_key
            )
            token = pagination.encode_token(last, fp) if last is not None else ""
            return self._records_of(infos), token

        columns = ordering.columns
        query = Run.select(Run, *[c.expr.alias(f"_s{i}") for i, c in enumerate(columns)])
        for alias, on in ordering.joins:
            query = query.join(alias, pw.JOIN.LEFT_OUTER, on=on)
        for condition in base:
            query = query.where(condition)
        if cursor is not None:
            _check_cursor(cursor, len(columns))
            query = query.where(querying.keyset_after(columns, cursor))
        rows = list(query.order_by(*querying.order_clauses(columns)).limit(size + 1))
        rows, token = pagination.trim(
            rows, size, lambda last: [getattr(last, f"_s{i}") for i in range(len(columns))], fp
        )
        return self._run_records(rows), token

    def _run_records(self, rows: Sequence[Run]) -> list[RunRecord]:
        return self._records_of([_run_info(r) for r in rows])

    def _records_of(self, infos: Sequence[RunInfoRecord]) -> list[RunRecord]:
        """Runs with their data: three queries for the whole page (hand-written SQL: building
        IN lists through Peewee cost more than running them)."""
        ids = [i.run_id for i in infos]
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        metrics: dict[str, list[MetricPoint]] = {i: [] for i in ids}
        sql = hot_sql()
        for chunk in _chunks(ids, _IN_CHUNK):
            marks = ", ".join([sql.param] * len(chunk))
            for run, key, value in db.execute_sql(sql.params_of + f"({marks})", chunk).fetchall():
                params[run][key] = value
            for run, key, value in db.execute_sql(sql.tags_of + f"({marks})", chunk).fetchall():
                tags[run][key] = value
            for run, key, value, kind, ts, step in db.execute_sql(
                sql.latest_of + f"({marks})", chunk
            ).fetchall():
                metrics[run].append(MetricPoint(key, decode_value(value, kind), ts, step))
        return [
            RunRecord(
                info=info,
                params=dict(sorted(params[info.run_id].items())),
                metrics=sorted(metrics[info.run_id], key=lambda m: m.key),
                tags=dict(sorted(tags[info.run_id].items())),
            )
            for info in infos
        ]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _metric_bounds(node: Node | None, key: str) -> list[tuple[str, float]]:
    """Top-level AND comparisons on metric ``key`` (``metrics.rmse < 0.8``): they bound the index
    range the ordered scan walks (the EXISTS filter still applies them exactly, so only the
    tightest lower bound, the tightest upper bound and one ``=`` are kept: a filter may hold a
    thousand of them, and each would nest the SQL one level deeper)."""
    items = node.items if isinstance(node, And) else (node,) if node is not None else ()
    lower: tuple[str, float] | None = None
    upper: tuple[str, float] | None = None
    equal: tuple[str, float] | None = None
    for c in items:
        if not (isinstance(c, Comparison) and c.entity == "metric" and c.key == key):
            continue
        bound = (c.op, float(c.value))  # type: ignore[arg-type]
        if c.op in (">", ">="):
            if lower is None or (bound[1], bound[0] == ">") > (lower[1], lower[0] == ">"):
                lower = bound
        elif c.op in ("<", "<="):
            if upper is None or (-bound[1], bound[0] == "<") > (-upper[1], upper[0] == "<"):
                upper = bound
        elif c.op == "=" and equal is None:
            equal = bound
    return [b for b in (lower, upper, equal) if b is not None]


def _search_by_one_metric(
    key: str,
    ascending: bool,
    conditions: list[Any],
    cursor: list[Any] | None,
    size: int,
    bounds: Sequence[tuple[str, float]] = (),
    cache_key: tuple[Any, ...] | None = None,
) -> tuple[list[RunInfoRecord], list[Any] | None]:
    """``order_by=["metrics.<key> ASC|DESC"]``, the most common search, driven by the
    latest_metric (key, value, run_id) index so it reads a page's worth of rows, not every match.

    Three segments in order: runs with a value (by value, then run_id), runs whose value is NaN,
    runs without the metric. The cursor is [segment, value, run_id]."""
    segment, value, after_id = (cursor[0], cursor[1], cursor[2]) if cursor is not None else (0, 0.0, None)
    if cursor is not None:
        _check_cursor(cursor, 3)
        # Tokens are not signed: a forged one must not steer the loop below (a huge float
        # segment would never reach 3) or reach the database with the wrong types.
        if not (
            type(segment) is int
            and 0 <= segment <= 2
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and isinstance(after_id, str)
        ):
            _check_cursor([], 3)
    rows: list[tuple[Any, ...]] = []
    segments: list[int] = []  # the segment of each row, for the cursor
    last: list[Any] | None = None
    while segment <= 2 and len(rows) <= size:
        want = size + 1 - len(rows)
        sql_key = None if cache_key is None else (db.obj, cache_key, segment, want)
        cached = _SQL_CACHE.get(sql_key) if sql_key is not None else None
        if cached is not None:
            found = db.execute_sql(*cached).fetchall()
            rows.extend(found)
            segments.extend([segment] * len(found))
            if len(rows) > size:
                break
            segment, value, after_id = segment + 1, 0.0, None
            continue
        o = LatestMetric.alias("o0")
        if segment == 2:
            query: Any = Run.select(*_RUN_COLUMNS, pw.Value(0.0).alias("_v")).where(
                ~pw.fn.EXISTS(o.select(pw.SQL("1")).where((o.run == Run.run_id) & (o.key == key)))
            )
            order = [Run.run_id.asc() if ascending else Run.run_id.desc()]
            if after_id is not None:
                query = query.where(Run.run_id > after_id if ascending else Run.run_id < after_id)
        else:
            query = (
                o.select(*_RUN_COLUMNS, o.value.alias("_v"))
                .join(Run, pw.JOIN.CROSS)  # CROSS forces SQLite to walk the metric index first
                .where((Run.run_id == o.run) & (o.key == key))
            )
            if segment == 0:
                query = query.where(o.value_kind != VALUE_NAN)
                for op, bound_value in bounds:
                    query = query.where(querying.number_op(o.value, op, bound_value))
                order = [o.value.asc(), o.run.asc()] if ascending else [o.value.desc(), o.run.desc()]
                if after_id is not None:
                    position = pw.Tuple(o.value, o.run)
                    bound = pw.Tuple(value, after_id)
                    query = query.where(position > bound if ascending else position < bound)
            else:
                query = query.where(o.value_kind == VALUE_NAN)
                order = [o.run.asc() if ascending else o.run.desc()]
                if after_id is not None:
                    query = query.where(o.run > after_id if ascending else o.run < after_id)
        for condition in conditions:
            query = query.where(condition)
        compiled_sql = query.order_by(*order).limit(want).sql()
        if sql_key is not None:
            if len(_SQL_CACHE) >= _SQL_CACHE_SIZE:
                _SQL_CACHE.clear()
            _SQL_CACHE[sql_key] = compiled_sql
        # Raw rows: Peewee's per-field conversion is not needed for these plain columns.
        found = db.execute_sql(*compiled_sql).fetchall()
        rows.extend(found)
        segments.extend([segment] * len(found))
        if len(rows) > size:
            break
        segment, value, after_id = segment + 1, 0.0, None
    if len(rows) > size:
        rows = rows[:size]
        tail = rows[-1]
        last = [segments[size - 1], float(tail[-1] or 0.0), tail[0]]
    return [_info_of(row) for row in rows], last


_SQL_CACHE: dict[tuple[Any, ...], tuple[str, list[Any]]] = {}
_SQL_CACHE_SIZE = 512

_RUN_COLUMNS = (
    Run.run_id, Run.experiment, Run.run_name, Run.user_id, Run.status, Run.start_time, Run.end_time,
    Run.artifact_uri, Run.lifecycle_stage, Run.parent_run_id,
)  # fmt: skip


def _info_of(row: tuple[Any, ...]) -> RunInfoRecord:
    """A RunInfoRecord from a tuple that starts with the _RUN_COLUMNS."""
    return RunInfoRecord(
        run_id=row[0],
        experiment_id=str(row[1]),
        run_name=row[2],
        user_id=row[3],
        status=row[4],
        start_time=row[5],
        end_time=row[6],
        artifact_uri=row[7],
        lifecycle_stage=row[8],
        parent_run_id=row[9] or "",
    )


def _run_not_found(run_id: str) -> NotFound:
    return NotFound(f"run {run_id} does not exist", reason="RUN_NOT_FOUND", metadata={"run_id": run_id})


def _require_active_run(run_id: str, action: str) -> None:
    """A primary-key lookup: the run must exist and not be deleted (checked on every write,
    so a run deleted through another replica refuses data at once). The logging paths use the
    same check in ``_require_active_run_fast``, which on MySQL also takes the run's row lock:
    writers of one run then queue instead of deadlocking on latest_metric's gap locks."""
    stage = Run.select(Run.lifecycle_stage).where(Run.run_id == run_id).scalar()
    if stage is None:
        raise _run_not_found(run_id)
    if stage != ACTIVE:
        raise FailedPrecondition(
            f"cannot {action} run {run_id}: it is deleted (restore it with RestoreRun first)",
            reason="RUN_DELETED",
            metadata={"run_id": run_id},
        )


def _run_info(r: Run) -> RunInfoRecord:
    return RunInfoRecord(
        run_id=r.run_id,
        run_name=r.run_name,
        experiment_id=str(r.experiment_id),
        user_id=r.user_id,
        status=r.status,
        start_time=r.start_time,
        end_time=r.end_time,
        artifact_uri=r.artifact_uri,
        lifecycle_stage=r.lifecycle_stage,
        parent_run_id=r.parent_run_id or "",
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


def _lifecycle_condition(column: Any, view: str) -> pw.ColumnBase | None:
    if view == "ALL":
        return None
    return column == (DELETED if view == "DELETED_ONLY" else ACTIVE)


def _check_cursor(cursor: list[Any], expected: int) -> None:
    if len(cursor) != expected:
        raise InvalidArgument(
            "page_token is malformed: pass the next_page_token of a previous response unchanged",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
        )


class _GroupCommit:
    """Group commit: concurrent single-point writes share one transaction.

    The first caller becomes the leader and commits everything queued so far (its own point
    included) in one transaction, then hands leadership to the oldest waiting caller, if any.
    Every caller returns only after its point is committed (or raises its own error), so the
    semantics of a synchronous LogMetric are unchanged; under load, BEGIN/COMMIT, the run check
    and the statements are paid once per group instead of once per point."""

    def __init__(self, commit: Callable[[list[tuple[tuple[Any, ...], Any]]], dict[str, Exception]]) -> None:
        self._commit = commit
        self._lock = threading.Lock()
        self._pending: list[tuple[tuple[Any, ...], Any, _Waiter]] = []
        self._leading = False

    def submit(self, row: tuple[Any, ...], tag: Any = None) -> None:
        """Commits ``row`` with the group; ``tag`` goes to the commit function with it."""
        waiter = _Waiter()
        with self._lock:
            self._pending.append((row, tag, waiter))
            lead = not self._leading
            self._leading = True
        if not lead:
            waiter.done.wait()
            if not waiter.lead:
                waiter.raise_error()
                return
        with self._lock:
            group, self._pending = self._pending, []
        try:
            errors = self._commit([(r, t) for r, t, _ in group])
            for r, _, w in group:
                w.error = errors.get(r[0])
        except Exception as exc:  # noqa: BLE001 - every caller of the group sees the failure
            for _, _, w in group:
                w.error = exc
        finally:
            with self._lock:
                if self._pending:
                    nxt = self._pending[0][2]
                    nxt.lead = True
                    nxt.done.set()
                else:
                    self._leading = False
            for _, _, w in group:
                if w is not waiter:
                    w.done.set()
        waiter.raise_error()


class _Waiter:
    __slots__ = ("done", "error", "lead")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.lead = False

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


class _HotSql:
    """Hand-written SQL of the metric hot path, built once per database. Peewee's query builder
    costs more than the database itself for these tiny statements (profiled: ~70% of a
    LogMetric call), so the hot path skips it; every other path uses Peewee."""

    def __init__(self) -> None:
        mysql = is_mysql()
        q = "`" if mysql else '"'
        self.param = db.obj.param
        self.mysql = mysql
        cols = ", ".join(f"{q}{c}{q}" for c in ("run_id", "key", "value", "value_kind", "timestamp", "step"))
        self.check_run = f"SELECT {q}lifecycle_stage{q} FROM {q}run{q} WHERE {q}run_id{q} = {self.param}" + (
            " FOR UPDATE" if mysql else ""
        )
        self.insert_metric = f"INSERT INTO {q}metric{q} ({cols}) VALUES "
        self.insert_latest = f"INSERT INTO {q}latest_metric{q} ({cols}) VALUES "
        # Move the latest point forward only: (step, timestamp, value) must grow.
        self.upsert_tail = (
            ' ON CONFLICT ("run_id", "key") DO UPDATE SET "value" = EXCLUDED."value", '
            '"value_kind" = EXCLUDED."value_kind", "timestamp" = EXCLUDED."timestamp", "step" = EXCLUDED."step" '
            'WHERE ("latest_metric"."step", "latest_metric"."timestamp", "latest_metric"."value") '
            '< (EXCLUDED."step", EXCLUDED."timestamp", EXCLUDED."value")'
        )
        p = self.param
        self.mysql_insert_latest = (
            f"INSERT IGNORE INTO `latest_metric` ({cols}) VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
        )
        self.mysql_advance_latest = (
            f"UPDATE `latest_metric` SET `value` = {p}, `value_kind` = {p}, `timestamp` = {p}, `step` = {p} "
            f"WHERE `run_id` = {p} AND `key` = {p} AND (`step`, `timestamp`, `value`) < ({p}, {p}, {p})"
        )
        kv = f"{q}run_id{q}, {q}key{q}, {q}value{q}"
        self.params_of = f"SELECT {kv} FROM {q}param{q} WHERE {q}run_id{q} IN "
        self.tags_of = f"SELECT {kv} FROM {q}run_tag{q} WHERE {q}run_id{q} IN "
        self.latest_of = f"SELECT {cols} FROM {q}latest_metric{q} WHERE {q}run_id{q} IN "
        self._values: dict[int, str] = {}

    def values(self, count: int) -> str:
        found = self._values.get(count)
        if found is None:
            one = "(" + ", ".join([self.param] * 6) + ")"
            found = self._values[count] = ", ".join([one] * count)
        return found


# Keyed by the database object itself (not its id, which a later database could reuse).
_hot_sql: dict[Any, _HotSql] = {}


def hot_sql() -> _HotSql:
    found = _hot_sql.get(db.obj)
    if found is None:
        found = _hot_sql[db.obj] = _HotSql()
    return found


def _require_active_run_fast(sql: _HotSql, run_id: str) -> None:
    row = db.execute_sql(sql.check_run, (run_id,)).fetchone()
    if row is None:
        raise _run_not_found(run_id)
    if row[0] != ACTIVE:
        raise FailedPrecondition(
            f"cannot log to run {run_id}: it is deleted (restore it with RestoreRun first)",
            reason="RUN_DELETED",
            metadata={"run_id": run_id},
        )


def _flat(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [v for row in rows for v in row]


def _insert_metrics(rows: list[tuple[Any, ...]]) -> None:
    """Appends history rows ``(run_id, key, value, value_kind, timestamp, step)`` and moves each
    key's latest value forward (never backwards, whatever the order concurrent writers commit)."""
    sql = hot_sql()
    db.execute_sql(sql.insert_metric + sql.values(len(rows)), _flat(rows))
    latest: dict[tuple[str, str], tuple[Any, ...]] = {}
    for row in rows:
        seen = latest.get((row[0], row[1]))
        if seen is None or (row[5], row[4], row[2]) > (seen[5], seen[4], seen[2]):
            latest[(row[0], row[1])] = row
    newest = [latest[k] for k in sorted(latest)]  # one lock order for every writer
    if not sql.mysql:
        db.execute_sql(sql.insert_latest + sql.values(len(newest)) + sql.upsert_tail, _flat(newest))
        return
    # MySQL's upsert cannot be conditional as a whole: insert if absent, else update if newer.
    for run_id, key, value, kind, ts, step in newest:
        if db.execute_sql(sql.mysql_insert_latest, (run_id, key, value, kind, ts, step)).rowcount == 1:
            continue
        db.execute_sql(sql.mysql_advance_latest, (value, kind, ts, step, run_id, key, step, ts, value))


def _sample(points: list[MetricPoint], max_points: int) -> list[MetricPoint]:
    """At most ``max_points`` evenly spread points, always with the first and the last."""
    if max_points <= 0 or len(points) <= max_points:
        return points
    if max_points == 1:
        return [points[-1]]
    last = len(points) - 1
    picked = sorted({round(i * last / (max_points - 1)) for i in range(max_points)})
    return [points[i] for i in picked]


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
