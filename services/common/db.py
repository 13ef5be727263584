"""The metadata database: one ``DatabaseProxy``, the Peewee models of every service, and the
helpers that open it from a URL and run write transactions.

URL forms: ``sqlite:///path`` (WAL, busy timeout), ``postgresql://user@host:port/db`` and
``mysql://user@host:port/db`` (both pooled). Stores own their transactions through
``write_transaction`` (BEGIN IMMEDIATE on SQLite so concurrent writers queue instead of
failing on lock upgrade).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import peewee as pw
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase

db = pw.DatabaseProxy()

# Values that cannot be stored in every backend (MySQL has no NaN/inf) are kept with a kind flag.
VALUE_FINITE, VALUE_NAN, VALUE_POS_INF, VALUE_NEG_INF = 0, 1, 2, 3
MAX_DOUBLE = 1.7976931348623157e308


def now_ms() -> int:
    return int(time.time() * 1000)


class BaseModel(pw.Model):
    class Meta:
        database = db
        legacy_table_names = False


# --------------------------------------------------------------------------------------------
# Schema bookkeeping
# --------------------------------------------------------------------------------------------


class SchemaVersion(BaseModel):
    """One row: the number of the last migration applied."""

    id = pw.IntegerField(primary_key=True)
    version = pw.IntegerField()
    applied_at = pw.BigIntegerField(default=now_ms)


# --------------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------------


class LongTextField(pw.TextField):
    """Text of up to 100,000 characters on every backend: TEXT on SQLite and PostgreSQL,
    MEDIUMTEXT on MySQL/MariaDB, whose TEXT holds only 64 KiB."""

    def ddl_datatype(self, ctx: Any) -> pw.SQL:
        if is_mysql():
            return pw.SQL("MEDIUMTEXT")
        return super().ddl_datatype(ctx)


class Experiment(BaseModel):
    experiment_id = pw.AutoField()
    name = pw.CharField(max_length=500, unique=True)
    artifact_location = pw.TextField()
    lifecycle_stage = pw.CharField(max_length=16, default="active", index=True)
    creation_time = pw.BigIntegerField(default=now_ms, index=True)
    last_update_time = pw.BigIntegerField(default=now_ms)


class ExperimentTag(BaseModel):
    experiment = pw.ForeignKeyField(Experiment, backref="tags", on_delete="CASCADE")
    experiment_id: int  # the FK column, for type checkers (Peewee adds the accessor)
    key = pw.CharField(max_length=250)
    value = LongTextField()  # up to 20,000 characters

    class Meta:
        primary_key = pw.CompositeKey("experiment", "key")


class Run(BaseModel):
    run_id = pw.CharField(max_length=32, primary_key=True)
    experiment = pw.ForeignKeyField(Experiment, backref="runs", on_delete="CASCADE")
    experiment_id: int
    run_name = pw.CharField(max_length=250, default="")
    user_id = pw.CharField(max_length=256, default="")
    status = pw.CharField(max_length=16, default="RUNNING")
    start_time = pw.BigIntegerField()
    end_time = pw.BigIntegerField(null=True)
    artifact_uri = pw.TextField()
    lifecycle_stage = pw.CharField(max_length=16, default="active")
    # Set when the run was deleted together with its experiment (restored with it).
    deleted_with_experiment = pw.BooleanField(default=False)
    parent_run_id = pw.CharField(max_length=32, null=True, index=True)

    class Meta:
        indexes = (
            # The default search order: experiment, view, newest first, then id (keyset pagination).
            (("experiment", "lifecycle_stage", "start_time", "run_id"), False),
            (("experiment", "run_name"), False),
        )


class Param(BaseModel):
    run = pw.ForeignKeyField(Run, backref="params", on_delete="CASCADE", column_name="run_id")
    run_id: str
    key = pw.CharField(max_length=250)
    value = pw.TextField()

    class Meta:
        primary_key = pw.CompositeKey("run", "key")
        indexes = ((("key", "run"), False),)


class RunTag(BaseModel):
    run = pw.ForeignKeyField(Run, backref="tags", on_delete="CASCADE", column_name="run_id")
    run_id: str
    key = pw.CharField(max_length=250)
    value = pw.TextField()

    class Meta:
        table_name = "run_tag"
        primary_key = pw.CompositeKey("run", "key")
        indexes = ((("key", "run"), False),)


class Metric(BaseModel):
    """Every logged point (the full history)."""

    id = pw.BigAutoField()
    run = pw.ForeignKeyField(Run, on_delete="CASCADE", column_name="run_id", index=False)
    run_id: str
    key = pw.CharField(max_length=250)
    # Finite values as is; NaN as 0 and +/-inf as +/-MAX_DOUBLE, with value_kind telling which.
    value = pw.DoubleField()
    value_kind = pw.SmallIntegerField(default=VALUE_FINITE)
    timestamp = pw.BigIntegerField()
    step = pw.BigIntegerField(default=0)

    class Meta:
        indexes = ((("run", "key", "step", "timestamp"), False),)


class LatestMetric(BaseModel):
    """The latest point per (run, key) by (step, timestamp, value): what GetRun and search read."""

    run = pw.ForeignKeyField(Run, on_delete="CASCADE", column_name="run_id")
    run_id: str
    key = pw.CharField(max_length=250)
    value = pw.DoubleField()
    value_kind = pw.SmallIntegerField(default=VALUE_FINITE)
    timestamp = pw.BigIntegerField()
    step = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "latest_metric"
        primary_key = pw.CompositeKey("run", "key")
        # Search by metric value and order by it.
        indexes = ((("key", "value", "run"), False),)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


class RegisteredModel(BaseModel):
    id = pw.AutoField()
    name = pw.CharField(max_length=256, unique=True)
    description = LongTextField(default="")
    creation_time = pw.BigIntegerField(default=now_ms, index=True)
    last_updated_time = pw.BigIntegerField(default=now_ms, index=True)
    # The last version number handed out. Incremented under the row lock, so numbers are
    # distinct, gap-free and never reused, whatever the number of concurrent registrations.
    last_version = pw.IntegerField(default=0)

    class Meta:
        table_name = "registered_model"


class RegisteredModelTag(BaseModel):
    model = pw.ForeignKeyField(RegisteredModel, backref="tags", on_delete="CASCADE")
    model_id: int
    key = pw.CharField(max_length=250)
    value = LongTextField()

    class Meta:
        table_name = "registered_model_tag"
        primary_key = pw.CompositeKey("model", "key")
        indexes = ((("key", "model"), False),)


class ModelVersion(BaseModel):
    id = pw.AutoField()
    model = pw.ForeignKeyField(RegisteredModel, backref="versions", on_delete="CASCADE")
    model_id: int
    version = pw.IntegerField()
    creation_time = pw.BigIntegerField(default=now_ms)
    last_updated_time = pw.BigIntegerField(default=now_ms)
    user_id = pw.CharField(max_length=256, default="")
    current_stage = pw.CharField(max_length=20, default="None")
    description = LongTextField(default="")
    source = pw.TextField()
    run_id = pw.CharField(max_length=32, default="", index=True)
    run_link = pw.TextField(default="")
    status = pw.CharField(max_length=32, default="PENDING_REGISTRATION")
    status_message = pw.TextField(default="")
    storage_location = pw.TextField(default="")
    # Client idempotency key; unique per model when set.
    request_id = pw.CharField(max_length=64, null=True)

    class Meta:
        table_name = "model_version"
        indexes = (
            (("model", "version"), True),
            (("model", "current_stage", "version"), False),
            (("model", "request_id"), True),
        )


class ModelVersionTag(BaseModel):
    model_version = pw.ForeignKeyField(ModelVersion, backref="tags", on_delete="CASCADE")
    model_version_id: int
    key = pw.CharField(max_length=250)
    value = LongTextField()

    class Meta:
        table_name = "model_version_tag"
        primary_key = pw.CompositeKey("model_version", "key")
        indexes = ((("key", "model_version"), False),)


class RegisteredModelAlias(BaseModel):
    model = pw.ForeignKeyField(RegisteredModel, backref="aliases", on_delete="CASCADE")
    model_id: int
    # Shadows Model.alias() on this class (never needed here); the column name is the natural one.
    alias = pw.CharField(max_length=255)  # type: ignore[assignment]
    version = pw.IntegerField()

    class Meta:
        table_name = "registered_model_alias"
        primary_key = pw.CompositeKey("model", "alias")


class ModelHistoryEvent(BaseModel):
    """Append-only record of stage changes and alias moves ("who, when, from, to")."""

    id = pw.BigAutoField()
    model = pw.ForeignKeyField(RegisteredModel, backref="history", on_delete="CASCADE")
    model_id: int
    event_type = pw.CharField(max_length=32)
    version = pw.IntegerField(default=0)
    from_stage = pw.CharField(max_length=20, default="")
    to_stage = pw.CharField(max_length=20, default="")
    alias = pw.CharField(max_length=255, default="")  # type: ignore[assignment]  # shadows Model.alias()
    from_version = pw.IntegerField(default=0)
    actor = pw.CharField(max_length=256, default="")
    timestamp = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "model_history_event"
        # Listed per model newest first by id (commit order; immune to clock skew between replicas).
        indexes = ((("model", "id"), False),)


class ApprovalRequiredStage(BaseModel):
    """A stage of a registered model that versions enter only through an approved transition
    request (one row per protected stage; no row: direct transitions)."""

    model = pw.ForeignKeyField(RegisteredModel, backref="approval_stages", on_delete="CASCADE")
    model_id: int
    stage = pw.CharField(max_length=20)

    class Meta:
        table_name = "approval_required_stage"
        primary_key = pw.CompositeKey("model", "stage")


class TransitionRequest(BaseModel):
    """A request to move a version to a stage: PENDING, then APPROVED, REJECTED or CANCELLED.
    ``version`` is a number, not a key: a request outlives a deleted version (its approval is
    then ABORTED), and keeps its place in the history."""

    id = pw.BigAutoField()
    model = pw.ForeignKeyField(RegisteredModel, backref="transition_requests", on_delete="CASCADE")
    model_id: int
    version = pw.IntegerField()
    from_stage = pw.CharField(max_length=20)  # the version's stage when asked: approval checks it
    to_stage = pw.CharField(max_length=20)
    archive_existing_versions = pw.BooleanField(default=False)
    requester = pw.CharField(max_length=256, default="")
    comment = LongTextField(default="")
    status = pw.CharField(max_length=16, default="PENDING")
    creation_time = pw.BigIntegerField(default=now_ms)
    decided_by = pw.CharField(max_length=256, default="")
    decision_comment = LongTextField(default="")
    decision_time = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "transition_request"
        # Listed per model newest first, optionally of one status or version.
        indexes = ((("model", "status", "id"), False), (("model", "version", "id"), False))


class ModelHistoryNote(BaseModel):
    """What a transition request event of the history adds to its row: the request and the
    comment (a table of its own, so the history table keeps the shape migration 1 gave it)."""

    event = pw.ForeignKeyField(ModelHistoryEvent, primary_key=True, on_delete="CASCADE")
    event_id: int
    transition_request_id = pw.BigIntegerField()
    comment = LongTextField(default="")

    class Meta:
        table_name = "model_history_note"


# --------------------------------------------------------------------------------------------
# Artifacts and inference
# --------------------------------------------------------------------------------------------


class ArtifactObject(BaseModel):
    """Size and sha256 of a stored file, for stores that cannot keep them as object metadata."""

    uri_hash = pw.CharField(max_length=64, primary_key=True)  # sha256 of the full store URI
    uri = pw.TextField()
    size = pw.BigIntegerField()
    sha256 = pw.CharField(max_length=64)
    updated_time = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "artifact_object"


class Deployment(BaseModel):
    name = pw.CharField(max_length=63, primary_key=True)
    model_uri = pw.TextField()
    creation_time = pw.BigIntegerField(default=now_ms)
    last_updated_time = pw.BigIntegerField(default=now_ms)
    # JSON object of serving options (batching, workers) for replicas to agree on.
    config = pw.TextField(default="{}")


class LoggedModel(BaseModel):
    """An MLflow 3 logged model (migration 6). Its files live in the artifacts of ``run`` (the
    source run, or one keel created to hold them) at ``artifact_path``."""

    model_id = pw.CharField(max_length=34, primary_key=True)  # "m-" + 32 hex
    experiment = pw.ForeignKeyField(Experiment, backref="logged_models", on_delete="CASCADE")
    experiment_id: int
    run = pw.ForeignKeyField(Run, backref="logged_models", on_delete="CASCADE", column_name="run_id")
    run_id: str
    source_run_id = pw.CharField(max_length=32, default="")  # as given; '' when keel made the run
    name = pw.CharField(max_length=250)
    artifact_path = pw.CharField(max_length=250)
    # artifact_path while the model holds its folder (PENDING or READY, not deleted), else NULL:
    # the unique index lets one such model per (run, folder), and NULLs never collide.
    path_claim = pw.CharField(max_length=250, null=True)
    status = pw.CharField(max_length=16, default="PENDING")
    status_message = pw.TextField(default="")
    model_type = pw.CharField(max_length=250, default="")
    lifecycle_stage = pw.CharField(max_length=16, default="active")
    creation_time = pw.BigIntegerField(default=now_ms)
    last_updated_time = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "logged_model"
        indexes = (
            (("run", "path_claim"), True),
            # The default search order: experiment, lifecycle, newest first, then id (keyset pages).
            (("experiment", "lifecycle_stage", "creation_time", "model_id"), False),
        )


class LoggedModelTag(BaseModel):
    model = pw.ForeignKeyField(LoggedModel, backref="tags", on_delete="CASCADE", column_name="model_id")
    model_id: str
    key = pw.CharField(max_length=250)
    value = pw.TextField()

    class Meta:
        table_name = "logged_model_tag"
        primary_key = pw.CompositeKey("model", "key")


class LoggedModelParam(BaseModel):
    model = pw.ForeignKeyField(LoggedModel, backref="params", on_delete="CASCADE", column_name="model_id")
    model_id: str
    key = pw.CharField(max_length=250)
    value = pw.TextField()

    class Meta:
        table_name = "logged_model_param"
        primary_key = pw.CompositeKey("model", "key")


TRACKING_TABLES: list[type[BaseModel]] = [Experiment, ExperimentTag, Run, Param, RunTag, Metric, LatestMetric]
# MLflow 3 logged models (migration 6).
LOGGED_MODEL_TABLES: list[type[BaseModel]] = [LoggedModel, LoggedModelTag, LoggedModelParam]
REGISTRY_TABLES: list[type[BaseModel]] = [
    RegisteredModel,
    RegisteredModelTag,
    ModelVersion,
    ModelVersionTag,
    RegisteredModelAlias,
    ModelHistoryEvent,
]
# Review and approval of stage transitions (migration 5).
APPROVAL_TABLES: list[type[BaseModel]] = [ApprovalRequiredStage, TransitionRequest, ModelHistoryNote]
SERVING_TABLES: list[type[BaseModel]] = [ArtifactObject, Deployment]


class ClientRequest(BaseModel):
    """Idempotency keys of writes that are not naturally idempotent (CreateRun, LogBatch): the
    key is inserted in the same transaction as the write, so a retried request finds it and
    writes nothing twice. ``result`` is what the first request returned (a run id)."""

    request_id = pw.CharField(max_length=64, primary_key=True)
    method = pw.CharField(max_length=64)
    result = pw.CharField(max_length=64, default="")
    created_time = pw.BigIntegerField(default=now_ms, index=True)

    class Meta:
        table_name = "client_request"


IDEMPOTENCY_TABLES: list[type[BaseModel]] = [ClientRequest]


# --------------------------------------------------------------------------------------------
# Auth and audit (active with --auth / KEEL_AUDIT)
# --------------------------------------------------------------------------------------------


class Principal(BaseModel):
    """A user or service account."""

    id = pw.AutoField()
    name = pw.CharField(max_length=128, unique=True)
    service_account = pw.BooleanField(default=False)
    admin = pw.BooleanField(default=False)
    disabled = pw.BooleanField(default=False)
    creation_time = pw.BigIntegerField(default=now_ms)


class PrincipalGroup(BaseModel):
    id = pw.AutoField()
    name = pw.CharField(max_length=128, unique=True)
    creation_time = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "principal_group"


class GroupMember(BaseModel):
    group = pw.ForeignKeyField(PrincipalGroup, backref="members", on_delete="CASCADE")
    group_id: int
    principal = pw.ForeignKeyField(Principal, backref="memberships", on_delete="CASCADE")
    principal_id: int

    class Meta:
        table_name = "group_member"
        primary_key = pw.CompositeKey("group", "principal")
        indexes = ((("principal", "group"), False),)


class ApiToken(BaseModel):
    """An API token: only the sha256 of its secret is kept (secrets are 256 random bits, so a
    fast hash is enough; lookups are by hash, the final comparison is constant-time)."""

    id = pw.CharField(max_length=32, primary_key=True)
    principal = pw.ForeignKeyField(Principal, backref="tokens", on_delete="CASCADE")
    principal_id: int
    name = pw.CharField(max_length=128, default="")
    secret_hash = pw.CharField(max_length=64, unique=True)
    creation_time = pw.BigIntegerField(default=now_ms)
    expiry_time = pw.BigIntegerField(default=0)  # 0: never
    revoked_time = pw.BigIntegerField(default=0)  # 0: valid

    class Meta:
        table_name = "api_token"


class ResourcePermission(BaseModel):
    """One grant: a level on an experiment (its id) or a registered model (its id, so a rename
    keeps the grants) to a user or a group."""

    resource_type = pw.CharField(max_length=16)  # "experiment" | "model"
    resource_id = pw.CharField(max_length=64)
    subject_type = pw.CharField(max_length=8)  # "user" | "group"
    subject_id = pw.IntegerField()
    level = pw.IntegerField()

    class Meta:
        table_name = "resource_permission"
        primary_key = pw.CompositeKey("resource_type", "resource_id", "subject_type", "subject_id")
        indexes = ((("subject_type", "subject_id", "resource_type", "level"), False),)


class AuditEvent(BaseModel):
    """Append-only: one row per change (same transaction) and per refused attempt. ``scope_*``
    is the experiment or registered model the resource belongs to (for filtering and for
    showing a caller only the events of what it can read)."""

    id = pw.BigAutoField()
    time = pw.BigIntegerField(default=now_ms)
    actor = pw.CharField(max_length=128, default="", index=True)
    service = pw.CharField(max_length=64, default="")
    method = pw.CharField(max_length=64, index=True)
    resource_type = pw.CharField(max_length=32, default="")
    resource_id = pw.CharField(max_length=512, default="")
    scope_type = pw.CharField(max_length=16, default="")
    scope_id = pw.CharField(max_length=256, default="")  # an experiment id or a model name
    before = pw.TextField(default="")
    after = pw.TextField(default="")
    request_id = pw.CharField(max_length=64, default="")
    peer = pw.CharField(max_length=128, default="")
    outcome = pw.SmallIntegerField(default=1)

    class Meta:
        table_name = "audit_event"
        indexes = (
            (("scope_type", "scope_id", "id"), False),
            (("resource_type", "resource_id", "id"), False),
            (("time",), False),
        )


AUTH_TABLES: list[type[BaseModel]] = [Principal, PrincipalGroup, GroupMember, ApiToken, ResourcePermission]
AUDIT_TABLES: list[type[BaseModel]] = [AuditEvent]
ALL_TABLES: list[type[BaseModel]] = [
    SchemaVersion,
    *TRACKING_TABLES,
    *REGISTRY_TABLES,
    *SERVING_TABLES,
    *IDEMPOTENCY_TABLES,
    *AUTH_TABLES,
    *AUDIT_TABLES,
    *APPROVAL_TABLES,
    *LOGGED_MODEL_TABLES,
]


# --------------------------------------------------------------------------------------------
# Opening the database
# --------------------------------------------------------------------------------------------

SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


def open_database(url: str, max_connections: int = 32) -> pw.Database:
    """Builds (does not connect) the Peewee database a URL names."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    if scheme == "sqlite":
        path = url.split("sqlite:///", 1)[1].split("?")[0] if url.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(
                f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        return pw.SqliteDatabase(
            path,
            pragmas={
                "journal_mode": "wal",
                "synchronous": "normal",
                "foreign_keys": 1,
                "busy_timeout": 30000,
                "cache_size": -64000,
            },
            timeout=30,
            check_same_thread=False,
        )
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"unsupported database URL scheme {parts.scheme!r}: use sqlite:///, postgresql:// or mysql://"
        )
    name = parts.path.lstrip("/")
    if not name:
        raise ValueError(f"database URL {url!r} names no database")
    conn: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "user": parts.username or None,
        "password": parts.password or None,
        "max_connections": int(options.pop("max_connections", max_connections)),
        "stale_timeout": int(options.pop("stale_timeout", 300)),
        "timeout": int(options.pop("pool_timeout", 30)),
    }
    if parts.port:
        conn["port"] = parts.port
    conn = {k: v for k, v in conn.items() if v is not None}
    if scheme in ("postgresql", "postgres"):
        conn.setdefault("connect_timeout", int(options.pop("connect_timeout", 5)))
        return PooledPostgresqlDatabase(name, **conn, **options)
    conn.setdefault("connect_timeout", int(options.pop("connect_timeout", 5)))
    conn.setdefault("charset", "utf8mb4")
    return PooledMySQLDatabase(name, **conn, **options)


