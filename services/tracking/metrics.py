"""The metric write path of the tracking service.

Every point is appended to the history (``Metric``) and moves its key's latest value
(``LatestMetric``, what GetRun and search read) forward by (step, timestamp, value), never
backwards, whatever the order concurrent writers commit in: one conditional upsert per key.

LogMetric is the hottest call keel has. Concurrent callers share one transaction
(:class:`MetricLog`, a group commit), and the statements are Peewee's own, rendered once per
database and size (``prepared.Prepared``): building these tiny queries costs more than running
them, and the schema still has one home (``common/db.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import peewee as pw

from keel_server.audit import recorder
from keel_server.common.db import (
    LatestMetric,
    Metric,
    Run,
    db,
    is_mysql,
    retry_transaction,
    write_transaction,
)
from keel_server.common.errors import FailedPrecondition, NotFound
from keel_server.common.prepared import Prepared, slot, slot_rows
from keel_server.tracking.records import check_run_accepts

# A point as the tables hold it: (run_id, key, stored value, value kind, timestamp, step)
# (``records.encode_value`` gives the stored value and its kind).
Point = tuple[str, str, float, int, int, int]

_L = LatestMetric
_HISTORY_COLUMNS = (Metric.run, Metric.key, Metric.value, Metric.value_kind, Metric.timestamp, Metric.step)
_LATEST_COLUMNS = (_L.run, _L.key, _L.value, _L.value_kind, _L.timestamp, _L.step)
_WIDTH = len(_HISTORY_COLUMNS)
# A key's latest point moves forward in this order (the same as ``write_points`` picks by).
_LATEST_ORDER = (_L.step, _L.timestamp, _L.value)


def _run_stage(_n: int) -> Any:
    query = Run.select(Run.lifecycle_stage).where(Run.run_id == slot(0))
    return query.for_update() if is_mysql() else query  # see lock_active_run


def _insert_history(n: int) -> Any:
    return Metric.insert_many(slot_rows(n, _WIDTH), fields=_HISTORY_COLUMNS).returning()


def _upsert_latest(n: int) -> Any:
    """PostgreSQL and SQLite: insert, or move the existing latest point forward only."""
    proposed = pw.Tuple(*(pw.EXCLUDED[field.column_name] for field in _LATEST_ORDER))
    return (
        _L.insert_many(slot_rows(n, _WIDTH), fields=_LATEST_COLUMNS)
        .returning()
        .on_conflict(
            conflict_target=[_L.run, _L.key],
            preserve=[_L.value, _L.value_kind, _L.timestamp, _L.step],
            where=pw.Tuple(*_LATEST_ORDER) < proposed,
        )
    )


# MySQL's upsert cannot be conditional as a whole: insert if absent, else update if newer.
def _insert_latest_if_absent(_n: int) -> Any:
    return _L.insert_many(slot_rows(1, _WIDTH), fields=_LATEST_COLUMNS).on_conflict_ignore()


def _advance_latest(_n: int) -> Any:
    changes = {_L.value: slot(0), _L.value_kind: slot(1), _L.timestamp: slot(2), _L.step: slot(3)}
    newer = pw.Tuple(*_LATEST_ORDER) < pw.Tuple(slot(6), slot(7), slot(8))
    return _L.update(changes).where((_L.run == slot(4)) & (_L.key == slot(5)) & newer)


_RUN_STAGE = Prepared(_run_stage)
_INSERT_HISTORY = Prepared(_insert_history)
_UPSERT_LATEST = Prepared(_upsert_latest)
_INSERT_LATEST_IF_ABSENT = Prepared(_insert_latest_if_absent)
_ADVANCE_LATEST = Prepared(_advance_latest)


def lock_active_run(run_id: str) -> None:
    """The run must exist and not be deleted: checked by every logging path on every write, so a
    run deleted through another replica refuses data at once. On MySQL it also takes the run's
    row lock: writers of one run then queue instead of deadlocking on latest_metric's gap locks."""
    row = db.execute_sql(_RUN_STAGE.sql(), (run_id,)).fetchone()
    check_run_accepts(run_id, None if row is None else row[0], "log to")


def write_points(rows: Sequence[Point]) -> None:
    """Appends ``rows`` to the history and moves each key's latest value forward, inside the
    caller's transaction (after ``lock_active_run`` for each of their runs)."""
    db.execute_sql(_INSERT_HISTORY.sql(len(rows)), _flat(rows))
    latest: dict[tuple[str, str], Point] = {}
    for row in rows:
        seen = latest.get((row[0], row[1]))
        if seen is None or (row[5], row[4], row[2]) > (seen[5], seen[4], seen[2]):
            latest[(row[0], row[1])] = row
    newest = [latest[k] for k in sorted(latest)]  # one lock order for every writer
    if not is_mysql():
        db.execute_sql(_UPSERT_LATEST.sql(len(newest)), _flat(newest))
        return
    for run_id, key, value, kind, ts, step in newest:
        if db.execute_sql(_INSERT_LATEST_IF_ABSENT.sql(), (run_id, key, value, kind, ts, step)).rowcount == 1:
            continue
        db.execute_sql(_ADVANCE_LATEST.sql(), (value, kind, ts, step, run_id, key, step, ts, value))


def _flat(rows: Sequence[Point]) -> list[Any]:
    return [v for row in rows for v in row]


class MetricLog:
    """LogMetric's points, committed in groups: concurrent callers share one transaction (the
    BEGIN/COMMIT, the run checks and the statements are paid once per group, not per point),
    and each returns once its own point is committed or raises its own error, so a synchronous
    LogMetric means what it always meant."""

    def __init__(self) -> None:
        self._group = _GroupCommit(self._commit_group)

    def log(self, point: Point) -> None:
        # The caller's audit event travels with its point: the group is committed on another
        # caller's thread, where this call's context is not visible.
        self._group.submit(point, recorder.current())

    @staticmethod
    def _commit_group(items: list[tuple[Point, Any]]) -> dict[str, Exception]:
        """One transaction for the points of concurrent callers (``(point, audit event or None)``
        items): each run is checked, points of runs that refuse data get that run's error, the
        rest are written together with their callers' audit events. Returns the errors by run."""
        rows = [row for row, _ in items]

        def attempt() -> dict[str, Exception]:
            errors: dict[str, Exception] = {}
            with write_transaction():
                for run_id in sorted({r[0] for r in rows}):  # one lock order for every writer
                    try:
                        lock_active_run(run_id)
                    except (NotFound, FailedPrecondition) as exc:
                        errors[run_id] = exc
                accepted = [r for r in rows if r[0] not in errors]
                if accepted:
                    write_points(accepted)
                events = [event for row, event in items if event is not None and row[0] not in errors]
                if events:
                    recorder.write_in_transaction(events)
            return errors

        # This thread's own event is among the items: keep the transaction hook from writing it
        # again (or at all, when its point was refused).
        with recorder.detached():
            return retry_transaction(attempt, unique_violations=True)


class _GroupCommit:
    """Group commit: the first caller becomes the leader and commits everything queued so far
    (its own point included) in one transaction, then hands leadership to the oldest waiting
    caller, if any. ``commit`` gets the ``(row, tag)`` items of a group and returns the errors of
    the rows it refused, keyed by the row's first element."""

    def __init__(self, commit: Callable[[list[tuple[Any, Any]]], dict[str, Exception]]) -> None:
        self._commit = commit
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, Any, _Waiter]] = []
        self._leading = False

    def submit(self, row: Any, tag: Any = None) -> None:
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
