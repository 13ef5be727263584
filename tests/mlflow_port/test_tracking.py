"""The MLflow REST port's tracking routes with the real ``mlflow`` client (experiments, runs,
params, metrics, tags, batches, nested runs, search, history, delete/restore, inputs), then the
same data read through keel's gRPC SDK, and MLflow's error shapes for bad requests (raw HTTP)."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

pytestmark = pytest.mark.server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error_of(response: tuple[int, Any]) -> tuple[int, str, str]:
    status, body = response
    assert isinstance(body, dict), body
    return status, body["error_code"], body["message"]


# -- the fluent API and MlflowClient, then keel over gRPC ------------------------------------------


def test_fluent_run_lands_in_keel(mlflow_port: Any) -> None:
    name = unique("fluent")
    experiment = mlflow.set_experiment(name)  # get-by-name answers 404, so the client creates it
    assert experiment.name == name
    assert experiment.artifact_location == f"mlflow-artifacts:/{experiment.experiment_id}"

    with mlflow.start_run(run_name="parent", tags={"team": "vision"}) as parent:
        mlflow.log_param("model", "cnn")
        mlflow.log_params({"lr": 0.01, "layers": 3})
        for step, loss in enumerate([0.9, 0.5, 0.25]):
            mlflow.log_metric("loss", loss, step=step)
        mlflow.log_metrics({"acc": 0.8, "f1": 0.7}, step=2)
        mlflow.set_tag("stage", "train")
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("child_metric", 1.5)
        mlflow.end_run()  # ends the parent inside its with-block: FINISHED
    with mlflow.start_run(run_name="killed") as killed:
        mlflow.end_run("KILLED")

    client = MlflowClient()
    run = client.get_run(parent.info.run_id)
    assert run.info.run_name == "parent"
    assert run.info.status == "FINISHED" and run.info.end_time
    assert (
        run.info.artifact_uri
        == f"mlflow-artifacts:/{experiment.experiment_id}/{parent.info.run_id}/artifacts"
    )
    assert run.data.params == {"model": "cnn", "lr": "0.01", "layers": "3"}
    assert run.data.metrics == {"loss": 0.25, "acc": 0.8, "f1": 0.7}
    assert run.data.tags["team"] == "vision" and run.data.tags["stage"] == "train"
    assert run.data.tags["mlflow.runName"] == "parent"
    assert run.data.tags["mlflow.user"]  # the client's context tags arrive
    child_run = client.get_run(child.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert client.get_run(killed.info.run_id).info.status == "KILLED"

    # The other door: keel's gRPC SDK sees the same runs.
    keel_client = mlflow_port.keel_client()
    k_run = keel_client.get_run(parent.info.run_id)
    assert k_run.info.experiment_id == experiment.experiment_id
    assert k_run.info.run_name == "parent" and k_run.info.status == "FINISHED"
    assert k_run.data.params == run.data.params
    assert k_run.data.metrics == run.data.metrics
    assert k_run.data.tags["mlflow.runName"] == "parent"  # stored, so filters on it match
    assert k_run.data.tags["team"] == "vision"
    assert keel_client.get_run(child.info.run_id).info.parent_run_id == parent.info.run_id
    history = keel_client.get_metric_history(parent.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.25)]
    assert keel_client.get_experiment_by_name(name).experiment_id == experiment.experiment_id


def test_metric_history_keeps_nan_and_infinities(mlflow_port: Any) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment(unique("history"))
    run_id = client.create_run(experiment_id).info.run_id
    values = [1.0, math.nan, math.inf, -math.inf, 2.5]
    for step, value in enumerate(values):
        client.log_metric(run_id, "m", value, step=step)

    history = client.get_metric_history(run_id, "m")
    got = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert (
        got[0] == 1.0 and math.isnan(got[1]) and got[2] == math.inf and got[3] == -math.inf and got[4] == 2.5
    )

    # On the wire: int64 as JSON numbers, NaN/±inf as proto JSON's strings, pages with a token.
    status, body = mlflow_port.call(
        "GET", "metrics/get-history", query={"run_id": run_id, "metric_key": "m", "max_results": 2}
    )
    assert status == 200
    assert [m["value"] for m in body["metrics"]] == [1.0, "NaN"]
    assert isinstance(body["metrics"][0]["timestamp"], int) and body["metrics"][1]["step"] == 1
    pages = [body["metrics"]]
    while body.get("next_page_token"):
        query = {"run_id": run_id, "metric_key": "m", "max_results": 2, "page_token": body["next_page_token"]}
        status, body = mlflow_port.call("GET", "metrics/get-history", query=query)
        assert status == 200
        pages.append(body["metrics"])
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [m["value"] for m in pages[1]] == ["Infinity", "-Infinity"]

    k_history = mlflow_port.keel_client().get_metric_history(run_id, "m")
    assert [m.value for m in k_history][2:4] == [math.inf, -math.inf]


def test_log_batch_at_and_over_the_limits(mlflow_port: Any) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment(unique("batch"))
    run_id = client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)

    # Exactly at MLflow's limits in one request: 900 metrics + 50 params + 50 tags = 1000 entries.
    client.log_batch(
        run_id,
        metrics=[Metric("at", float(i), now, i) for i in range(900)],
        params=[Param(f"p{i}", str(i)) for i in range(50)],
        tags=[RunTag(f"t{i}", str(i)) for i in range(50)],
    )
    # Over them, the client splits the batch itself; every point arrives.
    client.log_batch(run_id, metrics=[Metric("over", float(i), now, i) for i in range(2500)])
    keel_client = mlflow_port.keel_client()
    assert len(keel_client.get_metric_history(run_id, "at")) == 900
    assert len(keel_client.get_metric_history(run_id, "over")) == 2500
    run = keel_client.get_run(run_id)
    assert len(run.data.params) == 50 and run.data.tags["t49"] == "49"

    # One request over a limit: MLflow's error, and nothing of the batch is written.
    def batch(metrics: int = 0, params: int = 0, tags: int = 0) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "metrics": [
                {"key": "refused", "value": 1.0, "timestamp": now, "step": i} for i in range(metrics)
            ],
            "params": [{"key": f"rp{i}", "value": "v"} for i in range(params)],
            "tags": [{"key": f"rt{i}", "value": "v"} for i in range(tags)],
        }

    cases = [
        (batch(metrics=1001), "at most 1000 metrics. Got 1001 metrics"),
        (batch(params=101), "at most 100 params. Got 101 params"),
        (batch(tags=101), "at most 100 tags. Got 101 tags"),
        (batch(metrics=901, params=100), "at most 1000 metrics, params, and tags. Got 1001"),
    ]
    for body, expected in cases:
        status, code, message = error_of(mlflow_port.call("POST", "runs/log-batch", body))
        assert (status, code) == (400, "INVALID_PARAMETER_VALUE")
        assert message.startswith("A batch logging request can contain") and expected in message
    assert keel_client.get_metric_history(run_id, "refused") == []
    assert "rp0" not in keel_client.get_run(run_id).data.params
    # A bad item anywhere refuses the whole batch too.
    status, code, message = error_of(
        mlflow_port.call(
            "POST",
            "runs/log-batch",
            {"run_id": run_id, "metrics": [{"key": "ok", "value": 1, "timestamp": now}, {"key": "bad"}]},
        )
    )
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE") and "metrics[1].value" in message
    assert keel_client.get_metric_history(run_id, "ok") == []


def test_search_runs_to_a_dataframe(mlflow_port: Any) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment(unique("search"))
    ids = {}
    for name, model, acc in [("a", "cnn", 0.9), ("b", "cnn", 0.6), ("c", "rnn", 0.95), ("d", "cnn", 0.3)]:
        run = client.create_run(experiment_id, run_name=name)
        client.log_param(run.info.run_id, "model", model)
        client.log_metric(run.info.run_id, "acc", acc)
        client.set_terminated(run.info.run_id)
        ids[name] = run.info.run_id

    frame = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string="metrics.acc > 0.5 and params.model = 'cnn'",
        order_by=["metrics.acc DESC"],
    )
    assert list(frame["run_id"]) == [ids["a"], ids["b"]]
    assert list(frame["tags.mlflow.runName"]) == ["a", "b"]
    assert list(frame["metrics.acc"]) == [0.9, 0.6]
    assert list(frame["params.model"]) == ["cnn", "cnn"]
    assert set(frame["status"]) == {"FINISHED"}
    for column in ("experiment_id", "artifact_uri", "start_time", "end_time"):
        assert column in frame.columns
    # A filter on the runName tag MLflow's server keeps, ordering by an attribute.
    named = mlflow.search_runs([experiment_id], filter_string="tags.mlflow.runName = 'c'")
    assert list(named["run_id"]) == [ids["c"]]
    by_name = client.search_runs([experiment_id], order_by=["attributes.run_name ASC"])
    assert [r.info.run_name for r in by_name] == ["a", "b", "c", "d"]

    # Pages: max_results and the page token, as MlflowClient follows them.
    first = client.search_runs([experiment_id], max_results=3, order_by=["metrics.acc ASC"])
    assert len(first) == 3 and first.token
    rest = client.search_runs(
        [experiment_id], max_results=3, order_by=["metrics.acc ASC"], page_token=first.token
    )
    assert [r.info.run_id for r in rest] == [ids["c"]] and not rest.token

    # View types after a delete.
    client.delete_run(ids["d"])
    active = {r.info.run_id for r in client.search_runs([experiment_id])}
    deleted = {
        r.info.run_id
        for r in client.search_runs([experiment_id], run_view_type=mlflow.entities.ViewType.DELETED_ONLY)
    }
    every = {
        r.info.run_id for r in client.search_runs([experiment_id], run_view_type=mlflow.entities.ViewType.ALL)
    }
    assert ids["d"] not in active and deleted == {ids["d"]} and every == set(ids.values())
    # No experiments: MLflow finds nothing rather than failing.
    assert client.search_runs([]) == []


def test_delete_and_restore_runs_and_experiments(mlflow_port: Any) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment(unique("lifecycle"))
    run_id = client.create_run(experiment_id).info.run_id
    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    with pytest.raises(MlflowException) as refused:
        client.log_metric(run_id, "m", 1.0)  # a deleted run takes no data
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"  # as MLflow answers
    assert "must be in the 'active' state" in refused.value.message
    client.restore_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "active"
    client.log_metric(run_id, "m", 1.0)

    client.delete_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"  # deleted with it
    deleted = client.search_experiments(view_type=mlflow.entities.ViewType.DELETED_ONLY)
    assert experiment_id in {e.experiment_id for e in deleted}
    assert mlflow_port.keel_client().get_experiment(experiment_id).lifecycle_stage == "deleted"
    client.restore_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"
    assert client.get_run(run_id).info.lifecycle_stage == "active"


def test_experiments_create_rename_tags_search(mlflow_port: Any) -> None:
    client = MlflowClient()
    prefix = unique("exps")
    first = client.create_experiment(f"{prefix}-one", tags={"team": "cv"})
    second = client.create_experiment(f"{prefix}-two")
    with pytest.raises(MlflowException) as duplicate:
        client.create_experiment(f"{prefix}-one")
    assert duplicate.value.error_code == "RESOURCE_ALREADY_EXISTS"

    client.rename_experiment(second, f"{prefix}-renamed")
    client.set_experiment_tag(second, "owner", "ana")
    client.set_experiment_tag(first, "team", "nlp")
    client.delete_experiment_tag(first, "team")
    found = client.search_experiments(filter_string=f"name LIKE '{prefix}-%'", order_by=["name ASC"])
    assert [e.name for e in found] == [f"{prefix}-one", f"{prefix}-renamed"]
    assert found[0].tags == {} and found[1].tags == {"owner": "ana"}
    assert all(e.artifact_location == f"mlflow-artifacts:/{e.experiment_id}" for e in found)
    assert client.get_experiment_by_name(f"{prefix}-missing") is None  # the client's 404 branch
    by_tag = client.search_experiments(filter_string="tags.owner = 'ana'")
    assert second in {e.experiment_id for e in by_tag}
    assert mlflow_port.keel_client().get_experiment(second).name == f"{prefix}-renamed"


def test_default_experiment_exists_for_the_client(mlflow_port: Any) -> None:
    """MLflow's client logs to experiment 0 when none is set; keel creates it on first use."""
    client = MlflowClient()
    run = client.create_run("0")
    assert run.info.experiment_id == "0"
    assert client.get_experiment("0").name == "Default"


