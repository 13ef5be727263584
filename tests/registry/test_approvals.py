"""Review and approval of stage transitions through a real server (auth off), on SQLite,
PostgreSQL and MariaDB: the model policy, transition requests, approve/reject/cancel, what each
refuses and why, the history they leave, concurrent approvals, and the ``keel models`` commands.
With auth on (identities, MANAGE, self-approval, audit events): tests/security/test_approvals_auth.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from registry_helpers import make_source, unique
from server_fixtures import running_server

from keel.exceptions import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    KeelError,
    NotFound,
)
from keel.registry.v1 import registry_pb2 as pb
from keel.registry.v1 import registry_pb2_grpc

pytestmark = pytest.mark.server

DEADLINE_S = 60.0  # any concurrent round must finish well within this


def refused(call: Callable[[], Any], kind: type[KeelError], reason: str, *words: str) -> KeelError:
    """``call`` raises ``kind`` with ``reason`` and a message holding every one of ``words``."""
    with pytest.raises(kind) as caught:
        call()
    error = caught.value
    assert error.reason == reason, error
    for word in words:
        assert word in error.message, error.message
    return error


def stages_of(client, name: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """version -> current stage of every version of ``name``."""
    quoted = name.replace("'", "''")
    return {v.version: v.current_stage for v in client.search_model_versions(f"name = '{quoted}'")}


# ---------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------


def test_policy_protects_stages_and_says_how_to_request(client, model_name, versions) -> None:
    versions(2)
    model = client.set_registered_model_policy(model_name, ["production", "Staging", "PRODUCTION"])
    assert model.approval_required_stages == ["Staging", "Production"]  # canonical, distinct, in order
    assert client.get_registered_model(model_name).approval_required_stages == ["Staging", "Production"]
    listed = client.search_registered_models(f"name = '{model_name}'")
    assert listed[0].approval_required_stages == ["Staging", "Production"]

    for stage in ("Production", "staging"):
        error = refused(
            lambda s=stage: client.transition_model_version_stage(
                model_name, 1, s, archive_existing_versions=True
            ),
            FailedPrecondition,
            "APPROVAL_REQUIRED",
            "keel models request-transition",
            "create_transition_request",
            model_name,
        )
        assert error.metadata["version"] == "1"
    # Leaving a protected stage, and entering an unprotected one, stay direct.
    assert client.transition_model_version_stage(model_name, 1, "Archived").current_stage == "Archived"
    assert stages_of(client, model_name) == {"1": "Archived", "2": "None"}

    assert client.set_registered_model_policy(model_name, "Production").approval_required_stages == [
        "Production"
    ]
    assert client.transition_model_version_stage(model_name, 2, "Staging").current_stage == "Staging"
    assert client.set_registered_model_policy(model_name, None).approval_required_stages == []
    assert client.transition_model_version_stage(model_name, 2, "Production").current_stage == "Production"


def test_policy_input_errors(client, model_name) -> None:
    refused(
        lambda: client.set_registered_model_policy(model_name, ["Archived"]),
        InvalidArgument,
        "INVALID_POLICY_STAGE",
        "Staging and Production",
    )
    refused(
        lambda: client.set_registered_model_policy(model_name, ["None"]),
        InvalidArgument,
        "INVALID_POLICY_STAGE",
    )
    refused(
        lambda: client.set_registered_model_policy(model_name, ["prod"]),
        InvalidArgument,
        "INVALID_STAGE",
        "prod",
    )
    refused(
        lambda: client.set_registered_model_policy(unique("ghost"), ["Production"]),
        NotFound,
        "REGISTERED_MODEL_NOT_FOUND",
    )
    refused(
        lambda: client.set_registered_model_policy("a/b", ["Production"]),
        InvalidArgument,
        "INVALID_MODEL_NAME",
    )
    assert client.get_registered_model(model_name).approval_required_stages == []  # nothing half-applied


# ---------------------------------------------------------------------------------------------
# Requests and decisions
# ---------------------------------------------------------------------------------------------


def test_request_approve_moves_the_version_and_archives_the_others(client, model_name, versions) -> None:
    versions(3)
    client.set_registered_model_policy(model_name, ["Production"])
    first = client.create_transition_request(model_name, 1, "Production", comment="first cut")
    client.approve_transition_request(first.id, comment="ok")
    client.transition_model_version_stage(model_name, 2, "Staging")

    request = client.create_transition_request(
        model_name, "2", "production", archive_existing_versions=True, comment="beats v1 by 2% AUC"
    )
    assert (request.name, request.version, request.stage, request.from_stage) == (
        model_name,
        "2",
        "Production",
        "Staging",
    )
    assert request.status == "PENDING" and request.archive_existing_versions
    assert request.comment == "beats v1 by 2% AUC" and request.requester and request.creation_timestamp > 0
    assert request.decided_by == "" and request.decision_timestamp == 0
    assert request.id.isdigit() and request.id != first.id
    assert stages_of(client, model_name) == {
        "1": "Production",
        "2": "Staging",
        "3": "None",
    }  # nothing moved yet

    approved = client.approve_transition_request(int(request.id), comment="reviewed the eval report")
    assert approved.status == "APPROVED" and approved.decision_comment == "reviewed the eval report"
    assert approved.decision_timestamp >= approved.creation_timestamp and approved.decided_by
    assert stages_of(client, model_name) == {"1": "Archived", "2": "Production", "3": "None"}
    assert [v.version for v in client.get_latest_versions(model_name, ["Production"])] == ["2"]

    # The history reads requested -> approved -> moved (newest first), with the comments.
    events = client.list_model_history(model_name, max_results=4)
    assert [(e.event_type, e.version, e.from_stage, e.to_stage) for e in events] == [
        ("STAGE_TRANSITION", "1", "Production", "Archived"),
        ("STAGE_TRANSITION", "2", "Staging", "Production"),
        ("TRANSITION_APPROVED", "2", "Staging", "Production"),
        ("TRANSITION_REQUESTED", "2", "Staging", "Production"),
    ]
    assert [e.transition_request_id for e in events] == ["", "", request.id, request.id]
    assert [e.comment for e in events] == ["", "", "reviewed the eval report", "beats v1 by 2% AUC"]
    assert events[2].actor == approved.decided_by and events[3].actor == request.requester

    listed = client.list_transition_requests(model_name)
    assert [(r.id, r.status) for r in listed] == [(request.id, "APPROVED"), (first.id, "APPROVED")]


def test_reject_and_cancel_move_nothing_and_are_recorded(client, model_name, versions) -> None:
    versions(2)
    client.set_registered_model_policy(model_name, ["Staging", "Production"])
    to_staging = client.create_transition_request(model_name, 1, "Staging")
    to_production = client.create_transition_request(model_name, 1, "Production", comment="skip staging?")
    other = client.create_transition_request(model_name, 2, "Staging")

    rejected = client.reject_transition_request(to_production.id, comment="go through Staging first")
    assert (rejected.status, rejected.decision_comment) == ("REJECTED", "go through Staging first")
    cancelled = client.cancel_transition_request(other.id)
    assert (cancelled.status, cancelled.decision_comment) == ("CANCELLED", "")
    assert stages_of(client, model_name) == {"1": "None", "2": "None"}

    events = client.list_model_history(model_name, max_results=2)
    assert [(e.event_type, e.transition_request_id, e.comment) for e in events] == [
        ("TRANSITION_CANCELLED", other.id, ""),
        ("TRANSITION_REJECTED", to_production.id, "go through Staging first"),
    ]

    # Filters: status (any case on the SDK), version, both.
    assert [r.id for r in client.list_transition_requests(model_name, status="pending")] == [to_staging.id]
    assert [r.id for r in client.list_transition_requests(model_name, status="REJECTED")] == [
        to_production.id
    ]
    assert [r.id for r in client.list_transition_requests(model_name, version=2)] == [other.id]
    assert client.list_transition_requests(model_name, status="APPROVED") == []
    assert [r.id for r in client.list_transition_requests(model_name, version="1", status="Pending")] == [
        to_staging.id
    ]

    # A decided request takes no second decision, whichever it is.
    for decide in (
        client.approve_transition_request,
        client.reject_transition_request,
        client.cancel_transition_request,
    ):
        refused(
            lambda d=decide: d(to_production.id),
            FailedPrecondition,
            "TRANSITION_REQUEST_CLOSED",
            "already REJECTED",
            "only a pending request",
        )
    refused(
        lambda: client.approve_transition_request(other.id),
        FailedPrecondition,
        "TRANSITION_REQUEST_CLOSED",
        "CANCELLED",
    )
    # A rejected request can be asked again (only one pending per version and stage).
    again = client.create_transition_request(model_name, 1, "Production")
    assert again.status == "PENDING"


def test_request_input_errors(client, keel_server, model_name, versions) -> None:
    versions(1)
    client.transition_model_version_stage(model_name, 1, "Staging")
    refused(
        lambda: client.create_transition_request(model_name, 1, "Staging"),
        FailedPrecondition,
        "ALREADY_IN_STAGE",
        "already in Staging",
    )
    pending = client.create_transition_request(model_name, 1, "Production")
    error = refused(
        lambda: client.create_transition_request(model_name, 1, "Production", comment="again"),
        AlreadyExists,
        "TRANSITION_REQUEST_ALREADY_EXISTS",
        f"id {pending.id}",
    )
    assert error.metadata["id"] == pending.id
    refused(
        lambda: client.create_transition_request(model_name, 1, "Archived", archive_existing_versions=True),
        InvalidArgument,
        "INVALID_ARCHIVE_EXISTING",
    )
    refused(lambda: client.create_transition_request(model_name, 1, "Prod"), InvalidArgument, "INVALID_STAGE")
    refused(
        lambda: client.create_transition_request(model_name, 9, "Production"),
        NotFound,
        "MODEL_VERSION_NOT_FOUND",
    )
    refused(
        lambda: client.create_transition_request(unique("ghost"), 1, "Production"),
        NotFound,
        "REGISTERED_MODEL_NOT_FOUND",
    )
    refused(
        lambda: client.create_transition_request(model_name, 1, "None", comment="x" * 10_001),
        InvalidArgument,
        "INVALID_COMMENT",
        "10000",
    )
    refused(
        lambda: client.approve_transition_request(pending.id, comment="y" * 10_001),
        InvalidArgument,
        "INVALID_COMMENT",
    )

    for bad in ("", "abc", "-1", "1.0", "٣", "9" * 19):
        refused(
            lambda b=bad: client.approve_transition_request(b),
            InvalidArgument,
            "INVALID_TRANSITION_REQUEST_ID",
        )
    refused(
        lambda: client.reject_transition_request("999999999"),
        NotFound,
        "TRANSITION_REQUEST_NOT_FOUND",
        "999999999",
    )
    refused(lambda: client.cancel_transition_request(999999999), NotFound, "TRANSITION_REQUEST_NOT_FOUND")

    refused(
        lambda: client.list_transition_requests(model_name, status="DONE"), InvalidArgument, "INVALID_STATUS"
    )
    refused(lambda: client.list_transition_requests(unique("ghost")), NotFound, "REGISTERED_MODEL_NOT_FOUND")
    refused(
        lambda: client.list_transition_requests(model_name, version=0), InvalidArgument, "INVALID_VERSION"
    )
    # What the SDK cannot send: an unknown status number, a negative page size, a foreign token.
    with grpc.insecure_channel(f"127.0.0.1:{keel_server.port}") as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        for request, field in (
            (pb.ListTransitionRequestsRequest(name=model_name, status=42), "status"),  # type: ignore[arg-type]
            (pb.ListTransitionRequestsRequest(name=model_name, page_size=-1), "page_size"),
            (pb.ListTransitionRequestsRequest(name=model_name, page_token="bm90LWEtdG9rZW4"), "page_token"),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListTransitionRequests(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field  # type: ignore[attr-defined]
            assert field in caught.value.details(), caught.value.details()  # type: ignore[attr-defined]
    assert [r.status for r in client.list_transition_requests(model_name)] == ["PENDING"]  # none of it wrote


def test_listing_pages_newest_first(client, keel_server, model_name, versions) -> None:
    versions(3)
    made = [
        client.create_transition_request(model_name, version, stage).id
        for version in (1, 2, 3)
        for stage in ("Staging", "Production")
    ]
    with grpc.insecure_channel(f"127.0.0.1:{keel_server.port}") as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        seen: list[str] = []
        token = ""
        for _page in range(10):
            page = stub.ListTransitionRequests(
                pb.ListTransitionRequestsRequest(name=model_name, page_size=4, page_token=token), timeout=30
            )
            assert len(page.transition_requests) <= 4
            seen += [r.id for r in page.transition_requests]
            token = page.next_page_token
            if not token:
                break
        # A token is bound to its query.
        first = stub.ListTransitionRequests(
            pb.ListTransitionRequestsRequest(name=model_name, page_size=2), timeout=30
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListTransitionRequests(
                pb.ListTransitionRequestsRequest(
                    name=model_name, page_size=2, version=1, page_token=first.next_page_token
                ),
                timeout=30,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert seen == list(reversed(made))
    assert [r.id for r in client.list_transition_requests(model_name, max_results=2)] == seen[:2]


def test_approval_is_aborted_when_the_version_moved_or_was_deleted(client, model_name, versions) -> None:
    versions(2)
    client.set_registered_model_policy(model_name, ["Production"])
    moved = client.create_transition_request(model_name, 1, "Production")
    client.transition_model_version_stage(model_name, 1, "Staging")
    error = refused(
        lambda: client.approve_transition_request(moved.id),
        Aborted,
        "MODEL_VERSION_MOVED",
        "moved from None to Staging",
        "request the transition again",
    )
    assert error.metadata["current_stage"] == "Staging"

    gone = client.create_transition_request(model_name, 2, "Production")
    client.delete_model_version(model_name, 2)
    refused(
        lambda: client.approve_transition_request(gone.id), Aborted, "MODEL_VERSION_DELETED", "was deleted"
    )

    # Nothing moved, the requests stay pending (to be rejected or cancelled), no approval recorded.
    assert stages_of(client, model_name) == {"1": "Staging"}
    assert {r.status for r in client.list_transition_requests(model_name)} == {"PENDING"}
    assert "TRANSITION_APPROVED" not in {e.event_type for e in client.list_model_history(model_name)}
    assert client.cancel_transition_request(gone.id).status == "CANCELLED"


def test_requests_follow_a_rename_and_go_with_the_model(client, model_name, versions) -> None:
    versions(1)
    request = client.create_transition_request(model_name, 1, "Staging", comment="c")
    renamed = unique("renamed")
    client.rename_registered_model(model_name, renamed)
    assert [r.name for r in client.list_transition_requests(renamed)] == [renamed]
    assert client.approve_transition_request(request.id).name == renamed
    assert stages_of(client, renamed) == {"1": "Staging"}

    pending = client.create_transition_request(renamed, 1, "Production")
    client.delete_registered_model(renamed)
    refused(lambda: client.approve_transition_request(pending.id), NotFound, "TRANSITION_REQUEST_NOT_FOUND")
    client.create_registered_model(renamed)  # the name again: a new model, with nothing of the old one
    assert client.list_transition_requests(renamed) == []
    assert client.list_model_history(renamed) == []


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------


def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Runs the calls on as many threads, released together; each result or the error raised."""
    start = threading.Barrier(len(calls))

    def body(call: Callable[[], Any]) -> Any:
        start.wait(timeout=DEADLINE_S)
        try:
            return call()
        except KeelError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(body, call) for call in calls]
        return [f.result(timeout=DEADLINE_S) for f in futures]


