"""Issue #21, defects 6, 7 and 11: invalid UTF-8, unchecked artifact locations, and error
messages that echoed unbounded input. Each test sends the probe's exact input to a real server."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from backends import make_database_url
from server_fixtures import ServerHandle, running_server, server_process

import keel
from keel.artifacts.v1 import artifacts_pb2, artifacts_pb2_grpc
from keel.exceptions import InvalidArgument
from keel.registry.v1 import registry_pb2, registry_pb2_grpc
from keel.tracking.v1 import tracking_pb2, tracking_pb2_grpc

# What the interceptor lets an error message and a metadata value grow to (plus the marker
# that says how much was left out), and a log line.
MESSAGE_BOUND = 1100
LOG_LINE_BOUND = 10_000
HUGE = "x" * (10 * 1024 * 1024)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    root = tmp_path_factory.mktemp("inputs")
    with make_database_url("sqlite", root) as db_url:
        with running_server(db_url, f"file://{root}/artifacts") as handle:
            yield handle


def _raw_call(handle: ServerHandle, method: str, data: bytes) -> grpc.RpcError:
    """Sends ``data`` as the request bytes of ``method`` (no client-side serialisation)."""
    with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(data, timeout=10)
    return err.value


def _with_bad_utf8(message: object, placeholder: str) -> bytes:
    """The message serialised, with ``placeholder`` (one character) turned into byte 0xFF."""
    data = message.SerializeToString()  # type: ignore[attr-defined]
    assert data.count(placeholder.encode()) == 1
    return data.replace(placeholder.encode(), b"\xff")


# ---------------------------------------------------------------------------------- defect 6
def test_defect6_invalid_utf8_in_get_run_is_invalid_argument(server: ServerHandle) -> None:
    # grpcurl -format text -d 'run_id: "\377\376"' ... GetRun
    data = tracking_pb2.GetRunRequest(run_id="ab").SerializeToString().replace(b"ab", b"\xff\xfe")
    err = _raw_call(server, "/keel.tracking.v1.TrackingService/GetRun", data)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not valid UTF-8" in err.details()
    assert "Exception deserializing" not in err.details()


def test_defect6_invalid_utf8_in_a_search_filter_is_invalid_argument(server: ServerHandle) -> None:
    request = tracking_pb2.SearchRunsRequest(experiment_ids=["0"], filter="params.x = 'Q'")
    err = _raw_call(server, "/keel.tracking.v1.TrackingService/SearchRuns", _with_bad_utf8(request, "Q"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_defect6_invalid_utf8_in_a_streamed_upload_header_is_invalid_argument(server: ServerHandle) -> None:
    header = artifacts_pb2.UploadArtifactRequest(
        header=artifacts_pb2.UploadHeader(ref=artifacts_pb2.ArtifactRef(run_id="r", path="Q.txt"))
    )
    data = _with_bad_utf8(header, "Q")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        upload = channel.stream_unary(
            "/keel.artifacts.v1.ArtifactService/UploadArtifact", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as err:
            upload(iter([data]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_defect6_server_keeps_serving_after_undecodable_requests(server: ServerHandle) -> None:
    for _ in range(20):
        _raw_call(server, "/keel.tracking.v1.TrackingService/GetRun", b"\x0a\x02\xff\xfe")
    client = keel.Client(server.uri)
    name = f"after-{uuid.uuid4().hex}"
    assert client.get_experiment(client.create_experiment(name)).name == name


# ---------------------------------------------------------------------------------- defect 7
def test_defect7_ten_mib_artifact_location_is_refused_at_creation(server: ServerHandle) -> None:
    stub = tracking_pb2_grpc.TrackingServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    name = f"long-{uuid.uuid4().hex}"
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateExperiment(tracking_pb2.CreateExperimentRequest(name=name, artifact_location="/tmp/" + HUGE))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the limit is 500" in err.value.details()
    assert len(err.value.details()) < MESSAGE_BOUND
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetExperimentByName(tracking_pb2.GetExperimentByNameRequest(name=name))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # nothing half-written


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("file://", "names no folder"),
        ("s3://", "names no folder"),
        ("http://example.org/artifacts", "scheme 'http'"),
        ("/tmp/a/../b", "'..' segment"),
        ("/tmp/a\x00b", "control character"),
        ("/tmp/a\\b", "backslash"),
        ("/tmp/" + "n" * 300 + "/x", "longer than 255 bytes"),
        ("{root}/_registry", "keeps for itself"),
        ("{root}/_registry/7/1", "keeps for itself"),
        ("{root}/.keel-staging", "keeps for itself"),
    ],
)
def test_defect7_artifact_location_form_is_checked_at_creation(server: ServerHandle, location: str, says: str) -> None:
    assert server.running is not None
    root = server.running.app.artifact_store.root_uri
    client = keel.Client(server.uri)
    with pytest.raises(InvalidArgument) as err:
        client.create_experiment(f"loc-{uuid.uuid4().hex}", artifact_location=location.format(root=root))
    assert err.value.reason == "INVALID_ARTIFACT_LOCATION"
    assert err.value.field == "artifact_location"
    assert says in err.value.message


def test_defect7_valid_artifact_locations_are_kept(server: ServerHandle, tmp_path: Path) -> None:
    client = keel.Client(server.uri)
    eid = client.create_experiment(f"ok-{uuid.uuid4().hex}", artifact_location=f"file://{tmp_path}/exp/")
    assert client.get_experiment(eid).artifact_location == f"file://{tmp_path}/exp"
    eid = client.create_experiment(f"ok-{uuid.uuid4().hex}", artifact_location="s3://bucket/team/prefix")
    assert client.get_experiment(eid).artifact_location == "s3://bucket/team/prefix"


# --------------------------------------------------------------------------------- defect 11
def _huge_calls(channel: grpc.Channel) -> dict[str, Callable[[], object]]:
    tracking = tracking_pb2_grpc.TrackingServiceStub(channel)
    registry = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
    ref = artifacts_pb2.ArtifactRef(run_id="0" * 32, path=HUGE)
    return {
        "SearchRuns experiment_ids": lambda: tracking.SearchRuns(tracking_pb2.SearchRunsRequest(experiment_ids=[HUGE])),
        "ResolveModelUri": lambda: registry.ResolveModelUri(
            registry_pb2.ResolveModelUriRequest(model_uri=f"models:/{HUGE}/{HUGE}")
        ),
        "ListArtifacts path": lambda: artifacts.ListArtifacts(artifacts_pb2.ListArtifactsRequest(ref=ref)),
        "StatArtifact": lambda: artifacts.StatArtifact(artifacts_pb2.StatArtifactRequest(ref=ref)),
        "ResolveArtifactUri": lambda: artifacts.ResolveArtifactUri(
            artifacts_pb2.ResolveArtifactUriRequest(uri="runs:/" + HUGE)
        ),
        "ResolveArtifactUri store URI": lambda: artifacts.ResolveArtifactUri(
            artifacts_pb2.ResolveArtifactUriRequest(uri="file:///" + HUGE)
        ),
    }


@pytest.mark.e2e
def test_defect11_errors_and_log_lines_quote_a_bounded_part_of_huge_input(tmp_path: Path) -> None:
    env = {"KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db", "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts"}
    with server_process(env=env) as handle:
        assert handle.process is not None
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            for label, call in _huge_calls(channel).items():
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (label, err.value.code())
                assert len(err.value.details()) < MESSAGE_BOUND, label
                assert "characters" in err.value.details(), label  # says how much was left out
                trailing = sum(len(k) + len(v) for k, v in err.value.trailing_metadata() or ())
                assert trailing < 8 * 1024, label
        handle.process.send_signal(signal.SIGTERM)
        _, stderr = handle.process.communicate(timeout=30)
    lines = stderr.splitlines()
    failed = [json.loads(line) for line in lines if line.startswith("{") and '"code": "INVALID_ARGUMENT"' in line]
    assert len(failed) >= len(_huge_calls(grpc.insecure_channel("127.0.0.1:1")))
    assert max(len(line) for line in lines) < LOG_LINE_BOUND


@pytest.mark.parametrize("experiment_id", ["²", "١٢", "9" * 19])
def test_non_ascii_or_huge_digit_experiment_ids_are_invalid_argument(server: ServerHandle, experiment_id: str) -> None:
    stub = tracking_pb2_grpc.TrackingServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    with pytest.raises(grpc.RpcError) as err:
        stub.GetExperiment(tracking_pb2.GetExperimentRequest(experiment_id=experiment_id))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("version", ["²", 2**64, "0"])
def test_sdk_refuses_versions_it_could_not_send(version: object) -> None:
    from keel._registry_client import _version

    with pytest.raises(InvalidArgument):
        _version(version)  # type: ignore[arg-type]