def test_update_run_renames_and_terminates(mlflow_port: Any) -> None:
    client = MlflowClient()
    experiment_id = client.create_experiment(unique("update"))
    run = client.create_run(experiment_id, tags={"mlflow.runName": "from-tag"})
    assert run.info.run_name == "from-tag"
    run_id = run.info.run_id
    client.update_run(run_id, status="FAILED", name="renamed")
    updated = client.get_run(run_id)
    assert updated.info.run_name == "renamed" and updated.info.status == "FAILED"
    assert updated.data.tags["mlflow.runName"] == "renamed"
    client.set_tag(run_id, "mlflow.runName", "by-tag")  # MLflow renames the run with its tag
    assert client.get_run(run_id).info.run_name == "by-tag"
    k_run = mlflow_port.keel_client().get_run(run_id)
    assert k_run.info.run_name == "by-tag" and k_run.data.tags["mlflow.runName"] == "by-tag"
    client.set_terminated(run_id, "FINISHED", end_time=1_700_000_000_000)
    assert client.get_run(run_id).info.end_time == 1_700_000_000_000

    client.set_tag(run_id, "temp", "x")
    client.delete_tag(run_id, "temp")
    assert "temp" not in client.get_run(run_id).data.tags
    client.log_param(run_id, "p", "1")
    with pytest.raises(MlflowException) as changed:
        client.log_param(run_id, "p", "2")  # params are write-once, as in MLflow
    assert changed.value.error_code == "INVALID_PARAMETER_VALUE"

    # A name in both places must agree (MLflow's rule).
    with pytest.raises(MlflowException) as conflict:
        client.create_run(experiment_id, run_name="a", tags={"mlflow.runName": "b"})
    assert "Both 'run_name' argument and 'mlflow.runName' tag" in conflict.value.message


