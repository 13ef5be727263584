"""GetMetricRanges, ListRunDataKeys and the downsampled GetMetricHistoryBulk (the console's runs
table and charts), on every backend: values, NaN and infinities, bounds, experiment scoping, the
bounded key probes, and the errors for bad requests."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from server_fixtures import ServerHandle

import keel
from keel.entities import Metric
from keel.tracking.v1 import tracking_pb2 as pb
from keel.tracking.v1 import tracking_pb2_grpc
from keel_server.tracking import summaries

pytestmark = pytest.mark.server


@pytest.fixture()
def stub(keel_server: ServerHandle) -> Iterator[Any]:
    channel = grpc.insecure_channel(f"127.0.0.1:{keel_server.port}")
    yield tracking_pb2_grpc.TrackingServiceStub(channel)
    channel.close()


def _code(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_metric_ranges(client: keel.Client, stub: Any) -> None:
    experiment_id = client.create_experiment("ranges")
    a = client.create_run(experiment_id).info.run_id
    b = client.create_run(experiment_id).info.run_id
    c = client.create_run(experiment_id).info.run_id
    client.log_batch(a, metrics=[Metric("loss", v, 1, i) for i, v in enumerate([3.0, -1.5, 7.25, 2.0])])
    client.log_batch(a, metrics=[Metric("acc", 0.5, 1, 0), Metric("acc", math.nan, 1, 1)])
    client.log_batch(b, metrics=[Metric("loss", math.nan, 1, 0), Metric("odd", math.inf, 1, 0), Metric("odd", 1.0, 1, 1)])
    client.log_batch(b, metrics=[Metric("low", -math.inf, 1, 0)])
    answer = stub.GetMetricRanges(pb.GetMetricRangesRequest(run_ids=[b, a, c]))
    got = {(r.run_id, r.key): (r.min_value, r.max_value, r.count) for r in answer.ranges}
    assert [r.run_id for r in answer.ranges] == [b, b, b, a, a], "request order, then key"
    assert got[(a, "loss")] == (-1.5, 7.25, 4)
    assert got[(a, "acc")] == (0.5, 0.5, 2), "NaN points are ignored"
    assert all(math.isnan(v) for v in got[(b, "loss")][:2]) and got[(b, "loss")][2] == 1
    assert got[(b, "odd")] == (1.0, math.inf, 2)
    assert got[(b, "low")] == (-math.inf, -math.inf, 1)
    only = stub.GetMetricRanges(pb.GetMetricRangesRequest(run_ids=[a], metric_keys=["loss"]))
    assert [(r.key, r.count) for r in only.ranges] == [("loss", 4)]
    assert _code(lambda: stub.GetMetricRanges(pb.GetMetricRangesRequest())) == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: stub.GetMetricRanges(pb.GetMetricRangesRequest(run_ids=["x"]))) == grpc.StatusCode.INVALID_ARGUMENT
    missing = pb.GetMetricRangesRequest(run_ids=[a, "0" * 32])
    assert _code(lambda: stub.GetMetricRanges(missing)) == grpc.StatusCode.NOT_FOUND
    too_many = pb.GetMetricRangesRequest(run_ids=[a] * 1001)
    assert _code(lambda: stub.GetMetricRanges(too_many)) == grpc.StatusCode.INVALID_ARGUMENT
    keys = pb.GetMetricRangesRequest(run_ids=[a], metric_keys=[f"k{i}" for i in range(101)])
    assert _code(lambda: stub.GetMetricRanges(keys)) == grpc.StatusCode.INVALID_ARGUMENT


def test_run_data_keys_are_scoped_to_the_experiments(client: keel.Client, stub: Any) -> None:
    mine = client.create_experiment("keys-mine")
    other = client.create_experiment("keys-other")
    run = client.create_run(mine, tags={"team": "a"}).info.run_id
    client.log_batch(run, metrics=[Metric("zeta", 1.0, 1, 0), Metric("alpha", 1.0, 1, 0)])
    client.log_param(run, "lr", 0.1)
    foreign = client.create_run(other, tags={"secret_tag": "x"}).info.run_id
    client.log_param(foreign, "secret_param", 1)
    client.log_metric(foreign, "secret_metric", 1.0)
    answer = stub.ListRunDataKeys(pb.ListRunDataKeysRequest(experiment_ids=[mine]))
    assert list(answer.metric_keys) == ["alpha", "zeta"] and list(answer.param_keys) == ["lr"]
    assert "secret_tag" not in answer.tag_keys and "team" in answer.tag_keys and not answer.truncated
    both = stub.ListRunDataKeys(pb.ListRunDataKeysRequest(experiment_ids=[mine, other]))
    assert {"secret_param", "lr"} <= set(both.param_keys) and "secret_metric" in both.metric_keys
    one = stub.ListRunDataKeys(pb.ListRunDataKeysRequest(experiment_ids=[mine], max_keys=1))
    assert list(one.metric_keys) == ["alpha"] and one.truncated
    bad = pb.ListRunDataKeysRequest(experiment_ids=[mine], max_keys=-1)
    assert _code(lambda: stub.ListRunDataKeys(bad)) == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: stub.ListRunDataKeys(pb.ListRunDataKeysRequest())) == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(lambda: stub.ListRunDataKeys(pb.ListRunDataKeysRequest(experiment_ids=["x"]))) == grpc.StatusCode.INVALID_ARGUMENT


def test_run_data_keys_beyond_the_probe_bounds(client: keel.Client, stub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With tiny probe bounds both probes run: a key that only the second probe finds is kept, a
    key neither can settle is kept, a key whose every row was looked at is left out."""
    monkeypatch.setattr(summaries, "PROBE_ROWS", 2)
    small = client.create_experiment("probe-small")
    crowd = client.create_experiment("probe-crowd")
    for _ in range(4):  # "shared" is used by many runs elsewhere first, then by one run here
        client.log_param(client.create_run(crowd).info.run_id, "shared", 1)
    client.log_param(client.create_run(small).info.run_id, "shared", 1)
    client.log_param(client.create_run(crowd).info.run_id, "crowd_only", 1)
    keys = stub.ListRunDataKeys(pb.ListRunDataKeysRequest(experiment_ids=[small])).param_keys
    assert "shared" in keys and "crowd_only" not in keys


def test_bulk_history_downsampling_keeps_spikes_and_reports_sizes(client: keel.Client, stub: Any) -> None:
    experiment_id = client.create_experiment("bulk-spikes")
    run = client.create_run(experiment_id).info.run_id
    points = [Metric("m", 0.0, 1, s) for s in range(3000)]
    points[1234] = Metric("m", 99.0, 1, 1234)
    points[2345] = Metric("m", -99.0, 1, 2345)
    for start in range(0, 3000, 1000):
        client.log_batch(run, metrics=points[start : start + 1000])
    answer = stub.GetMetricHistoryBulk(
        pb.GetMetricHistoryBulkRequest(run_ids=[run], metric_keys=["m", "none"], max_points_per_series=50)
    )
    steps = [m.step for m in answer.metrics]
    assert len(steps) <= 50 and steps[0] == 0 and steps[-1] == 2999 and steps == sorted(steps)
    assert 1234 in steps and 2345 in steps
    assert [(s.run_id, s.key, s.total_points) for s in answer.series_sizes] == [(run, "m", 3000)]
