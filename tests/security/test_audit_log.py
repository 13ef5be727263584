"""The audit log (keel.audit.v1): every change leaves exactly one event, committed with it; a
change that fails leaves none; ListEvents filters and pages; WatchEvents follows the log with no
gap and no duplicate across disconnects, replicas and restarts.

Servers are real (in-process over each database backend, and a ``keel server`` process as a
second replica); the out-of-order commits WatchEvents must survive are made with two real
transactions held open by threads.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import peewee
import pytest
from server_fixtures import ServerHandle, running_server, server_process

from keel.artifacts.v1 import artifacts_pb2 as apb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.audit.v1 import audit_pb2 as pb
from keel.audit.v1 import audit_pb2_grpc
from keel.auth.v1 import auth_pb2, auth_pb2_grpc
from keel.registry.v1 import registry_pb2 as rpb
from keel.registry.v1 import registry_pb2_grpc
from keel.tracking.v1 import tracking_pb2 as tpb
from keel.tracking.v1 import tracking_pb2_grpc
from keel_server.audit import recorder
from keel_server.audit.store import GAP_TIMEOUT_S, EventFilters, EventFollower
from keel_server.common import db as dbmod
from keel_server.common.db import AuditEvent, now_ms, write_transaction
from keel_server.common.errors import InvalidArgument
from keel_server.common.migrations import ensure_current

pytestmark = pytest.mark.server

TRACKING = "keel.tracking.v1.TrackingService"
REGISTRY = "keel.registry.v1.ModelRegistryService"
WAIT_S = 20.0  # the longest any event may take to reach a watcher here (a 0.2 s poll in practice)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class Stubs:
    channel: grpc.Channel
    tracking: Any
    registry: Any
    artifacts: Any
    audit: Any
    auth: Any


@contextlib.contextmanager
def stubs_of(port: int) -> Iterator[Stubs]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Stubs(
            channel=channel,
            tracking=tracking_pb2_grpc.TrackingServiceStub(channel),
            registry=registry_pb2_grpc.ModelRegistryServiceStub(channel),
            artifacts=artifacts_pb2_grpc.ArtifactServiceStub(channel),
            audit=audit_pb2_grpc.AuditServiceStub(channel),
            auth=auth_pb2_grpc.AuthServiceStub(channel),
        )
    finally:
        channel.close()


@contextlib.contextmanager
def audited_server(db_url: str, root: Path, **overrides: Any) -> Iterator[tuple[ServerHandle, Stubs]]:
    with running_server(db_url, f"file://{root}/artifacts", audit=True, **overrides) as handle:
        with stubs_of(handle.port) as stubs:
            yield handle, stubs


def all_events(audit: Any, metadata: Any = None, **filters: Any) -> list[pb.Event]:
    """Every event ListEvents returns for ``filters``, following the page tokens (bounded)."""
    found: list[pb.Event] = []
    token = ""
    for _page in range(1000):
        page = audit.ListEvents(
            pb.ListEventsRequest(page_token=token, page_size=1000, **filters), metadata=metadata
        )
        found.extend(page.events)
        token = page.next_page_token
        if not token:
            return found
    raise AssertionError("ListEvents never reached its last page")


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()  # type: ignore[no-any-return, attr-defined]


def invalid(call: Any, text: str) -> None:
    """The call fails with INVALID_ARGUMENT and a message containing ``text``."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value  # type: ignore[attr-defined]
    assert text in caught.value.details(), caught.value.details()  # type: ignore[attr-defined]


