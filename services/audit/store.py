"""Reading the audit log: filtered, paged lists (``list_events``) and a gap-free follower of new
events across replicas (``EventFollower``). Nothing here writes (``recorder`` does); no RPC
edits or deletes an event.

Following without gap or duplicate. Event ids come from the database's autoincrement, which
is allocated at insert and becomes visible at commit. On PostgreSQL and MariaDB two
transactions may commit out of order (id 10 visible while id 9 is still in flight), and a
rolled-back insert leaves a hole that never fills. A follower that jumped to 10 would miss 9
for good; one that waited for 9 forever would stall on every rollback. So the follower emits
only the contiguous prefix of ids above its cursor: at a hole below a visible id it holds the
later events until the hole fills, or until ``GAP_TIMEOUT_S`` passed since it first saw that
hole, and then skips it. The recorder inserts every event as the last statement before its
transaction's COMMIT, so an id in flight becomes visible (or dead) within milliseconds; two
seconds cover a slow commit (a loaded disk, a GC pause) by a wide margin while keeping a live
watcher at most two seconds behind after a rollback. A hole below an event that was written
more than ``HOLE_SETTLED_S`` ago is an old rollback and is skipped at once, so replaying a long
backlog never waits (this assumes the replicas' clocks agree within that margin). SQLite has
neither problem (one writer at a time, ids never skipped), and the same rule costs nothing
there.

The cursor advances over every event, filtered out or not: filters and visibility apply to
what is emitted, after the contiguity check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from keel.shared import pages
from keel_server.audit.recorder import RESOURCE_TYPES, SCOPE_EXPERIMENT, SCOPE_MODEL
from keel_server.common import pagination, querying
from keel_server.common.db import AuditEvent, now_ms
from keel_server.common.errors import InvalidArgument, quote
from keel_server.tracking.records import parse_experiment_id

DEFAULT_PAGE, MAX_PAGE = pages.AUDIT_EVENTS
# How long a follower holds the events above a hole in the ids before skipping it (see above).
GAP_TIMEOUT_S = 2.0
# A hole below an event older than this is a rollback long finished: skipped without waiting.
HOLE_SETTLED_S = 60.0
# Rows a follower reads per poll.
FOLLOW_BATCH = 500


@dataclass(frozen=True)
class EventRecord:
    id: int
    time: int
    actor: str
    service: str
    method: str
    resource_type: str
    resource_id: str
    scope_type: str
    scope_id: str
    before: str
    after: str
    request_id: str
    peer: str
    outcome: int


_COLUMNS = [getattr(AuditEvent, f.name) for f in fields(EventRecord)]


@dataclass(frozen=True)
class EventFilters:
    """What ListEvents and WatchEvents select; empty/0 fields select everything. Times are ms
    since the epoch, ``since_time`` inclusive, ``until_time`` exclusive."""

    actor: str = ""
    resource_type: str = ""
    resource_id: str = ""
    method: str = ""
    since_time: int = 0
    until_time: int = 0
    model_name: str = ""
    experiment_id: str = ""

    def validate(self) -> EventFilters:
        """Itself, or INVALID_ARGUMENT naming the bad field."""
        if self.resource_type and self.resource_type not in RESOURCE_TYPES:
            raise InvalidArgument(
                f"resource_type {quote(self.resource_type)} is not a resource type: use one of "
                f"{', '.join(RESOURCE_TYPES)}",
                reason="INVALID_RESOURCE_TYPE",
                field="resource_type",
            )
        if self.resource_id and not self.resource_type:
            raise InvalidArgument(
                f"resource_id {quote(self.resource_id)} needs resource_type: ids of different kinds "
                "of resource look alike (a run id, a model name), so say which kind it is",
                reason="RESOURCE_TYPE_REQUIRED",
                field="resource_id",
            )
        for name in ("since_time", "until_time"):
            if getattr(self, name) < 0:
                raise InvalidArgument(
                    f"{name} must be >= 0 (ms since the epoch; 0: no bound), got {getattr(self, name)}",
                    reason="INVALID_TIME_RANGE",
                    field=name,
                )
        if self.since_time and self.until_time and self.since_time > self.until_time:
            raise InvalidArgument(
                f"since_time ({self.since_time}) is after until_time ({self.until_time}): the range "
                "is [since_time, until_time), so since_time must not be greater",
                reason="INVALID_TIME_RANGE",
                field="since_time",
            )
        if self.model_name and self.experiment_id:
            raise InvalidArgument(
                "model_name and experiment_id cannot both be set: an event belongs to one registered "
                "model or one experiment; list them apart",
                reason="CONFLICTING_FILTERS",
                field="experiment_id",
            )
        if self.experiment_id:
            parse_experiment_id(self.experiment_id)
        return self

    def conditions(self) -> list[Any]:
        found: list[Any] = []
        if self.actor:
            found.append(AuditEvent.actor == self.actor)
        if self.resource_type:
            found.append(AuditEvent.resource_type == self.resource_type)
        if self.resource_id:
            found.append(AuditEvent.resource_id == self.resource_id)
        if self.method:
            found.append(AuditEvent.method == self.method)
        if self.since_time:
            found.append(AuditEvent.time >= self.since_time)
        if self.until_time:
            found.append(AuditEvent.time < self.until_time)
        if self.model_name:
            # The recorder cuts a scope longer than the column; compare what it stored.
            name = self.model_name[: AuditEvent.scope_id.max_length]
            found.append((AuditEvent.scope_type == SCOPE_MODEL) & (AuditEvent.scope_id == name))
        if self.experiment_id:
            eid = str(parse_experiment_id(self.experiment_id))
            found.append((AuditEvent.scope_type == SCOPE_EXPERIMENT) & (AuditEvent.scope_id == eid))
        return found


def list_events(
    filters: EventFilters, page_size: int, page_token: str, visible: Any | None = None
) -> tuple[list[EventRecord], str]:
    """A page of events oldest first (by id), and the token of the next ('' at the end).
    ``visible``: a Peewee condition limiting the events to what the caller may read."""
    filters.validate()
    size = pagination.page_size(page_size, DEFAULT_PAGE, MAX_PAGE)
    fp = pagination.fingerprint("audit-events", *[getattr(filters, f.name) for f in fields(filters)])
    query = AuditEvent.select(*_COLUMNS)
    for condition in [*filters.conditions(), visible]:
        if condition is not None:
            query = query.where(condition)
    rows = [EventRecord(*row) for row in _tuples(querying.id_page(query, AuditEvent.id, page_token, fp, size))]
    return pagination.trim(rows, size, lambda last: [last.id], fp)


class EventFollower:
    """Reads the events above a cursor in id order with no gap and no duplicate (see the module
    docstring). Call ``poll`` repeatedly; ``more`` says whether the last poll stopped at its
    batch size (poll again at once) rather than at the newest event or a held hole."""

    def __init__(
        self,
        after_id: int,
        filters: EventFilters,
        visible: Any | None = None,
        *,
        gap_timeout_s: float = GAP_TIMEOUT_S,
        hole_settled_s: float = HOLE_SETTLED_S,
        batch: int = FOLLOW_BATCH,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        if after_id < 0:
            raise InvalidArgument(
                f"after_event_id must be >= 0 (0: from the first event), got {after_id}",
                reason="INVALID_EVENT_ID",
                field="after_event_id",
            )
        self.cursor = after_id
        self.more = False
        self._conditions = [c for c in [*filters.validate().conditions(), visible] if c is not None]
        self._gap_timeout_s = gap_timeout_s
        self._hole_settled_ms = hole_settled_s * 1000
        self._batch = batch
        self._clock = clock
        self._wall_clock_ms = wall_clock_ms
        # The hole below each visible id, by that id: when this follower first saw it.
        self._holes: dict[int, float] = {}

    def poll(self) -> list[EventRecord]:
        """The next events (filtered) of the contiguous run of ids above the cursor."""
        ids = _tuples(
            AuditEvent.select(AuditEvent.id, AuditEvent.time)
            .where(AuditEvent.id > self.cursor)
            .order_by(AuditEvent.id)
            .limit(self._batch)
        )
        now = self._clock()
        high = self.cursor
        held = False
        for event_id, written_ms in ids:
            if event_id > high + 1 and not self._may_skip_hole(event_id, written_ms, now):
                held = True
                break
            high = event_id
        self.more = len(ids) == self._batch and not held
        if high == self.cursor:
            return []
        query = AuditEvent.select(*_COLUMNS).where((AuditEvent.id > self.cursor) & (AuditEvent.id <= high))
        for condition in self._conditions:
            query = query.where(condition)
        events = [EventRecord(*row) for row in _tuples(query.order_by(AuditEvent.id))]
        self.cursor = high
        self._holes = {above: seen for above, seen in self._holes.items() if above > high}
        return events

    def _may_skip_hole(self, above_id: int, above_written_ms: int, now: float) -> bool:
        """Whether the ids missing just below ``above_id`` may be given up on."""
        if self._wall_clock_ms() - above_written_ms >= self._hole_settled_ms:
            return True
        first_seen = self._holes.setdefault(above_id, now)
        return now - first_seen >= self._gap_timeout_s


def _tuples(query: Any) -> list[tuple[Any, ...]]:
    """The rows of a select as plain tuples (Peewee's stubs type them as models)."""
    return list(query.tuples())
