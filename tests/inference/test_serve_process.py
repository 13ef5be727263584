"""`keel models serve` as a separate process, driven by unmodified clients: tritonclient[grpc]
(KServe v2), plain HTTP (MLflow's scoring protocol) and keel's own gRPC Predict.

tritonclient registers the proto package `inference` in protobuf's default pool, so these
tests talk to servers in child processes, as users do."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from serving_helpers import IRIS_COLUMNS, Served, iris_frame, serve_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def iris_server(iris_model: tuple[str, Any]) -> Iterator[Served]:
    with serve_process(
        iris_model[0], "--name", "iris", env={"KEEL_MAX_MESSAGE_BYTES": str(2 * 1024 * 1024)}
    ) as served:
        yield served


@pytest.fixture(scope="module")
def torch_server(torch_model: tuple[str, Any]) -> Iterator[Served]:
    with serve_process(torch_model[0], "--name", "mlp") as served:
        yield served


@pytest.fixture(scope="module")
def triton(iris_server: Served) -> Any:
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(iris_server.target)
    yield client
    client.close()


def _infer_input(name: str, arr: np.ndarray, datatype: str) -> Any:
    import tritonclient.grpc as tg

    item = tg.InferInput(name, list(arr.shape), datatype)
    item.set_data_from_numpy(arr)
    return item


# -- KServe v2 with tritonclient ---------------------------------------------------------------


def test_triton_sklearn_live_ready_metadata(triton: Any) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("iris")
    assert not triton.is_model_ready("iris", "7")  # a version this server does not serve
    meta = triton.get_model_metadata("iris", as_json=True)
    assert [i["name"] for i in meta["inputs"]] == IRIS_COLUMNS
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
    assert meta["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": ["-1"]}]
    assert meta["platform"] == "keel_sklearn"
    assert triton.get_server_metadata(as_json=True)["name"] == "keel"


def test_triton_sklearn_infer_equals_in_process(triton: Any, iris_model: tuple[str, Any]) -> None:
    X, _ = iris_frame()
    rows = X.iloc[::7]
    expected = iris_model[1].predict(rows)
    # one 2-D tensor, columns in signature order
    result = triton.infer("iris", [_infer_input("features", rows.to_numpy(), "FP64")], request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("predictions"), expected)
    assert result.get_response().id == "r1"
    # one tensor per column, FP32 widened to the double columns
    per_column = [_infer_input(c, rows[c].to_numpy(np.float32), "FP32") for c in IRIS_COLUMNS]
    result = triton.infer("iris", per_column)
    np.testing.assert_array_equal(
        result.as_numpy("predictions"), iris_model[1].predict(rows.astype(np.float32))
    )


def test_triton_pytorch_infer_equals_in_process(torch_server: Served, torch_model: tuple[str, Any]) -> None:
    import torch
    import tritonclient.grpc as tg

    client = tg.InferenceServerClient(torch_server.target)
    try:
        assert client.is_server_live() and client.is_model_ready("mlp")
        meta = client.get_model_metadata("mlp", as_json=True)
        assert meta["inputs"][0]["datatype"] == "FP32" and meta["inputs"][0]["shape"] == ["-1", "4"]
        x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
        result = client.infer("mlp", [_infer_input("input_0", x, "FP32")])
        out_name = meta["outputs"][0]["name"]
        with torch.no_grad():
            expected = torch_model[1](torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(result.as_numpy(out_name), expected)
        # wrong dtype and wrong shape: INVALID_ARGUMENT naming expected and got
        with pytest.raises(tg.InferenceServerException) as err:
            client.infer("mlp", [_infer_input("input_0", x.astype(np.float64), "FP64")])
        assert (
            "INVALID_ARGUMENT" in str(err.value.status())
            and "float32" in str(err.value)
            and "float64" in str(err.value)
        )
        with pytest.raises(tg.InferenceServerException) as err:
            client.infer("mlp", [_infer_input("input_0", np.zeros((2, 5), np.float32), "FP32")])
        assert "INVALID_ARGUMENT" in str(err.value.status()) and "shape" in str(err.value)
    finally:
        client.close()


def test_triton_bad_requests(triton: Any) -> None:
    import tritonclient.grpc as tg

    x = np.zeros((1, 4))
    with pytest.raises(tg.InferenceServerException) as err:
        triton.infer("nope", [_infer_input("features", x, "FP64")])
    assert "NOT_FOUND" in str(err.value.status())
    with pytest.raises(tg.InferenceServerException) as err:
        triton.infer("iris", [_infer_input("features", np.zeros((1, 3)), "FP64")])
    assert "INVALID_ARGUMENT" in str(err.value.status())
    with pytest.raises(tg.InferenceServerException) as err:  # strings into double columns
        triton.infer("iris", [_infer_input(c, np.array([b"a"], dtype=object), "BYTES") for c in IRIS_COLUMNS])
    assert "INVALID_ARGUMENT" in str(err.value.status()) and "expected double" in str(err.value)
    with pytest.raises(tg.InferenceServerException) as err:
        triton.infer("iris", [_infer_input("features", x, "FP64")], model_version="abc")
    assert "INVALID_ARGUMENT" in str(err.value.status())
    # oversize: the server accepts at most KEEL_MAX_MESSAGE_BYTES (2 MiB here)
    big = np.zeros((100_000, 4))
    with pytest.raises(tg.InferenceServerException) as err:
        triton.infer("iris", [_infer_input("features", big, "FP64")])
    assert "RESOURCE_EXHAUSTED" in str(err.value.status())


# -- MLflow HTTP scoring ------------------------------------------------------------------------


def test_http_ping_health_version(iris_server: Served) -> None:
    assert requests.get(f"{iris_server.http}/ping", timeout=10).status_code == 200
    health = requests.get(f"{iris_server.http}/health", timeout=10)
    assert health.status_code == 200 and health.json()["deployments"][0]["state"] == "READY"
    import keel

    assert requests.get(f"{iris_server.http}/version", timeout=10).text == keel.__version__


@pytest.mark.parametrize(
    "body",
    [
        lambda rows: {"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows.values.tolist()}},
        lambda rows: {"dataframe_records": rows.to_dict(orient="records")},
        lambda rows: {"instances": rows.to_dict(orient="records")},
        lambda rows: {"inputs": rows.values.tolist()},
        lambda rows: {"inputs": {c: rows[c].tolist() for c in IRIS_COLUMNS}},
        # the seed's curl example: MLflow 1.x's bare split orient
        lambda rows: {"columns": IRIS_COLUMNS, "data": rows.values.tolist()},
    ],
    ids=["dataframe_split", "dataframe_records", "instances", "inputs_rows", "inputs_columns", "bare_split"],
)
def test_http_invocations_json_formats(iris_server: Served, iris_model: tuple[str, Any], body: Any) -> None:
    X, _ = iris_frame()
    rows = X.iloc[::10]
    reply = requests.post(f"{iris_server.http}/invocations", json=body(rows), timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"predictions": iris_model[1].predict(rows).tolist()}


def test_http_invocations_csv(iris_server: Served, iris_model: tuple[str, Any]) -> None:
    X, _ = iris_frame()
    rows = X.iloc[::10]
    reply = requests.post(
        f"{iris_server.http}/invocations",
        data=rows.to_csv(index=False),
        headers={"Content-Type": "text/csv"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"] == iris_model[1].predict(rows).tolist()


@pytest.mark.parametrize(
    ("data", "content_type", "status", "words"),
    [
        ('{"dataframe_split": ', "application/json", 400, "not valid JSON"),
        ("[1, 2]", "application/json", 400, "must be an object"),
        ('{"dataframe_records": [{"sepal_length": 1}]}', "application/json", 400, "missing input columns"),
        ('{"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}', "application/json", 400, "row 0"),
        ('{"inputs": [[1]], "instances": [[1]]}', "application/json", 400, "exactly one"),
        ('{"dataframe_records": [{"sepal_length": "x", "sepal_width": 1, "petal_length": 1, "petal_width": 1}]}',
         "application/json", 400, "expected double, got string"),
        ("", "text/csv", 400, "empty"),
        ('sepal_length,sepal_width\n"1,2\n', "text/csv", 400, "CSV"),
        ("a=1", "application/x-www-form-urlencoded", 415, "Content-Type"),
        ("{}", "application/json; charset=latin-1", 415, "charset"),
    ],
)  # fmt: skip
def test_http_bad_input(iris_server: Served, data: str, content_type: str, status: int, words: str) -> None:
    reply = requests.post(
        f"{iris_server.http}/invocations", data=data, headers={"Content-Type": content_type}, timeout=10
    )
    assert reply.status_code == status, reply.text
    assert words in reply.json()["message"]
    assert reply.json()["error_code"]


def test_http_oversize_and_unknown(iris_server: Served) -> None:
    big = json.dumps({"inputs": np.zeros((100_000, 4)).tolist()})
    reply = requests.post(
        f"{iris_server.http}/invocations", data=big, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert reply.status_code == 413 and "over the limit" in reply.json()["message"]
    reply = requests.post(
        f"{iris_server.http}/deployments/nope/invocations", json={"inputs": [[1, 2, 3, 4]]}, timeout=10
    )
    assert reply.status_code == 404
    assert requests.get(f"{iris_server.http}/nothing", timeout=10).status_code == 404
    # the server is still healthy afterwards
    assert requests.get(f"{iris_server.http}/ping", timeout=10).status_code == 200


# -- keel's own Predict against the same process ------------------------------------------------


def test_keel_predict_and_static_deployment(iris_server: Served, iris_model: tuple[str, Any]) -> None:
    import keel
    from keel.exceptions import FailedPrecondition, InvalidArgument

    client = keel.Client(f"grpc://{iris_server.target}")
    X, _ = iris_frame()
    rows = X.iloc[:5]
    got = client.predict("iris", rows)
    assert got.predictions == iris_model[1].predict(rows).tolist()
    assert [d.name for d in client.list_deployments()] == ["iris"]
    with pytest.raises(FailedPrecondition):
        client.create_deployment("other", iris_model[0])
    with pytest.raises(InvalidArgument) as err:
        client.predict("iris", {"dataframe_split": {"columns": ["x"], "data": [[1]]}})
    assert err.value.reason == "SIGNATURE_MISMATCH"


# -- failures -------------------------------------------------------------------------------------


def test_model_that_fails_to_load_keeps_server_up(broken_model: str) -> None:
    import tritonclient.grpc as tg

    import keel

    with serve_process(broken_model, "--name", "broken") as served:
        client = tg.InferenceServerClient(served.target)
        try:
            assert client.is_server_live()
            assert not client.is_model_ready("broken")
            assert not client.is_server_ready()
        finally:
            client.close()
        deployment = keel.Client(f"grpc://{served.target}").get_deployment("broken")
        assert deployment.state == "FAILED" and "failed to load" in deployment.state_message
        health = requests.get(f"{served.http}/health", timeout=10)
        assert health.status_code == 503 and "failed to load" in health.json()["deployments"][0]["message"]
        reply = requests.post(f"{served.http}/invocations", json={"inputs": [[1, 2, 3, 4]]}, timeout=10)
        assert reply.status_code == 503 and "failed to load" in reply.json()["message"]


def test_keel_and_tritonclient_in_one_process(iris_model: tuple[str, Any]) -> None:
    """The trap: keel's KServe server and tritonclient both define proto package `inference`.
    In a fresh interpreter: import keel and tritonclient, run an in-process keel server with the
    inference service, and call it with tritonclient and the keel SDK."""
    code = f"""
