"""The model registry through keel's MLflow REST port, driven by the real ``mlflow`` client:
registration in the three ways MLflow users register (``create_registered_model`` +
``create_model_version``, ``register_model`` with tags, ``log_model(registered_model_name=)``),
the ``MlflowClient`` registry calls, stage transitions with archive-existing, aliases, loading
from every ``models:/`` form, MLflow's error codes, raw HTTP bad inputs, and then the same data
read through keel's gRPC SDK ("both doors see one truth").

The server is the module's ``mlflow_port`` (conftest.py): keel in-process on SQLite, the MLflow
port on a free loopback port and the ``mlflow`` client pointed at it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

pytestmark = [
    pytest.mark.server,
    # Stages are what the seeds use; MLflow's client warns that it deprecated them.
    pytest.mark.filterwarnings("ignore:.*Model registry stages will be removed:FutureWarning"),
]

FEATURES = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
LABELS = [0, 0, 1, 1]


# -- helpers ---------------------------------------------------------------------------------------
def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def save_model(folder: Path, flip: bool = False) -> Path:
    """A tiny sklearn classifier saved by MLflow itself (MLflow's MLmodel, cloudpickle so no skops
    is needed, requirements given so nothing is inferred in a subprocess). ``flip`` inverts the
    labels, so two versions predict differently."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    labels = [1 - y for y in LABELS] if flip else LABELS
    model = LogisticRegression().fit(FEATURES, labels)
    path = folder / unique("model")
    mlflow.sklearn.save_model(
        model, str(path), serialization_format="cloudpickle", pip_requirements=["scikit-learn"]
    )
    return path


def expected(flip: bool = False) -> list[int]:
    return [1 - y for y in LABELS] if flip else list(LABELS)


def predict(uri: str) -> list[int]:
    return [int(v) for v in np.asarray(mlflow.pyfunc.load_model(uri).predict(FEATURES)).ravel()]


def keel_run_with_model(mlflow_port: Any, tmp_path: Path, flip: bool = False) -> tuple[str, str]:
    """(experiment_id, run_id) of a run made through keel's gRPC SDK holding an MLflow-saved model
    under ``model/``: registration sources that exist whichever routes are in place."""
    client = mlflow_port.keel_client()
    experiment_id = client.create_experiment(unique("reg-exp"))
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(save_model(tmp_path, flip)), "model")
    return experiment_id, run.info.run_id


def error_code(excinfo: pytest.ExceptionInfo[MlflowException]) -> str:
    return str(excinfo.value.error_code)


@pytest.fixture()
def client(mlflow_port: Any) -> MlflowClient:
    return MlflowClient()


# -- registration ----------------------------------------------------------------------------------
def test_create_registered_model_and_version(mlflow_port: Any, client: MlflowClient, tmp_path: Path) -> None:
    name = unique("create")
    experiment_id, run_id = keel_run_with_model(mlflow_port, tmp_path)
    model = client.create_registered_model(name, tags={"team": "risk"}, description="fraud scorer")
    assert model.name == name
    assert model.tags == {"team": "risk"}
    assert model.description == "fraud scorer"
    assert model.creation_timestamp > 0

    # The form mlflow.register_model sends: the run's artifact location on this port.
    source = f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/model"
    mv = client.create_model_version(
        name, source, run_id=run_id, tags={"stage-gate": "passed"}, description="first"
    )
    assert (mv.name, mv.version, mv.status, mv.current_stage) == (name, "1", "READY", "None")
    assert mv.run_id == run_id
    assert mv.tags == {"stage-gate": "passed"}
    assert mv.description == "first"
    assert mv.source == f"runs:/{run_id}/model"  # keel's spelling: loadable by the mlflow client too
    # runs:/ as a source, and the next number.
    mv2 = client.create_model_version(name, f"runs:/{run_id}/model")
    assert (mv2.version, mv2.run_id) == ("2", run_id)

    # The other door: the same versions over gRPC.
    keel_client = mlflow_port.keel_client()
    got = keel_client.get_model_version(name, 1)
    assert (got.status, got.run_id, got.tags, got.description) == (
        "READY",
        run_id,
        {"stage-gate": "passed"},
        "first",
    )
    assert [v.version for v in keel_client.search_model_versions(f"name = '{name}'")] == ["2", "1"]
    assert keel_client.get_registered_model(name).tags == {"team": "risk"}


