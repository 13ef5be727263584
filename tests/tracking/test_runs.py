"""Runs, params, metrics, tags and LogBatch through the real server and SDK, on every backend."""

from __future__ import annotations

import math

import pytest

import keel
from keel.entities import Metric, Param, RunTag
from keel.exceptions import FailedPrecondition, InvalidArgument, NotFound
from keel.tracking.v1 import tracking_pb2 as pb

UNKNOWN_RUN = "0" * 32


def test_create_and_get_run(client: keel.Client, experiment_id: str) -> None:
    run = client.create_run(experiment_id, tags={"team": "cv"}, start_time=1234)
    info = run.info
    assert len(info.run_id) == 32 and info.run_name  # generated name
    assert (info.status, info.start_time, info.end_time, info.lifecycle_stage) == ("RUNNING", 1234, None, "active")
    assert info.artifact_uri == f"{client.get_experiment(experiment_id).artifact_location}/{info.run_id}/artifacts"
    got = client.get_run(info.run_id)
    assert got.info == info and got.data.tags == {"team": "cv"}
    named = client.create_run(experiment_id, run_name="my-run")
    assert named.info.run_name == "my-run"


def test_update_run_and_terminate(client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    info = client.update_run(run_id, status="SCHEDULED", name="renamed")
    assert (info.status, info.run_name) == ("SCHEDULED", "renamed")
    client.set_terminated(run_id, status="FAILED", end_time=99)
    info = client.get_run(run_id).info
    assert (info.status, info.end_time) == ("FAILED", 99)
    client.set_terminated(run_id)
    assert client.get_run(run_id).info.status == "FINISHED"
    with pytest.raises(InvalidArgument):
        client.update_run(run_id, end_time=-1)


def test_unknown_and_malformed_run_ids(client: keel.Client, experiment_id: str) -> None:
    for call in (
        lambda: client.get_run(UNKNOWN_RUN),
        lambda: client.log_metric(UNKNOWN_RUN, "m", 1.0),
        lambda: client.log_param(UNKNOWN_RUN, "p", 1),
        lambda: client.set_tag(UNKNOWN_RUN, "t", 1),
        lambda: client.log_batch(UNKNOWN_RUN, metrics=[Metric("m", 1.0, 1, 0)]),
        lambda: client.get_metric_history(UNKNOWN_RUN, "m"),
        lambda: client.update_run(UNKNOWN_RUN, status="FINISHED"),
        lambda: client.delete_run(UNKNOWN_RUN),
    ):
        with pytest.raises(NotFound) as err:
            call()
        assert err.value.reason == "RUN_NOT_FOUND"
    with pytest.raises(InvalidArgument) as bad:
        client.get_run("not-a-run-id")
    assert bad.value.reason == "INVALID_RUN_ID"
    with pytest.raises(NotFound):
        client.create_run("987654321")


def test_deleted_run_refuses_data_and_restores(client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "m", 1.0)
    client.set_terminated(run_id)
    client.delete_run(run_id)
    client.delete_run(run_id)  # deleting twice is a no-op
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    for call in (
        lambda: client.log_metric(run_id, "m", 2.0),
        lambda: client.log_param(run_id, "p", "x"),
        lambda: client.set_tag(run_id, "t", "x"),
        lambda: client.log_batch(run_id, metrics=[Metric("m", 3.0, 1, 1)]),
        lambda: client.log_batch(run_id),
        lambda: client.update_run(run_id, status="RUNNING"),
    ):
        with pytest.raises(FailedPrecondition) as err:
            call()
        assert err.value.reason == "RUN_DELETED"
    assert [m.value for m in client.get_metric_history(run_id, "m")] == [1.0]
    client.restore_run(run_id)
    client.log_metric(run_id, "m", 2.0, step=1)
    assert client.get_run(run_id).data.metrics == {"m": 2.0}


def test_params_are_write_once(client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    assert client.log_param(run_id, "lr", 0.01) == 0.01
    client.log_param(run_id, "lr", "0.01")  # same value: accepted
    with pytest.raises(InvalidArgument) as err:
        client.log_param(run_id, "lr", 0.02)
    assert "'lr'" in err.value.message and "0.01" in err.value.message and "0.02" in err.value.message
    assert err.value.reason == "PARAM_ALREADY_SET"
    with pytest.raises(InvalidArgument) as batch_err:
        client.log_batch(run_id, params=[Param("a", "1"), Param("lr", "0.03")])
    assert batch_err.value.field == "params[1]"
    assert client.get_run(run_id).data.params == {"lr": "0.01"}  # nothing of the batch was written


def test_metrics_history_latest_and_special_values(client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "loss", 0.5, timestamp=100, step=2)
    client.log_metric(run_id, "loss", 0.9, timestamp=200, step=1)  # older step: not the latest
    client.log_metric(run_id, "loss", 0.4, timestamp=50, step=2)  # same step, older time
    client.log_metric(run_id, "loss", 0.7, timestamp=100, step=2)  # same step and time, larger value
    client.log_metric(run_id, "nan", math.nan, timestamp=10)
    client.log_metric(run_id, "pinf", math.inf, timestamp=10)
    client.log_metric(run_id, "ninf", -math.inf, timestamp=10)
    client.log_metric(run_id, "zero", 0.0)  # step and timestamp defaulted
    run = client.get_run(run_id)
    latest = {m.key: m for m in run.data.metric_points}
    assert (latest["loss"].value, latest["loss"].step, latest["loss"].timestamp) == (0.7, 2, 100)
    assert math.isnan(run.data.metrics["nan"])
    assert run.data.metrics["pinf"] == math.inf and run.data.metrics["ninf"] == -math.inf
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.timestamp, m.value) for m in history] == [(1, 200, 0.9), (2, 50, 0.4), (2, 100, 0.5), (2, 100, 0.7)]
    assert math.isnan(client.get_metric_history(run_id, "nan")[0].value)
    assert client.get_metric_history(run_id, "absent") == []
    assert latest["zero"].step == 0 and latest["zero"].timestamp > 0