import keel, tritonclient.grpc as tg, numpy as np
from keel_server.inference.standalone import ServeOptions, build
running, runtime = build(ServeOptions(model_uri={iris_model[0]!r}, name="iris", port=0, http_port=0))
c = tg.InferenceServerClient(f"127.0.0.1:{{running.port}}")
i = tg.InferInput("x", [1, 4], "FP64"); i.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]]))
assert c.infer("iris", [i]).as_numpy("predictions").tolist() == [0]
assert keel.Client(f"grpc://127.0.0.1:{{running.port}}").predict("iris", [[5.1, 3.5, 1.4, 0.2]]).predictions == [0]
running.stop(0)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_keel_models_serve_with_workers(iris_model: tuple[str, Any]) -> None:
    """`keel models serve --workers 2` (the CLI users type): both workers share the ports; many
    connections are answered; SIGTERM stops the supervisor and its workers."""
    import os
    import re
    import signal

    from server_fixtures import free_port

    http_port = free_port()
    cmd = [sys.executable, "-m", "keel.cli", "models", "serve", "-m", iris_model[0], "--port", str(http_port),
           "--grpc-port", "0", "--workers", "2", "--max-batch-size", "8"]  # fmt: skip
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert re.search(r"listening on 127\.0\.0\.1:\d+ \(http 127\.0\.0\.1:\d+\) with 2 workers", line), (
            line
        )
        X, _ = iris_frame()
        body = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": X.iloc[:3].values.tolist()}}
        for _ in range(10):  # a new connection each time: the kernel spreads them over the workers
            reply = requests.post(f"http://127.0.0.1:{http_port}/invocations", json=body, timeout=10)
            assert reply.status_code == 200 and reply.json() == {
                "predictions": iris_model[1].predict(X.iloc[:3]).tolist()
            }
        children = [
            int(p)
            for p in subprocess.run(
                ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
            ).stdout.split()
        ]
        assert len(children) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