def test_register_model_with_tags(mlflow_port: Any, tmp_path: Path) -> None:
    """``mlflow.register_model("runs:/...")``: the client reads the run, lists its artifacts and
    registers the run's artifact location."""
    name = unique("register")
    _, run_id = keel_run_with_model(mlflow_port, tmp_path)
    mv = mlflow.register_model(f"runs:/{run_id}/model", name, tags={"owner": "ana", "data": "v3"})
    assert (mv.version, mv.status, mv.run_id) == ("1", "READY", run_id)
    assert mv.tags == {"owner": "ana", "data": "v3"}
    # Registering again under the same name makes version 2 (RESOURCE_ALREADY_EXISTS is handled).
    assert mlflow.register_model(f"runs:/{run_id}/model", name).version == "2"
    assert predict(f"models:/{name}/1") == expected()
    assert mlflow_port.keel_client().get_model_version(name, 1).tags == {"owner": "ana", "data": "v3"}


def test_log_model_with_registered_model_name(mlflow_port: Any) -> None:
    """MLflow 3's ``log_model(registered_model_name=)``: a logged model, its files through the
    artifact proxy, then a version registered from ``models:/<model_id>``."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    name = unique("logged")
    mlflow.set_experiment(unique("log-model"))
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(FEATURES, LABELS),
            name="model",
            registered_model_name=name,
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
        )
    assert str(info.registered_model_version) == "1"
    mv = MlflowClient().get_model_version(name, "1")
    assert (mv.status, mv.run_id) == ("READY", run.info.run_id)
    assert predict(f"models:/{name}/1") == expected()
    # The same version over gRPC, loadable by keel from its registry snapshot.
    import keel.pyfunc

    keel_client = mlflow_port.keel_client()
    assert keel_client.get_model_version(name, 1).run_id == run.info.run_id
    keel.set_tracking_uri(mlflow_port.grpc_uri)
    keel_model = keel.pyfunc.load_model(f"models:/{name}/1")
    assert [int(v) for v in np.asarray(keel_model.predict(FEATURES)).ravel()] == expected()


# -- MlflowClient registry calls ---------------------------------------------------------------------
def test_client_registry_calls(mlflow_port: Any, client: MlflowClient, tmp_path: Path) -> None:
    name = unique("calls")
    _, run_id = keel_run_with_model(mlflow_port, tmp_path)
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)

    model = client.get_registered_model(name)
    assert [(v.version, v.current_stage) for v in model.latest_versions] == [("3", "None")]

    assert [m.name for m in client.search_registered_models(filter_string=f"name = '{name}'")] == [name]
    assert name in [m.name for m in client.search_registered_models(filter_string=f"name LIKE '{name[:8]}%'")]
    assert name in [m.name for m in client.search_registered_models()]  # MLflow 3 adds a prompt filter
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(v.version for v in versions) == ["1", "2", "3"]
    assert [v.version for v in client.search_model_versions(f"name = '{name}' AND version_number > 1")] != []
    page = client.search_model_versions(f"name = '{name}'", max_results=2, order_by=["version_number ASC"])
    assert [v.version for v in page] == ["1", "2"] and page.token
    rest = client.search_model_versions(
        f"name = '{name}'", max_results=2, order_by=["version_number ASC"], page_token=page.token
    )
    assert [v.version for v in rest] == ["3"] and not rest.token
    assert [v.version for v in client.search_model_versions(f"run_id = '{run_id}' AND name = '{name}'")] != []

    client.update_registered_model(name, description="new description")
    client.update_model_version(name, "2", description="the second")
    assert client.get_registered_model(name).description == "new description"
    assert client.get_model_version(name, "2").description == "the second"

    client.set_registered_model_tag(name, "team", "vision")
    client.set_model_version_tag(name, "2", "validated", "yes")
    assert client.get_registered_model(name).tags == {"team": "vision"}
    assert client.get_model_version(name, "2").tags == {"validated": "yes"}
    client.delete_registered_model_tag(name, "team")
    client.delete_model_version_tag(name, "2", "validated")
    assert client.get_registered_model(name).tags == {}
    assert client.get_model_version(name, "2").tags == {}

    # copy_model_version registers models:/<name>/<version> (keel snapshots the version's files).
    copy_name = unique("copy")
    copied = client.copy_model_version(f"models:/{name}/2", copy_name)
    assert (copied.name, copied.version, copied.description) == (copy_name, "1", "the second")
    assert copied.source == f"models:/{name}/2" and copied.run_id == run_id
    assert predict(f"models:/{copy_name}/1") == expected()

    client.delete_model_version(name, "1")
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == ["3", "2"]

    renamed = unique("renamed")
    client.rename_registered_model(name, renamed)
    assert client.get_registered_model(renamed).name == renamed
    assert client.get_model_version(renamed, "2").description == "the second"
    client.delete_registered_model(renamed)
    with pytest.raises(MlflowException) as excinfo:
        client.get_registered_model(renamed)
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"


def test_transition_with_archive_existing_versions(
    mlflow_port: Any, client: MlflowClient, tmp_path: Path
) -> None:
    name = unique("stages")
    _, run_id = keel_run_with_model(mlflow_port, tmp_path)
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run_id}/model")
    client.create_model_version(name, f"runs:/{run_id}/model")

    assert client.transition_model_version_stage(name, "1", "Staging").current_stage == "Staging"
    assert client.transition_model_version_stage(name, "1", "production").current_stage == "Production"
    moved = client.transition_model_version_stage(name, "2", "Production", archive_existing_versions=True)
    assert moved.current_stage == "Production"
    assert client.get_model_version(name, "1").current_stage == "Archived"
    assert [v.version for v in client.get_latest_versions(name, stages=["Production"])] == ["2"]
    assert [(v.version, v.current_stage) for v in client.get_latest_versions(name, stages=["Archived"])] == [
        ("1", "Archived")
    ]
    latest = client.get_registered_model(name).latest_versions
    assert {(v.version, v.current_stage) for v in latest} == {("1", "Archived"), ("2", "Production")}

    # keel recorded every change.
    events = mlflow_port.keel_client().list_model_history(name)
    moves = {(e.version, e.from_stage, e.to_stage) for e in events if e.to_stage}
    assert moves == {
        ("1", "None", "Staging"),
        ("1", "Staging", "Production"),
        ("1", "Production", "Archived"),
        ("2", "None", "Production"),
    }


def test_aliases(mlflow_port: Any, client: MlflowClient, tmp_path: Path) -> None:
    name = unique("aliases")
    _, run_id = keel_run_with_model(mlflow_port, tmp_path)
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run_id}/model")
    client.create_model_version(name, f"runs:/{run_id}/model")

    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_registered_model(name).aliases == {"champion": "1", "challenger": "2"}
    assert client.get_model_version(name, "2").aliases == ["challenger"]
    client.set_registered_model_alias(name, "champion", "2")  # moves
    assert sorted(client.get_model_version(name, "2").aliases) == ["challenger", "champion"]
    assert mlflow_port.keel_client().get_model_version_by_alias(name, "champion").version == "2"

    client.delete_registered_model_alias(name, "challenger")
    with pytest.raises(MlflowException) as excinfo:
        client.get_model_version_by_alias(name, "challenger")
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as excinfo:
        client.set_registered_model_alias(name, "latest", "1")  # reserved, as in MLflow
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"


# -- loading -----------------------------------------------------------------------------------------
def test_load_from_every_models_uri(mlflow_port: Any, client: MlflowClient, tmp_path: Path) -> None:
    name = unique("load")
    _, run_1 = keel_run_with_model(mlflow_port, tmp_path)
    _, run_2 = keel_run_with_model(mlflow_port, tmp_path, flip=True)
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run_1}/model", run_id=run_1)
    client.create_model_version(name, f"runs:/{run_2}/model", run_id=run_2)
    client.transition_model_version_stage(name, "1", "Production")
    client.set_registered_model_alias(name, "champion", "1")

    uri = client.get_model_version_download_uri(name, "1")
    assert uri == f"mlflow-artifacts:/model-versions/{name}/1"
    assert predict(f"models:/{name}/1") == expected()
    assert predict(f"models:/{name}/2") == expected(flip=True)
    assert predict(f"models:/{name}/latest") == expected(flip=True)
    assert predict(f"models:/{name}/Production") == expected()
    assert predict(f"models:/{name}@champion") == expected()
    # The files are keel's snapshot: deleting the run's copy does not touch the version.
    assert mlflow_port.keel_client().delete_artifacts("model", run_id=run_1) > 0
    assert predict(f"models:/{name}/1") == expected()


def test_model_name_needing_encoding_loads(mlflow_port: Any, client: MlflowClient, tmp_path: Path) -> None:
    """A name with a space, '%', '#' and non-ASCII travels through the download URI intact ('?'
    cannot: the mlflow client parses models:/ URIs as URLs, where it starts a query)."""
    name = unique("Fraud model 50%#é")
    _, run_id = keel_run_with_model(mlflow_port, tmp_path)
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run_id}/model")
    assert predict(f"models:/{name}/1") == expected()
    files = {f.path for f in mlflow.artifacts.list_artifacts(f"models:/{name}/1")}
    assert "MLmodel" in files


def test_version_registered_through_keel_loads_in_mlflow(mlflow_port: Any, tmp_path: Path) -> None:
    """The other direction: a version registered over gRPC loads with ``mlflow.pyfunc``."""
    name = unique("from-keel")
    _, run_id = keel_run_with_model(mlflow_port, tmp_path, flip=True)
    keel_client = mlflow_port.keel_client()
    keel_client.create_registered_model(name)
    version = keel_client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    keel_client.set_registered_model_alias(name, "prod", int(version.version))
    assert predict(f"models:/{name}/{version.version}") == expected(flip=True)
    assert predict(f"models:/{name}@prod") == expected(flip=True)
    assert MlflowClient().get_model_version(name, version.version).run_id == run_id


def test_keel_logged_model_loads_in_mlflow(mlflow_port: Any) -> None:
    """A model keel's own flavor wrote and keel registered loads with ``mlflow.pyfunc`` (MLflow
    imports the MLmodel's loader module, keel.sklearn, which the keel SDK provides)."""
    from sklearn.linear_model import LogisticRegression

    import keel
    import keel.sklearn

    name = unique("keel-flavor")
    keel.set_tracking_uri(mlflow_port.grpc_uri)
    keel.set_experiment(unique("keel-flavor"))
    with keel.start_run() as run:
        keel.sklearn.log_model(LogisticRegression().fit(FEATURES, LABELS), "model")
    version = keel.register_model(f"runs:/{run.info.run_id}/model", name)
    assert predict(f"models:/{name}/{version.version}") == expected()