@pytest.mark.parametrize("what", ["loss"])
def test_metric_history_pages(client: keel.Client, experiment_id: str, what: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    client.log_batch(run_id, metrics=[Metric(what, float(i), 1000 + i, i) for i in range(250)])
    stub = client._tracking  # type: ignore[attr-defined]
    token, steps = "", []
    while True:
        resp = stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run_id, metric_key=what, page_size=100, page_token=token))
        steps.extend(m.step for m in resp.metrics)
        token = resp.next_page_token
        if not token:
            break
    assert steps == list(range(250))
    assert len(client.get_metric_history(run_id, what)) == 250


def test_bulk_history_and_sampling(client: keel.Client, experiment_id: str) -> None:
    a = client.create_run(experiment_id).info.run_id
    b = client.create_run(experiment_id).info.run_id
    client.log_batch(a, metrics=[Metric("m", float(i), 1, i) for i in range(100)])
    client.log_batch(b, metrics=[Metric("m", float(i), 1, i) for i in range(3)] + [Metric("n", 1.0, 1, 0)])
    points = client.get_metric_history_bulk([a, b], ["m", "n"])
    assert len(points) == 104 and {p.run_id for p in points} == {a, b}
    sampled = client.get_metric_history_bulk([a], ["m"], max_points_per_series=10)
    steps = [p.step for p in sampled]
    assert len(steps) == 10 and steps[0] == 0 and steps[-1] == 99 and steps == sorted(steps)
    with pytest.raises(NotFound):
        client.get_metric_history_bulk([a, UNKNOWN_RUN], ["m"])
    with pytest.raises(InvalidArgument):
        client.get_metric_history_bulk([], ["m"])


