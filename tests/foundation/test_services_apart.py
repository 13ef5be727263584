"""Issue #13: services in separate servers, one URI for the client.

The SDK asks the tracking server where the other services run (discovery) and routes each
service's calls there; explicit per-client URIs win; a call that reaches a server not running
its service gets UNIMPLEMENTED naming the service and the setting; a multi-address URI spreads
over replicas and survives one of them going away.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from backends import make_database_url
from server_fixtures import ServerHandle, running_server

import keel
import keel._routing as routing
from keel.discovery.v1 import discovery_pb2, discovery_pb2_grpc
from keel.exceptions import Unimplemented
from keel.registry.v1 import registry_pb2, registry_pb2_grpc


@contextlib.contextmanager
def _apart(tmp_path: Path, tell_addresses: bool = True) -> Iterator[tuple[ServerHandle, ServerHandle]]:
    """Tracking alone on one server; registry, artifacts and inference on another; one DB, one store."""
    routing.forget_discovered()
    with make_database_url("sqlite", tmp_path) as db_url:
        artifacts = f"file://{tmp_path}/artifacts"
        with running_server(db_url, artifacts, services=("registry", "artifacts", "inference")) as rest:
            addresses = (
                {f"{s}_address": rest.uri for s in ("registry", "artifacts", "inference")} if tell_addresses else {}
            )
            with running_server(db_url, artifacts, services=("tracking",), **addresses) as tracking:
                yield tracking, rest
    routing.forget_discovered()


def test_discovery_lists_every_service_with_where_it_runs(tmp_path: Path) -> None:
    with _apart(tmp_path) as (tracking, rest):
        stub = discovery_pb2_grpc.DiscoveryServiceStub(grpc.insecure_channel(f"127.0.0.1:{tracking.port}"))
        reply = stub.GetServiceAddresses(discovery_pb2.GetServiceAddressesRequest())
        where = {s.service: (s.local, s.address) for s in reply.services}
        assert where == {
            "tracking": (True, ""),
            "registry": (False, rest.uri),
            "artifacts": (False, rest.uri),
            "inference": (False, rest.uri),
        }
        names = {s.service: list(s.grpc_services) for s in reply.services}
        assert names["inference"] == ["keel.inference.v1.InferenceService", "inference.GRPCInferenceService"]


def test_client_with_one_uri_logs_registers_and_loads_through_separate_servers(tmp_path: Path) -> None:
    with _apart(tmp_path) as (tracking, _rest):
        keel.set_tracking_uri(tracking.uri)
        client = keel.Client(tracking.uri)
        keel.set_experiment(f"apart-{uuid.uuid4().hex[:8]}")
        name = f"apart-{uuid.uuid4().hex[:8]}"
        with keel.start_run() as run:
            keel.log_metric("loss", 0.5)
            keel.log_text("weights", "model/weights.txt")
        client.create_registered_model(name)
        version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id).version
        client.transition_model_version_stage(name, version, "Production")
        uri = client.resolve_model_uri(f"models:/{name}/Production")
        assert keel.artifacts.load_text(f"{uri}/weights.txt", tracking_uri=tracking.uri) == "weights"
        assert client.get_run(run.info.run_id).data.metrics["loss"] == 0.5


def test_call_to_a_server_without_the_service_names_it_and_the_setting(tmp_path: Path) -> None:
    with _apart(tmp_path, tell_addresses=False) as (tracking, _rest):
        stub = registry_pb2_grpc.ModelRegistryServiceStub(grpc.insecure_channel(f"127.0.0.1:{tracking.port}"))
        with pytest.raises(grpc.RpcError) as err:
            stub.GetRegisteredModel(registry_pb2.GetRegisteredModelRequest(name="m"))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        message = err.value.details()
        assert "does not run the registry service (keel.registry.v1.ModelRegistryService)" in message
        assert "KEEL_REGISTRY_ADDRESS" in message and "KEEL_REGISTRY_URI" in message
        assert "Method not found" not in message
        # The SDK, knowing no better, lands there too and raises the same, typed.
        with pytest.raises(Unimplemented) as typed:
            keel.Client(tracking.uri).get_registered_model("m")
        assert typed.value.reason == "SERVICE_NOT_HERE"


def test_kserve_call_to_a_server_without_inference_is_unimplemented_with_the_reason(tmp_path: Path) -> None:
    with _apart(tmp_path) as (tracking, rest):
        with grpc.insecure_channel(f"127.0.0.1:{tracking.port}") as channel:
            live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
            with pytest.raises(grpc.RpcError) as err:
                live(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "does not run the inference service (inference.GRPCInferenceService)" in err.value.details()
        assert rest.uri in err.value.details()


def test_call_to_a_server_that_knows_where_the_service_is_says_so(tmp_path: Path) -> None:
    with _apart(tmp_path) as (tracking, rest):
        stub = registry_pb2_grpc.ModelRegistryServiceStub(grpc.insecure_channel(f"127.0.0.1:{tracking.port}"))
        with pytest.raises(grpc.RpcError) as err:
            stub.GetRegisteredModel(registry_pb2.GetRegisteredModelRequest(name="m"))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert f"It runs at {rest.uri}" in err.value.details()


def test_set_registry_uri_overrides_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _apart(tmp_path, tell_addresses=False) as (tracking, rest):
        name = f"override-{uuid.uuid4().hex[:8]}"
        keel.set_registry_uri(rest.uri)
        try:
            assert keel.get_registry_uri() == rest.uri
            assert keel.Client(tracking.uri).create_registered_model(name).name == name
        finally:
            keel.set_registry_uri(None)
        monkeypatch.setenv("KEEL_REGISTRY_URI", rest.uri)
        assert keel.Client(tracking.uri).get_registered_model(name).name == name


def test_replica_list_uri_keeps_working_when_one_replica_stops(tmp_path: Path) -> None:
    routing.forget_discovered()
    with make_database_url("sqlite", tmp_path) as db_url:
        artifacts = f"file://{tmp_path}/artifacts"
        with running_server(db_url, artifacts) as first, running_server(db_url, artifacts) as second:
            uri = f"grpc://127.0.0.1:{first.port},127.0.0.1:{second.port}"
            client = keel.Client(uri)
            experiment = client.create_experiment(f"replicas-{uuid.uuid4().hex[:8]}")
            runs = [client.create_run(experiment).info.run_id for _ in range(4)]
            assert first.running is not None
            first.running.stop(grace=0)
            # Every idempotent call still answers, from the replica that is left.
            for run_id in runs:
                assert client.get_run(run_id).info.run_id == run_id
            assert client.get_experiment(experiment).experiment_id == experiment
            name = f"replicated-{uuid.uuid4().hex[:8]}"
            assert client.get_registered_model(client.create_registered_model(name).name).name == name
    routing.forget_discovered()


@pytest.mark.parametrize(
    ("uri", "spreads"),
    [
        ("grpc://127.0.0.1:5001", False),
        ("grpc://localhost:5001", False),
        ("grpc://[::1]:5001", False),
        ("grpc://keel-tracking-headless.keel.svc.cluster.local:50051", True),  # several A records
        ("grpc://127.0.0.1:5001,127.0.0.1:5002", True),
    ],
)
def test_replica_lists_and_dns_names_spread_round_robin(uri: str, spreads: bool) -> None:
    from keel._transport import _has_replicas, parse_target

    target, _ = parse_target(uri)
    assert _has_replicas(target) is spreads