def test_concurrent_approvals_leave_exactly_one_production_version(client, model_name, versions) -> None:
    numbers = versions(4)
    client.set_registered_model_policy(model_name, ["Production"])
    requests = [
        client.create_transition_request(model_name, n, "Production", archive_existing_versions=True)
        for n in numbers
    ]
    results = _race([lambda r=r: client.approve_transition_request(r.id) for r in requests])
    assert all(not isinstance(r, BaseException) for r in results), results
    assert {r.status for r in results} == {"APPROVED"}

    stages = stages_of(client, model_name)
    production = [v for v, s in stages.items() if s == "Production"]
    assert len(production) == 1, stages
    assert sorted(s for s in stages.values() if s != "Production") == ["Archived"] * 3
    # The survivor is the version of the last approval to commit.
    approvals = [e for e in client.list_model_history(model_name) if e.event_type == "TRANSITION_APPROVED"]
    assert len(approvals) == 4 and approvals[0].version == production[0]


def test_two_concurrent_decisions_of_one_request_one_wins(client, model_name, versions) -> None:
    versions(1)
    request = client.create_transition_request(model_name, 1, "Production")
    results = _race(
        [
            lambda: client.approve_transition_request(request.id, comment="a"),
            lambda: client.approve_transition_request(request.id, comment="b"),
            lambda: client.reject_transition_request(request.id, comment="c"),
        ]
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 2, results
    assert all(isinstance(e, FailedPrecondition) and e.reason == "TRANSITION_REQUEST_CLOSED" for e in lost), (
        lost
    )
    decided = client.list_transition_requests(model_name)[0]
    assert (decided.status, decided.decision_comment) == (won[0].status, won[0].decision_comment)
    events = [e.event_type for e in client.list_model_history(model_name) if e.transition_request_id]
    assert len(events) == 2  # requested, and the one decision


# ---------------------------------------------------------------------------------------------
# keel models ... (the CLI as a user runs it)
# ---------------------------------------------------------------------------------------------


def _keel(uri: str, user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEEL_TRACKING_URI": uri, "KEEL_USER": user}
    env.pop("KEEL_TRACKING_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *argv], capture_output=True, text=True, env=env, timeout=120
    )


def test_models_cli_review_and_approval(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path}/keel.db", f"file://{tmp_path}/artifacts") as handle:
        import keel

        client = keel.Client(handle.uri)
        source = make_source(client)
        name = unique("cli-model")
        client.create_registered_model(name)
        for _ in range(2):
            client.create_model_version(name, source.uri, run_id=source.run_id)
        uri = handle.uri

        done = _keel(
            uri, "lead", "models", "set-policy", name, "--require-approval", "production,Staging", "--json"
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["approval_required_stages"] == ["Staging", "Production"]
        done = _keel(uri, "lead", "models", "describe", name)
        assert "Staging, Production" in done.stdout

        done = _keel(uri, "ann", "models", "transition", name, "1", "Production")
        assert done.returncode == 1 and "keel models request-transition" in done.stderr

        done = _keel(
            uri, "ann", "models", "request-transition", name, "1", "Production",
            "--archive-existing", "--comment", "ready", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        first = json.loads(done.stdout)
        assert (first["status"], first["requester"], first["comment"]) == ("PENDING", "ann", "ready")
        assert first["archive_existing_versions"] is True
        done = _keel(uri, "ann", "models", "request-transition", name, "2", "staging")
        assert done.returncode == 0 and "pending approval" in done.stdout
        second_id = done.stdout.split()[2].rstrip(":")
        done = _keel(uri, "ann", "models", "request-transition", name, "2", "Production", "--json")
        third_id = json.loads(done.stdout)["id"]

        done = _keel(uri, "bob", "models", "requests", name, "--status", "pending", "--json")
        assert [r["id"] for r in json.loads(done.stdout)] == [third_id, second_id, first["id"]]
        done = _keel(uri, "bob", "models", "requests", name)
        assert done.stdout.splitlines()[0].split()[:5] == ["ID", "VERSION", "FROM", "TO", "STATUS"]

        done = _keel(uri, "bob", "models", "approve", first["id"], "--comment", "lgtm", "--json")
        assert done.returncode == 0, done.stderr
        approved = json.loads(done.stdout)
        assert (approved["status"], approved["decided_by"], approved["decision_comment"]) == (
            "APPROVED",
            "bob",
            "lgtm",
        )
        done = _keel(uri, "bob", "models", "reject", second_id, "--comment", "not yet")
        assert done.returncode == 0 and "rejected" in done.stdout
        done = _keel(uri, "ann", "models", "cancel-request", third_id, "--json")
        assert json.loads(done.stdout)["status"] == "CANCELLED"
        done = _keel(uri, "bob", "models", "approve", second_id)
        assert done.returncode == 1 and "already REJECTED" in done.stderr
        done = _keel(uri, "bob", "models", "approve", "nope")
        assert done.returncode == 1 and "not a transition request id" in done.stderr
        done = _keel(uri, "bob", "models", "set-policy", name, "--require-approval", "Archived")
        assert done.returncode == 1 and "cannot require approval" in done.stderr

        assert client.get_model_version(name, 1).current_stage == "Production"
        done = _keel(uri, "bob", "models", "history", name)
        table = done.stdout
        assert f"approved #{first['id']}" in table and f"requested #{first['id']}" in table
        assert f"rejected #{second_id}" in table and f"cancelled #{third_id}" in table
        done = _keel(uri, "bob", "models", "history", name, "--json")
        comments = {e["comment"] for e in json.loads(done.stdout)}
        assert {"ready", "lgtm", "not yet"} <= comments

        done = _keel(uri, "lead", "models", "set-policy", name, "--no-approval")
        assert done.returncode == 0 and "no stage needs approval" in done.stdout
        done = _keel(uri, "lead", "models", "set-policy", name)
        assert done.returncode == 2  # one of --require-approval / --no-approval is required
