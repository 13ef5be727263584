"""Auth through a real server: tokens, the permission matrix (each level x each RPC group),
creator-gets-MANAGE, default permissions, groups, search filtering with paging, expiry and
revocation (on a second replica too), and what a refused caller can learn."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_fixtures import ServerHandle, running_server

from keel.artifacts.v1 import artifacts_pb2 as apb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.audit.v1 import audit_pb2 as aupb
from keel.audit.v1 import audit_pb2_grpc
from keel.auth.v1 import auth_pb2 as pb
from keel.auth.v1 import auth_pb2_grpc
from keel.inference.v1 import inference_pb2 as ipb
from keel.inference.v1 import inference_pb2_grpc
from keel.registry.v1 import registry_pb2 as rpb
from keel.registry.v1 import registry_pb2_grpc
from keel.tracking.v1 import tracking_pb2 as tpb
from keel.tracking.v1 import tracking_pb2_grpc

ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
LEVELS = ["NONE", "READ", "USE", "EDIT", "MANAGE"]


@dataclass
class Session:
    """Stubs that send one identity's token on every call."""

    channel: grpc.Channel
    token: str | None

    def call(self, stub: Any, method: str, request: Any) -> Any:
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else None
        return getattr(stub, method)(request, metadata=metadata, timeout=30)

    @property
    def tracking(self) -> Any:
        return tracking_pb2_grpc.TrackingServiceStub(self.channel)

    @property
    def registry(self) -> Any:
        return registry_pb2_grpc.ModelRegistryServiceStub(self.channel)

    @property
    def artifacts(self) -> Any:
        return artifacts_pb2_grpc.ArtifactServiceStub(self.channel)

    @property
    def inference(self) -> Any:
        return inference_pb2_grpc.InferenceServiceStub(self.channel)

    @property
    def auth(self) -> Any:
        return auth_pb2_grpc.AuthServiceStub(self.channel)

    @property
    def audit(self) -> Any:
        return audit_pb2_grpc.AuditServiceStub(self.channel)

    def t(self, method: str, request: Any) -> Any:
        return self.call(self.tracking, method, request)

    def r(self, method: str, request: Any) -> Any:
        return self.call(self.registry, method, request)

    def a(self, method: str, request: Any) -> Any:
        return self.call(self.auth, method, request)

    def upload(self, run_id: str, path: str, data: bytes) -> Any:
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else None
        messages = [
            apb.UploadArtifactRequest(header=apb.UploadHeader(ref=apb.ArtifactRef(run_id=run_id, path=path))),
            apb.UploadArtifactRequest(chunk=data),
        ]
        return self.artifacts.UploadArtifact(iter(messages), metadata=metadata, timeout=30)


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@dataclass
class World:
    """A secured server with users alice (owner of everything below), bob (the subject of the
    matrix) and carol (in group readers), an experiment with a run holding an artifact, and a
    registered model with one READY version."""

    handle: ServerHandle
    admin: Session
    alice: Session
    bob: Session
    carol: Session
    anonymous: Session
    experiment_id: str
    run_id: str
    model: str

    def session(self, token: str | None) -> Session:
        return Session(self.admin.channel, token)


def make_token(admin: Session, user: str, **kw: Any) -> str:
    return str(admin.a("CreateToken", pb.CreateTokenRequest(user=user, **kw)).secret)


def build_world(handle: ServerHandle) -> World:
    channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
    admin = Session(channel, ADMIN_TOKEN)
    for name in ("alice", "bob", "carol"):
        admin.a("CreateUser", pb.CreateUserRequest(name=name, service_account=name == "carol"))
    admin.a("CreateGroup", pb.CreateGroupRequest(name="readers"))
    admin.a("AddGroupMember", pb.AddGroupMemberRequest(group="readers", user="carol"))
    alice = Session(channel, make_token(admin, "alice", name="laptop"))
    experiment_id = alice.t("CreateExperiment", tpb.CreateExperimentRequest(name="fraud")).experiment_id
    run_id = alice.t("CreateRun", tpb.CreateRunRequest(experiment_id=experiment_id)).info.run_id
    alice.t("LogMetric", tpb.LogMetricRequest(run_id=run_id, key="auc", value=0.9, step=0))
    alice.upload(run_id, "model/MLmodel", b"artifact_path: model\nflavors: {}\n")
    alice.r("CreateRegisteredModel", rpb.CreateRegisteredModelRequest(name="fraud-model"))
    version = alice.r(
        "CreateModelVersion",
        rpb.CreateModelVersionRequest(name="fraud-model", source=f"runs:/{run_id}/model", run_id=run_id),
    )
    assert version.version == 1
    return World(
        handle=handle,
        admin=admin,
        alice=alice,
        bob=Session(channel, make_token(admin, "bob")),
        carol=Session(channel, make_token(admin, "carol")),
        anonymous=Session(channel, None),
        experiment_id=experiment_id,
        run_id=run_id,
        model="fraud-model",
    )