def initialize(url: str, max_connections: int = 32) -> pw.Database:
    """Points the global proxy at the database of ``url`` and returns it."""
    database = open_database(url, max_connections=max_connections)
    db.initialize(database)
    return database


def is_sqlite() -> bool:
    return isinstance(db.obj, pw.SqliteDatabase)


def is_mysql() -> bool:
    return isinstance(db.obj, pw.MySQLDatabase)


_sqlite_write_lock = threading.RLock()


@dataclass(frozen=True)
class _TransactionHooks:
    before_commit: Callable[[], None]
    on_rollback: Callable[[], None]
    after_commit: Callable[[], None] | None


_transaction_hooks: list[_TransactionHooks] = []


def add_transaction_hooks(
    before_commit: Callable[[], None],
    on_rollback: Callable[[], None],
    after_commit: Callable[[], None] | None = None,
) -> None:
    """Registers callbacks for the outermost ``write_transaction`` of every thread (nested ones
    are savepoints and run none): ``before_commit`` as the block's last statement inside the
    transaction (what it writes commits or rolls back with the change), ``on_rollback`` when the
    transaction does not commit (an exception out of the block, from a hook or from COMMIT
    itself), ``after_commit`` once it committed. Registering the same callbacks again is a no-op.
    The audit log uses them; this module knows nothing of what they write."""
    hooks = _TransactionHooks(before_commit, on_rollback, after_commit)
    if hooks not in _transaction_hooks:
        _transaction_hooks.append(hooks)


