"""Writing audit events, each in the same transaction as the change it records.

The server interceptor opens a ``PendingEvent`` for a mutating call (``begin``) and closes it
after (``end``). While it is open, the outermost ``write_transaction`` of the call inserts it as
its last statement before COMMIT (a before-commit hook of ``db``), so the change and its event
commit together or not at all: a call that fails leaves no event, and no change exists
without one. A transaction that rolls back marks the event unwritten again, so a store that
retries its transaction writes it once, with the attempt that commits.

Stores add what only they know with ``note`` (the stage before a transition, the id of what a
call created). A call that succeeded without a write transaction (an artifact upload, an
idempotent replay) gets its event from ``finish_unwritten``; refused calls (DENIED,
UNAUTHENTICATED) are written with ``record``.

The metric group commit writes many callers' points on one thread where the callers' context
is not visible: it carries each caller's event with its point (``current()``), writes the
events of the points it commits with ``write_in_transaction`` and keeps the committing thread's
own event out of the hook (``detached``).

Events are inserted at the very end of their transaction, so an event id that is allocated but
not yet visible belongs to a transaction about to commit (or roll back); WatchEvents relies on
that (``store.GAP_TIMEOUT_S``). Every commit of events wakes this process's watchers at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from keel_server.common.db import AuditEvent, add_transaction_hooks, db, is_mysql, now_ms, write_transaction

OUTCOME_OK, OUTCOME_DENIED, OUTCOME_UNAUTHENTICATED = 1, 2, 3
# The actor of every call when auth is off (KEEL_AUDIT=true without --auth).
ANONYMOUS = "anonymous"
# What Event.resource_type may hold (audit.proto), and the two scopes a resource belongs to.
RESOURCE_TYPES = (
    "experiment", "run", "logged_model", "model", "model_version", "deployment", "artifact",
    "user", "group", "token", "permission",
)  # fmt: skip
SCOPE_EXPERIMENT, SCOPE_MODEL = "experiment", "model"
# Longest ``before``/``after`` summary, in characters.
SUMMARY_CHARS = 500

# Field names whose values are never written to the log (``***`` instead).
_SECRET_WORDS = ("secret", "token", "password")
_SECRET_SUFFIXES = tuple(f"_{word}" for word in _SECRET_WORDS)
_STRING_CHARS = 80  # longest string value shown inside a summary
_REPEATED_SHOWN = 5  # items shown of a repeated field
_NESTING_SHOWN = 3  # message levels shown


@dataclass
class PendingEvent:
    """The event of the call in progress, written with its change. ``scope_*`` is the experiment
    (its id) or registered model (its name) the resource belongs to, "" when unknown."""

    actor: str
    service: str
    method: str
    resource_type: str
    resource_id: str
    scope_type: str
    scope_id: str
    after: str
    request_id: str
    peer: str
    before: str = ""
    outcome: int = OUTCOME_OK
    written: bool = False


_pending: contextvars.ContextVar[PendingEvent | None] = contextvars.ContextVar(
    "keel_audit_event", default=None
)


def begin(event: PendingEvent) -> contextvars.Token[PendingEvent | None]:
    """Opens ``event`` for the running call (the interceptor, only with the audit log on)."""
    return _pending.set(event)


def end(token: contextvars.Token[PendingEvent | None]) -> None:
    """Closes the event ``begin`` opened."""
    _pending.reset(token)


def current() -> PendingEvent | None:
    """The running call's event; None when the audit log is off or the call changes nothing."""
    return _pending.get()


