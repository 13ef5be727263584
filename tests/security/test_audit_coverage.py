"""Every state-changing RPC (enumerated from the protos through the permission table, whose
``mutates`` flags test_auth_coverage checks against the RPC names) leaves an audit event when it
succeeds, with the caller, the RPC and the resource; a change that fails leaves none."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_fixtures import running_server
from test_auth_coverage import every_rpc
from test_permissions import ADMIN_TOKEN, Session, code_of

from keel.artifacts.v1 import artifacts_pb2 as apb
from keel.audit.v1 import audit_pb2 as aupb
from keel.auth.v1 import auth_pb2 as pb
from keel.inference.v1 import inference_pb2 as ipb
from keel.registry.v1 import registry_pb2 as rpb
from keel.tracking.v1 import tracking_pb2 as tpb
from keel_server.auth import policy

REVIEWER = "reviewer"  # decides the transition requests the admin makes


@pytest.fixture()
def admin(db_url: str, tmp_path: Path) -> Iterator[Session]:
    with running_server(db_url, f"file://{tmp_path / 'artifacts'}", auth=True, admin_token=ADMIN_TOKEN) as handle:
        session = Session(grpc.insecure_channel(f"127.0.0.1:{handle.port}"), ADMIN_TOKEN)
        yield session
        session.channel.close()


def call_every_mutating_rpc(s: Session) -> None:
    """One successful call of each state-changing RPC."""
    t, r, a = s.t, s.r, s.a
    eid = t("CreateExperiment", tpb.CreateExperimentRequest(name="audit")).experiment_id
    t("GetOrCreateExperiment", tpb.GetOrCreateExperimentRequest(name="audit-2"))
    t("UpdateExperiment", tpb.UpdateExperimentRequest(experiment_id=eid, new_name="audited"))
    t("SetExperimentTag", tpb.SetExperimentTagRequest(experiment_id=eid, key="k", value="v"))
    t("DeleteExperimentTag", tpb.DeleteExperimentTagRequest(experiment_id=eid, key="k"))
    run_id = t("CreateRun", tpb.CreateRunRequest(experiment_id=eid)).info.run_id
    t("UpdateRun", tpb.UpdateRunRequest(run_id=run_id, run_name="renamed"))
    t("LogParam", tpb.LogParamRequest(run_id=run_id, key="lr", value="0.1"))
    t("LogMetric", tpb.LogMetricRequest(run_id=run_id, key="loss", value=0.5, step=0))
    t("SetTag", tpb.SetTagRequest(run_id=run_id, key="k", value="v"))
    t("DeleteTag", tpb.DeleteTagRequest(run_id=run_id, key="k"))
    t("LogBatch", tpb.LogBatchRequest(run_id=run_id, params=[tpb.Param(key="depth", value="3")]))
    model_id = t("CreateLoggedModel", tpb.CreateLoggedModelRequest(experiment_id=eid, name="lm", source_run_id=run_id)).model_id
    t("UpdateLoggedModel", tpb.UpdateLoggedModelRequest(model_id=model_id, status=tpb.LOGGED_MODEL_STATUS_READY))
    t("SetLoggedModelTags", tpb.SetLoggedModelTagsRequest(model_id=model_id, tags=[tpb.LoggedModelTag(key="k", value="v")]))
    t("DeleteLoggedModelTag", tpb.DeleteLoggedModelTagRequest(model_id=model_id, key="k"))
    t("LogLoggedModelParams", tpb.LogLoggedModelParamsRequest(model_id=model_id, params=[tpb.LoggedModelParam(key="p", value="1")]))
    t("DeleteLoggedModel", tpb.DeleteLoggedModelRequest(model_id=model_id))
    s.upload(run_id, "model/MLmodel", b"artifact_path: model\nflavors: {}\n")
    root = s.call(s.artifacts, "ResolveArtifactUri", apb.ResolveArtifactUriRequest(uri=f"runs:/{run_id}")).artifact_uri
    s.call(s.artifacts, "CopyArtifacts", apb.CopyArtifactsRequest(source=apb.ArtifactRef(artifact_uri=f"{root}/model"), destination=apb.ArtifactRef(run_id=run_id, path="copy")))
    s.call(s.artifacts, "DeleteArtifact", apb.DeleteArtifactRequest(ref=apb.ArtifactRef(run_id=run_id, path="copy")))

    r("CreateRegisteredModel", rpb.CreateRegisteredModelRequest(name="m"))
    r("UpdateRegisteredModel", rpb.UpdateRegisteredModelRequest(name="m", description="d"))
    r("SetRegisteredModelTag", rpb.SetRegisteredModelTagRequest(name="m", key="k", value="v"))
    r("DeleteRegisteredModelTag", rpb.DeleteRegisteredModelTagRequest(name="m", key="k"))
    r("CreateModelVersion", rpb.CreateModelVersionRequest(name="m", source=f"runs:/{run_id}/model", run_id=run_id))
    r("UpdateModelVersion", rpb.UpdateModelVersionRequest(name="m", version=1, description="d"))
    r("SetModelVersionTag", rpb.SetModelVersionTagRequest(name="m", version=1, key="k", value="v"))
    r("DeleteModelVersionTag", rpb.DeleteModelVersionTagRequest(name="m", version=1, key="k"))
    r("TransitionModelVersionStage", rpb.TransitionModelVersionStageRequest(name="m", version=1, stage="Staging"))
    r("SetRegisteredModelAlias", rpb.SetRegisteredModelAliasRequest(name="m", alias="champion", version=1))
    r("DeleteRegisteredModelAlias", rpb.DeleteRegisteredModelAliasRequest(name="m", alias="champion"))
    # Review and approval: a requester cannot decide its own request, so a reviewer approves.
    r("SetRegisteredModelPolicy", rpb.SetRegisteredModelPolicyRequest(name="m", policy=rpb.RegisteredModelPolicy(approval_required_stages=["Production"])))
    a("CreateUser", pb.CreateUserRequest(name=REVIEWER, admin=True))
    reviewer = Session(s.channel, a("CreateToken", pb.CreateTokenRequest(user=REVIEWER)).secret)
    for decide in ("RejectTransitionRequest", "CancelTransitionRequest", "ApproveTransitionRequest"):
        asked = r("CreateTransitionRequest", rpb.CreateTransitionRequestRequest(name="m", version=1, stage="Production"))
        reviewer.r(decide, getattr(rpb, f"{decide}Request")(id=asked.id))
    s.call(s.inference, "CreateDeployment", ipb.CreateDeploymentRequest(name="dep", model_uri="models:/m/1"))
    s.call(s.inference, "DeleteDeployment", ipb.DeleteDeploymentRequest(name="dep"))
    r("RenameRegisteredModel", rpb.RenameRegisteredModelRequest(name="m", new_name="m2"))
    r("CreateModelVersion", rpb.CreateModelVersionRequest(name="m2", source=f"runs:/{run_id}/model"))
    r("DeleteModelVersion", rpb.DeleteModelVersionRequest(name="m2", version=2))
    r("DeleteRegisteredModel", rpb.DeleteRegisteredModelRequest(name="m2"))
    t("DeleteRun", tpb.DeleteRunRequest(run_id=run_id))
    t("RestoreRun", tpb.RestoreRunRequest(run_id=run_id))
    t("DeleteExperiment", tpb.DeleteExperimentRequest(experiment_id=eid))
    t("RestoreExperiment", tpb.RestoreExperimentRequest(experiment_id=eid))

    a("CreateUser", pb.CreateUserRequest(name="dana"))
    a("CreateGroup", pb.CreateGroupRequest(name="team"))
    a("AddGroupMember", pb.AddGroupMemberRequest(group="team", user="dana"))
    a("RemoveGroupMember", pb.RemoveGroupMemberRequest(group="team", user="dana"))
    token = a("CreateToken", pb.CreateTokenRequest(user="dana")).token
    a("RevokeToken", pb.RevokeTokenRequest(id=token.id))
    subject, resource = pb.Subject(user="dana"), pb.Resource(experiment_id=eid)
    a("GrantPermission", pb.GrantPermissionRequest(subject=subject, resource=resource, level=pb.PERMISSION_LEVEL_EDIT))
    a("RevokePermission", pb.RevokePermissionRequest(subject=subject, resource=resource))
    a("DisableUser", pb.DisableUserRequest(name="dana"))


def all_events(s: Session) -> list[aupb.Event]:
    events, token = [], ""
    for _ in range(100):
        page = s.call(s.audit, "ListEvents", aupb.ListEventsRequest(page_size=1000, page_token=token))
        events += list(page.events)
        token = page.next_page_token
        if not token:
            return events
    raise AssertionError("ListEvents paging did not end")


def test_every_mutating_rpc_leaves_an_event(admin: Session) -> None:
    call_every_mutating_rpc(admin)
    events = all_events(admin)
    audited = {f"/{e.service}/{e.method}" for e in events if e.outcome == aupb.OUTCOME_OK}
    mutating = {m for m in every_rpc() if policy.POLICY[m].mutates}
    assert mutating - audited == set(), "state-changing RPCs without an audit event"
    # Only changes are recorded (reads such as ResolveArtifactUri leave nothing).
    assert audited <= mutating
    assert all(e.actor in ("admin", REVIEWER) and e.request_id and e.peer and e.time > 0 for e in events)
    transition = next(e for e in events if e.method == "TransitionModelVersionStage")
    assert (transition.resource_type, transition.resource_id) == ("model_version", "m/1")
    assert "Staging" in transition.after
    log_metric = next(e for e in events if e.method == "LogMetric")
    assert log_metric.resource_type == "run" and "loss" in log_metric.after
    logged_model = next(e for e in events if e.method == "CreateLoggedModel")
    assert logged_model.resource_type == "logged_model" and logged_model.resource_id.startswith("m-")


def test_a_failed_change_leaves_no_event(admin: Session) -> None:
    before = len(all_events(admin))
    failing = [
        lambda: admin.r("DeleteRegisteredModel", rpb.DeleteRegisteredModelRequest(name="missing-" + secrets.token_hex(4))),
        lambda: admin.t("LogParam", tpb.LogParamRequest(run_id="0" * 32, key="k", value="v")),
        lambda: admin.t("CreateExperiment", tpb.CreateExperimentRequest(name="")),
        lambda: admin.a("CreateUser", pb.CreateUserRequest(name="bad name")),
    ]
    for call in failing:
        assert code_of(call) not in (grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED)
    assert len(all_events(admin)) == before
