"""MLflow 3's logged models through keel's MLflow REST port, driven by the real ``mlflow`` client:
``mlflow.sklearn.log_model(name=..., registered_model_name=...)`` in a run (create, upload
through the artifact proxy, finalize READY, register from ``models:/<model_id>``), loading through
``runs:/`` and ``models:/<model_id>``, ``mlflow.pyfunc.log_model`` without a run (keel's holder
run), the logged-model client calls (tags, params, search, finalize, delete), MLflow's error codes,
raw HTTP bad inputs; then the same models read through keel's gRPC door and loaded by
``keel.pyfunc`` ("both doors see one truth").

The server is the module's ``mlflow_port`` (conftest.py): keel in-process on SQLite, the MLflow
port on a free loopback port and the ``mlflow`` client pointed at it.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import LoggedModelStatus  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from keel.tracking.v1 import tracking_pb2 as pb  # noqa: E402
from keel.tracking.v1 import tracking_pb2_grpc  # noqa: E402

pytestmark = pytest.mark.server

FEATURES = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
LABELS = [0, 0, 1, 1]
UNKNOWN_MODEL = "m-" + "0" * 32


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def predictions(model: Any) -> list[int]:
    return [int(v) for v in np.asarray(model.predict(FEATURES)).ravel()]


def keel_logged_model(mlflow_port: Any, model_id: str) -> pb.LoggedModel:
    """The logged model as keel's gRPC door answers it."""
    address = mlflow_port.grpc_uri.removeprefix("grpc://")
    with grpc.insecure_channel(address) as channel:
        stub = tracking_pb2_grpc.TrackingServiceStub(channel)
        return stub.GetLoggedModel(pb.GetLoggedModelRequest(model_id=model_id), timeout=30)


class Echo(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A pyfunc model that answers its input plus one."""

    # No type hints: MLflow would read them as the model's signature.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input["x"] + 1


# -- the client's own flows ---------------------------------------------------------------------
def test_sklearn_log_model_loads_everywhere(mlflow_port: Any) -> None:
    """``log_model(name=, registered_model_name=)`` in a run: the logged model is READY, its files
    are in the run under ``model/``, it loads through ``runs:/`` and ``models:/<model_id>`` in
    mlflow and through ``runs:/`` in keel, and the registered version points at its run."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    import keel
    import keel.pyfunc

    estimator = LogisticRegression().fit(FEATURES, LABELS)
    registered = unique("lm-registered")
    experiment_id = mlflow.set_experiment(unique("lm-sklearn")).experiment_id
    with mlflow.start_run() as run:
        mlflow.log_param("C", "1.0")
        mlflow.log_metric("accuracy", 0.75)  # Model.log links the run's metrics to the model
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            registered_model_name=registered,
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
            params={"solver": "lbfgs"},
            tags={"team": "cv"},
        )
    run_id = run.info.run_id
    model_id = info.model_id
    assert model_id.startswith("m-") and info.model_uri == f"models:/{model_id}"
    assert str(info.registered_model_version) == "1"

    client = MlflowClient()
    logged = client.get_logged_model(model_id)
    assert logged.status == LoggedModelStatus.READY
    assert (logged.name, logged.source_run_id, logged.experiment_id) == ("model", run_id, experiment_id)
    assert logged.artifact_location == f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/model"
    assert logged.params["C"] == "1.0" and logged.params["solver"] == "lbfgs"  # the run's params too
    assert logged.tags["team"] == "cv"
    # The files are the run's: MLflow 2's layout, listed through the tracking API.
    assert "model/MLmodel" in {f.path for f in client.list_artifacts(run_id, "model")}
    # The run knows its output.
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [model_id]

    expected = predictions(estimator)
    assert predictions(mlflow.pyfunc.load_model(f"runs:/{run_id}/model")) == expected
    assert predictions(mlflow.pyfunc.load_model(f"models:/{model_id}")) == expected
    assert predictions(mlflow.sklearn.load_model(f"models:/{model_id}")) == expected

    found = client.search_logged_models(experiment_ids=[experiment_id], filter_string="name = 'model'")
    assert [m.model_id for m in found] == [model_id]
    version = client.get_model_version(registered, "1")
    assert version.run_id == run_id

    # The other door: keel's gRPC API and keel's own loader.
    door = keel_logged_model(mlflow_port, model_id)
    assert (door.run_id, door.artifact_path, door.status) == (run_id, "model", pb.LOGGED_MODEL_STATUS_READY)
    previous = keel.get_tracking_uri()
    keel.set_tracking_uri(mlflow_port.grpc_uri)
    try:
        assert predictions(keel.pyfunc.load_model(f"runs:/{run_id}/model")) == expected
    finally:
        keel.set_tracking_uri(previous)