def note(
    *, before: str | None = None, resource_id: str | None = None, scope: tuple[str, str] | None = None
) -> None:
    """Adds what only the store knows to the running call's event (inside its transaction, so a
    retried transaction notes again). A no-op without an event."""
    event = _pending.get()
    if event is None:
        return
    if before is not None:
        event.before = _one_line(before, SUMMARY_CHARS)
    if resource_id is not None:
        event.resource_id = resource_id
    if scope is not None:
        event.scope_type, event.scope_id = scope


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Hides the running call's event from the transactions of the block: for a thread that
    writes on behalf of several callers and writes their events itself."""
    token = _pending.set(None)
    try:
        yield
    finally:
        _pending.reset(token)


def finish_unwritten() -> None:
    """After a call succeeded: writes its event if no transaction of the call did (the call
    wrote nothing to the database, or replayed an earlier request)."""
    event = _pending.get()
    if event is None or event.written:
        return
    with write_transaction():
        write_in_transaction([event])


def record(event: PendingEvent) -> None:
    """Writes one event in a transaction of its own (a refused call: DENIED, UNAUTHENTICATED)."""
    with detached(), write_transaction():
        write_in_transaction([event])


def write_in_transaction(events: Sequence[PendingEvent]) -> None:
    """Inserts ``events`` in the open write transaction (one statement) and marks them written;
    they are marked unwritten again if that transaction does not commit."""
    if db.transaction_depth() == 0:
        raise RuntimeError("write_in_transaction needs an open write_transaction()")
    if not events:
        return
    now = now_ms()
    db.execute_sql(_insert_statement(len(events)), [v for event in events for v in _values(event, now)])
    in_flight = _in_flight()
    for event in events:
        event.written = True
        in_flight.append(event)


# ---------------------------------------------------------------------------------------------
# Transaction hooks and waking watchers
# ---------------------------------------------------------------------------------------------

# Events written in the open transaction of each thread (peewee's transactions are per thread).
_thread = threading.local()


def _in_flight() -> list[PendingEvent]:
    found: list[PendingEvent] | None = getattr(_thread, "events", None)
    if found is None:
        found = _thread.events = []
    return found


def _before_commit() -> None:
    event = _pending.get()
    if event is not None and not event.written:
        write_in_transaction([event])


def _on_rollback() -> None:
    events: list[PendingEvent] | None = getattr(_thread, "events", None)
    if events:
        for event in events:
            event.written = False
        events.clear()


def _after_commit() -> None:
    events: list[PendingEvent] | None = getattr(_thread, "events", None)
    if events:
        events.clear()
        commits.notify()


class CommitSignal:
    """Counts the commits of events in this process and wakes the threads waiting for one."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def notify(self) -> None:
        with self._condition:
            self._count += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Returns once the count differs from ``seen`` (read it before looking for events, so
        a commit in between is not missed) or after ``timeout`` seconds; the count then."""
        with self._condition:
            self._condition.wait_for(lambda: self._count != seen, timeout)
            return self._count


commits = CommitSignal()
add_transaction_hooks(_before_commit, _on_rollback, _after_commit)


# ---------------------------------------------------------------------------------------------
# Rows and summaries
# ---------------------------------------------------------------------------------------------

# The columns an event sets, in insert order, and the longest value of each bounded one: a long
# name is cut rather than failing the change it records.
_INSERT_COLUMNS = (
    "time", "actor", "service", "method", "resource_type", "resource_id", "scope_type", "scope_id",
    "before", "after", "request_id", "peer", "outcome",
)  # fmt: skip
_LIMITS = tuple(
    int(field.max_length) if isinstance(field, pw.CharField) else 0
    for field in (AuditEvent._meta.fields[name] for name in _INSERT_COLUMNS)
)


def _values(event: PendingEvent, time_ms: int) -> list[Any]:
    values: list[Any] = [
        time_ms,
        event.actor,
        event.service,
        event.method,
        event.resource_type,
        event.resource_id,
        event.scope_type,
        event.scope_id,
        _one_line(event.before, SUMMARY_CHARS),
        _one_line(event.after, SUMMARY_CHARS),
        event.request_id,
        event.peer,
        event.outcome,
    ]
    return [v[:limit] if limit and len(v) > limit else v for v, limit in zip(values, _LIMITS, strict=True)]


# The INSERT of ``count`` events, per database. Hand-written like the metric hot path's: Peewee's
# query builder would cost more than the database does for this statement (it runs in the
# LogMetric group commit).
_insert_sql: dict[tuple[Any, int], str] = {}


def _insert_statement(count: int) -> str:
    key = (db.obj, count)
    found = _insert_sql.get(key)
    if found is None:
        q = "`" if is_mysql() else '"'
        columns = ", ".join(f"{q}{AuditEvent._meta.fields[name].column_name}{q}" for name in _INSERT_COLUMNS)
        one = "(" + ", ".join([db.obj.param] * len(_INSERT_COLUMNS)) + ")"
        found = f"INSERT INTO {q}{AuditEvent._meta.table_name}{q} ({columns}) VALUES " + ", ".join(
            [one] * count
        )
        if len(_insert_sql) >= 256:
            _insert_sql.clear()
        _insert_sql[key] = found
    return found


def summarize(message: Message) -> str:
    """A one-line text of the fields set in a request, at most ``SUMMARY_CHARS`` characters:
    ``name='m', version=3, stage='Production'``. Bytes (artifact chunks, tensors) show as their
    size and secrets (fields named ``secret``, ``token``, ``password`` or ending so) as ``***``;
    long strings and lists are cut."""
    return _one_line(_fields(message, 0), SUMMARY_CHARS)


def _fields(message: Message, depth: int) -> str:
    parts = []
    for field, value in message.ListFields():
        parts.append(f"{field.name}={_value_of(field, value, depth)}")
    return ", ".join(parts)


@functools.cache
def _field_kind(field: FieldDescriptor) -> str:
    """How a field is shown ("secret", "map" or "plain"): worked out once per field, since every
    change of the same RPC asks again."""
    name = field.name.lower()
    if name in _SECRET_WORDS or name.endswith(_SECRET_SUFFIXES):
        return "secret"
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return "map"
    return "plain"


def _value_of(field: FieldDescriptor, value: Any, depth: int) -> str:
    kind = _field_kind(field)
    if kind == "secret":
        return "***"
    if kind == "map":
        assert field.message_type is not None  # a map field's entries are messages
        value_field = field.message_type.fields_by_name["value"]
        items = list(value.items())
        shown = [f"{_scalar(str(k))}: {_one(value_field, v, depth)}" for k, v in items[:_REPEATED_SHOWN]]
        return "{" + ", ".join(shown) + _more(len(items)) + "}"
    if field.is_repeated:
        shown = [_one(field, item, depth) for item in value[:_REPEATED_SHOWN]]
        return "[" + ", ".join(shown) + _more(len(value)) + "]"
    return _one(field, value, depth)


def _one(field: FieldDescriptor, value: Any, depth: int) -> str:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return f"<{len(value)} bytes>"
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return "{…}" if depth + 1 >= _NESTING_SHOWN else "{" + _fields(value, depth + 1) + "}"
    if field.type == FieldDescriptor.TYPE_ENUM:
        named = field.enum_type.values_by_number.get(value) if field.enum_type is not None else None
        return named.name if named is not None else str(value)
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= _STRING_CHARS else value[:_STRING_CHARS] + "…")
    return str(value)


def _more(count: int) -> str:
    return f", … ({count} in all)" if count > _REPEATED_SHOWN else ""


def _one_line(text: str, limit: int) -> str:
    """``text`` on one line (control characters as spaces), cut to ``limit`` characters."""
    flat = text if text.isprintable() else "".join(ch if ch.isprintable() else " " for ch in text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