def test_parent_in_another_experiment_is_a_plain_tag(mlflow_port: Any) -> None:
    """MLflow keeps any mlflow.parentRunId; keel nests only within an experiment."""
    client = MlflowClient()
    parent = client.create_run(client.create_experiment(unique("p1")))
    child = client.create_run(
        client.create_experiment(unique("p2")), tags={"mlflow.parentRunId": parent.info.run_id}
    )
    assert client.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert mlflow_port.keel_client().get_run(child.info.run_id).info.parent_run_id is None


def test_log_inputs_keeps_datasets(mlflow_port: Any) -> None:
    import pandas as pd

    client = MlflowClient()
    experiment_id = client.create_experiment(unique("inputs"))
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    dataset = mlflow.data.from_pandas(frame, source="https://example.com/train.csv", name="train")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_input(dataset, context="training")
    inputs = client.get_run(run.info.run_id).inputs
    assert len(inputs.dataset_inputs) == 1
    logged = inputs.dataset_inputs[0]
    assert logged.dataset.name == "train" and logged.dataset.digest == dataset.digest
    assert logged.dataset.source_type == "http" and "example.com/train.csv" in logged.dataset.source
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "training"
    assert '"mlflow_colspec"' in logged.dataset.schema
    # Not shown as tags on MLflow's side; keel's door shows the tag that keeps it.
    assert not any(key.startswith("mlflow.inputs.") for key in client.get_run(run.info.run_id).data.tags)
    k_tags = mlflow_port.keel_client().get_run(run.info.run_id).data.tags
    assert any(key.startswith("mlflow.inputs.dataset.") for key in k_tags)

    # Too large to keep: refused with a reason, never truncated.
    huge = {"name": "big", "digest": "d1", "source_type": "code", "source": "{}", "schema": "x" * 9000}
    status, code, message = error_of(
        mlflow_port.call(
            "POST", "runs/log-inputs", {"run_id": run.info.run_id, "datasets": [{"dataset": huge}]}
        )
    )
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE") and "never truncates" in message
    # Model inputs (MLflow 3) come back as model_inputs.
    status, _ = mlflow_port.call(
        "POST", "runs/log-inputs", {"run_id": run.info.run_id, "models": [{"model_id": "m-123"}]}
    )
    assert status == 200
    assert [m.model_id for m in client.get_run(run.info.run_id).inputs.model_inputs] == ["m-123"]


