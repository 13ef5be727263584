"""The model registry's domain logic: registered models, race-free versions, snapshots,
stages, aliases and their history. Owns its transactions; knows nothing of gRPC.

Concurrency rules (the same on SQLite, PostgreSQL and MariaDB):

- Every write that depends on a model's other rows starts by taking the model's row lock
  inside ``write_transaction()``: ``SELECT ... FOR UPDATE`` on PostgreSQL/MariaDB (SQLite's
  BEGIN IMMEDIATE already serialises all writers). The lock is the first statement, so on
  MariaDB's REPEATABLE READ every later read of the transaction sees what committed before
  the lock was granted.
- Version numbers come from ``registered_model.last_version``, incremented under that lock
  and read back in the same transaction: distinct, gap-free, never reused. A transaction that
  fails rolls its increment back, so failures leave no gap either.
- Registration copies the files after the PENDING_REGISTRATION row committed, so a slow copy
  never holds the lock; the version then becomes READY or FAILED_REGISTRATION.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import peewee as pw

from keel.shared import pages
from keel_server.artifacts.store import REGISTRY_FOLDER, resolve_artifact_uri
from keel_server.audit import recorder
from keel_server.auth import visibility
from keel_server.common import pagination, querying
from keel_server.common.app import App
from keel_server.common.db import (
    ModelHistoryEvent,
    ModelVersion,
    ModelVersionTag,
    RegisteredModel,
    RegisteredModelAlias,
    RegisteredModelTag,
    is_retryable,
    now_ms,
    retry_transaction,
    write_transaction,
)
from keel_server.common.errors import (
    Aborted,
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    KeelError,
    NotFound,
)
from keel_server.common.filters import (
    Comparison,
    Node,
    OrderKey,
    parse_and_validate,
    parse_order_by,
)
from keel_server.common.prepared import instance, update_returning

# Generic filter/keyset helpers (LIKE that is case-sensitive on every backend, keyset predicates).
from keel_server.common.querying import (
    SortColumn,
    compile_filter,
    keyset_after,
    number_op,
    order_clauses,
    search_guard,
    string_op,
    tag_exists,
)
from keel_server.common.uris import is_runs_uri, parse_models_uri, parse_runs_uri
from keel_server.registry import approvals
from keel_server.registry import statements as sql
from keel_server.registry import validation as check
from keel_server.registry.fields import (
    MODEL_ATTRIBUTE_COLUMNS,
    MODEL_VERSIONS_SCHEMA,
    NUMERIC_ATTRIBUTES,
    REGISTERED_MODELS_SCHEMA,
    VERSION_ATTRIBUTE_COLUMNS,
)
from keel_server.registry.records import (
    ALIAS_DELETED,
    ALIAS_SET,
    FAILED_REGISTRATION,
    PENDING_REGISTRATION,
    READY,
    STAGE_TRANSITION,
    STAGES,
    HistoryRecord,
    ModelRecord,
    Page,
    VersionRecord,
)

log = logging.getLogger("keel.registry")

# Page sizes: (default, maximum), as documented in the proto and read by the SDK too.
MODELS_PAGE = pages.REGISTERED_MODELS
VERSIONS_PAGE = pages.MODEL_VERSIONS
HISTORY_PAGE = pages.MODEL_HISTORY



# ---------------------------------------------------------------------------------------------
# Filters and ordering
# ---------------------------------------------------------------------------------------------

def _compile(node: Node | None, columns: Mapping[str, Any], tag_owner: pw.ForeignKeyField, owner_id: Any) -> Any:
    """A validated filter AST → Peewee expression (``querying.compile_filter``); tags are EXISTS
    subqueries on ``tag_owner``'s table (``querying.tag_exists``)."""

    def comparison(c: Comparison) -> Any:
        if c.entity == "tag":
            return tag_exists(tag_owner, owner_id, c)
        compare = number_op if c.key in NUMERIC_ATTRIBUTES else string_op
        return compare(columns[c.key], c.op, c.value)

    return compile_filter(node, comparison)


def _ordering(
    keys: Sequence[OrderKey], columns: Mapping[str, Any], default: Sequence[OrderKey], tiebreak: Any
) -> list[SortColumn]:
    chosen = list(keys) or list(default)
    out = [SortColumn(columns[k.key], k.ascending) for k in chosen]
    out.append(SortColumn(tiebreak, out[-1].ascending))
    return out


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


