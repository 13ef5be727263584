"""Logged models (MLflow 3's LoggedModel): a model recorded in an experiment with an id, a status
(PENDING while its files upload, then READY or FAILED), tags and write-once params.

A logged model's files live inside a run's artifacts, in the folder ``artifact_path`` (its name):
the run it was logged from (``source_run_id``), or, when it was created without one, a run keel
creates in the same transaction to hold them (named after the model, FINISHED at once, tag
``mlflow.loggedModelHolder=true``). So ``runs:/<run_id>/<name>`` loads it as well, as in MLflow 2.

One folder holds one model: while a model is PENDING or READY and not deleted it claims
``(run, artifact_path)`` (``LoggedModel.path_claim``, unique in the database, so concurrent
creations on several replicas cannot both win). A second model of the same name in the same run
is ALREADY_EXISTS until the first is deleted or FAILED.

This module owns its transactions and never imports grpc; ``servicer.py`` converts.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import peewee as pw

from keel_server.audit import recorder
from keel_server.auth import visibility
from keel_server.common import pagination, querying
from keel_server.common.db import (
    Experiment,
    LoggedModel,
    LoggedModelParam,
    LoggedModelTag,
    Run,
    RunTag,
    db,
    is_retryable,
    now_ms,
    retry_transaction,
    write_transaction,
)
from keel_server.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, quote
from keel_server.common.filters import (
    KEY_VALUE_OPS,
    NUMBER,
    NUMBER_OPS,
    STRING_IN_OPS,
    Comparison,
    FieldSpec,
    FilterSchema,
    OrderKey,
    parse_and_validate,
    parse_order_by,
)
from keel_server.common.paths import check_safe
from keel_server.tracking.records import (
    ACTIVE,
    DELETED,
    MAX_KEY_LENGTH,
    check_param,
    check_run_id,
    check_run_tag,
    parse_experiment_id,
    run_not_found,
)
from keel_server.tracking.store import active_experiment, generate_run_name

STATUSES = ("PENDING", "READY", "FAILED")
FINAL_STATUSES = ("READY", "FAILED")
# The tag of a run keel created to hold the files of a model logged without a source run.
HOLDER_TAG = "mlflow.loggedModelHolder"
MAX_NAME_LENGTH = MAX_KEY_LENGTH
MAX_MODEL_TYPE_LENGTH = 250
MAX_STATUS_MESSAGE_LENGTH = 1000
MAX_TAGS = MAX_PARAMS = 100  # per request, as MLflow's client batches them
MAX_SEARCH_EXPERIMENTS = 100
SEARCH_DEFAULT_PAGE, SEARCH_MAX_PAGE = 100, 1000
_MODEL_ID_RE = re.compile(r"^m-[0-9a-f]{32}$")

# What SearchLoggedModels accepts (MLflow's SearchLoggedModelsUtils names, metrics aside).
LOGGED_MODELS_SCHEMA = FilterSchema(
    resource="logged models",
    attributes={
        "name": FieldSpec(STRING_IN_OPS),
        "model_id": FieldSpec(STRING_IN_OPS),
        "model_type": FieldSpec(STRING_IN_OPS),
        "status": FieldSpec(STRING_IN_OPS),
        "source_run_id": FieldSpec(STRING_IN_OPS),
        "run_id": FieldSpec(STRING_IN_OPS),
        "creation_time": FieldSpec(NUMBER_OPS, NUMBER),
        "last_updated_time": FieldSpec(NUMBER_OPS, NUMBER),
    },
    entities={
        "tag": FieldSpec(KEY_VALUE_OPS, orderable=False),
        "param": FieldSpec(KEY_VALUE_OPS, orderable=False),
    },
    aliases={"creation_timestamp": "creation_time", "last_updated_timestamp": "last_updated_time"},
    unsupported={
        "metric": "metrics cannot be used in a logged models search in keel: filter the runs that logged them",
        "dataset": "dataset filters are not supported by keel's logged models",
    },
)
_COLUMNS: dict[str, Any] = {
    "name": LoggedModel.name,
    "model_id": LoggedModel.model_id,
    "model_type": LoggedModel.model_type,
    "status": LoggedModel.status,
    "source_run_id": LoggedModel.source_run_id,
    "run_id": LoggedModel.run,
    "creation_time": LoggedModel.creation_time,
    "last_updated_time": LoggedModel.last_updated_time,
}
_SELECTED = (
    LoggedModel.model_id, LoggedModel.experiment, LoggedModel.name, LoggedModel.source_run_id,
    LoggedModel.run, LoggedModel.artifact_path, Run.artifact_uri, LoggedModel.status,
    LoggedModel.status_message, LoggedModel.model_type, LoggedModel.creation_time,
    LoggedModel.last_updated_time, LoggedModel.lifecycle_stage,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LoggedModelRecord:
    model_id: str
    experiment_id: str
    name: str
    source_run_id: str  # as given; '' when keel created the run
    run_id: str  # the run whose artifacts hold the files
    artifact_path: str
    artifact_uri: str  # <run artifact_uri>/<artifact_path>
    status: str
    status_message: str
    model_type: str
    creation_time: int
    last_updated_time: int
    lifecycle_stage: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def check_model_id(model_id: str, field_name: str = "model_id") -> str:
    if not _MODEL_ID_RE.match(model_id):
        raise InvalidArgument(
            f"model_id {quote(model_id)} is not valid: logged model ids are 'm-' and 32 lowercase hex characters",
            reason="INVALID_MODEL_ID",
            field=field_name,
        )
    return model_id


def check_model_name(name: str) -> str:
    """A name is the folder of the model's files in its run: a relative path of plain segments."""
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"logged model name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}",
            reason="INVALID_MODEL_NAME",
            field="name",
        )
    check_safe(name, "name")
    if any(segment in ("", ".") for segment in name.split("/")):
        raise InvalidArgument(
            f"logged model name {quote(name)} is not valid: it names the folder of the model's files in "
            "its run, so it must be a relative path without empty or '.' segments (such as 'model')",
            reason="INVALID_MODEL_NAME",
            field="name",
        )
    return name