def test_log_model_history_tag(mlflow_port: Any) -> None:
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment(unique("logmodel"))).info.run_id
    model = {"artifact_path": "model", "flavors": {"python_function": {"config": {"x": 1}, "loader": "m"}},
             "utc_time_created": "2024-01-01 00:00:00.000000", "run_id": run_id, "signature": {"inputs": "[]"}}  # fmt: skip
    import json

    for _ in range(2):
        status, _ = mlflow_port.call(
            "POST", "runs/log-model", {"run_id": run_id, "model_json": json.dumps(model)}
        )
        assert status == 200
    history = json.loads(client.get_run(run_id).data.tags["mlflow.log-model.history"])
    assert len(history) == 2
    assert history[0]["flavors"] == {"python_function": {"loader": "m"}} and "signature" not in history[0]
    status, code, message = error_of(
        mlflow_port.call(
            "POST", "runs/log-model", {"run_id": run_id, "model_json": json.dumps({"run_id": run_id})}
        )
    )
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE") and "missing mandatory fields" in message


# -- raw HTTP: MLflow's shapes and errors ----------------------------------------------------------


def test_wire_shapes(mlflow_port: Any) -> None:
    status, body = mlflow_port.call("POST", "experiments/create", {"name": unique("wire")})
    assert status == 200 and set(body) == {"experiment_id"}
    experiment_id = body["experiment_id"]
    status, body = mlflow_port.call(
        "POST",
        "runs/create",
        {"experiment_id": experiment_id, "start_time": 1_700_000_000_000, "user_id": "ana"},
    )
    assert status == 200
    info = body["run"]["info"]
    assert info["run_id"] == info["run_uuid"] and len(info["run_id"]) == 32
    assert info["status"] == "RUNNING" and info["lifecycle_stage"] == "active"
    assert info["start_time"] == 1_700_000_000_000 and "end_time" not in info
    assert info["user_id"] == "ana" and info["run_name"]
    assert {"key": "mlflow.runName", "value": info["run_name"]} in body["run"]["data"]["tags"]
    run_id = info["run_id"]
    # run_uuid is MLflow's old name of run_id; the /ajax-api prefix answers the same.
    status, _ = mlflow_port.call(
        "POST",
        "runs/log-metric",
        {"run_uuid": run_id, "key": "m", "value": "NaN", "timestamp": 1, "step": "3"},
    )
    assert status == 200
    status, body = mlflow_port.call("GET", "/ajax-api/2.0/mlflow/runs/get", query={"run_id": run_id})
    assert status == 200
    assert body["run"]["data"]["metrics"] == [{"key": "m", "value": "NaN", "timestamp": 1, "step": 3}]
    status, body = mlflow_port.call(
        "POST", "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": 5}
    )
    assert status == 200 and body["run_info"]["status"] == "FINISHED" and body["run_info"]["end_time"] == 5
    status, body = mlflow_port.call(
        "GET", "experiments/search", query={"max_results": 1000, "view_type": "ALL"}
    )
    assert status == 200 and experiment_id in {e["experiment_id"] for e in body["experiments"]}
    status, body = mlflow_port.call("GET", "experiments/get", query={"experiment_id": experiment_id})
    assert status == 200 and isinstance(body["experiment"]["creation_time"], int)
    status, body = mlflow_port.call(
        "GET",
        "metrics/get-history-bulk-interval",
        query={"run_ids": [run_id], "metric_key": "m", "max_results": 10},
    )
    assert status == 200 and body["metrics"] == [
        {"key": "m", "value": "NaN", "timestamp": 1, "step": 3, "run_id": run_id}
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "expected"),
    [
        ("GET", "/api/2.0/mlflow/no-such/endpoint", None, None, (404, "ENDPOINT_NOT_FOUND", "no endpoint")),
        ("GET", "runs/create", None, None, (405, "BAD_REQUEST", "use POST")),
        ("GET", "runs/get", None, {}, (400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'run_id'")),
        ("POST", "experiments/create", {}, None, (400, "INVALID_PARAMETER_VALUE", "required parameter 'name'")),
        ("POST", "runs/log-metric", {"run_id": "0" * 32, "key": "m", "value": "abc"}, None,
         (400, "INVALID_PARAMETER_VALUE", "parameter 'value'")),
        ("POST", "runs/log-batch", {"run_id": "0" * 32, "tags": "not-a-list"}, None,
         (400, "INVALID_PARAMETER_VALUE", "parameter 'tags'")),
        ("POST", "runs/log-batch", {"run_id": "0" * 32, "params": [{"value": "v"}]}, None,
         (400, "INVALID_PARAMETER_VALUE", "'params[0].key'")),
        ("POST", "runs/search", {"experiment_ids": ["0"], "max_results": 50001}, None,
         (400, "INVALID_PARAMETER_VALUE", "max_results")),
        ("POST", "runs/search", {"experiment_ids": ["0"], "run_view_type": "SOME"}, None,
         (400, "INVALID_PARAMETER_VALUE", "run_view_type")),
        ("POST", "runs/update", {"run_id": "0" * 32, "status": "DONE"}, None,
         (400, "INVALID_PARAMETER_VALUE", "status")),
        ("GET", "runs/get", None, {"run_id": "f" * 32}, (404, "RESOURCE_DOES_NOT_EXIST", "does not exist")),
        ("GET", "runs/get", None, {"run_id": "not-a-run"}, (404, "RESOURCE_DOES_NOT_EXIST", "Run with id=not-a-run not found")),
        ("POST", "runs/log-parameter", {"run_id": "e" * 32, "key": "k", "value": "v"}, None,
         (404, "RESOURCE_DOES_NOT_EXIST", "")),
        ("GET", "experiments/get", None, {"experiment_id": "987654"}, (404, "RESOURCE_DOES_NOT_EXIST", "")),
        ("GET", "experiments/get", None, {"experiment_id": "abc"}, (404, "RESOURCE_DOES_NOT_EXIST", "No Experiment with id=abc")),
        ("GET", "experiments/get-by-name", None, {"experiment_name": "never-made"}, (404, "RESOURCE_DOES_NOT_EXIST", "never-made")),
        ("GET", "metrics/get-history", None, {"run_id": "d" * 32, "metric_key": "m"}, (404, "RESOURCE_DOES_NOT_EXIST", "")),
    ],
)  # fmt: skip
def test_error_shapes(
    mlflow_port: Any, method: str, path: str, body: Any, query: Any, expected: tuple[int, str, str]
) -> None:
    status, code, message = error_of(mlflow_port.call(method, path, body, query=query))
    assert (status, code) == expected[:2], message
    assert expected[2] in message


def test_malformed_and_mistyped_bodies(mlflow_port: Any) -> None:
    status, code, message = error_of(mlflow_port.call("POST", "experiments/create", raw=b'{"name": '))
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE") and "not valid JSON" in message
    status, code, _ = error_of(mlflow_port.call("POST", "experiments/create", raw=b'["a list"]'))
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE")
    status, code, _ = error_of(mlflow_port.call("POST", "experiments/create", {"name": {"an": "object"}}))
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE")
    status, code, _ = error_of(
        mlflow_port.call("POST", "runs/create", {"experiment_id": "0", "start_time": "yesterday"})
    )
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE")
    status, code, _ = error_of(
        mlflow_port.call("POST", "experiments/create", {"name": unique("dup")} | {"tags": [1]})
    )
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE")
    # The keep-alive connection stays usable after errors (each request here opens its own).
    name = unique("dup")
    assert mlflow_port.call("POST", "experiments/create", {"name": name})[0] == 200
    status, code, _ = error_of(mlflow_port.call("POST", "experiments/create", {"name": name}))
    assert (status, code) == (400, "RESOURCE_ALREADY_EXISTS")


def test_client_latency(mlflow_port: Any) -> None:
    """Rough per-call latency of the mlflow client against the port (printed; bounded loosely so
    a busy machine does not fail it)."""
    client = MlflowClient()
    experiment_id = client.create_experiment(unique("latency"))
    run_id = client.create_run(experiment_id).info.run_id
    rounds = 30
    started = time.perf_counter()
    for _ in range(rounds):
        client.create_run(experiment_id)
    create_ms = (time.perf_counter() - started) / rounds * 1000
    started = time.perf_counter()
    for step in range(rounds):
        client.log_metric(run_id, "latency", float(step), step=step)
    log_ms = (time.perf_counter() - started) / rounds * 1000
    print(
        f"\nmlflow client via keel's port: create_run {create_ms:.1f} ms, log_metric {log_ms:.1f} ms per call"
    )
    assert create_ms < 500 and log_ms < 500


def test_auth_on_the_port(mlflow_port_server: Any) -> None:
    """The factory's servers take settings: with auth, the mlflow client's token is keel's."""
    token = "admin-" + uuid.uuid4().hex
    server = mlflow_port_server(auth=True, admin_token=token)
    status, code, _ = error_of(server.call("POST", "experiments/create", {"name": "x"}))
    assert (status, code) == (401, "UNAUTHENTICATED")
    status, code, _ = error_of(
        server.call("POST", "experiments/create", {"name": "x"}, headers={"Authorization": "Bearer wrong"})
    )
    assert (status, code) == (401, "UNAUTHENTICATED")
    with server.use_mlflow(token=token):
        experiment_id = MlflowClient().create_experiment(unique("authed"))
        assert MlflowClient().get_experiment(experiment_id).lifecycle_stage == "active"
    with server.use_mlflow(username="admin", password=token):  # basic auth: the password is the token
        assert MlflowClient().get_experiment(experiment_id).experiment_id == experiment_id