class Watch:
    """A WatchEvents stream read on a thread into a queue (each read bounded by WAIT_S)."""

    def __init__(self, audit: Any, **request: Any) -> None:
        self.call = audit.WatchEvents(pb.WatchEventsRequest(**request))
        self._queue: queue.Queue[pb.Event | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self._queue.put(event)
            self._queue.put(EOFError("the stream ended with status OK"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._queue.put(exc)

    def take(self, count: int) -> list[pb.Event]:
        events: list[pb.Event] = []
        deadline = time.monotonic() + WAIT_S
        while len(events) < count:
            try:
                item = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"only {len(events)} of {count} events arrived within {WAIT_S} s"
                ) from None
            if isinstance(item, BaseException):
                raise AssertionError(f"the stream ended after {len(events)} of {count} events: {item}")
            events.append(item)
        return events

    def take_until(self, last_id: int) -> list[pb.Event]:
        """Events up to and including the one with id ``last_id`` (a sentinel written last)."""
        events: list[pb.Event] = []
        for _ in range(10_000):
            events.extend(self.take(1))
            if events[-1].id >= last_id:
                return events
        raise AssertionError("the sentinel never arrived")

    def ended(self) -> BaseException:
        """The error that ended the stream (waits for it)."""
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive(), "the stream did not end"
        while True:
            item = self._queue.get_nowait()
            if isinstance(item, BaseException):
                return item

    def cancel(self) -> None:
        self.call.cancel()
        self._thread.join(WAIT_S)


def sentinel(stubs: Stubs) -> int:
    """Makes one more change and returns the id of its event: a watcher that receives it has
    received everything before it (ids are emitted in order)."""
    stubs.tracking.CreateExperiment(tpb.CreateExperimentRequest(name=f"sentinel-{uuid.uuid4().hex[:8]}"))
    return max(e.id for e in all_events(stubs.audit, method="CreateExperiment"))


def make_experiment(stubs: Stubs, name: str = "") -> str:
    request = tpb.CreateExperimentRequest(name=name or f"exp-{uuid.uuid4().hex[:8]}")
    return str(stubs.tracking.CreateExperiment(request).experiment_id)


def make_run(stubs: Stubs, experiment_id: str) -> str:
    return str(stubs.tracking.CreateRun(tpb.CreateRunRequest(experiment_id=experiment_id)).info.run_id)


def upload(stubs: Stubs, run_id: str, path: str, data: bytes) -> None:
    messages = [
        apb.UploadArtifactRequest(header=apb.UploadHeader(ref=apb.ArtifactRef(run_id=run_id, path=path))),
        apb.UploadArtifactRequest(chunk=data),
    ]
    stubs.artifacts.UploadArtifact(iter(messages))


def ready_version(stubs: Stubs, name: str, run_id: str) -> int:
    """A new READY version of ``name`` from the run's ``model/`` folder."""
    version = int(
        stubs.registry.CreateModelVersion(
            rpb.CreateModelVersionRequest(name=name, source=f"runs:/{run_id}/model", run_id=run_id)
        ).version
    )
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:  # registration copies the files, then marks it READY
        got = stubs.registry.GetModelVersion(rpb.GetModelVersionRequest(name=name, version=version))
        if got.status == rpb.MODEL_VERSION_STATUS_READY:
            return version
        time.sleep(0.05)
    raise AssertionError(f"version {version} of {name} never became READY")


def pending(actor: str = "someone", method: str = "Probe", **fields: Any) -> recorder.PendingEvent:
    values: dict[str, Any] = {
        "actor": actor,
        "service": "test.Service",
        "method": method,
        "resource_type": "experiment",
        "resource_id": "1",
        "scope_type": "experiment",
        "scope_id": "1",
        "after": "",
        "request_id": uuid.uuid4().hex[:16],
        "peer": "test",
    }
    values.update(fields)
    return recorder.PendingEvent(**values)


# ---------------------------------------------------------------------------------------------
# One event per change, none per failure
# ---------------------------------------------------------------------------------------------


def test_a_change_commits_exactly_one_event_with_its_fields(db_url: str, tmp_path: Path) -> None:
    with audited_server(db_url, tmp_path) as (_, stubs):
        started = now_ms()
        experiment_id = make_experiment(stubs, "audited")
        stubs.tracking.SetExperimentTag(
            tpb.SetExperimentTagRequest(experiment_id=experiment_id, key="team", value="vision"),
            metadata=[("x-request-id", "req-tag-1")],
        )
        finished = now_ms()
        events = all_events(stubs.audit)
        assert [e.method for e in events] == ["CreateExperiment", "SetExperimentTag"]
        tag = events[1]
        assert tag.id > events[0].id
        assert started <= tag.time <= finished
        assert tag.actor == "anonymous"
        assert tag.service == TRACKING
        assert (tag.resource_type, tag.resource_id) == ("experiment", experiment_id)
        assert tag.after == f"experiment_id='{experiment_id}', key='team', value='vision'"
        assert tag.before == ""
        assert tag.request_id == "req-tag-1"
        assert tag.peer.startswith("ipv4:127.0.0.1:") or tag.peer.startswith("ipv6:")
        assert tag.outcome == pb.OUTCOME_OK
        # Reads leave nothing.
        stubs.tracking.GetExperiment(tpb.GetExperimentRequest(experiment_id=experiment_id))
        assert len(all_events(stubs.audit)) == 2


def test_a_failed_change_leaves_no_event(db_url: str, tmp_path: Path) -> None:
    with audited_server(db_url, tmp_path) as (_, stubs):
        experiment_id = make_experiment(stubs, "taken")
        run_id = make_run(stubs, experiment_id)
        before = all_events(stubs.audit)
        # NOT_FOUND inside the store's transaction.
        assert (
            code_of(
                lambda: stubs.tracking.SetExperimentTag(
                    tpb.SetExperimentTagRequest(experiment_id="987654", key="k", value="v")
                )
            )
            == grpc.StatusCode.NOT_FOUND
        )
        # A unique constraint failing at INSERT (the transaction rolls back).
        assert (
            code_of(lambda: stubs.tracking.CreateExperiment(tpb.CreateExperimentRequest(name="taken")))
            == grpc.StatusCode.ALREADY_EXISTS
        )
        # Write-once params: the second value is refused inside the transaction.
        stubs.tracking.LogParam(tpb.LogParamRequest(run_id=run_id, key="lr", value="0.1"))
        assert (
            code_of(
                lambda: stubs.tracking.LogParam(tpb.LogParamRequest(run_id=run_id, key="lr", value="0.2"))
            )
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        # The metric group commit refuses a point of a missing run.
        assert (
            code_of(
                lambda: stubs.tracking.LogMetric(
                    tpb.LogMetricRequest(run_id=uuid.uuid4().hex, key="k", value=1.0)
                )
            )
            == grpc.StatusCode.NOT_FOUND
        )
        after = all_events(stubs.audit)
        assert [e.method for e in after[len(before) :]] == ["LogParam"]
        assert after[-1].after == f"run_id='{run_id}', key='lr', value='0.1'"


def test_a_change_without_a_database_write_still_leaves_its_event(db_url: str, tmp_path: Path) -> None:
    with audited_server(db_url, tmp_path) as (_, stubs):
        run_id = make_run(stubs, make_experiment(stubs))
        upload(stubs, run_id, "model/weights.bin", b"\x00\x01" * 1000)
        uploads = all_events(stubs.audit, method="UploadArtifact")
        assert len(uploads) == 1
        # The bytes never reach the log: at most their size.
        assert "\\x00" not in uploads[0].after and len(uploads[0].after) <= recorder.SUMMARY_CHARS


def test_registry_changes_record_the_state_before(db_url: str, tmp_path: Path) -> None:
    with audited_server(db_url, tmp_path) as (_, stubs):
        run_id = make_run(stubs, make_experiment(stubs))
        upload(stubs, run_id, "model/MLmodel", b"flavors: {}\n")
        name = f"model-{uuid.uuid4().hex[:8]}"
        stubs.registry.CreateRegisteredModel(rpb.CreateRegisteredModelRequest(name=name, description="first"))
        v1, v2 = ready_version(stubs, name, run_id), ready_version(stubs, name, run_id)
        assert (
            len(all_events(stubs.audit, method="CreateModelVersion")) == 2
        )  # one per call, not per transaction

        def last(method: str) -> pb.Event:
            return all_events(stubs.audit, method=method)[-1]

        stubs.registry.TransitionModelVersionStage(
            rpb.TransitionModelVersionStageRequest(name=name, version=v1, stage="Staging")
        )
        event = last("TransitionModelVersionStage")
        assert event.before == "stage=None"
        assert "stage='Staging'" in event.after and f"version={v1}" in event.after
        assert event.service == REGISTRY
        stubs.registry.TransitionModelVersionStage(
            rpb.TransitionModelVersionStageRequest(
                name=name, version=v2, stage="Staging", archive_existing_versions=True
            )
        )
        assert last("TransitionModelVersionStage").before == f"stage=None; version {v1} stage=Staging"

        stubs.registry.SetRegisteredModelAlias(
            rpb.SetRegisteredModelAliasRequest(name=name, alias="champion", version=v1)
        )
        assert last("SetRegisteredModelAlias").before == "unset"
        stubs.registry.SetRegisteredModelAlias(
            rpb.SetRegisteredModelAliasRequest(name=name, alias="champion", version=v2)
        )
        assert last("SetRegisteredModelAlias").before == f"alias champion -> version {v1}"
        stubs.registry.DeleteRegisteredModelAlias(
            rpb.DeleteRegisteredModelAliasRequest(name=name, alias="champion")
        )
        assert last("DeleteRegisteredModelAlias").before == f"alias champion -> version {v2}"

        stubs.registry.UpdateRegisteredModel(
            rpb.UpdateRegisteredModelRequest(name=name, description="x" * 2000)
        )
        assert last("UpdateRegisteredModel").before == "first"
        stubs.registry.UpdateRegisteredModel(rpb.UpdateRegisteredModelRequest(name=name, description="third"))
        assert last("UpdateRegisteredModel").before == "x" * (recorder.SUMMARY_CHARS - 1) + "…"
        stubs.registry.UpdateModelVersion(
            rpb.UpdateModelVersionRequest(name=name, version=v1, description="vd")
        )
        stubs.registry.UpdateModelVersion(
            rpb.UpdateModelVersionRequest(name=name, version=v1, description="vd2")
        )
        assert last("UpdateModelVersion").before == "vd"

        stubs.registry.RenameRegisteredModel(
            rpb.RenameRegisteredModelRequest(name=name, new_name=f"{name}-new")
        )
        assert last("RenameRegisteredModel").before == name
        # A refused transition (no such version) leaves no event.
        count = len(all_events(stubs.audit))
        assert (
            code_of(
                lambda: stubs.registry.TransitionModelVersionStage(
                    rpb.TransitionModelVersionStageRequest(name=f"{name}-new", version=99, stage="Production")
                )
            )
            == grpc.StatusCode.NOT_FOUND
        )
        assert len(all_events(stubs.audit)) == count
        # Events outlive what they describe: deleting the model deletes none of them.
        with_model = all_events(stubs.audit, model_name=name)
        assert len(with_model) >= 6
        stubs.registry.DeleteRegisteredModel(rpb.DeleteRegisteredModelRequest(name=f"{name}-new"))
        assert all_events(stubs.audit, model_name=name) == with_model


def test_concurrent_log_metric_calls_each_commit_their_event(db_url: str, tmp_path: Path) -> None:
    """LogMetric points of concurrent callers are committed in groups on one caller's thread;
    each caller's event must be in its point's transaction, and a refused point's event absent."""
    with audited_server(db_url, tmp_path) as (_, stubs):
        experiment_id = make_experiment(stubs)
        runs = [make_run(stubs, experiment_id) for _ in range(3)]
        threads, calls = 8, 15
        sent: list[str] = []
        refused: list[str] = []
        unexpected: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(threads)

        def log(worker: int) -> None:
            start.wait(WAIT_S)
            for i in range(calls):
                request_id = f"m{worker}-{i}-{uuid.uuid4().hex[:6]}"
                missing = worker == 0 and i % 3 == 0  # some points of a run that does not exist
                run_id = uuid.uuid4().hex if missing else runs[(worker + i) % len(runs)]
                try:
                    stubs.tracking.LogMetric(
                        tpb.LogMetricRequest(run_id=run_id, key="loss", value=i / 10, step=i),
                        metadata=[("x-request-id", request_id)],
                        timeout=WAIT_S,
                    )
                except grpc.RpcError as exc:
                    with lock:
                        if exc.code() == grpc.StatusCode.NOT_FOUND and missing:  # type: ignore[attr-defined]
                            refused.append(request_id)
                        else:
                            unexpected.append(exc)
                    continue
                with lock:
                    sent.append(request_id)

        workers = [threading.Thread(target=log, args=(w,)) for w in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert not unexpected, unexpected
        assert len(sent) + len(refused) == threads * calls and refused
        events = all_events(stubs.audit, method="LogMetric")
        assert sorted(e.request_id for e in events) == sorted(sent)
        assert {e.resource_id for e in events} <= set(runs)
        points = sum(
            len(
                stubs.tracking.GetMetricHistory(
                    tpb.GetMetricHistoryRequest(run_id=r, metric_key="loss")
                ).metrics
            )
            for r in runs
        )
        assert points == len(sent)


def test_refused_calls_are_recorded_and_only_visible_events_are_listed(db_url: str, tmp_path: Path) -> None:
    admin = [("authorization", "Bearer admin-secret-for-tests")]
    with audited_server(
        db_url, tmp_path, auth=True, admin_token="admin-secret-for-tests", default_permission="NONE"
    ) as (_, stubs):
        experiment_id = str(
            stubs.tracking.CreateExperiment(
                tpb.CreateExperimentRequest(name="private"), metadata=admin
            ).experiment_id
        )
        stubs.auth.CreateUser(auth_pb2.CreateUserRequest(name="bob"), metadata=admin)
        secret = stubs.auth.CreateToken(auth_pb2.CreateTokenRequest(user="bob"), metadata=admin).secret
        bob = [("authorization", f"Bearer {secret}")]
        assert (
            code_of(
                lambda: stubs.tracking.SetExperimentTag(
                    tpb.SetExperimentTagRequest(experiment_id=experiment_id, key="k", value="v"), metadata=bob
                )
            )
            == grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            code_of(
                lambda: stubs.tracking.SetExperimentTag(
                    tpb.SetExperimentTagRequest(experiment_id=experiment_id, key="k", value="v"),
                    metadata=[("authorization", "Bearer not-a-token")],
                )
            )
            == grpc.StatusCode.UNAUTHENTICATED
        )
        events = all_events(stubs.audit, metadata=admin, method="SetExperimentTag")
        assert [(e.actor, e.outcome) for e in events] == [
            ("bob", pb.OUTCOME_DENIED),
            ("", pb.OUTCOME_UNAUTHENTICATED),
        ]
        token_events = all_events(stubs.audit, metadata=admin, method="CreateToken")
        assert len(token_events) == 1 and secret not in token_events[0].after
        # Bob sees his own refused call, not the admin's private experiment.
        seen_by_bob = all_events(stubs.audit, metadata=bob)
        assert [(e.actor, e.method) for e in seen_by_bob] == [("bob", "SetExperimentTag")]


def test_the_audit_service_cannot_change_events() -> None:
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["AuditService"].methods}
    assert methods == {"ListEvents", "WatchEvents"}


# ---------------------------------------------------------------------------------------------
# ListEvents
# ---------------------------------------------------------------------------------------------


def test_list_events_filters_and_pages(db_url: str, tmp_path: Path) -> None:
    with audited_server(db_url, tmp_path) as (_, stubs):
        first = make_experiment(stubs)
        second = make_experiment(stubs)
        run_id = make_run(stubs, first)
        stubs.tracking.SetTag(tpb.SetTagRequest(run_id=run_id, key="a", value="1"))
        stubs.tracking.SetExperimentTag(tpb.SetExperimentTagRequest(experiment_id=second, key="b", value="2"))
        name = f"m-{uuid.uuid4().hex[:6]}"
        stubs.registry.CreateRegisteredModel(rpb.CreateRegisteredModelRequest(name=name))
        stubs.registry.SetRegisteredModelTag(rpb.SetRegisteredModelTagRequest(name=name, key="c", value="3"))
        recorder.record(
            pending(
                actor="mallory", method="DeleteExperiment", scope_id="424242", outcome=recorder.OUTCOME_DENIED
            )
        )
        everything = all_events(stubs.audit)
        assert len(everything) == 8
        assert [e.id for e in everything] == sorted(e.id for e in everything)  # oldest first

        def ids(**filters: Any) -> list[int]:
            return [e.id for e in all_events(stubs.audit, **filters)]

        by_id = {e.id: e for e in everything}
        assert [by_id[i].actor for i in ids(actor="mallory")] == ["mallory"]
        assert len(ids(actor="anonymous")) == 7
        assert [by_id[i].method for i in ids(method="SetTag")] == ["SetTag"]
        assert all(by_id[i].resource_type == "run" for i in ids(resource_type="run"))
        of_run = [by_id[i] for i in ids(resource_type="run", resource_id=run_id)]
        assert "SetTag" in [e.method for e in of_run] and {e.resource_id for e in of_run} == {run_id}
        # A creation may or may not carry its new resource's scope; the changes after it do.
        in_second = [by_id[i].method for i in ids(experiment_id=second)]
        assert "SetExperimentTag" in in_second and set(in_second) <= {"CreateExperiment", "SetExperimentTag"}
        assert [by_id[i].method for i in ids(experiment_id="424242")] == ["DeleteExperiment"]
        of_model = [by_id[i].method for i in ids(model_name=name)]
        assert "SetRegisteredModelTag" in of_model
        assert set(of_model) <= {"CreateRegisteredModel", "SetRegisteredModelTag"}
        assert ids(model_name="no-such-model") == []
        # Time range: [since, until).
        middle = everything[4]
        assert all(by_id[i].time >= middle.time for i in ids(since_time=middle.time))
        assert all(by_id[i].time < middle.time for i in ids(until_time=middle.time))
        assert len(ids(since_time=middle.time)) + len(ids(until_time=middle.time)) == len(everything)
        assert ids(since_time=everything[0].time, until_time=everything[-1].time + 1) == [
            e.id for e in everything
        ]

        # Paging one by one visits every event once, in order; the last page has no token.
        paged: list[int] = []
        token = ""
        for _ in range(20):
            page = stubs.audit.ListEvents(pb.ListEventsRequest(page_size=3, page_token=token))
            assert len(page.events) <= 3
            paged.extend(e.id for e in page.events)
            token = page.next_page_token
            if not token:
                break
        assert paged == [e.id for e in everything]
        default_page = stubs.audit.ListEvents(pb.ListEventsRequest())
        assert len(default_page.events) == 8 and default_page.next_page_token == ""

        # A token belongs to its filters.
        token = stubs.audit.ListEvents(pb.ListEventsRequest(page_size=1, actor="anonymous")).next_page_token
        invalid(
            lambda: stubs.audit.ListEvents(
                pb.ListEventsRequest(page_size=1, actor="mallory", page_token=token)
            ),
            "different query",
        )


def test_list_events_refuses_bad_input(db_url: str, tmp_path: Path) -> None:
    with audited_server(db_url, tmp_path) as (_, stubs):

        def listing(**fields: Any) -> Any:
            return lambda: stubs.audit.ListEvents(pb.ListEventsRequest(**fields))

        invalid(listing(page_size=-1), "page_size must be >= 0")
        invalid(listing(since_time=2000, until_time=1000), "since_time (2000) is after until_time (1000)")
        invalid(listing(since_time=-5), "since_time must be >= 0")
        invalid(listing(until_time=-5), "until_time must be >= 0")
        invalid(listing(resource_type="spaceship"), "resource_type 'spaceship' is not a resource type")
        invalid(listing(resource_id="abc"), "resource_id 'abc' needs resource_type")
        invalid(listing(experiment_id="one"), "experiment_id 'one' is not valid")
        invalid(listing(experiment_id="1", model_name="m"), "cannot both be set")
        invalid(listing(page_token="not a token!"), "page_token is malformed")
        invalid(lambda: next(iter(stubs.audit.WatchEvents(pb.WatchEventsRequest(after_event_id=-1)))),
                "after_event_id must be >= 0")  # fmt: skip
        invalid(lambda: next(iter(stubs.audit.WatchEvents(pb.WatchEventsRequest(experiment_id="x")))),
                "experiment_id 'x' is not valid")  # fmt: skip


def test_recorder_summaries_are_bounded_and_keep_secrets_out() -> None:
    summary = recorder.summarize(auth_pb2.CreateTokenResponse(secret="s3cr3t", token=auth_pb2.Token(id="t1")))
    assert "s3cr3t" not in summary and "secret=***" in summary
    chunk = recorder.summarize(apb.UploadArtifactRequest(chunk=b"\x00" * 5000))
    assert chunk == "chunk=<5000 bytes>"
    batch = recorder.summarize(
        tpb.LogBatchRequest(run_id="r", metrics=[tpb.Metric(key=f"k{i}", value=i) for i in range(1000)])
    )
    assert len(batch) <= recorder.SUMMARY_CHARS and "1000 in all" in batch
    long = recorder.summarize(tpb.SetTagRequest(run_id="r", key="k", value="line1\nline2" * 10_000))
    assert len(long) <= recorder.SUMMARY_CHARS and "\n" not in long
    search = recorder.summarize(tpb.SearchRunsRequest(filter="name = 'x'", run_view_type=tpb.VIEW_TYPE_ALL))
    assert search == "filter=\"name = 'x'\", run_view_type=VIEW_TYPE_ALL"


# ---------------------------------------------------------------------------------------------
# WatchEvents
# ---------------------------------------------------------------------------------------------


def test_watch_sends_the_backlog_then_live_events_and_resumes_without_gap_or_duplicate(
    db_url: str, tmp_path: Path
) -> None:
    with audited_server(db_url, tmp_path) as (_, stubs):
        experiment_id = make_experiment(stubs)
        for i in range(4):
            stubs.tracking.SetExperimentTag(
                tpb.SetExperimentTagRequest(experiment_id=experiment_id, key=f"k{i}", value="v")
            )
        backlog = all_events(stubs.audit)
        watch = Watch(stubs.audit)
        assert [e.id for e in watch.take(len(backlog))] == [e.id for e in backlog]
        # Live: each change arrives as it commits.
        stubs.tracking.SetExperimentTag(
            tpb.SetExperimentTagRequest(experiment_id=experiment_id, key="live", value="v")
        )
        live = watch.take(1)[0]
        assert live.method == "SetExperimentTag" and "key='live'" in live.after
        watch.cancel()

        # Changes while disconnected, then resume after the last event received.
        for i in range(3):
            stubs.tracking.SetExperimentTag(
                tpb.SetExperimentTagRequest(experiment_id=experiment_id, key=f"gap{i}", value="v")
            )
        resumed = Watch(stubs.audit, after_event_id=live.id)
        last = sentinel(stubs)
        got = [e.id for e in resumed.take_until(last)]
        assert got == [e.id for e in all_events(stubs.audit) if e.id > live.id]
        resumed.cancel()

        # Filters select what is sent; the rest still moves the stream forward.
        filtered = Watch(stubs.audit, method="CreateExperiment")
        last = sentinel(stubs)
        assert [e.method for e in filtered.take_until(last)] == ["CreateExperiment"] * 3
        filtered.cancel()


def test_watch_sees_events_committed_by_another_replica(db_url: str, tmp_path: Path) -> None:
    """Replica A is a ``keel server`` process over the same database: its commits cannot wake
    the watcher on B, which must find them by polling."""
    with audited_server(db_url, tmp_path) as (_, b):
        watch = Watch(b.audit)
        env = {
            "KEEL_DB_URL": db_url,
            "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts",
            "KEEL_AUDIT": "true",
        }
        with server_process(["--services", "tracking"], env=env) as process_a, stubs_of(process_a.port) as a:
            experiment_id = make_experiment(a, "from-replica-a")
            seen = watch.take(1)[0]
            assert seen.method == "CreateExperiment" and "from-replica-a" in seen.after
            assert [e.id for e in all_events(a.audit)] == [seen.id]
            # And the other way round: B's change reaches a watcher on A.
            watch_a = Watch(a.audit, after_event_id=seen.id)
            b.tracking.SetExperimentTag(
                tpb.SetExperimentTagRequest(experiment_id=experiment_id, key="k", value="v")
            )
            assert watch_a.take(1)[0].method == "SetExperimentTag"
            assert watch.take(1)[0].method == "SetExperimentTag"
            watch_a.cancel()
        watch.cancel()


def test_watch_resumes_across_a_server_restart(db_url: str, tmp_path: Path) -> None:
    with audited_server(db_url, tmp_path) as (_, first):
        experiment_id = make_experiment(first)
        watch = Watch(first.audit)
        received = watch.take(1)
    # The server stopped: the stream ended.
    assert isinstance(watch.ended(), grpc.RpcError)
    with audited_server(db_url, tmp_path) as (_, second):
        for i in range(3):
            second.tracking.SetExperimentTag(
                tpb.SetExperimentTagRequest(experiment_id=experiment_id, key=f"k{i}", value="v")
            )
        resumed = Watch(second.audit, after_event_id=received[-1].id)
        last = sentinel(second)
        got = resumed.take_until(last)
        assert [e.id for e in got] == [e.id for e in all_events(second.audit) if e.id > received[-1].id]
        assert len(got) == 4
        resumed.cancel()


def test_watchers_are_limited_to_a_share_of_the_workers(db_url: str, tmp_path: Path) -> None:
    with audited_server(db_url, tmp_path, max_workers=4) as (_, stubs):
        make_experiment(stubs)
        first = Watch(stubs.audit)
        first.take(1)  # the stream is established and holds the one watcher slot
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(stubs.audit.WatchEvents(pb.WatchEventsRequest())))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "already streams 1 WatchEvents" in caught.value.details()  # type: ignore[attr-defined]
        # Other calls still run; the slot frees once the server sees the cancellation (its next
        # wake-up, within a poll interval).
        make_experiment(stubs)
        first.cancel()
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                second = Watch(stubs.audit)
                assert len(second.take(2)) == 2
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        second.cancel()


# ---------------------------------------------------------------------------------------------
# The follower's contiguity rule, at the store level
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def database(db_url: str) -> Iterator[Any]:
    database = dbmod.initialize(db_url, max_connections=8)
    ensure_current(database)
    try:
        yield database
    finally:
        getattr(database, "close_all", database.close)()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _hold_transaction(event: recorder.PendingEvent, inserted: threading.Event, release: threading.Event,
                      commit: bool, errors: list[BaseException]) -> None:  # fmt: skip
    """Inserts ``event`` in a transaction, signals, and commits or rolls back when released."""
    try:
        with write_transaction():
            recorder.write_in_transaction([event])
            inserted.set()
            assert release.wait(WAIT_S), "never released"
            if not commit:
                raise _RollBack()
    except _RollBack:
        pass
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)
        inserted.set()
    finally:
        dbmod.db.close()


class _RollBack(Exception):
    pass


@pytest.mark.parametrize("commit_first", [True, False], ids=["held-commits", "held-rolls-back"])
def test_follower_holds_events_above_an_id_still_in_flight(
    database: Any, db_backend: str, commit_first: bool
) -> None:
    if db_backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: ids always commit in order")
    recorder.record(pending(method="Before"))
    clock = FakeClock()
    follower = EventFollower(0, EventFilters(), clock=clock)
    assert [e.method for e in follower.poll()] == ["Before"]

    inserted, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    held = threading.Thread(
        target=_hold_transaction, args=(pending(method="Held"), inserted, release, commit_first, errors)
    )
    held.start()
    try:
        assert inserted.wait(WAIT_S) and not errors, errors
        recorder.record(pending(method="Later"))  # a higher id, committed while the lower one is open
        later_id = AuditEvent.select(peewee.fn.MAX(AuditEvent.id)).scalar()
        assert follower.poll() == []  # the hole below "Later" might still fill: hold
        clock.now += GAP_TIMEOUT_S / 2
        assert follower.poll() == []
        assert follower.cursor < later_id
    finally:
        release.set()
        held.join(WAIT_S)
    assert not errors, errors
    if commit_first:
        # The hole filled: both, in id order, with nothing skipped.
        assert [e.method for e in follower.poll()] == ["Held", "Later"]
    else:
        # A rollback's hole never fills: given up GAP_TIMEOUT_S after it was first seen.
        assert follower.poll() == []
        clock.now += GAP_TIMEOUT_S / 2
        assert [e.method for e in follower.poll()] == ["Later"]
    assert follower.cursor == later_id
    assert follower.poll() == []


def test_follower_skips_old_holes_at_once_and_filters_after_ordering(database: Any) -> None:
    old = now_ms() - 3_600_000
    for event_id, actor in ((1, "a"), (2, "b"), (5, "a"), (6, "b")):  # 3 and 4: rolled back long ago
        AuditEvent.insert(id=event_id, time=old, actor=actor, method="M").execute()
    clock = FakeClock()
    follower = EventFollower(0, EventFilters(actor="a"), clock=clock, batch=3)
    # Reads 1, 2, 5 (a full batch: more to come); 2 is filtered out but passed over.
    assert [e.id for e in follower.poll()] == [1, 5]
    assert follower.cursor == 5 and follower.more
    assert follower.poll() == []  # 6 is another actor's: passed over all the same
    assert follower.cursor == 6 and not follower.more
    # A recent hole is held even below an event of another actor.
    AuditEvent.insert(id=8, time=now_ms(), actor="b", method="M").execute()
    AuditEvent.insert(id=9, time=now_ms(), actor="a", method="M").execute()
    assert follower.poll() == [] and follower.cursor == 6
    clock.now += GAP_TIMEOUT_S
    assert [e.id for e in follower.poll()] == [9]
    assert follower.cursor == 9


def test_follower_and_list_refuse_bad_input(database: Any) -> None:
    with pytest.raises(InvalidArgument, match="after_event_id must be >= 0"):
        EventFollower(-1, EventFilters())
    with pytest.raises(InvalidArgument, match="needs resource_type"):
        EventFollower(0, EventFilters(resource_id="x"))


def test_a_rolled_back_transaction_unmarks_its_event_for_the_retry(database: Any) -> None:
    """A store that retries its transaction writes the event once, with the attempt that commits."""
    event = pending(method="Retried")
    token = recorder.begin(event)
    try:
        with pytest.raises(_RollBack):
            with write_transaction():
                recorder.write_in_transaction([event])  # as the metric group commit does
                assert event.written
                raise _RollBack()
        assert not event.written
        with write_transaction():
            with write_transaction():  # a savepoint: the hook waits for the outer commit
                pass
            assert not event.written
        assert event.written
        recorder.finish_unwritten()  # already written: nothing more
    finally:
        recorder.end(token)
    assert [e.method for e in AuditEvent.select().where(AuditEvent.method == "Retried")] == ["Retried"]


def test_a_commit_of_events_wakes_this_process_watchers_at_once(database: Any) -> None:
    seen = recorder.commits.count
    woke: list[tuple[int, float]] = []

    def wait() -> None:
        started = time.monotonic()
        woke.append((recorder.commits.wait(seen, WAIT_S), time.monotonic() - started))

    waiter = threading.Thread(target=wait)
    waiter.start()
    recorder.record(pending(method="Wake"))
    waiter.join(WAIT_S + 5)
    assert woke and woke[0][0] != seen and woke[0][1] < WAIT_S / 2  # woken, not timed out
    # A transaction that wrote no event wakes nobody.
    seen = recorder.commits.count
    with write_transaction():
        AuditEvent.select().count()
    assert recorder.commits.count == seen


def test_long_names_are_cut_to_their_columns_without_failing_the_change(db_url: str, tmp_path: Path) -> None:
    with audited_server(db_url, tmp_path) as (_, stubs):
        name = "m" * 200  # longer than the event's scope column (64)
        stubs.registry.CreateRegisteredModel(rpb.CreateRegisteredModelRequest(name=name))
        stubs.registry.SetRegisteredModelTag(rpb.SetRegisteredModelTagRequest(name=name, key="k", value="v"))
        tagged = all_events(stubs.audit, model_name=name)
        assert "SetRegisteredModelTag" in [e.method for e in tagged]
        assert all(len(e.after) <= recorder.SUMMARY_CHARS for e in tagged)