def test_pyfunc_log_model_without_a_run_gets_a_holder_run(mlflow_port: Any) -> None:
    """Outside a run MLflow 3 logs a model with no source run: keel keeps its files in a run it
    creates for them, so both ``models:/<model_id>`` and that run's ``runs:/`` load it."""
    experiment_id = mlflow.set_experiment(unique("lm-pyfunc")).experiment_id
    assert mlflow.active_run() is None
    info = mlflow.pyfunc.log_model(name="echo", python_model=Echo(), pip_requirements=["pandas"])
    logged = MlflowClient().get_logged_model(info.model_id)
    assert logged.status == LoggedModelStatus.READY and not logged.source_run_id
    door = keel_logged_model(mlflow_port, info.model_id)
    holder = MlflowClient().get_run(door.run_id)
    assert holder.info.experiment_id == experiment_id and holder.info.run_name == "echo"
    assert holder.data.tags["mlflow.loggedModelHolder"] == "true"
    assert logged.artifact_location == f"mlflow-artifacts:/{experiment_id}/{door.run_id}/artifacts/echo"
    assert predictions(mlflow.pyfunc.load_model(f"models:/{info.model_id}")) == [1, 2, 3, 4]
    assert predictions(mlflow.pyfunc.load_model(f"runs:/{door.run_id}/echo")) == [1, 2, 3, 4]
    # What MLflow's UI reads: the model's file list and one file.
    status, listing = mlflow_port.call("GET", f"logged-models/{info.model_id}/artifacts/directories")
    assert status == 200 and ("MLmodel", False) in {(f["path"], f["is_dir"]) for f in listing["files"]}
    status, text = mlflow_port.call(
        "GET",
        f"/ajax-api/2.0/mlflow/logged-models/{info.model_id}/artifacts/files",
        query={"artifact_file_path": "MLmodel"},
    )
    assert status == 200 and "python_function" in text and info.model_id in text


def test_logged_model_client_calls(mlflow_port: Any) -> None:
    """External models, tags, params, search with order and pages, finalize FAILED, delete."""
    client = MlflowClient()
    experiment_id = mlflow.set_experiment(unique("lm-calls")).experiment_id
    with mlflow.start_run() as run:
        first = mlflow.create_external_model(name="agent-a", params={"temperature": "0.1"}, model_type="agent")
        second = mlflow.create_external_model(name="agent-b", tags={"stage": "dev"})
    assert first.status == LoggedModelStatus.READY and first.source_run_id == run.info.run_id
    assert first.model_type == "agent" and first.params == {"temperature": "0.1"}

    client.set_logged_model_tags(first.model_id, {"stage": "prod", "owner": "ana"})
    client.delete_logged_model_tag(first.model_id, "owner")
    mlflow.log_model_params({"top_k": "5"}, model_id=first.model_id)
    got = client.get_logged_model(first.model_id)
    assert got.tags["stage"] == "prod" and "owner" not in got.tags
    assert got.params == {"temperature": "0.1", "top_k": "5"}

    by_name = client.search_logged_models(
        experiment_ids=[experiment_id], order_by=[{"field_name": "name", "ascending": False}]
    )
    assert [m.name for m in by_name] == ["agent-b", "agent-a"]
    page = client.search_logged_models(experiment_ids=[experiment_id], max_results=1)
    assert len(page) == 1 and page.token
    rest = client.search_logged_models(experiment_ids=[experiment_id], max_results=1, page_token=page.token)
    assert {page[0].model_id, rest[0].model_id} == {first.model_id, second.model_id}
    assert [m.name for m in mlflow.search_logged_models(
        experiment_ids=[experiment_id], filter_string="tags.stage = 'prod'", output_format="list"
    )] == ["agent-a"]  # fmt: skip

    failed = client.finalize_logged_model(second.model_id, LoggedModelStatus.FAILED)
    assert failed.status == LoggedModelStatus.FAILED
    client.delete_logged_model(second.model_id)
    with pytest.raises(MlflowException) as gone:
        client.get_logged_model(second.model_id)
    assert gone.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert [m.model_id for m in client.search_logged_models(experiment_ids=[experiment_id])] == [first.model_id]


def test_one_model_per_name_in_a_run(mlflow_port: Any) -> None:
    """keel keeps a model's files in its run under its name: a second model of that name in the
    same run is refused (RESOURCE_ALREADY_EXISTS) and leaves the first untouched."""
    mlflow.set_experiment(unique("lm-twice"))
    with mlflow.start_run():
        first = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=["pandas"])
        with pytest.raises(MlflowException) as taken:
            mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=["pandas"])
        assert taken.value.error_code == "RESOURCE_ALREADY_EXISTS"
        other = mlflow.pyfunc.log_model(name="checkpoint-2", python_model=Echo(), pip_requirements=["pandas"])
    assert MlflowClient().get_logged_model(first.model_id).status == LoggedModelStatus.READY
    assert predictions(mlflow.pyfunc.load_model(f"models:/{other.model_id}")) == [1, 2, 3, 4]