@pytest.fixture()
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with running_server(
        db_url,
        f"file://{tmp_path / 'artifacts'}",
        auth=True,
        admin_token=ADMIN_TOKEN,
        default_permission="NONE",
    ) as handle:
        w = build_world(handle)
        yield w
        w.admin.channel.close()


def grant(w: World, level: str, *, user: str = "bob", group: str = "") -> None:
    subject = pb.Subject(group=group) if group else pb.Subject(user=user)
    for resource in (pb.Resource(experiment_id=w.experiment_id), pb.Resource(model_name=w.model)):
        if level == "NONE":
            code_of(
                lambda r=resource: w.alice.a(
                    "RevokePermission", pb.RevokePermissionRequest(subject=subject, resource=r)
                )
            )
        else:
            w.alice.a(
                "GrantPermission",
                pb.GrantPermissionRequest(
                    subject=subject,
                    resource=resource,
                    level=pb.PermissionLevel.Value(f"PERMISSION_LEVEL_{level}"),
                ),
            )


# Each RPC group: the least level it needs, and calls that must all be allowed at that level
# and refused below it. "Allowed" means the handler ran (any status but PERMISSION_DENIED).
def probes(w: World, s: Session) -> dict[str, list[Callable[[], Any]]]:
    ref = apb.ArtifactRef(run_id=w.run_id)
    return {
        "READ": [
            lambda: s.t("GetExperiment", tpb.GetExperimentRequest(experiment_id=w.experiment_id)),
            lambda: s.t("GetExperimentByName", tpb.GetExperimentByNameRequest(name="fraud")),
            lambda: s.t("GetRun", tpb.GetRunRequest(run_id=w.run_id)),
            lambda: s.t("GetMetricHistory", tpb.GetMetricHistoryRequest(run_id=w.run_id, metric_key="auc")),
            lambda: s.t(
                "GetMetricHistoryBulk",
                tpb.GetMetricHistoryBulkRequest(run_ids=[w.run_id], metric_keys=["auc"]),
            ),
            lambda: s.r("GetRegisteredModel", rpb.GetRegisteredModelRequest(name=w.model)),
            lambda: s.r("GetModelVersion", rpb.GetModelVersionRequest(name=w.model, version=1)),
            lambda: s.r(
                "GetModelVersionDownloadUri", rpb.GetModelVersionDownloadUriRequest(name=w.model, version=1)
            ),
            lambda: s.r("ResolveModelUri", rpb.ResolveModelUriRequest(model_uri=f"models:/{w.model}/1")),
            lambda: s.r("ListModelHistory", rpb.ListModelHistoryRequest(name=w.model)),
            lambda: s.call(s.artifacts, "ListArtifacts", apb.ListArtifactsRequest(ref=ref, recursive=True)),
            lambda: s.call(
                s.artifacts,
                "StatArtifact",
                apb.StatArtifactRequest(ref=apb.ArtifactRef(run_id=w.run_id, path="model/MLmodel")),
            ),
            lambda: list(
                s.artifacts.DownloadArtifact(
                    apb.DownloadArtifactRequest(ref=apb.ArtifactRef(run_id=w.run_id, path="model/MLmodel")),
                    metadata=(("authorization", f"Bearer {s.token}"),),
                )
            ),
        ],
        "USE": [
            # The handler refuses the model (not loadable): the gate let it through.
            lambda: s.call(
                s.inference,
                "CreateDeployment",
                ipb.CreateDeploymentRequest(
                    name="d-" + secrets.token_hex(3), model_uri=f"models:/{w.model}/1"
                ),
            ),
        ],
        "EDIT": [
            lambda: s.t("LogMetric", tpb.LogMetricRequest(run_id=w.run_id, key="loss", value=0.1, step=1)),
            lambda: s.t("SetTag", tpb.SetTagRequest(run_id=w.run_id, key="k", value="v")),
            lambda: s.t(
                "SetExperimentTag",
                tpb.SetExperimentTagRequest(experiment_id=w.experiment_id, key="k", value="v"),
            ),
            lambda: s.t("CreateRun", tpb.CreateRunRequest(experiment_id=w.experiment_id)),
            lambda: s.r(
                "SetRegisteredModelTag", rpb.SetRegisteredModelTagRequest(name=w.model, key="k", value="v")
            ),
            lambda: s.r(
                "UpdateModelVersion", rpb.UpdateModelVersionRequest(name=w.model, version=1, description="d")
            ),
            lambda: s.upload(w.run_id, "notes.txt", b"hello"),
        ],
        "MANAGE": [
            lambda: s.r(
                "TransitionModelVersionStage",
                rpb.TransitionModelVersionStageRequest(name=w.model, version=1, stage="Production"),
            ),
            lambda: s.r(
                "SetRegisteredModelAlias",
                rpb.SetRegisteredModelAliasRequest(name=w.model, alias="champion", version=1),
            ),
            lambda: s.a(
                "ListPermissions", pb.ListPermissionsRequest(resource=pb.Resource(model_name=w.model))
            ),
            lambda: s.a(
                "ListPermissions",
                pb.ListPermissionsRequest(resource=pb.Resource(experiment_id=w.experiment_id)),
            ),
        ],
    }


