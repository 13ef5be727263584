"""keel's audit log from the SDK: list past events, or follow new ones as they are committed.

::

    from keel.audit import AuditClient

    audit = AuditClient()
    for event in audit.list_events(model_name="fraud", since="1d"):
        print(event.time, event.actor, event.method, event.resource_id, event.outcome)
    for event in audit.watch_events():       # blocks; resumes by itself after a restart
        ...

This package also holds the generated ``keel.audit.v1`` stubs, which the server imports: the
transport is therefore imported only when a client is made.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import grpc

from keel.audit.v1 import audit_pb2 as pb
from keel.audit.v1 import audit_pb2_grpc
from keel.exceptions import InvalidArgument, Unavailable, from_rpc_error
from keel.paging import Pager
from keel.shared import pages

if TYPE_CHECKING:
    from keel._transport import Transport

_OUTCOMES = {
    pb.OUTCOME_OK: "OK",
    pb.OUTCOME_DENIED: "DENIED",
    pb.OUTCOME_UNAUTHENTICATED: "UNAUTHENTICATED",
}
# Largest page the server hands out (it caps larger requests anyway).
_SERVER_PAGE_MAX = pages.AUDIT_EVENTS.maximum
_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TIME_FORMS = "ms since epoch (1714557600000), an ISO-8601 time (2024-05-01T10:00:00Z; UTC when no offset) or an age such as 30s, 10m, 2h, 1d, 1w"


@dataclass(frozen=True)
class Event:
    """One audit event: who (``actor``) called what (``service``/``method``) on which resource,
    when (``time``, ms since epoch) and with what ``outcome`` (OK, DENIED, UNAUTHENTICATED)."""

    id: int
    time: int
    actor: str
    method: str
    service: str
    resource_type: str
    resource_id: str
    before: str
    after: str
    request_id: str
    peer: str
    outcome: str

    @classmethod
    def from_proto(cls, m: pb.Event) -> Event:
        return cls(
            id=m.id,
            time=m.time,
            actor=m.actor,
            method=m.method,
            service=m.service,
            resource_type=m.resource_type,
            resource_id=m.resource_id,
            before=m.before,
            after=m.after,
            request_id=m.request_id,
            peer=m.peer,
            outcome=_OUTCOMES.get(m.outcome, "UNSPECIFIED"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_time(value: int | str | dt.datetime | None, *, now_ms: int | None = None) -> int:
    """A time bound as ms since epoch (0 for None): an int (ms), a datetime (naive = UTC), or a
    string holding ms, an ISO-8601 time or an age before now (``10m``, ``2h``, ``1d``)."""
    if value is None:
        return 0
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return _checked_ms(int(moment.timestamp() * 1000), value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _checked_ms(value, value)
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit():
        return _checked_ms(int(text), value)
    age = _RELATIVE.fullmatch(text.lower())
    if age:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0, now - int(age.group(1)) * _UNIT_SECONDS[age.group(2)] * 1000)
    try:
        parsed = dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise InvalidArgument(f"time {value!r} is not understood: give {TIME_FORMS}", reason="INVALID_TIME")
    return parse_time(parsed)


def _checked_ms(ms: int, value: object) -> int:
    if not 0 <= ms < 2**63:
        raise InvalidArgument(f"time {value!r} is out of range: give {TIME_FORMS}", reason="INVALID_TIME")
    return ms


class AuditClient:
    """The AuditService of the server at ``tracking_uri`` (default: the tracking URI)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        from keel._transport import get_tracking_uri, transport

        self.tracking_uri = tracking_uri or get_tracking_uri()
        self._transport: Transport = transport(self.tracking_uri)
        self._stub = self._transport.stub(audit_pb2_grpc.AuditServiceStub)

    def list_events(
        self,
        actor: str | None = None,
        model_name: str | None = None,
        experiment_id: str | None = None,
        method: str | None = None,
        since: int | str | dt.datetime | None = None,
        until: int | str | dt.datetime | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        max_results: int | None = None,
    ) -> list[Event]:
        """The events matching every given filter, oldest first, across the server's pages (at
        most ``max_results``). ``since`` (inclusive) and ``until`` (exclusive) take ms since epoch,
        a datetime, an ISO-8601 string or an age such as ``"10m"``, ``"2h"``, ``"1d"``."""
        if max_results is not None and (isinstance(max_results, bool) or max_results < 1):
            raise InvalidArgument(
                f"max_results must be >= 1 (None: all), got {max_results!r}",
                reason="INVALID_PAGE_SIZE",
                field="max_results",
            )
        page_size = _SERVER_PAGE_MAX if max_results is None else min(max_results, _SERVER_PAGE_MAX)
        template = pb.ListEventsRequest(
            actor=actor or "",
            model_name=model_name or "",
            experiment_id=str(experiment_id or ""),
            method=method or "",
            since_time=parse_time(since),
            until_time=parse_time(until),
            resource_type=resource_type or "",
            resource_id=resource_id or "",
            page_size=page_size,
        )

        def fetch(token: str) -> tuple[list[Event], str]:
            request = pb.ListEventsRequest()
            request.CopyFrom(template)
            request.page_token = token
            response = self._transport.call(self._stub.ListEvents, request, idempotent=True)
            return [Event.from_proto(e) for e in response.events], response.next_page_token

        return Pager(fetch, limit=max_results).to_list()

    def watch_events(
        self,
        after_id: int = 0,
        actor: str | None = None,
        method: str | None = None,
        model_name: str | None = None,
        experiment_id: str | None = None,
    ) -> Iterator[Event]:
        """Events with an id above ``after_id`` (oldest first), then new ones as they are
        committed, until the caller stops iterating. When the server goes away (UNAVAILABLE, or
        the stream ends) it reconnects and resumes after the last event it yielded: no gap, no
        duplicate. Reconnection gives up, raising ``Unavailable``, when the server stays
        unreachable for the transport's retry budget (``keel._transport.RETRY_BUDGET_S``)."""
        from keel._transport import RetryBudget

        last_id = int(after_id)
        if last_id < 0:
            raise InvalidArgument(
                f"after_id must be >= 0, got {after_id!r}", reason="INVALID_EVENT_ID", field="after_id"
            )
        retries = RetryBudget()
        while True:
            request = pb.WatchEventsRequest(
                after_event_id=last_id,
                actor=actor or "",
                method=method or "",
                model_name=model_name or "",
                experiment_id=str(experiment_id or ""),
            )
            opened = time.monotonic()
            progressed = False
            failure: grpc.RpcError | None = None  # None: the server ended the stream (draining)
            stream = self._stub.WatchEvents(request)
            try:
                for message in stream:
                    event = Event.from_proto(message)
                    last_id = event.id
                    progressed = True
                    yield event
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    raise from_rpc_error(exc) from None
                failure = exc
            finally:
                stream.cancel()  # no-op once finished; frees the call when the caller stops early
            if progressed or time.monotonic() - opened >= retries.budget_s:
                retries = RetryBudget()  # a stream that worked for a while starts a fresh budget
            if not retries.wait():
                if failure is not None:
                    raise from_rpc_error(failure) from None
                raise Unavailable(
                    "the server keeps closing the event watch; it may be shutting down: try again later",
                    reason="WATCH_CLOSED",
                )


__all__ = ["TIME_FORMS", "AuditClient", "Event", "parse_time"]