class RegistryStore:
    def __init__(self, app: App) -> None:
        self.app = app

    # ---- plumbing ----------------------------------------------------------------------------
    # Runs one whole write transaction, again after a deadlock/serialization failure.
    _retrying = staticmethod(retry_transaction)

    @staticmethod
    def _model(name: str) -> RegisteredModel:
        check.model_name(name)
        found = sql.MODEL_BY_NAME.one(name=name)
        if found is None:
            raise _no_model(name)
        return instance(RegisteredModel, sql.MODEL_COLUMNS, found)

    @classmethod
    def _lock_model(cls, name: str) -> RegisteredModel:
        """Takes the model's row lock (first statement of the transaction), bumps its
        last-updated time and returns the row: one ``UPDATE ... RETURNING`` where the database
        has it, else ``SELECT ... FOR UPDATE`` and the update. (Not ``UPDATE``'s row count:
        MariaDB reports 0 for a row whose values did not change, e.g. twice in one millisecond.)"""
        check.model_name(name)
        now = now_ms()
        if update_returning():
            found = sql.LOCK_MODEL.one(now=now, name=name)
            if found is None:
                raise _no_model(name)
            return instance(RegisteredModel, sql.MODEL_COLUMNS, found)
        found = sql.MODEL_FOR_UPDATE.one(name=name)
        if found is None:
            raise _no_model(name)
        model = instance(RegisteredModel, sql.MODEL_COLUMNS, found)
        model.last_updated_time = now
        sql.TOUCH_MODEL.execute(now=now, id=model.id)
        return model

    @staticmethod
    def _version(model: RegisteredModel, version: int) -> ModelVersion:
        check.version_number(version)
        found = sql.VERSION.one(model=model.id, version=version)
        if found is None:
            raise NotFound(
                f"version {version} of registered model '{model.name}' not found",
                reason="MODEL_VERSION_NOT_FOUND",
                metadata={"name": model.name, "version": version},
            )
        return instance(ModelVersion, sql.VERSION_COLUMNS, found)

    def _snapshot_uri(self, model_id: int, version: int | None = None) -> str:
        base = f"{self.app.artifact_store.root_uri.rstrip('/')}/{REGISTRY_FOLDER}/{model_id}"
        return base if version is None else f"{base}/{version}"

    def _delete_files(self, uri: str) -> None:
        """Best effort: the metadata is gone already; leftover files are only wasted space."""
        try:
            self.app.artifact_store.delete(uri)
        except Exception:  # noqa: BLE001 - never fail a delete that committed
            log.warning("could not delete registry files at %s", uri, exc_info=True)

    # ---- records -----------------------------------------------------------------------------
    @staticmethod
    def _version_records(rows: Sequence[ModelVersion], names: Mapping[int, str]) -> list[VersionRecord]:
        """Records of ``rows`` with their tags and aliases, in three queries whatever the count."""
        if not rows:
            return []
        ids = [r.id for r in rows]
        tags: dict[int, dict[str, str]] = defaultdict(dict)
        for t in (
            ModelVersionTag.select()
            .where(ModelVersionTag.model_version.in_(ids))
            .order_by(ModelVersionTag.key)
        ):
            tags[t.model_version_id][t.key] = t.value
        model_ids = {r.model_id for r in rows}
        aliases: dict[tuple[int, int], list[str]] = defaultdict(list)
        query = RegisteredModelAlias.select().where(RegisteredModelAlias.model.in_(list(model_ids)))
        for a in query.order_by(RegisteredModelAlias.alias):
            aliases[(a.model_id, a.version)].append(a.alias)
        return [
            VersionRecord(
                name=names[r.model_id],
                version=r.version,
                creation_time=r.creation_time,
                last_updated_time=r.last_updated_time,
                user_id=r.user_id,
                current_stage=r.current_stage,
                description=r.description,
                source=r.source,
                run_id=r.run_id,
                run_link=r.run_link,
                status=r.status,
                status_message=r.status_message,
                storage_location=r.storage_location,
                tags=tags.get(r.id, {}),
                aliases=aliases.get((r.model_id, r.version), []),
            )
            for r in rows
        ]

    @staticmethod
    def _version_record(
        model: RegisteredModel, row: ModelVersion, tags: Mapping[str, str] | None = None
    ) -> VersionRecord:
        """The record of one version (the hot path of every write and get: two small prepared
        reads, or none for the tags when the caller knows them)."""
        if tags is None:
            tags = dict(sql.VERSION_TAGS.all(id=row.id))
        aliases = [alias for (alias,) in sql.VERSION_ALIASES.all(model=model.id, version=row.version)]
        return VersionRecord(
            name=model.name,
            version=row.version,
            creation_time=row.creation_time,
            last_updated_time=row.last_updated_time,
            user_id=row.user_id,
            current_stage=row.current_stage,
            description=row.description,
            source=row.source,
            run_id=row.run_id,
            run_link=row.run_link,
            status=row.status,
            status_message=row.status_message,
            storage_location=row.storage_location,
            tags=dict(tags),
            aliases=aliases,
        )

    @staticmethod
    def _latest_rows(
        model_ids: Sequence[int], stages: Sequence[str] = STAGES
    ) -> dict[int, list[ModelVersion]]:
        """The highest READY version of each (model, stage), per model in STAGES order."""
        if not model_ids:
            return {}
        top: Any = (
            ModelVersion.select(
                ModelVersion.model, ModelVersion.current_stage, pw.fn.MAX(ModelVersion.version).alias("v")
            )
            .where(
                ModelVersion.model.in_(list(model_ids))
                & (ModelVersion.status == READY)
                & ModelVersion.current_stage.in_(list(stages))
            )
            .group_by(ModelVersion.model, ModelVersion.current_stage)
            .tuples()
        )
        wanted = {(model_id, version) for model_id, _stage, version in top}
        if not wanted:
            return {}
        rows = ModelVersion.select().where(
            ModelVersion.model.in_(list({m for m, _ in wanted}))
            & ModelVersion.version.in_(list({v for _, v in wanted}))
        )
        out: dict[int, list[ModelVersion]] = defaultdict(list)
        order = {s: i for i, s in enumerate(STAGES)}
        for row in sorted(
            (r for r in rows if (r.model_id, r.version) in wanted), key=lambda r: order[r.current_stage]
        ):
            out[row.model_id].append(row)
        return out

    def _model_records(self, models: Sequence[RegisteredModel]) -> list[ModelRecord]:
        if not models:
            return []
        ids = [m.id for m in models]
        names = {m.id: m.name for m in models}
        tags: dict[int, dict[str, str]] = defaultdict(dict)
        for t in (
            RegisteredModelTag.select()
            .where(RegisteredModelTag.model.in_(ids))
            .order_by(RegisteredModelTag.key)
        ):
            tags[t.model_id][t.key] = t.value
        aliases: dict[int, dict[str, int]] = defaultdict(dict)
        for a in (
            RegisteredModelAlias.select()
            .where(RegisteredModelAlias.model.in_(ids))
            .order_by(RegisteredModelAlias.alias)
        ):
            aliases[a.model_id][a.alias] = a.version
        latest = self._latest_rows(ids)
        latest_records = self._version_records([r for rows in latest.values() for r in rows], names)
        by_model: dict[str, list[VersionRecord]] = defaultdict(list)
        for rec in latest_records:
            by_model[rec.name].append(rec)
        protected = approvals.approval_required_stages(ids)
        return [
            ModelRecord(
                name=m.name,
                creation_time=m.creation_time,
                last_updated_time=m.last_updated_time,
                description=m.description,
                tags=tags.get(m.id, {}),
                aliases=aliases.get(m.id, {}),
                latest_versions=by_model.get(m.name, []),
                approval_required_stages=protected.get(m.id, []),
            )
            for m in models
        ]

    def _record_event(self, model: RegisteredModel, event_type: str, actor: str, **fields: Any) -> int:
        """Appends one history row; returns its id."""
        return sql.INSERT_EVENT.insert(
            **{
                **sql.EVENT_DEFAULTS,
                **fields,
                "model": model.id,
                "event_type": event_type,
                "actor": check.bounded(actor, check.MAX_USER, "user", "user_id"),
                "timestamp": now_ms(),
            }
        )

    # ---- registered models ------------------------------------------------------------------
    def create_registered_model(
        self, name: str, tags: Iterable[tuple[str, str]] = (), description: str = ""
    ) -> ModelRecord:
        check.model_name(name)
        tag_map = check.tags(tags)
        check.description(description)

        def work() -> RegisteredModel:
            exists = AlreadyExists(
                f"registered model '{name}' already exists: choose another name, or add a version to it "
                "with create_model_version",
                reason="REGISTERED_MODEL_ALREADY_EXISTS",
                metadata={"name": name},
            )
            try:
                with write_transaction():
                    if RegisteredModel.select().where(RegisteredModel.name == name).exists():
                        raise exists
                    now = now_ms()
                    model = RegisteredModel.create(
                        name=name, description=description, creation_time=now, last_updated_time=now
                    )
                    visibility.record_creation("model", model.id, name)
                    if tag_map:
                        RegisteredModelTag.insert_many(
                            [{"model": model.id, "key": k, "value": v} for k, v in tag_map.items()]
                        ).execute()
                    return model
            except pw.IntegrityError as exc:
                if is_retryable(exc):
                    raise
                raise exists from None  # a concurrent create won

        model = self._retrying(work)
        return self._model_records([model])[0]

    def get_registered_model(self, name: str) -> ModelRecord:
        return self._model_records([self._model(name)])[0]

    def update_registered_model(self, name: str, description: str) -> ModelRecord:
        check.description(description)
        with write_transaction():
            model = self._lock_model(name)
            recorder.note(before=model.description)
            RegisteredModel.update(description=description).where(RegisteredModel.id == model.id).execute()
        return self.get_registered_model(name)

    def rename_registered_model(self, name: str, new_name: str) -> ModelRecord:
        check.model_name(new_name, field="new_name")
        taken = AlreadyExists(
            f"cannot rename '{name}' to '{new_name}': a registered model named '{new_name}' already exists",
            reason="REGISTERED_MODEL_ALREADY_EXISTS",
            metadata={"name": new_name},
        )
        if new_name == name:
            return self.get_registered_model(name)

        def work() -> None:
            try:
                with write_transaction():
                    model = self._lock_model(name)
                    recorder.note(before=model.name)
                    if RegisteredModel.select().where(RegisteredModel.name == new_name).exists():
                        raise taken
                    # Versions, aliases, tags and history reference the id, so they follow.
                    RegisteredModel.update(name=new_name).where(RegisteredModel.id == model.id).execute()
            except pw.IntegrityError as exc:
                if is_retryable(exc):
                    raise
                raise taken from None

        self._retrying(work)
        return self.get_registered_model(new_name)

    def delete_registered_model(self, name: str) -> None:
        with write_transaction():
            model = self._lock_model(name)
            version_ids = ModelVersion.select(ModelVersion.id).where(ModelVersion.model == model.id)
            ModelVersionTag.delete().where(ModelVersionTag.model_version.in_(version_ids)).execute()
            for table in (ModelVersion, RegisteredModelTag, RegisteredModelAlias, ModelHistoryEvent):
                table.delete().where(table.model == model.id).execute()
            RegisteredModel.delete().where(RegisteredModel.id == model.id).execute()
        self._delete_files(self._snapshot_uri(model.id))

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        check.tag(key, value, field="key")
        with write_transaction():
            model = self._lock_model(name)
            self._upsert_tag(RegisteredModelTag, RegisteredModelTag.model, model.id, key, value)

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        with write_transaction():
            model = self._lock_model(name)
            deleted = (
                RegisteredModelTag.delete()
                .where((RegisteredModelTag.model == model.id) & (RegisteredModelTag.key == key))
                .execute()
            )
            if not deleted:
                raise NotFound(
                    f"registered model '{name}' has no tag '{key}'",
                    reason="TAG_NOT_FOUND",
                    metadata={"name": name, "key": key},
                )

    @staticmethod
    def _upsert_tag(table: Any, owner: Any, owner_id: int, key: str, value: str) -> None:
        """Overwrites or inserts one tag; the caller holds the model lock, so no insert race."""
        updated = table.update(value=value).where((owner == owner_id) & (table.key == key)).execute()
        if not updated:
            table.insert({owner: owner_id, table.key: key, table.value: value}).execute()

    @search_guard()
    def search_registered_models(
        self, filter_text: str, order_by: Sequence[str], page_size: int, page_token: str
    ) -> Page[ModelRecord]:
        node = parse_and_validate(filter_text, REGISTERED_MODELS_SCHEMA)
        keys = parse_order_by(list(order_by), REGISTERED_MODELS_SCHEMA)
        size = pagination.page_size(page_size, *MODELS_PAGE)
        columns = _ordering(keys, MODEL_ATTRIBUTE_COLUMNS, [OrderKey("attribute", "name")], RegisteredModel.id)
        fp = pagination.fingerprint("models", filter_text, list(order_by))
        cursor = pagination.decode_token(page_token, fp)
        query = RegisteredModel.select()
        condition = _compile(node, MODEL_ATTRIBUTE_COLUMNS, RegisteredModelTag.model, RegisteredModel.id)
        if condition is not None:
            query = query.where(condition)
        readable = visibility.readable_condition("model", RegisteredModel.id)
        if readable is not None:
            query = query.where(readable)
        if cursor is not None:
            query = query.where(self._after(columns, cursor))
        rows = list(query.order_by(*order_clauses(columns)).limit(size + 1))
        rows, token = pagination.trim(
            rows, size, lambda last: [getattr(last, c.expr.name) for c in columns], fp
        )
        return Page(self._model_records(rows), token)

    @staticmethod
    def _after(columns: Sequence[SortColumn], cursor: Sequence[Any]) -> Any:
        if len(cursor) != len(columns):
            raise InvalidArgument(
                "page_token is malformed: pass the next_page_token of a previous response unchanged",
                reason="INVALID_PAGE_TOKEN",
                field="page_token",
            )
        return keyset_after(columns, cursor)

    # ---- model versions ---------------------------------------------------------------------
    def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str = "",
        tags: Iterable[tuple[str, str]] = (),
        description: str = "",
        run_link: str = "",
        request_id: str = "",
        user_id: str = "",
    ) -> VersionRecord:
        check.model_name(name)
        check.source(source, self.app.artifact_store)
        if not run_id and is_runs_uri(source):
            run_id = parse_runs_uri(source, reason="INVALID_SOURCE", field="source").run_id
        check.run_id(run_id)
        tag_map = check.tags(tags)
        check.description(description)
        check.bounded(run_link, check.MAX_RUN_LINK, "run_link", "run_link")
        check.bounded(request_id, check.MAX_REQUEST_ID, "request_id", "request_id", "INVALID_REQUEST_ID")
        check.bounded(user_id, check.MAX_USER, "user_id", "user_id")

        model = self._model(name)
        if request_id:
            earlier = self._by_request_id(model, request_id)
            if earlier is not None:
                return earlier
        # Resolve and check the source before a number is handed out: a bad source burns none.
        src_uri = self._resolve_source(source)

        def work() -> tuple[ModelVersion, bool]:
            try:
                with write_transaction():
                    # The row lock (the first statement), the number and the model's
                    # last-updated time in one statement where the database has RETURNING.
                    number = self._next_number(model.id)
                    if number is None:
                        raise NotFound(
                            f"registered model '{name}' was deleted during the registration",
                            reason="REGISTERED_MODEL_NOT_FOUND",
                            metadata={"name": name},
                        )
                    if request_id:
                        earlier = self._row_by_request_id(model, request_id)
                        if earlier is not None:
                            raise _Duplicate(earlier)  # rolls the increment back: no gap
                    now = now_ms()
                    values: dict[str, Any] = {
                        "model": model.id,
                        "version": number,
                        "creation_time": now,
                        "last_updated_time": now,
                        "user_id": user_id,
                        "current_stage": "None",
                        "description": description,
                        "source": source,
                        "run_id": run_id,
                        "run_link": run_link,
                        "status": PENDING_REGISTRATION,
                        "status_message": "",
                        "storage_location": self._snapshot_uri(model.id, number),
                        "request_id": request_id or None,
                    }
                    row = ModelVersion(__no_default__=True, id=sql.INSERT_VERSION.insert(**values), **values)
                    recorder.note(resource_id=f"{name}/{number}")
                    if tag_map:
                        ModelVersionTag.insert_many(
                            [{"model_version": row.id, "key": k, "value": v} for k, v in tag_map.items()]
                        ).execute()
                    return row, True
            except _Duplicate as dup:
                return dup.row, False
            except pw.IntegrityError as exc:
                if is_retryable(exc) or not request_id:
                    raise
                # A concurrent registration with the same request id committed first.
                winner = self._row_by_request_id(model, request_id)
                if winner is None:
                    raise
                return winner, False

        row, created = self._retrying(work)
        if not created:
            return self._version_record(model, row)
        self._snapshot(row, src_uri)
        # The record of what was just written, without reading the row (or absent tags) back.
        return self._version_record(model, row, tags=None if tag_map else {})

    @staticmethod
    def _next_number(model_id: int) -> int | None:
        """Hands out the model's next version number under its row lock (the transaction's
        first statement); None when the model is gone."""
        now = now_ms()
        if update_returning():
            found = sql.NEXT_NUMBER.one(now=now, id=model_id)
            return None if found is None else int(found[0])
        if not sql.BUMP_NUMBER.count(now=now, id=model_id):
            return None
        found = sql.LAST_NUMBER.one(id=model_id)
        return None if found is None else int(found[0])

    @staticmethod
    def _row_by_request_id(model: RegisteredModel, request_id: str) -> ModelVersion | None:
        found = sql.VERSION_BY_REQUEST_ID.one(model=model.id, request_id=request_id)
        return None if found is None else instance(ModelVersion, sql.VERSION_COLUMNS, found)

    def _by_request_id(self, model: RegisteredModel, request_id: str) -> VersionRecord | None:
        row = self._row_by_request_id(model, request_id)
        return self._version_record(model, row) if row is not None else None

    def _resolve_source(self, source: str) -> str:
        """The absolute store URI of a registration source, checked to hold something."""
        if source.startswith("models:"):
            version, uri = self.resolve_model_uri(source)
            if not uri:
                raise FailedPrecondition(
                    f"source {source!r} (version {version.version} of '{version.name}') has no files",
                    reason="SOURCE_NOT_READY",
                    field="source",
                )
        else:
            uri = resolve_artifact_uri(source, self.app.artifact_store)
        store = self.app.artifact_store
        try:
            store.stat(uri)
        except NotFound:
            raise NotFound(
                f"source {source!r} holds no files (looked at {uri}): log the model there first",
                reason="SOURCE_NOT_FOUND",
                field="source",
                metadata={"source": source, "uri": uri},
            ) from None
        return uri

    def _snapshot(self, row: ModelVersion, src_uri: str) -> ModelVersion:
        """Copies the source into the registry's own location, then READY (or FAILED_REGISTRATION)."""
        status, message = READY, ""
        try:
            self.app.artifact_store.copy_tree(src_uri, row.storage_location)
        except Exception as exc:  # noqa: BLE001 - recorded on the version, which the caller sees
            log.warning("snapshot of %s into %s failed", src_uri, row.storage_location, exc_info=True)
            status = FAILED_REGISTRATION
            message = f"copying the model files from {src_uri} failed: {exc}"[:4000]

        self._mark(row, status, message)
        return row

    def _mark(self, row: ModelVersion, status: str, message: str) -> None:
        """Records how a registration ended."""

        now = now_ms()

        def mark() -> None:
            with write_transaction():
                sql.SET_STATUS.execute(status=status, status_message=message, now=now, id=row.id)

        self._retrying(mark)
        row.status, row.status_message, row.last_updated_time = status, message, now

    def sweep_registrations(self, stale_after_ms: int, limit: int = 100) -> tuple[int, int]:
        """Finishes the versions a server left PENDING_REGISTRATION when it died mid-snapshot
        (untouched for ``stale_after_ms``): the copy is made again from the source, so each ends
        READY, or FAILED_REGISTRATION with a message. Safe on several replicas at once: each
        version is claimed by one conditional update, and only the winner copies it. Returns
        (finished, failed)."""
        cutoff = now_ms() - stale_after_ms
        stale = list(
            ModelVersion.select()
            .where((ModelVersion.status == PENDING_REGISTRATION) & (ModelVersion.last_updated_time < cutoff))
            .order_by(ModelVersion.id)
            .limit(limit)
        )
        finished = failed = 0
        for row in stale:
            claimed_at = max(now_ms(), row.last_updated_time + 1)

            def claim(row: ModelVersion = row, claimed_at: int = claimed_at) -> int:
                with write_transaction():
                    return int(
                        ModelVersion.update(last_updated_time=claimed_at)
                        .where(
                            (ModelVersion.id == row.id)
                            & (ModelVersion.status == PENDING_REGISTRATION)
                            & (ModelVersion.last_updated_time == row.last_updated_time)
                        )
                        .execute()
                    )

            if not self._retrying(claim):
                continue  # another replica's sweeper took it, or it finished meanwhile
            log.warning("version %s of model id %s was left PENDING_REGISTRATION: copying it again", row.version, row.model_id)
            try:
                source = self._resolve_source(row.source)
            except KeelError as exc:
                self._mark(row, FAILED_REGISTRATION, f"the server registering it stopped mid-copy, and its source "
                           f"cannot be copied again: {exc.message}"[:4000])
                failed += 1
                continue
            if self._snapshot(row, source).status == READY:
                finished += 1
            else:
                failed += 1
        return finished, failed

    def get_model_version(self, name: str, version: int) -> VersionRecord:
        model = self._model(name)
        return self._version_record(model, self._version(model, version))

    def update_model_version(self, name: str, version: int, description: str) -> VersionRecord:
        check.description(description)
        with write_transaction():
            model = self._lock_model(name)
            row = self._version(model, version)
            recorder.note(before=row.description)
            ModelVersion.update(description=description, last_updated_time=now_ms()).where(
                ModelVersion.id == row.id
            ).execute()
        return self.get_model_version(name, version)

    def delete_model_version(self, name: str, version: int, actor: str = "") -> None:
        with write_transaction():
            model = self._lock_model(name)
            row = self._version(model, version)
            # Aliases pointing at it go too (MLflow), each recorded as a deletion.
            for a in RegisteredModelAlias.select().where(
                (RegisteredModelAlias.model == model.id) & (RegisteredModelAlias.version == version)
            ):
                self._record_event(
                    model, ALIAS_DELETED, actor, alias=a.alias, from_version=version, version=0
                )
            RegisteredModelAlias.delete().where(
                (RegisteredModelAlias.model == model.id) & (RegisteredModelAlias.version == version)
            ).execute()
            ModelVersionTag.delete().where(ModelVersionTag.model_version == row.id).execute()
            ModelVersion.delete().where(ModelVersion.id == row.id).execute()
        if row.storage_location:
            self._delete_files(row.storage_location)

    def set_model_version_tag(self, name: str, version: int, key: str, value: str) -> None:
        check.tag(key, value, field="key")
        model = self._model(name)
        with write_transaction():
            row = self._version(model, version)
            ModelVersion.update(last_updated_time=now_ms()).where(ModelVersion.id == row.id).execute()
            self._upsert_tag(ModelVersionTag, ModelVersionTag.model_version, row.id, key, value)

    def delete_model_version_tag(self, name: str, version: int, key: str) -> None:
        model = self._model(name)
        with write_transaction():
            row = self._version(model, version)
            deleted = (
                ModelVersionTag.delete()
                .where((ModelVersionTag.model_version == row.id) & (ModelVersionTag.key == key))
                .execute()
            )
            if not deleted:
                raise NotFound(
                    f"version {version} of registered model '{name}' has no tag '{key}'",
                    reason="TAG_NOT_FOUND",
                    metadata={"name": name, "version": version, "key": key},
                )

    @search_guard()
    def search_model_versions(
        self, filter_text: str, order_by: Sequence[str], page_size: int, page_token: str
    ) -> Page[VersionRecord]:
        node = parse_and_validate(filter_text, MODEL_VERSIONS_SCHEMA)
        keys = parse_order_by(list(order_by), MODEL_VERSIONS_SCHEMA)
        size = pagination.page_size(page_size, *VERSIONS_PAGE)
        default = [OrderKey("attribute", "name"), OrderKey("attribute", "version_number", ascending=False)]
        columns = _ordering(keys, VERSION_ATTRIBUTE_COLUMNS, default, ModelVersion.id)
        fp = pagination.fingerprint("versions", filter_text, list(order_by))
        cursor = pagination.decode_token(page_token, fp)
        query = ModelVersion.select(ModelVersion, RegisteredModel.id, RegisteredModel.name).join(
            RegisteredModel
        )
        condition = _compile(node, VERSION_ATTRIBUTE_COLUMNS, ModelVersionTag.model_version, ModelVersion.id)
        if condition is not None:
            query = query.where(condition)
        readable = visibility.readable_condition("model", ModelVersion.model)
        if readable is not None:
            query = query.where(readable)
        if cursor is not None:
            query = query.where(self._after(columns, cursor))
        rows = list(query.order_by(*order_clauses(columns)).limit(size + 1))
        rows, token = pagination.trim(
            rows, size, lambda last: [_sort_value(last, c.expr) for c in columns], fp
        )
        names = {r.model_id: r.model.name for r in rows}
        return Page(self._version_records(rows, names), token)

    def get_model_version_download_uri(self, name: str, version: int) -> str:
        model = self._model(name)
        return self._ready_location(model, self._version(model, version))

    def _ready_location(self, model: RegisteredModel, row: ModelVersion) -> str:
        """The snapshot of a READY version, checked to still hold files (DATA_LOSS if not)."""
        if row.status != READY:
            detail = f": {row.status_message}" if row.status_message else ""
            raise FailedPrecondition(
                f"version {row.version} of registered model '{model.name}' is {row.status}{detail}; "
                "only READY versions can be loaded",
                reason="MODEL_VERSION_NOT_READY",
                metadata={"name": model.name, "version": row.version, "status": row.status},
            )
        location = str(row.storage_location)
        if not self._holds_files(location):
            raise DataLoss(
                f"the files of version {row.version} of registered model '{model.name}' are gone from "
                f"{location}: they were deleted outside keel; register the model again from its source "
                f"({row.source}) and delete this version",
                reason="MODEL_VERSION_FILES_MISSING",
                metadata={"name": model.name, "version": row.version, "storage_location": location},
            )
        return location

    def _holds_files(self, uri: str) -> bool:
        """Whether a snapshot is still there: a file, or a folder with at least one file."""
        store = self.app.artifact_store
        try:
            info = store.stat(uri)
        except NotFound:
            return False
        return not info.is_dir or bool(store.list_entries(uri, recursive=True, limit=1)[0])

    # ---- stages ------------------------------------------------------------------------------
    def transition_model_version_stage(
        self, name: str, version: int, stage: str, archive_existing_versions: bool, actor: str = ""
    ) -> VersionRecord:
        target = check.stage(stage)
        if archive_existing_versions:
            check.archive_target(target)
        check.version_number(version)

        def work() -> RegisteredModel:
            with write_transaction():
                # The model lock serialises concurrent transitions: exactly one version ends up
                # in the target stage when they all archive the existing ones.
                model = self._lock_model(name)
                row = self._version(model, version)
                approvals.refuse_direct_transition(model, row.version, target)
                recorder.note(
                    before=self._apply_transition(model, row, target, archive_existing_versions, actor)
                )
                return model

        model = self._retrying(work)
        return self.get_model_version(model.name, version)

    def _apply_transition(
        self,
        model: RegisteredModel,
        row: ModelVersion,
        target: str,
        archive_existing_versions: bool,
        actor: str,
    ) -> str:
        """Moves ``row`` to ``target`` (archiving the other versions there when asked) and records
        the history, under the model lock the caller holds; returns the audit summary of the
        state before. The one home of a stage change: direct transitions and approved transition
        requests (``approvals.py``) both make theirs here."""
        if target in ("Staging", "Production") and row.status != READY:
            raise FailedPrecondition(
                f"version {row.version} of registered model '{model.name}' is {row.status}, not READY: "
                f"it cannot move to {target}",
                reason="MODEL_VERSION_NOT_READY",
                metadata={"name": model.name, "version": row.version, "status": row.status},
            )
        now = now_ms()
        moves: list[tuple[ModelVersion, str]] = []
        if row.current_stage != target:
            moves.append((row, target))
        if archive_existing_versions:
            others = ModelVersion.select().where(
                (ModelVersion.model == model.id)
                & (ModelVersion.current_stage == target)
                & (ModelVersion.id != row.id)
            )
            moves.extend((other, "Archived") for other in others)
        archived = [f"version {m.version} stage={m.current_stage}" for m, _ in moves if m is not row]
        for moved, to_stage in moves:
            sql.SET_STAGE.execute(stage=to_stage, now=now, id=moved.id)
            self._record_event(
                model,
                STAGE_TRANSITION,
                actor,
                version=moved.version,
                from_stage=moved.current_stage,
                to_stage=to_stage,
            )
        return "; ".join([f"stage={row.current_stage}", *archived])

    def get_latest_versions(self, name: str, stages: Sequence[str] = ()) -> list[VersionRecord]:
        wanted = [check.stage(s, field="stages") for s in stages] or list(STAGES)
        model = self._model(name)
        rows = self._latest_rows([model.id], wanted).get(model.id, [])
        return self._version_records(rows, {model.id: model.name})

    # ---- aliases -----------------------------------------------------------------------------
    def set_registered_model_alias(
        self, name: str, alias: str, version: int, expected_version: int | None = None, actor: str = ""
    ) -> VersionRecord:
        check.alias(alias)
        check.version_number(version)
        if expected_version is not None and expected_version < 0:
            raise InvalidArgument(
                f"expected_version must be >= 0 (0: the alias must not exist yet), got {expected_version}",
                reason="INVALID_VERSION",
                field="expected_version",
            )

        def work() -> RegisteredModel:
            with write_transaction():
                model = self._lock_model(name)
                row = self._version(model, version)
                if row.status != READY:
                    raise FailedPrecondition(
                        f"version {version} of registered model '{name}' is {row.status}, not READY: "
                        f"alias '{alias}' cannot point at it",
                        reason="MODEL_VERSION_NOT_READY",
                        metadata={"name": name, "version": version, "status": row.status},
                    )
                current = sql.ALIAS_VERSION.one(model=model.id, alias=alias)
                now_at = int(current[0]) if current is not None else 0
                recorder.note(before=f"alias {alias} -> version {now_at}" if now_at else "unset")
                if expected_version is not None and expected_version != now_at:
                    where = f"points at version {now_at}" if now_at else "does not exist"
                    expected = (
                        f"version {expected_version}" if expected_version else "no version (a new alias)"
                    )
                    raise _aborted(
                        f"alias '{alias}' of registered model '{name}' {where}, not {expected}: someone moved it; "
                        "read it again and retry with the current version as expected_version",
                        name,
                        alias,
                        now_at,
                    )
                if now_at == version:
                    return model  # already there: nothing moved, nothing to record
                if current is None:
                    sql.INSERT_ALIAS.execute(model=model.id, alias=alias, version=version)
                else:
                    sql.MOVE_ALIAS.execute(model=model.id, alias=alias, version=version)
                self._record_event(model, ALIAS_SET, actor, alias=alias, version=version, from_version=now_at)
                return model

        model = self._retrying(work)
        return self.get_model_version(model.name, version)

    def delete_registered_model_alias(self, name: str, alias: str, actor: str = "") -> None:
        check.alias(alias)
        with write_transaction():
            model = self._lock_model(name)
            current = sql.ALIAS_VERSION.one(model=model.id, alias=alias)
            if current is None:
                raise _no_alias(name, alias)
            from_version = int(current[0])
            recorder.note(before=f"alias {alias} -> version {from_version}")
            sql.DELETE_ALIAS.execute(model=model.id, alias=alias)
            self._record_event(model, ALIAS_DELETED, actor, alias=alias, from_version=from_version, version=0)

    def get_model_version_by_alias(self, name: str, alias: str) -> VersionRecord:
        check.alias(alias)
        model = self._model(name)
        current = sql.ALIAS_VERSION.one(model=model.id, alias=alias)
        if current is None:
            raise _no_alias(name, alias)
        return self._version_record(model, self._version(model, int(current[0])))

    # ---- history -----------------------------------------------------------------------------
    def list_model_history(self, name: str, page_size: int, page_token: str) -> Page[HistoryRecord]:
        size = pagination.page_size(page_size, *HISTORY_PAGE)
        model = self._model(name)
        fp = pagination.fingerprint("history", model.id)
        query = ModelHistoryEvent.select().where(ModelHistoryEvent.model == model.id)
        rows = list(querying.id_page(query, ModelHistoryEvent.id, page_token, fp, size, newest_first=True))
        rows, token = pagination.trim(rows, size, lambda last: [last.id], fp)
        notes = approvals.history_notes([r.id for r in rows])
        return Page(
            [
                HistoryRecord(
                    event_type=r.event_type,
                    name=model.name,
                    version=r.version,
                    from_stage=r.from_stage,
                    to_stage=r.to_stage,
                    alias=r.alias,
                    from_version=r.from_version,
                    actor=r.actor,
                    timestamp=r.timestamp,
                    transition_request_id=notes[r.id].transition_request_id if r.id in notes else "",
                    comment=notes[r.id].comment if r.id in notes else "",
                )
                for r in rows
            ],
            token,
        )

    # ---- models:/ URIs -----------------------------------------------------------------------
    def resolve_model_uri(self, uri: str) -> tuple[VersionRecord, str]:
        """The version a ``models:/`` URI designates now and its download URI (READY only)."""
        parsed = parse_models_uri(uri)
        model = self._model(parsed.name)
        if parsed.alias:
            row = self._version(model, self.get_model_version_by_alias(model.name, parsed.alias).version)
        elif parsed.version:
            row = self._version(model, parsed.version)
        else:
            stages = [parsed.stage] if parsed.stage else list(STAGES)
            candidates = self._latest_rows([model.id], stages).get(model.id, [])
            if not candidates:
                what = f"no READY version in stage '{parsed.stage}'" if parsed.stage else "no READY version"
                raise NotFound(
                    f"registered model '{model.name}' has {what} (resolving {uri})",
                    reason="NO_VERSION_IN_STAGE" if parsed.stage else "NO_READY_VERSION",
                    metadata={"name": model.name, "stage": parsed.stage or ""},
                )
            row = max(candidates, key=lambda r: r.version)
        location = self._ready_location(model, row)
        return self._version_record(model, row), location


class _Duplicate(Exception):
    """Raised inside the numbering transaction to roll it back when the request id was used."""

    def __init__(self, row: ModelVersion) -> None:
        super().__init__("duplicate request id")
        self.row = row


def _no_model(name: str) -> KeelError:
    return NotFound(
        f"registered model '{name}' not found",
        reason="REGISTERED_MODEL_NOT_FOUND",
        metadata={"name": name},
    )


def _no_alias(name: str, alias: str) -> KeelError:
    return NotFound(
        f"registered model '{name}' has no alias '{alias}'",
        reason="ALIAS_NOT_FOUND",
        metadata={"name": name, "alias": alias},
    )


def _aborted(message: str, name: str, alias: str, current: int) -> KeelError:
    return Aborted(
        message,
        reason="ALIAS_VERSION_MISMATCH",
        field="expected_version",
        metadata={"name": name, "alias": alias, "current_version": current},
    )


def _sort_value(row: ModelVersion, expr: Any) -> Any:
    """The value of sort column ``expr`` on a search row (the name lives on the joined model)."""
    if expr is RegisteredModel.name:
        return row.model.name
    return getattr(row, expr.name)
