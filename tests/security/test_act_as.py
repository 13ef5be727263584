"""``x-keel-act-as``: an admin service account (the console behind a trusted proxy) calls as the
user the proxy names. Honoured for admin service accounts only, for enabled users only; the call
then has exactly the user's permissions, the creator grant goes to the user, and the audit log
names both. Also GetCallerPermissions, which the console uses to show or hide controls."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from server_fixtures import running_server

from keel.audit.v1 import audit_pb2 as aupb
from keel.audit.v1 import audit_pb2_grpc
from keel.auth.v1 import auth_pb2 as pb
from keel.auth.v1 import auth_pb2_grpc
from keel.registry.v1 import registry_pb2 as rpb
from keel.registry.v1 import registry_pb2_grpc
from keel.tracking.v1 import tracking_pb2 as tpb
from keel.tracking.v1 import tracking_pb2_grpc

ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
ACT_AS = "x-keel-act-as"


@dataclass
class World:
    channel: grpc.Channel
    tokens: dict[str, str]
    experiment_id: str
    model: str

    def call(self, service: str, method: str, request: Any, token: str, act_as: str = "") -> Any:
        stub = {
            "auth": auth_pb2_grpc.AuthServiceStub,
            "tracking": tracking_pb2_grpc.TrackingServiceStub,
            "registry": registry_pb2_grpc.ModelRegistryServiceStub,
            "audit": audit_pb2_grpc.AuditServiceStub,
        }[service](self.channel)
        metadata = [("authorization", f"Bearer {token}")]
        if act_as:
            metadata.append((ACT_AS, act_as))
        return getattr(stub, method)(request, metadata=metadata, timeout=30)

    def refused(self, service: str, method: str, request: Any, token: str, act_as: str = "") -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            self.call(service, method, request, token, act_as)
        return caught.value


def _reason(error: grpc.RpcError) -> str:
    from keel.exceptions import from_rpc_error

    return from_rpc_error(error).reason


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    with running_server(
        f"sqlite:///{tmp_path / 'keel.db'}",
        f"file://{tmp_path / 'artifacts'}",
        auth=True,
        admin_token=ADMIN_TOKEN,
        default_permission="NONE",
    ) as handle:
        channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        w = World(channel, {"admin": ADMIN_TOKEN}, "", "fraud")
        for name, admin, service_account in [
            ("console-sa", True, True),  # what the console runs as
            ("plain-sa", False, True),  # a service account that is not an admin
            ("root-user", True, False),  # an admin that is a person, not a service account
            ("alice", False, False),
            ("bob", False, False),
            ("gone", False, False),
        ]:
            w.call("auth", "CreateUser", pb.CreateUserRequest(name=name, admin=admin, service_account=service_account), ADMIN_TOKEN)
            w.tokens[name] = w.call("auth", "CreateToken", pb.CreateTokenRequest(user=name), ADMIN_TOKEN).secret
        w.call("auth", "DisableUser", pb.DisableUserRequest(name="gone"), ADMIN_TOKEN)
        w.experiment_id = w.call(
            "tracking", "CreateExperiment", tpb.CreateExperimentRequest(name="bobs"), w.tokens["bob"]
        ).experiment_id
        w.call("registry", "CreateRegisteredModel", rpb.CreateRegisteredModelRequest(name="fraud"), w.tokens["bob"])
        w.call(
            "auth",
            "GrantPermission",
            pb.GrantPermissionRequest(
                subject=pb.Subject(user="alice"), resource=pb.Resource(model_name="fraud"), level=pb.PERMISSION_LEVEL_READ
            ),
            w.tokens["bob"],
        )
        yield w
        channel.close()


def test_an_admin_service_account_acts_for_a_user(world: World) -> None:
    me = world.call("auth", "WhoAmI", pb.WhoAmIRequest(), world.tokens["console-sa"], act_as="alice")
    assert (me.name, me.admin, me.auth_method) == ("alice", False, "act-as")
    # alice's permissions, not the service account's: READ on the model, nothing on bob's experiment
    world.call("registry", "GetRegisteredModel", rpb.GetRegisteredModelRequest(name="fraud"), world.tokens["console-sa"], "alice")
    refused = world.refused(
        "registry", "UpdateRegisteredModel", rpb.UpdateRegisteredModelRequest(name="fraud", description="x"),
        world.tokens["console-sa"], "alice",
    )  # fmt: skip
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED and "alice" in refused.details()
    refused = world.refused(
        "tracking", "GetExperiment", tpb.GetExperimentRequest(experiment_id=world.experiment_id),
        world.tokens["console-sa"], "alice",
    )  # fmt: skip
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED


def test_what_the_user_creates_is_theirs_and_the_audit_log_names_both(world: World) -> None:
    created = world.call(
        "tracking", "CreateExperiment", tpb.CreateExperimentRequest(name="alices"), world.tokens["console-sa"], "alice"
    )
    # the creator grant went to alice: she manages it with her own token
    world.call(
        "tracking", "UpdateExperiment", tpb.UpdateExperimentRequest(experiment_id=created.experiment_id, new_name="alices-2"),
        world.tokens["alice"],
    )  # fmt: skip
    events = world.call(
        "audit", "ListEvents", aupb.ListEventsRequest(method="CreateExperiment", page_size=100), ADMIN_TOKEN
    ).events
    (event,) = [e for e in events if e.resource_id == created.experiment_id]
    assert event.actor == "alice"
    assert event.peer.startswith("via console-sa from "), event.peer


@pytest.mark.parametrize(
    ("who", "target", "reason"),
    [
        ("plain-sa", "alice", "ACT_AS_REFUSED"),  # not an admin
        ("root-user", "alice", "ACT_AS_REFUSED"),  # an admin, but a person
        ("admin", "alice", "ACT_AS_REFUSED"),  # the bootstrap admin token
        ("alice", "bob", "ACT_AS_REFUSED"),  # a user for another user
        ("console-sa", "nobody", "ACT_AS_UNKNOWN_USER"),
        ("console-sa", "gone", "ACT_AS_UNKNOWN_USER"),  # disabled
    ],
)
def test_act_as_is_refused_to_anyone_else_and_for_unknown_users(world: World, who: str, target: str, reason: str) -> None:
    refused = world.refused("auth", "WhoAmI", pb.WhoAmIRequest(), world.tokens[who], target)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _reason(refused) == reason
    refused = world.refused(
        "tracking", "CreateExperiment", tpb.CreateExperimentRequest(name=f"by-{who}-{target}"), world.tokens[who], target
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    events = world.call(
        "audit", "ListEvents", aupb.ListEventsRequest(method="CreateExperiment", page_size=100), ADMIN_TOKEN
    ).events
    denied = [e for e in events if e.outcome == aupb.OUTCOME_DENIED and e.actor == ("admin" if who == "admin" else who)]
    assert denied, "a refused act-as is recorded under the caller's own name"


def test_a_bad_token_is_still_unauthenticated(world: World) -> None:
    refused = world.refused("auth", "WhoAmI", pb.WhoAmIRequest(), "not-a-token", "alice")
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED


def test_caller_permissions(world: World) -> None:
    resources = [
        pb.Resource(experiment_id=world.experiment_id),
        pb.Resource(model_name="fraud"),
        pb.Resource(model_name="does-not-exist"),
    ]
    request = pb.GetCallerPermissionsRequest(resources=resources)
    bob = world.call("auth", "GetCallerPermissions", request, world.tokens["bob"])
    assert list(bob.levels) == [pb.PERMISSION_LEVEL_MANAGE, pb.PERMISSION_LEVEL_MANAGE, pb.PERMISSION_LEVEL_NONE]
    assert bob.auth_enabled
    alice = world.call("auth", "GetCallerPermissions", request, world.tokens["alice"])
    assert list(alice.levels) == [pb.PERMISSION_LEVEL_NONE, pb.PERMISSION_LEVEL_READ, pb.PERMISSION_LEVEL_NONE]
    acting = world.call("auth", "GetCallerPermissions", request, world.tokens["console-sa"], "alice")
    assert list(acting.levels) == list(alice.levels)
    admin = world.call("auth", "GetCallerPermissions", request, ADMIN_TOKEN)
    assert set(admin.levels) == {pb.PERMISSION_LEVEL_MANAGE}
    for bad in (pb.GetCallerPermissionsRequest(), pb.GetCallerPermissionsRequest(resources=[pb.Resource()])):
        assert world.refused("auth", "GetCallerPermissions", bad, world.tokens["bob"]).code() == grpc.StatusCode.INVALID_ARGUMENT
    too_many = pb.GetCallerPermissionsRequest(resources=[pb.Resource(model_name="x")] * 1001)
    assert world.refused("auth", "GetCallerPermissions", too_many, world.tokens["bob"]).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_without_auth_the_header_changes_nothing(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'keel.db'}", f"file://{tmp_path / 'artifacts'}") as handle:
        channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        try:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            me = stub.WhoAmI(pb.WhoAmIRequest(), metadata=[(ACT_AS, "alice")], timeout=30)
            assert me.name == "anonymous" and not me.auth_enabled
            levels = stub.GetCallerPermissions(
                pb.GetCallerPermissionsRequest(resources=[pb.Resource(model_name="m")]), timeout=30
            )
            assert list(levels.levels) == [pb.PERMISSION_LEVEL_MANAGE] and not levels.auth_enabled
        finally:
            channel.close()


def test_run_data_keys_and_ranges_follow_read_permission(world: World) -> None:
    """The console's column and min/max calls show nothing of what the caller cannot read."""
    run_id = world.call(
        "tracking", "CreateRun", tpb.CreateRunRequest(experiment_id=world.experiment_id), world.tokens["bob"]
    ).info.run_id
    world.call("tracking", "LogParam", tpb.LogParamRequest(run_id=run_id, key="secret", value="1"), world.tokens["bob"])
    world.call("tracking", "LogMetric", tpb.LogMetricRequest(run_id=run_id, key="loss", value=1.0), world.tokens["bob"])
    request = tpb.ListRunDataKeysRequest(experiment_ids=[world.experiment_id])
    assert list(world.call("tracking", "ListRunDataKeys", request, world.tokens["bob"]).param_keys) == ["secret"]
    hidden = world.call("tracking", "ListRunDataKeys", request, world.tokens["alice"])
    assert not hidden.param_keys and not hidden.metric_keys and not hidden.tag_keys
    ranges = tpb.GetMetricRangesRequest(run_ids=[run_id])
    assert world.refused("tracking", "GetMetricRanges", ranges, world.tokens["alice"]).code() == grpc.StatusCode.PERMISSION_DENIED
    assert [r.key for r in world.call("tracking", "GetMetricRanges", ranges, world.tokens["bob"]).ranges] == ["loss"]
