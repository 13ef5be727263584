"""Issue #13: client request ids make CreateRun and LogBatch safe to retry (on every backend)."""

from __future__ import annotations

import uuid

import grpc
import pytest

import keel
from keel.tracking.v1 import tracking_pb2 as pb
from keel.tracking.v1 import tracking_pb2_grpc


@pytest.fixture()
def stub(keel_server) -> tracking_pb2_grpc.TrackingServiceStub:  # type: ignore[no-untyped-def]
    return tracking_pb2_grpc.TrackingServiceStub(grpc.insecure_channel(f"127.0.0.1:{keel_server.port}"))


def _experiment(client: keel.Client) -> str:
    return client.create_experiment(f"ids-{uuid.uuid4().hex}")


def test_create_run_twice_with_one_request_id_makes_one_run(client: keel.Client, stub) -> None:  # type: ignore[no-untyped-def]
    experiment = _experiment(client)
    request = pb.CreateRunRequest(experiment_id=experiment, run_name="once", request_id=uuid.uuid4().hex)
    first, second = stub.CreateRun(request), stub.CreateRun(request)
    assert first.info.run_id == second.info.run_id
    assert second.info.run_name == "once"
    assert [r.info.run_id for r in client.search_runs([experiment])] == [first.info.run_id]
    other = stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment, request_id=uuid.uuid4().hex))
    assert other.info.run_id != first.info.run_id


def test_log_batch_twice_with_one_request_id_logs_once(client: keel.Client, stub) -> None:  # type: ignore[no-untyped-def]
    run_id = client.create_run(_experiment(client)).info.run_id
    request = pb.LogBatchRequest(
        run_id=run_id,
        metrics=[pb.Metric(key="loss", value=0.5, timestamp=1, step=s) for s in range(3)],
        params=[pb.Param(key="lr", value="0.1")],
        request_id=uuid.uuid4().hex,
    )
    stub.LogBatch(request)
    stub.LogBatch(request)
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2]
    stub.LogBatch(pb.LogBatchRequest(run_id=run_id, metrics=[pb.Metric(key="loss", value=0.4, timestamp=2, step=3)],
                                     request_id=uuid.uuid4().hex))
    assert len(client.get_metric_history(run_id, "loss")) == 4


def test_a_failed_batch_does_not_use_up_its_request_id(client: keel.Client, stub) -> None:  # type: ignore[no-untyped-def]
    run_id = client.create_run(_experiment(client)).info.run_id
    client.log_param(run_id, "lr", "0.1")
    request_id = uuid.uuid4().hex
    with pytest.raises(grpc.RpcError) as err:
        stub.LogBatch(pb.LogBatchRequest(run_id=run_id, params=[pb.Param(key="lr", value="0.2")], request_id=request_id))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stub.LogBatch(pb.LogBatchRequest(run_id=run_id, metrics=[pb.Metric(key="m", value=1, timestamp=1)], request_id=request_id))
    assert len(client.get_metric_history(run_id, "m")) == 1


def test_request_id_reused_for_another_method_or_too_long_is_invalid(client: keel.Client, stub) -> None:  # type: ignore[no-untyped-def]
    experiment = _experiment(client)
    request_id = uuid.uuid4().hex
    run = stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment, request_id=request_id))
    with pytest.raises(grpc.RpcError) as err:
        stub.LogBatch(pb.LogBatchRequest(run_id=run.info.run_id, metrics=[pb.Metric(key="m", value=1, timestamp=1)],
                                         request_id=request_id))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already used for CreateRun" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment, request_id="x" * 65))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(client.search_runs([experiment])) == 1