# -- errors ------------------------------------------------------------------------------------------
def test_mlflow_error_codes(mlflow_port: Any, client: MlflowClient, tmp_path: Path) -> None:
    name = unique("errors")
    _, run_id = keel_run_with_model(mlflow_port, tmp_path)
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run_id}/model")

    with pytest.raises(MlflowException) as excinfo:
        client.create_registered_model(name)
    assert error_code(excinfo) == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as excinfo:
        client.get_model_version(name, "99")
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as excinfo:
        client.get_model_version(unique("no-such-model"), "1")
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as excinfo:
        client.transition_model_version_stage(name, "1", "Deployed")
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as excinfo:
        client.transition_model_version_stage(name, "1", "Archived", archive_existing_versions=True)
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as excinfo:
        client.create_model_version(name, f"runs:/{run_id}/no-such-folder")
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as excinfo:
        client.create_model_version(name, "file:///etc")
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as excinfo:
        client.create_model_version(name, "mlflow-artifacts:/1/../../etc/artifacts/model")
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as excinfo:
        client.create_model_version(name, f"mlflow-artifacts:/1/{run_id}/artifacts/%2e%2e/%2e%2e/x")
    assert error_code(excinfo) == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as excinfo:  # the run is not in experiment 999
        client.create_model_version(name, f"mlflow-artifacts:/999/{run_id}/artifacts/model")
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as excinfo:
        client.create_model_version(name, f"models:/m-{'0' * 32}", model_id=f"m-{'0' * 32}")
    assert error_code(excinfo) == "RESOURCE_DOES_NOT_EXIST"
    # No number was burnt by the refusals.
    assert client.create_model_version(name, f"runs:/{run_id}/model").version == "2"