@contextlib.contextmanager
def write_transaction() -> Iterator[None]:
    """A write transaction. On SQLite it takes the write lock up front (BEGIN IMMEDIATE) so
    concurrent writers wait on the busy timeout instead of failing with SQLITE_BUSY on upgrade.
    The outermost one of a thread runs the ``add_transaction_hooks`` callbacks."""
    # Peewee keeps its transaction stack per thread, like the connection: depth 0 here means this
    # block owns the real transaction (and its COMMIT); deeper ones are savepoints.
    outermost = db.transaction_depth() == 0
    hooks = list(_transaction_hooks) if outermost else []
    try:
        if is_sqlite():
            # Writers of this process queue on a lock (woken at once) instead of in SQLite's busy
            # handler, which sleeps in growing steps and caps a busy server at a few hundred writes/s.
            with _sqlite_write_lock, db.obj.atomic(lock_type="IMMEDIATE"):
                yield
                for hook in hooks:
                    hook.before_commit()
        else:
            with db.atomic():
                yield
                for hook in hooks:
                    hook.before_commit()
    except BaseException:
        for hook in hooks:
            hook.on_rollback()
        raise
    for hook in hooks:
        if hook.after_commit is not None:
            hook.after_commit()


def is_retryable(exc: BaseException) -> bool:
    """A lost race the whole transaction may be retried for (deadlock, serialization, lock)."""
    text = str(exc).lower()
    return isinstance(exc, pw.OperationalError | pw.InternalError | pw.IntegrityError) and any(
        marker in text
        for marker in (
            "deadlock",
            "could not serialize",
            "lock wait timeout",
            "database is locked",
            "try restarting transaction",
        )
    )


T = TypeVar("T")

# Runs of one write transaction at most, by default (the first and its retries).
TRANSACTION_ATTEMPTS = 5


def retry_transaction(
    operation: Callable[[], T], attempts: int = TRANSACTION_ATTEMPTS, *, unique_violations: bool = False
) -> T:
    """Runs ``operation`` (one whole write transaction: it must open and close it itself) and runs
    it again when it lost a race: a deadlock, a serialization failure or a lock timeout
    (:func:`is_retryable`); with ``unique_violations``, any integrity error too (a concurrent
    insert won, and the rerun reads the winner back). At most ``attempts`` runs, each retry after
    a random wait whose bound doubles (so the racers fall out of step); then the error is raised."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except pw.DatabaseError as exc:
            lost_race = is_retryable(exc) or (unique_violations and isinstance(exc, pw.IntegrityError))
            if not lost_race or attempt == attempts:
                raise
        time.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise AssertionError("unreachable")
