"""keel.audit.v1.AuditService: thin gRPC layer over ``audit.store``.

ListEvents pages the log; WatchEvents follows it: the backlog above ``after_event_id``, then
each event as it commits on this replica (woken at once) or any other (a poll every
``POLL_INTERVAL_S``), until the client cancels or the server stops. Each stream holds one of
the server's worker threads, so at most a quarter of them may watch at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from keel.audit.v1 import audit_pb2 as pb
from keel.audit.v1 import audit_pb2_grpc
from keel_server.audit import recorder
from keel_server.audit.store import EventFilters, EventFollower, EventRecord, list_events
from keel_server.auth.visibility import audit_events_condition
from keel_server.common.app import App
from keel_server.common.errors import ResourceExhausted, Unavailable

# Seconds between polls of the database while a watcher has nothing new (events committed by
# other replicas; this replica's own commits wake it at once).
POLL_INTERVAL_S = 0.2


def event_pb(e: EventRecord) -> pb.Event:
    return pb.Event(
        id=e.id,
        time=e.time,
        actor=e.actor,
        method=e.method,
        service=e.service,
        resource_type=e.resource_type,
        resource_id=e.resource_id,
        before=e.before,
        after=e.after,
        request_id=e.request_id,
        peer=e.peer,
        outcome=e.outcome,  # type: ignore[arg-type]  # the column holds Outcome numbers
    )


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, max_watchers: int) -> None:
        self._max_watchers = max_watchers
        self._watchers = threading.BoundedSemaphore(max_watchers)
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Ends every watch stream at its next wake-up (server shutdown)."""
        self._stopping.set()
        recorder.commits.notify()

    def ListEvents(
        self, request: pb.ListEventsRequest, context: grpc.ServicerContext
    ) -> pb.ListEventsResponse:
        filters = EventFilters(
            actor=request.actor,
            resource_type=request.resource_type,
            resource_id=request.resource_id,
            method=request.method,
            since_time=request.since_time,
            until_time=request.until_time,
            model_name=request.model_name,
            experiment_id=request.experiment_id,
        )
        events, token = list_events(filters, request.page_size, request.page_token, audit_events_condition())
        return pb.ListEventsResponse(events=[event_pb(e) for e in events], next_page_token=token)

    def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Event]:
        filters = EventFilters(
            actor=request.actor,
            method=request.method,
            model_name=request.model_name,
            experiment_id=request.experiment_id,
        )
        # Validated (INVALID_ARGUMENT) before a worker slot is taken.
        follower = EventFollower(request.after_event_id, filters, audit_events_condition())
        if not self._watchers.acquire(blocking=False):
            raise ResourceExhausted(
                f"this server already streams {self._max_watchers} WatchEvents calls, its limit (a quarter "
                "of its worker threads): retry later, follow from fewer clients, or raise the server's "
                "--max-workers",
                reason="TOO_MANY_WATCHERS",
                metadata={"limit": str(self._max_watchers)},
            )
        try:
            while context.is_active() and not self._stopping.is_set():
                seen = recorder.commits.count  # before polling: a commit in between wakes the wait
                for event in follower.poll():
                    yield event_pb(event)
                if not follower.more:
                    recorder.commits.wait(seen, POLL_INTERVAL_S)
        finally:
            self._watchers.release()
        if self._stopping.is_set():
            # A watch never ends on its own: the client resumes after its last event elsewhere.
            raise Unavailable(
                f"this server is shutting down: resume with after_event_id={follower.cursor} or the id "
                "of the last event received, on another replica or once it is back",
                reason="SERVER_SHUTTING_DOWN",
            )


def add_to_server(server: grpc.Server, app: App) -> list[str]:
    servicer = AuditServicer(max_watchers=max(1, app.settings.max_workers // 4))
    app.drain_hooks.append(servicer.stop)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)
    return [pb.DESCRIPTOR.services_by_name["AuditService"].full_name]