def test_raw_http_error_shapes_and_bad_inputs(mlflow_port: Any, tmp_path: Path) -> None:
    name = unique("raw")
    _, run_id = keel_run_with_model(mlflow_port, tmp_path)
    call = mlflow_port.call
    assert call("POST", "registered-models/create", {"name": name})[0] == 200

    status, body = call("POST", "registered-models/create", {"name": name})
    assert status == 400 and body["error_code"] == "RESOURCE_ALREADY_EXISTS" and name in body["message"]
    status, body = call("GET", "model-versions/get", query={"name": name, "version": "7"})
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    status, body = call("GET", "registered-models/get", query={"name": unique("absent")})
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    bad_inputs: list[tuple[str, str, Any, dict[str, Any] | None]] = [
        ("POST", "registered-models/create", {}, None),  # missing name
        ("POST", "registered-models/create", {"name": ["x"]}, None),  # mistyped
        ("POST", "registered-models/create", {"name": unique("t"), "tags": [{"value": "no key"}]}, None),
        ("POST", "registered-models/create", {"name": unique("t"), "tags": "team=risk"}, None),
        ("POST", "registered-models/create", {"name": "a/b"}, None),  # models:/ could not name it
        ("POST", "registered-models/create", {"name": unique("d"), "deployment_job_id": "42"}, None),
        ("GET", "model-versions/get", None, {"name": name, "version": "one"}),
        ("GET", "model-versions/get", None, {"name": name, "version": "-1"}),
        ("GET", "model-versions/get", None, {"name": name}),
        ("POST", "model-versions/create", {"name": name}, None),  # missing source
        ("POST", "model-versions/create", {"name": name, "source": "http://elsewhere/model"}, None),
        (
            "POST",
            "model-versions/create",
            {"name": name, "source": "mlflow-artifacts:/1/r/not-artifacts"},
            None,
        ),
        (
            "POST",
            "model-versions/create",
            {"name": name, "source": f"runs:/{run_id}/model", "run_id": "bad id!"},
            None,
        ),
        ("POST", "model-versions/transition-stage", {"name": name, "version": "1", "stage": "Gold"}, None),
        (
            "POST",
            "model-versions/transition-stage",
            {"name": name, "version": "1", "stage": "Staging", "archive_existing_versions": "maybe"},
            None,
        ),
        ("GET", "registered-models/search", None, {"max_results": "1001"}),
        ("GET", "registered-models/search", None, {"filter": "name === 'x'"}),
        ("GET", "registered-models/search", None, {"order_by": "colour DESC"}),
        ("GET", "model-versions/search", None, {"max_results": "200001"}),
        ("GET", "model-versions/search", None, {"filter": "stage = 'Production'"}),
        ("POST", "registered-models/alias", {"name": name, "alias": "bad alias!", "version": "1"}, None),
        ("POST", "registered-models/get-latest-versions", {"name": name, "stages": ["Gold"]}, None),
        ("POST", "registered-models/get-latest-versions", {"name": name, "stages": [1]}, None),
    ]
    for method, path, body_in, query in bad_inputs:
        status, body = call(method, path, body_in, query=query)
        assert (status, body.get("error_code")) == (400, "INVALID_PARAMETER_VALUE"), (
            path,
            body_in,
            query,
            body,
        )
        assert body["message"]

    status, body = call("POST", "registered-models/create", raw=b"{not json")
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    status, body = call("GET", "registered-models/create")
    assert status == 405
    status, body = call("GET", "model-versions/get-download-uri", query={"name": name, "version": "1"})
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    # MLflow's GET forms and the UI's /ajax-api prefix.
    assert call("POST", "model-versions/create", {"name": name, "source": f"runs:/{run_id}/model"})[0] == 200
    status, body = call(
        "GET", "registered-models/get-latest-versions", query={"name": name, "stages": ["None", "Staging"]}
    )
    assert status == 200 and [v["version"] for v in body["model_versions"]] == ["1"]
    status, body = call(
        "GET", "/ajax-api/2.0/mlflow/model-versions/get", query={"name": name, "version": "1"}
    )
    assert status == 200 and body["model_version"]["status"] == "READY"
    assert body["model_version"]["version"] == "1" and isinstance(
        body["model_version"]["creation_timestamp"], int
    )
    status, body = call("GET", "model-versions/get-download-uri", query={"name": name, "version": "1"})
    assert (status, body) == (200, {"artifact_uri": f"mlflow-artifacts:/model-versions/{name}/1"})
    # A path inside a version, as the client lists and downloads it through the artifact proxy.
    status, body = call(
        "GET", "/api/2.0/mlflow-artifacts/artifacts", query={"path": f"model-versions/{name}/1"}
    )
    assert status == 200 and "MLmodel" in {f["path"] for f in body["files"]}
    status, text = call("GET", f"/api/2.0/mlflow-artifacts/artifacts/model-versions/{name}/1/MLmodel")
    assert status == 200 and "flavors" in text
    # Registry snapshots are read-only through the proxy.
    status, body = call("DELETE", f"/api/2.0/mlflow-artifacts/artifacts/model-versions/{name}/1/MLmodel")
    assert status in (400, 403) and body["error_code"] in ("INVALID_PARAMETER_VALUE", "PERMISSION_DENIED")
    status, body = call("GET", "/api/2.0/mlflow-artifacts/artifacts/model-versions/x/one/MLmodel")
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"


