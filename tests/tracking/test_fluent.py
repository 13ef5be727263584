"""The fluent API (keel.start_run, keel.log_metric, ...) and the CLI against the real server."""

from __future__ import annotations

import json
import math
import uuid

import pytest

import keel
from keel.cli import main as cli_main
from keel.exceptions import FailedPrecondition, InvalidArgument


def test_context_manager_statuses_and_logging(client: keel.Client) -> None:
    name = f"fluent-{uuid.uuid4().hex[:8]}"
    experiment = keel.set_experiment(name)
    assert keel.get_experiment_by_name(name).experiment_id == experiment.experiment_id  # type: ignore[union-attr]
    with keel.start_run(run_name="ok", tags={"team": "cv"}) as run:
        assert keel.active_run() is run
        keel.log_param("lr", 0.01)
        keel.log_params({"epochs": 3, "model": "cnn"})
        keel.log_metric("loss", 0.5, step=1)
        keel.log_metrics({"loss": 0.4, "acc": 0.8}, step=2)
        keel.set_tag("stage", "dev")
        keel.set_tags({"a": 1, "b": 2})
        keel.delete_tag("b")
    assert keel.active_run() is None
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FINISHED" and got.info.end_time
    assert got.info.experiment_id == experiment.experiment_id
    assert got.data.params == {"lr": "0.01", "epochs": "3", "model": "cnn"}
    assert got.data.metrics == {"loss": 0.4, "acc": 0.8}
    # MLflow's system tags (mlflow.user, mlflow.source.*) come with every run start_run creates
    assert {k: v for k, v in got.data.tags.items() if not k.startswith("mlflow.")} == {
        "team": "cv",
        "stage": "dev",
        "a": "1",
    }
    assert got.data.tags["mlflow.source.type"] == "LOCAL" and got.data.tags["mlflow.user"]
    assert keel.last_active_run().info.run_id == run.info.run_id  # type: ignore[union-attr]

    with pytest.raises(ValueError):
        with keel.start_run() as failed:
            raise ValueError("boom")
    assert client.get_run(failed.info.run_id).info.status == "FAILED"
    with pytest.raises(KeyboardInterrupt):
        with keel.start_run() as killed:
            raise KeyboardInterrupt
    assert client.get_run(killed.info.run_id).info.status == "KILLED"


def test_nested_runs_and_resume(client: keel.Client) -> None:
    keel.set_experiment(f"nested-{uuid.uuid4().hex[:8]}")
    with keel.start_run() as parent:
        with pytest.raises(FailedPrecondition):
            keel.start_run()
        with keel.start_run(nested=True) as child:
            assert keel.active_run() is child
        assert keel.active_run() is parent
    assert client.get_run(child.info.run_id).info.parent_run_id == parent.info.run_id
    with keel.start_run(run_id=parent.info.run_id) as resumed:
        keel.log_metric("later", 1.0)
    assert resumed.info.run_id == parent.info.run_id
    assert client.get_run(parent.info.run_id).data.metrics == {"later": 1.0}


def test_default_experiment_is_zero(client: keel.Client, keel_server) -> None:
    from keel import fluent

    fluent._active_experiments.pop(keel_server.uri, None)
    run = keel.start_run()
    keel.end_run()
    assert run.info.experiment_id == "0"
    assert client.get_experiment("0").name == "Default"


def test_async_logging_batches_and_surfaces_errors(client: keel.Client) -> None:
    keel.set_experiment(f"async-{uuid.uuid4().hex[:8]}")
    with keel.start_run() as run:
        for step in range(2500):
            keel.log_metric("loss", 1.0 / (step + 1), step=step, synchronous=False)
        keel.log_metrics({"a": 1.0, "b": math.inf}, step=7, synchronous=False)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == list(range(2500))  # flushed by end_run, nothing lost
    assert client.get_run(run.info.run_id).data.metrics["b"] == math.inf
    # An error of a queued point surfaces on flush.
    with keel.start_run() as bad:
        keel.log_metric("bad key!", 1.0, synchronous=False)
        with pytest.raises(InvalidArgument):
            keel.flush_async_logging()
    assert client.get_run(bad.info.run_id).info.status == "FINISHED"


def test_search_runs_pandas_and_list(client: keel.Client) -> None:
    name = f"search-{uuid.uuid4().hex[:8]}"
    keel.set_experiment(name)
    for i, rmse in enumerate([0.3, 0.1, 0.2]):
        with keel.start_run(run_name=f"r{i}"):
            keel.log_metric("val_rmse", rmse)
            keel.log_param("i", i)
            keel.set_tag("team", "cv")
    df = keel.search_runs(order_by=["metrics.val_rmse ASC"], max_results=2)
    assert len(df) == 2 and df.loc[0]["metrics.val_rmse"] == 0.1
    for column in ("run_id", "experiment_id", "status", "start_time", "params.i", "tags.team"):
        assert column in df.columns
    runs = keel.search_runs(experiment_names=[name], filter_string="params.i = '2'", output_format="list")
    assert [r.info.run_name for r in runs] == ["r2"]


def test_cli(client: keel.Client, keel_server, capsys: pytest.CaptureFixture[str]) -> None:
    uri = ["--tracking-uri", keel_server.uri]
    name = f"cli-{uuid.uuid4().hex[:8]}"
    assert cli_main([*uri, "experiments", "create", name]) == 0
    experiment_id = capsys.readouterr().out.strip()
    run = client.create_run(experiment_id, run_name="cli-run")
    client.log_metric(run.info.run_id, "rmse", 0.5)
    client.log_param(run.info.run_id, "model", "cnn")
    assert cli_main([*uri, "experiments", "list", "--filter", f"name = '{name}'", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["experiment_id"] for e in listed] == [experiment_id]
    assert cli_main([*uri, "runs", "search", "--experiment-id", experiment_id, "--filter",
                     "metrics.rmse < 1 and params.model = 'cnn'", "--order-by", "metrics.rmse ASC"]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert "RUN_ID" in table and run.info.run_id in table
    assert cli_main([*uri, "runs", "describe", run.info.run_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["metrics"] == {"rmse": 0.5}
    assert cli_main([*uri, "runs", "list", "--experiment-id", experiment_id, "--filter", "metrics.rmse <"]) == 1
    assert "position" in capsys.readouterr().err
    assert cli_main([*uri, "experiments", "rename", experiment_id, name + "-x"]) == 0
    assert cli_main([*uri, "experiments", "delete", experiment_id]) == 0
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
