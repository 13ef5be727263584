"""Review and approval with auth on, through a real server on each backend: asking needs EDIT,
deciding MANAGE, the requester cannot approve its own request (administrators included) but may
withdraw it, the requester is the authenticated identity whatever the metadata says, a refused
caller learns nothing about which requests exist, and every request, decision and comment is an
audit event (ListEvents and WatchEvents, so a deployer can act on "approved into Production")
and a history entry."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from server_fixtures import ServerHandle, running_server
from test_permissions import ADMIN_TOKEN, Session, code_of, make_token

from keel.audit.v1 import audit_pb2 as aupb
from keel.auth.v1 import auth_pb2 as pb
from keel.registry.v1 import registry_pb2 as rpb
from keel.tracking.v1 import tracking_pb2 as tpb

pytestmark = pytest.mark.server

MODEL = "churn"
WAIT_S = 30.0
DENIED = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class Team:
    """alice creates the model (MANAGE) and its versions; bob may EDIT it (asks for promotions),
    carol may MANAGE it (reviews), dave may only READ it; everyone else gets nothing."""

    handle: ServerHandle
    admin: Session
    alice: Session
    bob: Session
    carol: Session
    dave: Session
    eve: Session


def grant(owner: Session, user: str, level: str) -> None:
    owner.a(
        "GrantPermission",
        pb.GrantPermissionRequest(
            subject=pb.Subject(user=user),
            resource=pb.Resource(model_name=MODEL),
            level=pb.PermissionLevel.Value(f"PERMISSION_LEVEL_{level}"),
        ),
    )


@pytest.fixture()
def team(db_url: str, tmp_path: Path) -> Iterator[Team]:
    with running_server(
        db_url,
        f"file://{tmp_path / 'artifacts'}",
        auth=True,
        admin_token=ADMIN_TOKEN,
        default_permission="NONE",
    ) as handle:
        channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        admin = Session(channel, ADMIN_TOKEN)
        sessions = {}
        for name in ("alice", "bob", "carol", "dave", "eve"):
            admin.a("CreateUser", pb.CreateUserRequest(name=name))
            sessions[name] = Session(channel, make_token(admin, name))
        alice = sessions["alice"]
        experiment_id = alice.t("CreateExperiment", tpb.CreateExperimentRequest(name="churn")).experiment_id
        run_id = alice.t("CreateRun", tpb.CreateRunRequest(experiment_id=experiment_id)).info.run_id
        alice.upload(run_id, "model/MLmodel", b"artifact_path: model\nflavors: {}\n")
        alice.r("CreateRegisteredModel", rpb.CreateRegisteredModelRequest(name=MODEL))
        for _ in range(3):
            alice.r(
                "CreateModelVersion",
                rpb.CreateModelVersionRequest(name=MODEL, source=f"runs:/{run_id}/model"),
            )
        for user, level in (("bob", "EDIT"), ("carol", "MANAGE"), ("dave", "READ")):
            grant(alice, user, level)
        yield Team(handle=handle, admin=admin, **sessions)
        channel.close()


def request(s: Session, version: int, stage: str = "Production", **kw: Any) -> Any:
    """A TransitionRequest ``s`` asks for."""
    return s.r(
        "CreateTransitionRequest",
        rpb.CreateTransitionRequestRequest(name=MODEL, version=version, stage=stage, **kw),
    )


def approve(s: Session, request_id: str, comment: str = "") -> Any:
    return s.r(
        "ApproveTransitionRequest", rpb.ApproveTransitionRequestRequest(id=request_id, comment=comment)
    )


def reject(s: Session, request_id: str, comment: str = "") -> Any:
    return s.r("RejectTransitionRequest", rpb.RejectTransitionRequestRequest(id=request_id, comment=comment))


def cancel(s: Session, request_id: str) -> Any:
    return s.r("CancelTransitionRequest", rpb.CancelTransitionRequestRequest(id=request_id))


def stage_of(s: Session, version: int) -> str:
    return str(s.r("GetModelVersion", rpb.GetModelVersionRequest(name=MODEL, version=version)).current_stage)


def error_of(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def set_policy(s: Session, *stages: str) -> Any:
    return s.r(
        "SetRegisteredModelPolicy",
        rpb.SetRegisteredModelPolicyRequest(
            name=MODEL, policy=rpb.RegisteredModelPolicy(approval_required_stages=list(stages))
        ),
    )


def events(s: Session, **filters: Any) -> list[aupb.Event]:
    found: list[aupb.Event] = []
    token = ""
    for _ in range(100):
        page = s.call(
            s.audit, "ListEvents", aupb.ListEventsRequest(page_size=1000, page_token=token, **filters)
        )
        found += list(page.events)
        token = page.next_page_token
        if not token:
            return found
    raise AssertionError("ListEvents paging did not end")


def test_who_may_ask_decide_and_withdraw(team: Team) -> None:
    # The policy is MANAGE; with it, even MANAGE cannot move a version into Production directly.
    assert code_of(lambda: set_policy(team.bob, "Production")) == DENIED
    assert list(set_policy(team.alice, "Production").policy.approval_required_stages) == ["Production"]
    shown = team.dave.r("GetRegisteredModel", rpb.GetRegisteredModelRequest(name=MODEL))
    assert list(shown.policy.approval_required_stages) == ["Production"]
    refused = error_of(
        lambda: team.alice.r(
            "TransitionModelVersionStage",
            rpb.TransitionModelVersionStageRequest(name=MODEL, version=1, stage="Production"),
        )
    )
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION and "request-transition" in refused.details()

    # Asking is EDIT; listing READ.
    assert code_of(lambda: request(team.dave, 1)) == DENIED
    assert code_of(lambda: request(team.eve, 1)) == DENIED
    asked = request(team.bob, 1, comment="ready for prod", archive_existing_versions=True)
    assert asked.requester == "bob"
    listed = team.dave.r("ListTransitionRequests", rpb.ListTransitionRequestsRequest(name=MODEL))
    assert [r.id for r in listed.transition_requests] == [asked.id]
    assert (
        code_of(lambda: team.eve.r("ListTransitionRequests", rpb.ListTransitionRequestsRequest(name=MODEL)))
        == DENIED
    )

    # Deciding is MANAGE.
    for s in (team.bob, team.dave, team.eve):
        assert code_of(lambda s=s: approve(s, asked.id)) == DENIED
        assert code_of(lambda s=s: reject(s, asked.id)) == DENIED
    denied = error_of(lambda: approve(team.dave, asked.id))
    assert "needs MANAGE" in denied.details() and f"transition request '{asked.id}'" in denied.details()
    assert stage_of(team.alice, 1) == "None"

    approved = approve(team.carol, asked.id, comment="eval report checked")
    assert (approved.status, approved.decided_by) == (rpb.TRANSITION_REQUEST_STATUS_APPROVED, "carol")
    assert stage_of(team.alice, 1) == "Production"

    # Withdrawing: the requester (with only EDIT), or MANAGE; not a mere reader.
    mine = request(team.bob, 2)
    theirs = request(team.bob, 3)
    assert code_of(lambda: cancel(team.dave, mine.id)) == DENIED
    assert code_of(lambda: cancel(team.eve, mine.id)) == DENIED
    assert cancel(team.bob, mine.id).decided_by == "bob"
    assert cancel(team.carol, theirs.id).decided_by == "carol"


def test_the_requester_cannot_approve_its_own_request(team: Team, tmp_path: Path) -> None:
    set_policy(team.alice, "Production")
    own = request(team.carol, 2, comment="mine")  # carol has MANAGE, and still may not
    refused = error_of(lambda: approve(team.carol, own.id))
    assert refused.code() == DENIED
    assert "carol made transition request" in refused.details() and "someone else" in refused.details()
    admins = request(team.admin, 3)
    assert error_of(lambda: approve(team.admin, admins.id)).code() == DENIED  # administrators too
    assert stage_of(team.alice, 2) == "None" and stage_of(team.alice, 3) == "None"

    # Through the CLI with the requester's token: exit 1 and the reason.
    token = make_token(team.admin, "carol")
    env = {**os.environ, "KEEL_TRACKING_URI": team.handle.uri, "KEEL_TRACKING_TOKEN": token}
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "models", "approve", own.id],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1 and "cannot approve it" in done.stderr, done.stderr

    # Someone else may; the requester may still reject (withdraw) it.
    assert approve(team.alice, own.id).status == rpb.TRANSITION_REQUEST_STATUS_APPROVED
    assert reject(team.admin, admins.id, "not now").status == rpb.TRANSITION_REQUEST_STATUS_REJECTED


def test_identities_come_from_the_token_not_the_metadata(team: Team) -> None:
    spoofed = (("authorization", f"Bearer {team.bob.token}"), ("x-keel-user", "carol"))
    asked = team.bob.registry.CreateTransitionRequest(
        rpb.CreateTransitionRequestRequest(name=MODEL, version=1, stage="Staging"),
        metadata=spoofed,
        timeout=30,
    )
    assert asked.requester == "bob"
    # Claiming to be someone else does not make bob's own request approvable by bob.
    assert code_of(lambda: approve(team.bob, asked.id)) == DENIED
    carol_says = (("authorization", f"Bearer {team.carol.token}"), ("x-keel-user", "bob"))
    approved = team.carol.registry.ApproveTransitionRequest(
        rpb.ApproveTransitionRequestRequest(id=asked.id), metadata=carol_says, timeout=30
    )
    assert approved.decided_by == "carol"
    history = team.dave.r("ListModelHistory", rpb.ListModelHistoryRequest(name=MODEL)).events
    assert [(e.event_type, e.actor) for e in history] == [
        (rpb.MODEL_HISTORY_EVENT_TYPE_STAGE_TRANSITION, "carol"),
        (rpb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_APPROVED, "carol"),
        (rpb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_REQUESTED, "bob"),
    ]


def test_a_refused_caller_learns_nothing_about_which_requests_exist(team: Team) -> None:
    asked = request(team.bob, 1)
    for request_id in (asked.id, "987654321"):
        for call in (approve, reject, cancel):
            refused = error_of(lambda c=call, r=request_id: c(team.eve, r))
            assert refused.code() == DENIED, (call, request_id)
            assert f"the model of transition request '{request_id}'" in refused.details()
    # Administrators see the truth; a malformed id is refused by the handler (nothing to leak).
    assert code_of(lambda: approve(team.admin, "987654321")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: approve(team.admin, "not-an-id")) == grpc.StatusCode.INVALID_ARGUMENT


def test_requests_and_decisions_are_audited_and_watchable(team: Team) -> None:
    set_policy(team.alice, "Production")
    first = request(team.bob, 1, comment="ready", archive_existing_versions=True)
    approve(team.carol, first.id, comment="ship it")
    second = request(team.bob, 2, comment="also ready", archive_existing_versions=True)
    reject(team.carol, second.id, comment="worse on recall")
    third = request(team.bob, 3)
    cancel(team.bob, third.id)

    found = [e for e in events(team.admin, model_name=MODEL) if e.outcome == aupb.OUTCOME_OK]
    by_method = {e.method: e for e in found}
    policy_event = by_method["SetRegisteredModelPolicy"]
    assert (policy_event.actor, policy_event.resource_type, policy_event.resource_id) == (
        "alice",
        "model",
        MODEL,
    )
    assert policy_event.before == "no approval required" and "Production" in policy_event.after

    created = [e for e in found if e.method == "CreateTransitionRequest"]
    assert [(e.actor, e.resource_type, e.resource_id) for e in created] == [
        ("bob", "model_version", f"{MODEL}/1"),
        ("bob", "model_version", f"{MODEL}/2"),
        ("bob", "model_version", f"{MODEL}/3"),
    ]
    assert "'ready'" in created[0].after and created[0].before == "stage=None"

    approved = by_method["ApproveTransitionRequest"]
    assert (approved.actor, approved.resource_type, approved.resource_id) == (
        "carol",
        "model_version",
        f"{MODEL}/1",
    )
    assert f"request {first.id} PENDING" in approved.before and "-> Production" in approved.before
    assert "'ship it'" in approved.after and f"id='{first.id}'" in approved.after
    rejected = by_method["RejectTransitionRequest"]
    assert (rejected.actor, rejected.resource_id) == (
        "carol",
        f"{MODEL}/2",
    ) and "worse on recall" in rejected.after
    cancelled = by_method["CancelTransitionRequest"]
    assert (cancelled.actor, cancelled.resource_id) == ("bob", f"{MODEL}/3")
    # Filtering by the version finds its registration, its request and its approval.
    for_version = events(team.admin, resource_type="model_version", resource_id=f"{MODEL}/1")
    assert [e.method for e in for_version] == [
        "CreateModelVersion", "CreateTransitionRequest", "ApproveTransitionRequest",
    ]  # fmt: skip
    # A reader of the model sees them too; an outsider only its own calls.
    assert {e.method for e in events(team.dave, model_name=MODEL)} >= {"ApproveTransitionRequest"}
    assert events(team.eve, model_name=MODEL) == []

    # Denied attempts are recorded as such.
    assert code_of(lambda: approve(team.dave, second.id)) == DENIED
    denied = [
        e for e in events(team.admin, method="ApproveTransitionRequest") if e.outcome == aupb.OUTCOME_DENIED
    ]
    assert [(e.actor, e.resource_id) for e in denied] == [("dave", second.id)]

    # A deployer following the model's events sees "approved into Production" as it commits.
    last = max(e.id for e in events(team.admin))
    stream = team.admin.audit.WatchEvents(
        aupb.WatchEventsRequest(after_event_id=last, model_name=MODEL, method="ApproveTransitionRequest"),
        metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
        timeout=WAIT_S,
    )
    try:
        fourth = request(team.bob, 2, archive_existing_versions=True, comment="retrained")
        approve(team.alice, fourth.id, comment="go")
        event = next(iter(stream))
        assert event.actor == "alice" and event.resource_id == f"{MODEL}/2"
        assert "-> Production" in event.before and f"id='{fourth.id}'" in event.after
    finally:
        stream.cancel()
    assert stage_of(team.alice, 2) == "Production" and stage_of(team.alice, 1) == "Archived"