def test_tags_overwrite_delete_reserved(client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    client.set_tag(run_id, "stage", "a")
    client.set_tag(run_id, "stage", "b")
    assert client.get_run(run_id).data.tags["stage"] == "b"
    client.delete_tag(run_id, "stage")
    assert "stage" not in client.get_run(run_id).data.tags
    with pytest.raises(NotFound):
        client.delete_tag(run_id, "stage")
    with pytest.raises(InvalidArgument) as err:
        client.set_tag(run_id, "keel.parentRunId", "x")
    assert err.value.reason == "RESERVED_TAG_KEY"
    with pytest.raises(InvalidArgument):
        client.create_run(experiment_id, tags={"keel.anything": "x"})


def test_nested_runs(client: keel.Client, experiment_id: str) -> None:
    parent = client.create_run(experiment_id).info.run_id
    child = client.create_run(experiment_id, parent_run_id=parent)
    assert child.info.parent_run_id == parent
    assert child.data.tags["keel.parentRunId"] == parent
    other = client.create_experiment(f"other-{parent[:8]}")
    with pytest.raises(InvalidArgument) as err:
        client.create_run(other, parent_run_id=parent)
    assert err.value.field == "parent_run_id"


def test_limits_are_enforced_never_truncated(client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    client.log_param(run_id, "k" * 250, "v" * 6000)  # exactly at the limits
    client.set_tag(run_id, "t" * 250, "v" * 8000)
    client.log_metric(run_id, "m" * 250, 1.0)
    cases = [
        (lambda: client.log_param(run_id, "k" * 251, "v"), "KEY_TOO_LONG"),
        (lambda: client.log_param(run_id, "p2", "v" * 6001), "VALUE_TOO_LONG"),
        (lambda: client.set_tag(run_id, "t2", "v" * 8001), "VALUE_TOO_LONG"),
        (lambda: client.log_metric(run_id, "m" * 251, 1.0), "KEY_TOO_LONG"),
        (lambda: client.log_metric(run_id, "", 1.0), "INVALID_KEY"),
        (lambda: client.log_metric(run_id, "../etc", 1.0), "INVALID_KEY"),
        (lambda: client.update_run(run_id, name="n" * 251), "INVALID_RUN_NAME"),
    ]
    for call, reason in cases:
        with pytest.raises(InvalidArgument) as err:
            call()
        assert err.value.reason == reason
    data = client.get_run(run_id).data
    assert data.params == {"k" * 250: "v" * 6000}
    assert data.tags["t" * 250] == "v" * 8000


def test_log_batch_limits_and_atomicity(client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    stub = client._tracking  # type: ignore[attr-defined]
    full = pb.LogBatchRequest(
        run_id=run_id,
        metrics=[pb.Metric(key="m", value=float(i), timestamp=1, step=i) for i in range(1000)],
        params=[pb.Param(key=f"p{i}", value="v") for i in range(100)],
        tags=[pb.RunTag(key=f"t{i}", value="v") for i in range(100)],
    )
    client._transport.call(stub.LogBatch, full, idempotent=False)  # type: ignore[attr-defined]
    assert len(client.get_metric_history(run_id, "m")) == 1000
    for field, extra in (
        ("metrics", pb.Metric(key="m", value=1.0, timestamp=1)),
        ("params", pb.Param(key="p100", value="v")),
        ("tags", pb.RunTag(key="t100", value="v")),
    ):
        request = pb.LogBatchRequest()
        request.CopyFrom(full)
        getattr(request, field).append(extra)
        with pytest.raises(InvalidArgument) as err:
            client._transport.call(stub.LogBatch, request, idempotent=False)  # type: ignore[attr-defined]
        assert err.value.reason == "BATCH_TOO_LARGE" and err.value.field == field
    # One bad item: nothing of the batch is written and the item is named.
    fresh = client.create_run(experiment_id).info.run_id
    metrics = [Metric("ok", float(i), 1, i) for i in range(10)]
    metrics[5] = Metric("bad key!", 1.0, 1, 5)
    with pytest.raises(InvalidArgument) as err:
        client.log_batch(fresh, metrics=metrics, params=[Param("p", "v")], tags=[RunTag("t", "v")])
    assert err.value.field == "metrics[5]" and err.value.reason == "INVALID_KEY"
    run = client.get_run(fresh)
    assert run.data.params == {} and run.data.metrics == {} and "t" not in run.data.tags
    with pytest.raises(InvalidArgument) as tag_err:
        client.log_batch(fresh, tags=[RunTag("ok", "v"), RunTag("x", "v" * 8001)])
    assert tag_err.value.field == "tags[1]"
    with pytest.raises(InvalidArgument) as dup:
        client.log_batch(fresh, params=[Param("a", "1"), Param("a", "2")])
    assert dup.value.reason == "PARAM_CONFLICT"


def test_log_batch_sdk_splits_large_batches(client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    client.log_batch(run_id, metrics=[Metric("m", float(i), 1, i) for i in range(2500)])
    assert len(client.get_metric_history(run_id, "m")) == 2500
    assert client.get_run(run_id).data.metrics["m"] == 2499.0