def _check_length(value: str, limit: int, field_name: str, reason: str) -> None:
    if len(value) > limit:
        raise InvalidArgument(
            f"{field_name} is {len(value)} characters long; the limit is {limit}",
            reason=reason,
            field=field_name,
        )


def _checked_tags(tags: Sequence[tuple[str, str]], name: str = "tags") -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(
            f"at most {MAX_TAGS} tags per request, got {len(tags)}: send them in several requests",
            reason="BATCH_TOO_LARGE",
            field=name,
        )
    out: dict[str, str] = {}
    for i, (key, value) in enumerate(tags):
        check_run_tag(key, value, f"{name}[{i}]")
        out[key] = value  # the last value of a repeated key wins
    return out


def _checked_params(params: Sequence[tuple[str, str]], name: str = "params") -> dict[str, str]:
    if len(params) > MAX_PARAMS:
        raise InvalidArgument(
            f"at most {MAX_PARAMS} params per request, got {len(params)}: send them in several requests",
            reason="BATCH_TOO_LARGE",
            field=name,
        )
    out: dict[str, str] = {}
    for i, (key, value) in enumerate(params):
        where = f"{name}[{i}]"
        check_param(key, value, where)
        if key in out and out[key] != value:
            raise InvalidArgument(
                f"{where}: param '{key}' appears twice with different values ('{out[key]}' and '{value}')",
                reason="PARAM_CONFLICT",
                field=where,
            )
        out[key] = value
    return out


def _not_found(model_id: str) -> NotFound:
    return NotFound(
        f"logged model {model_id} does not exist",
        reason="LOGGED_MODEL_NOT_FOUND",
        metadata={"model_id": model_id},
    )


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