# -- permissions -----------------------------------------------------------------------------------
def test_model_permissions_apply_through_the_port(
    mlflow_port_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With auth, the mlflow client's token is a keel identity and the model's grants apply, to
    the registry calls and to the version's files on the artifact proxy alike."""
    from keel.auth import AuthClient

    admin_token = "admin-" + uuid.uuid4().hex
    server = mlflow_port_server(auth=True, admin_token=admin_token, default_permission="NONE")
    monkeypatch.setenv("KEEL_TRACKING_TOKEN", admin_token)
    name = unique("guarded")
    _, run_id = keel_run_with_model(server, tmp_path)
    auth = AuthClient(server.grpc_uri)
    secrets = {}
    for user in ("reader", "stranger"):
        auth.create_user(user)
        secrets[user] = auth.create_token(user)[1]

    with server.use_mlflow(token=admin_token):
        MlflowClient().create_registered_model(name)
        MlflowClient().create_model_version(name, f"runs:/{run_id}/model")
    auth.grant_permission("READ", user="reader", model_name=name)

    with server.use_mlflow(token=secrets["reader"]):
        assert MlflowClient().get_model_version(name, "1").status == "READY"
        assert predict(f"models:/{name}/1") == expected()
        for denied in (
            lambda: MlflowClient().transition_model_version_stage(name, "1", "Production"),
            lambda: MlflowClient().set_registered_model_alias(name, "champion", "1"),
            lambda: MlflowClient().delete_registered_model(name),
        ):
            with pytest.raises(MlflowException) as excinfo:
                denied()
            assert error_code(excinfo) == "PERMISSION_DENIED"
    with server.use_mlflow(username="stranger", password=secrets["stranger"]):
        with pytest.raises(MlflowException) as excinfo:
            MlflowClient().get_model_version_download_uri(name, "1")
        assert error_code(excinfo) == "PERMISSION_DENIED"
    status, body = server.call(
        "GET",
        f"/api/2.0/mlflow-artifacts/artifacts/model-versions/{name}/1/MLmodel",
        headers={"Authorization": f"Bearer {secrets['stranger']}"},
    )
    assert (status, body["error_code"]) == (403, "PERMISSION_DENIED")
    # The admin's gRPC client (KEEL_TRACKING_TOKEN) sees the version unchanged by the refusals.
    assert server.keel_client().get_model_version(name, 1).current_stage == "None"
