"""Every RPC keel serves has an entry in the permission table (MLflow's
test_authorization_coverage is the model): a new RPC cannot ship ungated."""

from __future__ import annotations

import importlib

import pytest

from keel_server.auth import policy
from keel_server.inference import kserve

STUB_MODULES = [
    "keel.tracking.v1.tracking_pb2",
    "keel.registry.v1.registry_pb2",
    "keel.artifacts.v1.artifacts_pb2",
    "keel.inference.v1.inference_pb2",
    "keel.discovery.v1.discovery_pb2",
    "keel.auth.v1.auth_pb2",
    "keel.audit.v1.audit_pb2",
]
# Verbs that change state: an RPC named with one must be audited, every other must not be.
MUTATING_VERBS = (
    "Create", "Update", "Delete", "Set", "Log", "Rename", "Restore", "Transition", "Upload", "Copy",
    "Grant", "Revoke", "Add", "Remove", "Disable", "GetOrCreate", "Approve", "Reject", "Cancel",
)  # fmt: skip
# The request field type each kind of need resolves (a string unless listed).
NEED_FIELD_TYPES = {policy.ARTIFACT_REF: "ArtifactRef", policy.GRANT_RESOURCE: "Resource"}
# Reads whose names start with a mutating verb.
NOT_MUTATING = {"CreatePresignedUrl"}


def every_rpc() -> list[str]:
    """Full method names (``/package.Service/Method``) of every service in keel's protos."""
    methods = []
    for name in STUB_MODULES:
        module = importlib.import_module(name)
        for service in module.DESCRIPTOR.services_by_name.values():
            methods += [f"/{service.full_name}/{m.name}" for m in service.methods]
    v2 = kserve.private_pool().FindServiceByName(kserve.SERVICE)
    methods += [f"/{v2.full_name}/{m.name}" for m in v2.methods]
    return methods


def test_every_rpc_has_a_policy_entry() -> None:
    missing = [method for method in every_rpc() if method not in policy.POLICY]
    assert not missing, f"RPCs without an entry in keel_server.auth.policy.POLICY: {missing}"


def test_no_policy_entry_names_an_rpc_that_does_not_exist() -> None:
    stale = sorted(set(policy.POLICY) - set(every_rpc()))
    assert not stale, f"POLICY entries of RPCs no proto defines: {stale}"


@pytest.mark.parametrize("method", every_rpc())
def test_changes_are_audited_and_reads_are_not(method: str) -> None:
    rpc = method.rsplit("/", 1)[1]
    mutating = rpc.startswith(MUTATING_VERBS) and rpc not in NOT_MUTATING
    assert policy.POLICY[method].mutates == mutating, f"{method}: mutates should be {mutating}"


def test_policy_needs_name_request_fields_that_exist() -> None:
    """A Need naming a misspelt field would resolve to nothing and check nothing."""
    pools = {}
    for name in STUB_MODULES:
        module = importlib.import_module(name)
        for service in module.DESCRIPTOR.services_by_name.values():
            pools[service.full_name] = service
    v2 = kserve.private_pool().FindServiceByName(kserve.SERVICE)
    pools[v2.full_name] = v2
    for method, rule in policy.POLICY.items():
        service_name, rpc = method.strip("/").split("/")
        message = pools[service_name].methods_by_name[rpc].input_type
        for need in rule.needs:
            descriptor, field = message, None
            for part in need.field.split("."):
                assert part in descriptor.fields_by_name, f"{method}: no field {need.field!r} in {message.full_name}"
                field = descriptor.fields_by_name[part]
                descriptor = field.message_type if field.message_type is not None else descriptor
            assert field is not None
            kind = field.message_type.name if field.message_type is not None else "string"
            if field.type in (field.TYPE_INT32, field.TYPE_INT64):
                kind = "int"
            expected = NEED_FIELD_TYPES.get(need.kind, "string")
            assert kind == expected, f"{method}: {need.kind} needs a {expected} field, {need.field!r} is a {kind}"
            assert field.is_repeated == (need.kind == policy.RUNS), f"{method}: {need.field!r}"


def test_health_and_reflection_are_public_and_unknown_methods_are_not() -> None:
    assert policy.rule_for("/grpc.health.v1.Health/Check").public  # type: ignore[union-attr]
    assert policy.rule_for("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").public  # type: ignore[union-attr]
    assert policy.rule_for("/keel.tracking.v1.TrackingService/NoSuchMethod") is None
