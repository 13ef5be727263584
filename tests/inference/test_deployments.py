"""Deployments on an in-process `keel server` (all services) over each database backend:
CRUD, keel Predict in every input format, PredictStream, micro-batching, a model that fails to
load, bad requests, and following a stage move under load."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from backends import make_database_url, selected_backends
from server_fixtures import ServerHandle, free_port, running_server
from serving_helpers import IRIS_COLUMNS, iris_frame, save_iris

import keel
from keel.exceptions import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound


@pytest.fixture(scope="module", params=selected_backends())
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerHandle]:
    root = tmp_path_factory.mktemp(f"inference-{request.param}")
    with make_database_url(request.param, root) as db_url:
        # a fast registry poll so stage moves are picked up within the test's patience
        with running_server(
            db_url, f"file://{root}/artifacts", registry_poll_seconds=0.2, http_port=free_port()
        ) as handle:
            yield handle


@pytest.fixture()
def client(server: ServerHandle) -> keel.Client:
    keel.set_tracking_uri(server.uri)
    return keel.Client(server.uri)


def test_deployment_crud_and_predict_formats(client: keel.Client, iris_model: tuple[str, Any]) -> None:
    path, sk = iris_model
    created = client.create_deployment("iris-crud", path)
    assert created.state == "READY", created.state_message
    assert created.flavors == ["python_function", "sklearn"]
    with pytest.raises(AlreadyExists):
        client.create_deployment("iris-crud", path)
    assert "iris-crud" in [d.name for d in client.list_deployments()]
    X, _ = iris_frame()
    rows = X.iloc[::15]
    want = sk.predict(rows).tolist()
    assert client.predict("iris-crud", rows).predictions == want  # DataFrame → dataframe_split
    assert client.predict("iris-crud", {"dataframe_records": rows.to_dict("records")}).predictions == want
    assert client.predict("iris-crud", rows.to_csv(index=False)).predictions == want  # CSV
    tensor = client.predict("iris-crud", rows.to_numpy())  # typed tensor in, tensor out
    np.testing.assert_array_equal(tensor.predictions, sk.predict(rows))
    named = client.predict("iris-crud", {c: rows[c].to_numpy() for c in IRIS_COLUMNS})
    np.testing.assert_array_equal(named.predictions, sk.predict(rows))
    client.delete_deployment("iris-crud")
    with pytest.raises(NotFound):
        client.get_deployment("iris-crud")
    with pytest.raises(NotFound):
        client.predict("iris-crud", rows)


def test_predict_stream_reports_errors_in_line(client: keel.Client, iris_model: tuple[str, Any]) -> None:
    client.create_deployment("iris-stream", iris_model[0])
    X, _ = iris_frame()
    inputs = [X.iloc[:2], {"dataframe_split": {"columns": ["x"], "data": [[1]]}}, X.iloc[2:3]]
    out = list(client.predict_stream("iris-stream", inputs))
    assert out[0].predictions == iris_model[1].predict(X.iloc[:2]).tolist()
    assert isinstance(out[1], InvalidArgument) and "missing input column" in str(out[1])
    assert out[2].predictions == iris_model[1].predict(X.iloc[2:3]).tolist()
    client.delete_deployment("iris-stream")


def test_micro_batching_gives_the_same_answers(client: keel.Client, iris_model: tuple[str, Any]) -> None:
    created = client.create_deployment("iris-batch", iris_model[0], max_batch_size=32, max_batch_delay_ms=5)
    assert created.max_batch_size == 32
    X, _ = iris_frame()
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = client.predict("iris-batch", X.iloc[i : i + 1]).predictions
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(0, 150, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert results == {i: iris_model[1].predict(X.iloc[i : i + 1]).tolist() for i in range(0, 150, 3)}
    # a bad request in a batch window fails alone
    with pytest.raises(InvalidArgument):
        client.predict("iris-batch", {"dataframe_records": [{"sepal_length": 1.0}]})
    client.delete_deployment("iris-batch")


def test_failed_load_is_reported_not_fatal(
    client: keel.Client, broken_model: str, iris_model: tuple[str, Any]
) -> None:
    failed = client.create_deployment("broken", broken_model)
    assert failed.state == "FAILED" and "failed to load" in failed.state_message
    with pytest.raises(FailedPrecondition) as err:
        client.predict("broken", [[1, 2, 3, 4]])
    assert err.value.reason == "DEPLOYMENT_FAILED"
    missing = client.create_deployment("missing", "/no/such/model/dir")
    assert missing.state == "FAILED" and "does not exist" in missing.state_message
    ok = client.create_deployment("still-ok", iris_model[0])  # the server keeps serving others
    assert ok.state == "READY"
    for name in ("broken", "missing", "still-ok"):
        client.delete_deployment(name)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"name": "Bad_Name", "model_uri": "/x"}, "INVALID_DEPLOYMENT_NAME"),
        ({"name": "x", "model_uri": ""}, "INVALID_MODEL_URI"),
        ({"name": "x", "model_uri": "models:/m/notastage"}, "INVALID_MODEL_URI"),
        ({"name": "x", "model_uri": "ftp://h/m"}, "INVALID_MODEL_URI"),
        ({"name": "x", "model_uri": "/x", "max_batch_size": -1}, "INVALID_BATCHING"),
        ({"name": "x", "model_uri": "/x", "max_batch_delay_ms": 5000}, "INVALID_BATCHING"),
    ],
)
def test_create_deployment_validation(client: keel.Client, kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        client.create_deployment(**kwargs, wait_ready=False)
    assert err.value.reason == reason


def test_bad_predict_requests(client: keel.Client, iris_model: tuple[str, Any]) -> None:
    from keel.inference.v1 import inference_pb2

    client.create_deployment("iris-bad", iris_model[0])
    stub = client._inference()
    cases = [
        (inference_pb2.PredictRequest(deployment="iris-bad"), "MISSING_INPUT"),
        (inference_pb2.PredictRequest(deployment="iris-bad", json="{"), "MALFORMED_JSON"),
        (inference_pb2.PredictRequest(deployment="iris-bad", csv="a,b\n1"), "SIGNATURE_MISMATCH"),
        (
            inference_pb2.PredictRequest(deployment="iris-bad", json='{"inputs": [[1]]}', params_json="[1]"),
            "MALFORMED_JSON",
        ),
    ]
    bad_tensor = inference_pb2.PredictRequest(deployment="iris-bad")
    bad_tensor.tensors.tensors.add(name="x", datatype="FP64", shape=[1, 4], data=b"\0" * 8)
    cases.append((bad_tensor, "INVALID_TENSOR_DATA"))
    bad_type = inference_pb2.PredictRequest(deployment="iris-bad")
    bad_type.tensors.tensors.add(name="x", datatype="FLOAT", shape=[1], data=b"\0" * 4)
    cases.append((bad_type, "INVALID_DATATYPE"))
    for request, reason in cases:
        with pytest.raises(InvalidArgument) as err:
            client._transport.call(stub.Predict, request, idempotent=True)
        assert err.value.reason == reason, (request, err.value)
    with pytest.raises(NotFound) as nf:
        client.predict("iris-bad", [[1, 2, 3, 4]], model_version=9)
    assert nf.value.reason == "MODEL_VERSION_NOT_LOADED"
    client.delete_deployment("iris-bad")


def test_follows_stage_moves_under_load(client: keel.Client, tmp_path: Any) -> None:
    """Requests keep flowing while version 2 is moved to Production: none fails and the
    answering version changes from 1 to 2."""
    import keel.sklearn

    name = f"follow-{int(time.time() * 1000) % 100000}"
    for seed in (1, 2):
        model = save_iris(tmp_path / f"v{seed}", seed=seed, n_estimators=5)
        with keel.start_run():
            keel.sklearn.log_model(model, "model", registered_model_name=name)
    client.transition_model_version_stage(name, 1, "Production")
    deployment = client.create_deployment("follow", f"models:/{name}/Production")
    assert deployment.state == "READY" and deployment.model_version == 1, deployment
    X, _ = iris_frame()
    versions: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                versions.append(client.predict("follow", X.iloc[:1]).model_version)
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        while len(versions) < 20 and not failures:
            time.sleep(0.01)
        client.transition_model_version_stage(name, 2, "Production", archive_existing_versions=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not versions or versions[-1] != 2) and not failures:
            time.sleep(0.05)
        settled = len(versions)
        while len(versions) < settled + 20 and time.monotonic() < deadline + 5 and not failures:
            time.sleep(0.01)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert not failures, failures[:3]
    assert versions[0] == 1 and versions[-1] == 2
    assert client.get_deployment("follow").model_version == 2
    client.delete_deployment("follow")


def test_http_port_of_keel_server(
    server: ServerHandle, client: keel.Client, iris_model: tuple[str, Any]
) -> None:
    """`keel server --http-port`: MLflow scoring per deployment; /invocations needs a name
    when several deployments exist."""
    import requests

    base = f"http://127.0.0.1:{server.settings.http_port}"
    for name in ("http-a", "http-b"):
        client.create_deployment(name, iris_model[0])
    X, _ = iris_frame()
    body = {"dataframe_records": X.iloc[:2].to_dict("records")}
    want = {"predictions": iris_model[1].predict(X.iloc[:2]).tolist()}
    reply = requests.post(f"{base}/deployments/http-a/invocations", json=body, timeout=10)
    assert reply.status_code == 200 and reply.json() == want
    assert requests.post(f"{base}/invocations?deployment=http-b", json=body, timeout=10).json() == want
    reply = requests.post(f"{base}/invocations", json=body, timeout=10)
    assert reply.status_code == 400 and reply.json()["reason"] == "DEPLOYMENT_REQUIRED"
    assert requests.get(f"{base}/ping", timeout=10).status_code == 200
    for name in ("http-a", "http-b"):
        client.delete_deployment(name)