# -- raw HTTP: shapes and bad inputs -------------------------------------------------------------
def test_raw_http_shapes_and_bad_inputs(mlflow_port: Any) -> None:
    experiment_id = MlflowClient().create_experiment(unique("lm-raw"))
    status, body = mlflow_port.call("POST", "logged-models", {"experiment_id": experiment_id, "name": "raw"})
    assert status == 200
    info = body["model"]["info"]
    model_id = info["model_id"]
    assert info["status"] == "LOGGED_MODEL_PENDING" and info["name"] == "raw"
    assert info["artifact_uri"].startswith(f"mlflow-artifacts:/{experiment_id}/")
    assert body["model"]["data"] == {"params": []}

    # finalize with the enum's number, as proto JSON allows
    status, body = mlflow_port.call("PATCH", f"logged-models/{model_id}", {"model_id": model_id, "status": 2})
    assert status == 200 and body["model"]["info"]["status"] == "LOGGED_MODEL_READY"
    status, body = mlflow_port.call("GET", f"logged-models/{model_id}/artifacts/directories")
    assert status == 200 and body == {"root_uri": info["artifact_uri"], "files": []}
    # a tag key with a slash travels in the path
    assert mlflow_port.call("PATCH", f"logged-models/{model_id}/tags", {"tags": [{"key": "a/b", "value": "1"}]})[0] == 200
    assert mlflow_port.call("DELETE", f"logged-models/{model_id}/tags/a/b")[0] == 200
    # the UI's path: same answers under /ajax-api
    assert mlflow_port.call("GET", f"/ajax-api/2.0/mlflow/logged-models/{model_id}")[0] == 200

    for method, path, payload, want_status, want_code in (
        ("POST", "logged-models", {"name": "x"}, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "logged-models", {"experiment_id": experiment_id, "name": "../x"}, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "logged-models", {"experiment_id": experiment_id, "tags": "nope"}, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "logged-models", {"experiment_id": experiment_id, "tags": [1]}, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "logged-models", {"experiment_id": "424242", "name": "x"}, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("GET", f"logged-models/{UNKNOWN_MODEL}", None, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("GET", "logged-models/not-a-model-id", None, 400, "INVALID_PARAMETER_VALUE"),
        ("PATCH", f"logged-models/{model_id}", {"status": "LOGGED_MODEL_PENDING"}, 400, "INVALID_PARAMETER_VALUE"),
        ("PATCH", f"logged-models/{model_id}", {}, 400, "INVALID_PARAMETER_VALUE"),
        ("DELETE", f"logged-models/{model_id}/tags/missing", None, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("POST", "logged-models/search", {}, 400, "INVALID_PARAMETER_VALUE"),
        ("POST", "logged-models/search", {"experiment_ids": [experiment_id], "filter": "metrics.a > 1"}, 400,
         "INVALID_PARAMETER_VALUE"),
        ("POST", "logged-models/search", {"experiment_ids": [experiment_id], "datasets": [{"dataset_name": "d"}]},
         501, "NOT_IMPLEMENTED"),
        ("POST", "logged-models/search",
         {"experiment_ids": [experiment_id], "order_by": [{"field_name": "metrics.a", "dataset_name": "d"}]},
         501, "NOT_IMPLEMENTED"),
        ("POST", "logged-models/search", {"experiment_ids": [experiment_id], "max_results": "many"}, 400,
         "INVALID_PARAMETER_VALUE"),
        ("POST", f"logged-models/{model_id}/params", {"params": [{"key": "k", "value": "v" * 6001}]}, 400,
         "INVALID_PARAMETER_VALUE"),
        ("POST", "runs/outputs", {"run_id": "0" * 32, "models": []}, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("GET", f"/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files", None, 400,
         "INVALID_PARAMETER_VALUE"),
        ("GET", f"/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files?artifact_file_path=../x", None, 400,
         "INVALID_PARAMETER_VALUE"),
    ):  # fmt: skip
        status, body = mlflow_port.call(method, path, payload)
        assert (status, body["error_code"]) == (want_status, want_code), (method, path, payload, body)

    # runs/outputs: a model of this run is on record already; one of another run is refused.
    with mlflow.start_run(experiment_id=experiment_id) as run:
        own = mlflow.create_external_model(name="own").model_id
    run_id = run.info.run_id
    assert mlflow_port.call("POST", "runs/outputs", {"run_id": run_id, "models": [{"model_id": own, "step": 3}]})[0] == 200
    status, body = mlflow_port.call("POST", "runs/outputs", {"run_id": run_id, "models": [{"model_id": model_id}]})
    assert (status, body["reason"]) == (400, "OUTPUT_OF_ANOTHER_RUN")