def test_permission_matrix(world: World) -> None:
    """bob at each level against each RPC group: allowed at or above the group's level, refused
    (PERMISSION_DENIED, before the handler) below it."""
    failures = []
    for level in LEVELS:
        grant(world, level)
        for group, calls in probes(world, world.bob).items():
            allowed = LEVELS.index(level) >= LEVELS.index(group)
            for index, call in enumerate(calls):
                code = code_of(call)
                if allowed and code == grpc.StatusCode.PERMISSION_DENIED:
                    failures.append(f"bob at {level}: {group} call #{index} refused")
                if not allowed and code != grpc.StatusCode.PERMISSION_DENIED:
                    failures.append(
                        f"bob at {level}: {group} call #{index} gave {code.name}, not PERMISSION_DENIED"
                    )
    assert not failures, "\n".join(failures)


def test_creator_gets_manage_and_admin_bypasses(world: World) -> None:
    for session in (world.alice, world.admin):
        for group, calls in probes(world, session).items():
            for call in calls:
                assert code_of(call) != grpc.StatusCode.PERMISSION_DENIED, f"{group} refused"
    grants = world.alice.a(
        "ListPermissions", pb.ListPermissionsRequest(resource=pb.Resource(model_name=world.model))
    )
    assert [(g.subject.user, g.level) for g in grants.permissions] == [("alice", pb.PERMISSION_LEVEL_MANAGE)]


def test_a_refused_caller_cannot_tell_what_exists(world: World) -> None:
    """With default NONE, an existing resource bob cannot read and one that does not exist answer
    the same status and reason; an admin gets NOT_FOUND for the missing one."""
    cases = [
        (lambda s: s.t("GetExperiment", tpb.GetExperimentRequest(experiment_id=world.experiment_id)),
         lambda s: s.t("GetExperiment", tpb.GetExperimentRequest(experiment_id="987654"))),
        (lambda s: s.t("GetRun", tpb.GetRunRequest(run_id=world.run_id)),
         lambda s: s.t("GetRun", tpb.GetRunRequest(run_id="0" * 32))),
        (lambda s: s.r("GetRegisteredModel", rpb.GetRegisteredModelRequest(name=world.model)),
         lambda s: s.r("GetRegisteredModel", rpb.GetRegisteredModelRequest(name="no-such-model"))),
        (lambda s: s.r("DeleteRegisteredModel", rpb.DeleteRegisteredModelRequest(name=world.model)),
         lambda s: s.r("DeleteRegisteredModel", rpb.DeleteRegisteredModelRequest(name="no-such-model"))),
    ]  # fmt: skip
    for existing, missing in cases:
        answers = []
        for call in (existing, missing):
            with pytest.raises(grpc.RpcError) as info:
                call(world.bob)
            answers.append((info.value.code(), _reason(info.value)))
        assert answers[0] == answers[1] == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
        assert code_of(lambda m=missing: m(world.admin)) == grpc.StatusCode.NOT_FOUND
    # Nothing changed: alice's model is still there.
    assert (
        world.alice.r("GetRegisteredModel", rpb.GetRegisteredModelRequest(name=world.model)).name
        == world.model
    )