class LoggedModelStore:
    """Domain logic of logged models over the shared metadata database."""

    def create(
        self,
        experiment_id: str,
        name: str = "",
        source_run_id: str = "",
        model_type: str = "",
        tags: Sequence[tuple[str, str]] = (),
        params: Sequence[tuple[str, str]] = (),
    ) -> LoggedModelRecord:
        eid = parse_experiment_id(experiment_id)
        if name:
            check_model_name(name)
        if source_run_id:
            check_run_id(source_run_id, "source_run_id")
        _check_length(model_type, MAX_MODEL_TYPE_LENGTH, "model_type", "INVALID_MODEL_TYPE")
        tag_map, param_map = _checked_tags(tags), _checked_params(params)
        model_id = f"m-{uuid.uuid4().hex}"
        if not name:
            name = generate_run_name()  # MLflow names an unnamed model the same way

        def insert() -> None:
            with write_transaction():
                experiment = _active_experiment(experiment_id, eid)
                now = now_ms()
                if source_run_id:
                    run_id = _source_run(source_run_id, eid)
                else:
                    run_id = _insert_holder_run(experiment, name, now)
                LoggedModel.insert(
                    model_id=model_id,
                    experiment=eid,
                    run=run_id,
                    source_run_id=source_run_id,
                    name=name,
                    artifact_path=name,
                    path_claim=name,
                    status="PENDING",
                    model_type=model_type,
                    lifecycle_stage=ACTIVE,
                    creation_time=now,
                    last_updated_time=now,
                ).execute()
                recorder.note(resource_id=model_id, scope=("experiment", str(eid)))
                if tag_map:
                    LoggedModelTag.insert_many(
                        [{"model": model_id, "key": k, "value": v} for k, v in tag_map.items()]
                    ).execute()
                if param_map:
                    LoggedModelParam.insert_many(
                        [{"model": model_id, "key": k, "value": v} for k, v in param_map.items()]
                    ).execute()

        try:
            retry_transaction(insert)
        except pw.IntegrityError as exc:
            if is_retryable(exc):
                raise
            raise _folder_taken(source_run_id, name) from None
        return self.get(model_id)

    def get(self, model_id: str, allow_deleted: bool = False) -> LoggedModelRecord:
        check_model_id(model_id)
        with db.connection_context():
            row = _base_query().where(LoggedModel.model_id == model_id).tuples().first()
            if row is None or (row[12] != ACTIVE and not allow_deleted):
                raise _not_found(model_id)
            return _records([row])[0]

    def update_status(self, model_id: str, status: str, status_message: str = "") -> LoggedModelRecord:
        """READY or FAILED (again: a retry succeeds). READY claims the folder again, so it is
        ALREADY_EXISTS when another model took it meanwhile; FAILED frees it."""
        check_model_id(model_id)
        if status not in FINAL_STATUSES:
            raise InvalidArgument(
                f"status {status!r} cannot be set: a logged model becomes READY or FAILED (PENDING is the "
                "status it is created with)",
                reason="INVALID_MODEL_STATUS",
                field="status",
            )
        _check_length(status_message, MAX_STATUS_MESSAGE_LENGTH, "status_message", "INVALID_STATUS_MESSAGE")
        row: LoggedModel | None = None

        def update() -> None:
            nonlocal row
            with write_transaction():
                row = _active_model(model_id, "update")
                recorder.note(before=f"status={row.status}")
                LoggedModel.update(
                    status=status,
                    status_message=status_message,
                    path_claim=row.artifact_path if status == "READY" else None,
                    last_updated_time=now_ms(),
                ).where(LoggedModel.model_id == model_id).execute()

        try:
            retry_transaction(update)
        except pw.IntegrityError as exc:
            if is_retryable(exc) or row is None:
                raise
            raise _folder_taken(row.run_id, row.artifact_path) from None
        return self.get(model_id)

    def delete(self, model_id: str) -> None:
        """Soft delete (deleting a deleted model is a no-op); the files stay in the run."""
        check_model_id(model_id)
        with write_transaction():
            if not LoggedModel.select(LoggedModel.model_id).where(LoggedModel.model_id == model_id).exists():
                raise _not_found(model_id)
            LoggedModel.update(lifecycle_stage=DELETED, path_claim=None, last_updated_time=now_ms()).where(
                LoggedModel.model_id == model_id
            ).execute()

    def set_tags(self, model_id: str, tags: Sequence[tuple[str, str]]) -> LoggedModelRecord:
        check_model_id(model_id)
        tag_map = _checked_tags(tags)

        def write() -> None:
            with write_transaction():
                _active_model(model_id, "set tags of")
                if tag_map:
                    querying.upsert(LoggedModelTag, [{"model": model_id, "key": k, "value": v} for k, v in tag_map.items()],
                            [LoggedModelTag.model, LoggedModelTag.key], [LoggedModelTag.value])  # fmt: skip
                    _touch(model_id)

        retry_transaction(write, unique_violations=True)  # concurrent inserts of one key: rerun
        return self.get(model_id)

    def delete_tag(self, model_id: str, key: str) -> None:
        check_model_id(model_id)
        with write_transaction():
            _active_model(model_id, "delete a tag of")
            deleted = (
                LoggedModelTag.delete()
                .where((LoggedModelTag.model == model_id) & (LoggedModelTag.key == key))
                .execute()
            )
            if not deleted:
                raise NotFound(
                    f"logged model {model_id} has no tag {quote(key)}",
                    reason="TAG_NOT_FOUND",
                    metadata={"model_id": model_id, "key": key},
                )
            _touch(model_id)

    def log_params(self, model_id: str, params: Sequence[tuple[str, str]]) -> None:
        """Write-once, as a run's params: the same value again is accepted, another refused."""
        check_model_id(model_id)
        param_map = _checked_params(params)

        def write() -> None:
            with write_transaction():
                _active_model(model_id, "log params to")
                if not param_map:
                    return
                existing: dict[str, str] = dict(
                    LoggedModelParam.select(LoggedModelParam.key, LoggedModelParam.value)
                    .where((LoggedModelParam.model == model_id) & LoggedModelParam.key.in_(list(param_map)))
                    .tuples()  # type: ignore[arg-type]  # peewee's stubs type rows as models
                )
                for index, (key, value) in enumerate(param_map.items()):
                    if key in existing and existing[key] != value:
                        raise InvalidArgument(
                            f"param '{key}' of logged model {model_id} is already '{existing[key]}' and cannot be "
                            f"changed to '{value}': params are write-once",
                            reason="PARAM_ALREADY_SET",
                            field=f"params[{index}]",
                            metadata={"model_id": model_id, "key": key},
                        )
                new = [
                    {"model": model_id, "key": k, "value": v}
                    for k, v in param_map.items()
                    if k not in existing
                ]
                if new:
                    LoggedModelParam.insert_many(new).execute()
                    _touch(model_id)

        retry_transaction(write, unique_violations=True)  # a concurrent writer of a key: rerun compares

    def search(
        self,
        experiment_ids: Sequence[str],
        filter_text: str,
        order_by: Sequence[str],
        page_size: int,
        page_token: str,
    ) -> tuple[list[LoggedModelRecord], str]:
        """One page of the active logged models of ``experiment_ids`` the caller may read."""
        if not experiment_ids or len(experiment_ids) > MAX_SEARCH_EXPERIMENTS:
            raise InvalidArgument(
                f"experiment_ids must hold 1..{MAX_SEARCH_EXPERIMENTS} ids, got {len(experiment_ids)}",
                reason="INVALID_EXPERIMENT_IDS",
                field="experiment_ids",
            )
        eids = sorted({parse_experiment_id(e, "experiment_ids") for e in experiment_ids})
        size = pagination.page_size(page_size, SEARCH_DEFAULT_PAGE, SEARCH_MAX_PAGE)
        node = parse_and_validate(filter_text, LOGGED_MODELS_SCHEMA)
        columns = _ordering(parse_order_by(list(order_by), LOGGED_MODELS_SCHEMA))
        fp = pagination.fingerprint("logged-models", eids, filter_text, list(order_by))
        cursor = pagination.decode_token(page_token, fp)
        readable = visibility.readable_ids("experiment")
        if readable is not None:  # experiments the caller cannot read hold no models for it
            eids = [eid for eid in eids if eid in set(readable)]
            if not eids:
                return [], ""
        with db.connection_context(), querying.search_guard():
            query = _base_query(*[c.expr.alias(f"_s{i}") for i, c in enumerate(columns)]).where(
                LoggedModel.experiment.in_(eids) & (LoggedModel.lifecycle_stage == ACTIVE)
            )
            compiled = querying.compile_filter(node, _comparison)
            if compiled is not None:
                query = query.where(compiled)
            if cursor is not None:
                querying.check_cursor(cursor, len(columns))
                query = query.where(querying.keyset_after(columns, cursor))
            rows: list[Any] = list(query.order_by(*querying.order_clauses(columns)).limit(size + 1).tuples())
            rows, token = pagination.trim(rows, size, lambda last: list(last[len(_SELECTED) :]), fp)
            return _records(rows), token


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _base_query(*extra: Any) -> Any:
    return LoggedModel.select(*_SELECTED, *extra).join(Run, on=(LoggedModel.run == Run.run_id))