def test_groups_grant_their_members(world: World) -> None:
    get_run = lambda: world.carol.t("GetRun", tpb.GetRunRequest(run_id=world.run_id))  # noqa: E731
    assert code_of(get_run) == grpc.StatusCode.PERMISSION_DENIED
    grant(world, "READ", group="readers")
    assert code_of(get_run) == grpc.StatusCode.OK
    # The highest of the user's and its groups' grants applies.
    world.alice.a(
        "GrantPermission",
        pb.GrantPermissionRequest(
            subject=pb.Subject(user="carol"),
            resource=pb.Resource(experiment_id=world.experiment_id),
            level=pb.PERMISSION_LEVEL_EDIT,
        ),
    )
    assert (
        code_of(lambda: world.carol.t("SetTag", tpb.SetTagRequest(run_id=world.run_id, key="a", value="b")))
        == grpc.StatusCode.OK
    )
    world.admin.a("RemoveGroupMember", pb.RemoveGroupMemberRequest(group="readers", user="carol"))
    assert (
        code_of(
            lambda: world.carol.t(
                "GetMetricHistory", tpb.GetMetricHistoryRequest(run_id=world.run_id, metric_key="auc")
            )
        )
        == grpc.StatusCode.OK
    )
    world.alice.a(
        "RevokePermission",
        pb.RevokePermissionRequest(
            subject=pb.Subject(user="carol"), resource=pb.Resource(experiment_id=world.experiment_id)
        ),
    )
    assert code_of(get_run) == grpc.StatusCode.PERMISSION_DENIED


def test_search_shows_only_what_the_caller_can_read_with_paging_intact(world: World) -> None:
    alice, bob = world.alice, world.bob
    visible_experiments, visible_models, runs = {world.experiment_id}, set(), {}
    for i in range(6):
        eid = alice.t("CreateExperiment", tpb.CreateExperimentRequest(name=f"exp-{i}")).experiment_id
        runs[eid] = alice.t("CreateRun", tpb.CreateRunRequest(experiment_id=eid)).info.run_id
        alice.r("CreateRegisteredModel", rpb.CreateRegisteredModelRequest(name=f"model-{i}"))
        if i % 2 == 0:
            visible_experiments.add(eid)
            visible_models.add(f"model-{i}")
            alice.a(
                "GrantPermission",
                pb.GrantPermissionRequest(
                    subject=pb.Subject(user="bob"),
                    resource=pb.Resource(experiment_id=eid),
                    level=pb.PERMISSION_LEVEL_READ,
                ),
            )
            alice.a(
                "GrantPermission",
                pb.GrantPermissionRequest(
                    subject=pb.Subject(user="bob"),
                    resource=pb.Resource(model_name=f"model-{i}"),
                    level=pb.PERMISSION_LEVEL_READ,
                ),
            )
    grant(world, "READ")
    visible_models.add(world.model)

    def pages(fetch: Callable[[str], Any], items: Callable[[Any], list[str]]) -> list[list[str]]:
        out, token = [], ""
        for _ in range(20):
            page = fetch(token)
            out.append(items(page))
            token = page.next_page_token
            if not token:
                return out
        raise AssertionError("paging did not end")

    experiment_pages = pages(
        lambda tok: bob.t("SearchExperiments", tpb.SearchExperimentsRequest(page_size=2, page_token=tok)),
        lambda page: [e.experiment_id for e in page.experiments],
    )
    assert all(len(p) == 2 for p in experiment_pages[:-1])
    assert sorted(sum(experiment_pages, [])) == sorted(visible_experiments)
    model_pages = pages(
        lambda tok: bob.r(
            "SearchRegisteredModels", rpb.SearchRegisteredModelsRequest(page_size=2, page_token=tok)
        ),
        lambda page: [m.name for m in page.registered_models],
    )
    assert all(len(p) == 2 for p in model_pages[:-1])
    assert sorted(sum(model_pages, [])) == sorted(visible_models)
    versions = bob.r("SearchModelVersions", rpb.SearchModelVersionsRequest())
    assert {v.name for v in versions.model_versions} == {world.model}
    found = bob.t("SearchRuns", tpb.SearchRunsRequest(experiment_ids=sorted(runs), page_size=1))
    seen, token = [r.info.run_id for r in found.runs], found.next_page_token
    while token:
        found = bob.t(
            "SearchRuns", tpb.SearchRunsRequest(experiment_ids=sorted(runs), page_size=1, page_token=token)
        )
        seen += [r.info.run_id for r in found.runs]
        token = found.next_page_token
    assert sorted(seen) == sorted(runs[e] for e in runs if e in visible_experiments)
    # alice (the owner) sees everything.
    everything = alice.r("SearchRegisteredModels", rpb.SearchRegisteredModelsRequest(page_size=100))
    assert len(everything.registered_models) == 7


def test_credentials_are_required_and_checked(world: World) -> None:
    get = lambda s: s.t("GetExperiment", tpb.GetExperimentRequest(experiment_id=world.experiment_id))  # noqa: E731
    for session in (
        world.anonymous,
        world.session("not-a-token"),
        world.session("keel_0123456789abcdef_" + "x" * 43),
    ):
        with pytest.raises(grpc.RpcError) as info:
            get(session)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "KEEL_TRACKING_TOKEN" in info.value.details() or "not valid" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        world.tracking_with_header = world.alice.tracking.GetExperiment(  # type: ignore[attr-defined]
            tpb.GetExperimentRequest(experiment_id=world.experiment_id),
            metadata=(("authorization", "Basic abc"),),
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Health checks need no token (probes run before any token exists).
    health = health_pb2_grpc.HealthStub(world.admin.channel)
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    # Only hashes are stored.
    from keel_server.common.db import ApiToken

    assert world.alice.token is not None
    secret = world.alice.token.rsplit("_", 1)[1]
    assert all(secret not in row.secret_hash for row in ApiToken.select())


def test_admin_only_calls(world: World) -> None:
    for call in (
        lambda s: s.a("CreateUser", pb.CreateUserRequest(name="mallory", admin=True)),
        lambda s: s.a("ListUsers", pb.ListUsersRequest()),
        lambda s: s.a("DisableUser", pb.DisableUserRequest(name="alice")),
        lambda s: s.a("AddGroupMember", pb.AddGroupMemberRequest(group="readers", user="bob")),
        lambda s: s.a("CreateToken", pb.CreateTokenRequest(user="alice")),
        lambda s: s.a("ListTokens", pb.ListTokensRequest(user="alice")),
    ):
        assert code_of(lambda c=call: c(world.bob)) == grpc.StatusCode.PERMISSION_DENIED
    # A user manages its own tokens.
    mine = world.bob.a("CreateToken", pb.CreateTokenRequest(name="second"))
    assert mine.token.user == "bob" and mine.secret.startswith("keel_")
    alices = world.admin.a("ListTokens", pb.ListTokensRequest(user="alice")).tokens
    assert (
        code_of(lambda: world.bob.a("RevokeToken", pb.RevokeTokenRequest(id=alices[0].id)))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert world.bob.a("RevokeToken", pb.RevokeTokenRequest(id=mine.token.id)).revoked_time > 0
    who = world.carol.a("WhoAmI", pb.WhoAmIRequest())
    assert (who.name, who.service_account, who.admin, list(who.groups), who.auth_method) == (
        "carol",
        True,
        False,
        ["readers"],
        "token",
    )
    admin = world.admin.a("WhoAmI", pb.WhoAmIRequest())
    assert (admin.name, admin.admin, admin.auth_method) == ("admin", True, "admin-token")


def test_bad_auth_requests_are_invalid_argument(world: World) -> None:
    admin = world.admin
    bad = [
        lambda: admin.a("CreateUser", pb.CreateUserRequest(name="no spaces")),
        lambda: admin.a("CreateUser", pb.CreateUserRequest(name="")),
        lambda: admin.a("CreateToken", pb.CreateTokenRequest(user="bob", expires_in_seconds=-5)),
        lambda: admin.a(
            "GrantPermission",
            pb.GrantPermissionRequest(
                subject=pb.Subject(user="bob"), resource=pb.Resource(model_name=world.model)
            ),
        ),
        lambda: admin.a(
            "GrantPermission",
            pb.GrantPermissionRequest(
                resource=pb.Resource(model_name=world.model), level=pb.PERMISSION_LEVEL_READ
            ),
        ),
        lambda: admin.a("ListPermissions", pb.ListPermissionsRequest()),
    ]
    for call in bad:
        assert code_of(call) == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        code_of(lambda: admin.a("CreateUser", pb.CreateUserRequest(name="bob")))
        == grpc.StatusCode.ALREADY_EXISTS
    )
    assert (
        code_of(lambda: admin.a("AddGroupMember", pb.AddGroupMemberRequest(group="nope", user="bob")))
        == grpc.StatusCode.NOT_FOUND
    )


def _reason(error: grpc.RpcError) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def test_default_read_lets_everyone_read_but_not_write(tmp_path: Path) -> None:
    from backends import make_database_url

    with (
        make_database_url("sqlite", tmp_path) as db_url,
        running_server(
            db_url, f"file://{tmp_path / 'artifacts'}", auth=True, admin_token=ADMIN_TOKEN
        ) as handle,
    ):
        w = build_world(handle)
        assert code_of(lambda: w.bob.t("GetRun", tpb.GetRunRequest(run_id=w.run_id))) == grpc.StatusCode.OK
        assert (
            len(w.bob.r("SearchRegisteredModels", rpb.SearchRegisteredModelsRequest()).registered_models) == 1
        )
        assert (
            code_of(lambda: w.bob.t("SetTag", tpb.SetTagRequest(run_id=w.run_id, key="a", value="b")))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            code_of(
                lambda: w.bob.r(
                    "TransitionModelVersionStage",
                    rpb.TransitionModelVersionStageRequest(name=w.model, version=1, stage="Production"),
                )
            )
            == grpc.StatusCode.PERMISSION_DENIED
        )
        w.admin.channel.close()


def test_expiry_and_revocation_reach_every_replica_within_a_second(tmp_path: Path) -> None:
    from backends import make_database_url

    with (
        make_database_url("sqlite", tmp_path) as db_url,
        running_server(db_url, f"file://{tmp_path / 'a'}", auth=True, admin_token=ADMIN_TOKEN) as first,
        running_server(db_url, f"file://{tmp_path / 'a'}", auth=True, admin_token=ADMIN_TOKEN) as second,
    ):
        w = build_world(first)
        on_second = Session(grpc.insecure_channel(f"127.0.0.1:{second.port}"), w.bob.token)
        whoami = lambda s: s.a("WhoAmI", pb.WhoAmIRequest())  # noqa: E731
        assert whoami(on_second).name == "bob"  # cached on the second replica now
        token_id = w.admin.a("ListTokens", pb.ListTokensRequest(user="bob")).tokens[0].id
        w.admin.a("RevokeToken", pb.RevokeTokenRequest(id=token_id))
        revoked_at = time.monotonic()
        assert code_of(lambda: whoami(w.bob)) == grpc.StatusCode.UNAUTHENTICATED  # at once on the first
        assert _refused_within(lambda: whoami(on_second), 1.0, since=revoked_at)
        # Disabling a user ends its tokens too.
        carol_second = Session(on_second.channel, w.carol.token)
        assert whoami(carol_second).name == "carol"
        w.admin.a("DisableUser", pb.DisableUserRequest(name="carol"))
        disabled_at = time.monotonic()
        assert _refused_within(lambda: whoami(carol_second), 1.0, since=disabled_at)
        # Expiry.
        short = make_token(w.admin, "alice", expires_in_seconds=1)
        created = time.monotonic()
        assert whoami(w.session(short)).name == "alice"
        assert _refused_within(lambda: whoami(w.session(short)), 2.5, since=created)
        on_second.channel.close()
        w.admin.channel.close()


def _refused_within(call: Callable[[], Any], seconds: float, since: float) -> bool:
    """Polls ``call`` (bounded) until it answers UNAUTHENTICATED; True if that happened within
    ``seconds`` of ``since``."""
    while time.monotonic() - since < seconds + 1.0:
        if code_of(call) == grpc.StatusCode.UNAUTHENTICATED:
            return time.monotonic() - since <= seconds
        time.sleep(0.05)
    return False


def test_audit_records_refusals_without_showing_them_to_others(world: World) -> None:
    code_of(lambda: world.bob.r("DeleteRegisteredModel", rpb.DeleteRegisteredModelRequest(name=world.model)))
    code_of(
        lambda: world.anonymous.r("DeleteRegisteredModel", rpb.DeleteRegisteredModelRequest(name=world.model))
    )
    events = world.admin.call(
        world.admin.audit, "ListEvents", aupb.ListEventsRequest(method="DeleteRegisteredModel")
    ).events
    outcomes = sorted((e.actor, e.outcome) for e in events)
    assert outcomes == [("", aupb.OUTCOME_UNAUTHENTICATED), ("bob", aupb.OUTCOME_DENIED)]
    # bob cannot read the model: he sees his own attempt, not alice's changes to it.
    mine = world.bob.call(world.bob.audit, "ListEvents", aupb.ListEventsRequest()).events
    assert mine and all(e.actor == "bob" for e in mine)