def _records(rows: Sequence[Sequence[Any]]) -> list[LoggedModelRecord]:
    """Records of rows that start with ``_SELECTED``, with their tags and params (two queries)."""
    ids = [row[0] for row in rows]
    tags: dict[str, dict[str, str]] = {i: {} for i in ids}
    params: dict[str, dict[str, str]] = {i: {} for i in ids}
    if ids:
        for owner, table in ((tags, LoggedModelTag), (params, LoggedModelParam)):
            query = (
                table.select(table.model, table.key, table.value)
                .where(table.model.in_(ids))
                .order_by(table.key)
            )
            rows_of: Any = query.tuples()  # peewee's stubs type rows as models
            for model_id, key, value in rows_of:
                owner[model_id][key] = value
    return [
        LoggedModelRecord(
            model_id=row[0],
            experiment_id=str(row[1]),
            name=row[2],
            source_run_id=row[3],
            run_id=row[4],
            artifact_path=row[5],
            artifact_uri=f"{row[6]}/{row[5]}",
            status=row[7],
            status_message=row[8],
            model_type=row[9],
            creation_time=row[10],
            last_updated_time=row[11],
            lifecycle_stage=row[12],
            tags=tags[row[0]],
            params=params[row[0]],
        )
        for row in rows
    ]


def _active_experiment(experiment_id: str, eid: int) -> Experiment:
    return active_experiment(experiment_id, "create a logged model", eid)


def _source_run(run_id: str, eid: int) -> str:
    row = Run.select(Run.experiment, Run.lifecycle_stage).where(Run.run_id == run_id).tuples().first()
    if row is None:
        raise run_not_found(run_id)
    if row[1] != ACTIVE:
        raise FailedPrecondition(
            f"cannot log a model from run {run_id}: it is deleted (restore it with RestoreRun first)",
            reason="RUN_DELETED",
            metadata={"run_id": run_id},
        )
    if row[0] != eid:
        raise InvalidArgument(
            f"source run {run_id} belongs to experiment {row[0]}, not {eid}: a logged model belongs to its "
            "source run's experiment",
            reason="INVALID_SOURCE_RUN",
            field="source_run_id",
            metadata={"run_id": run_id},
        )
    return run_id


def _insert_holder_run(experiment: Experiment, name: str, now: int) -> str:
    """A FINISHED run of ``experiment`` that holds the files of a model logged without a run."""
    run_id = uuid.uuid4().hex
    Run.insert(
        run_id=run_id,
        experiment=experiment.experiment_id,
        run_name=name,
        status="FINISHED",
        start_time=now,
        end_time=now,
        artifact_uri=f"{experiment.artifact_location}/{run_id}/artifacts",
        lifecycle_stage=ACTIVE,
    ).execute()
    RunTag.insert(run=run_id, key=HOLDER_TAG, value="true").execute()
    return run_id


def _active_model(model_id: str, action: str) -> LoggedModel:
    row = LoggedModel.get_or_none(LoggedModel.model_id == model_id)
    if row is None:
        raise _not_found(model_id)
    if row.lifecycle_stage != ACTIVE:
        raise FailedPrecondition(
            f"cannot {action} logged model {model_id}: it is deleted",
            reason="LOGGED_MODEL_DELETED",
            metadata={"model_id": model_id},
        )
    return row


def _touch(model_id: str) -> None:
    LoggedModel.update(last_updated_time=now_ms()).where(LoggedModel.model_id == model_id).execute()


def _folder_taken(run_id: str, name: str) -> AlreadyExists:
    """The (run, folder) of a model is held by another PENDING or READY model."""
    holder = (
        LoggedModel.select(LoggedModel.model_id)
        .where((LoggedModel.run == run_id) & (LoggedModel.path_claim == name))
        .scalar()
        if run_id
        else None
    )
    return AlreadyExists(
        f"run {run_id} already holds logged model {holder or '(another)'} named {quote(name)}: keel keeps a "
        "model's files in its run under its name, so a name is used once per run; choose another name "
        "(such as 'checkpoint-<step>'), or delete the earlier model first",
        reason="LOGGED_MODEL_ALREADY_EXISTS",
        field="name",
        metadata={"run_id": run_id, "name": name, "model_id": holder or ""},
    )


def _comparison(c: Comparison) -> Any:
    if c.entity == "tag":
        return querying.tag_exists(LoggedModelTag.model, LoggedModel.model_id, c)
    if c.entity == "param":
        return querying.tag_exists(LoggedModelParam.model, LoggedModel.model_id, c)
    column = _COLUMNS[c.key]
    if c.key in ("creation_time", "last_updated_time"):
        return querying.number_op(column, c.op, c.value)
    return querying.string_op(column, c.op, c.value)


def _ordering(keys: Sequence[OrderKey]) -> list[querying.SortColumn]:
    """Sort components (default creation_time DESC), always ending with model_id."""
    if not keys:
        keys = [OrderKey("attribute", "creation_time", ascending=False)]
    columns = [querying.SortColumn(_COLUMNS[k.key], k.ascending) for k in keys]
    if not any(k.key == "model_id" for k in keys):
        columns.append(querying.SortColumn(LoggedModel.model_id, columns[-1].ascending))
    return columns
