"""MLflow's names and habits in keel's SDK: ``MlflowClient``, ``python -m keel``, an ``http://``
tracking URI that is a keel server's MLflow port, ``log_model(name=...)``, pytorch's
``serialization_format``, ``keel models serve --port`` as HTTP, ``search_runs``'s columns and
system tags, and ``MlflowException`` with MLflow's error codes."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from server_fixtures import ServerHandle, free_port, server_process

import keel
import keel.pyfunc
import keel.pytorch
import keel.sklearn
from keel import exceptions as ex
from keel._transport import SERVER_INFO_PATH, resolve_tracking_uri
from keel.cli import serving

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# MlflowClient, python -m keel
# ---------------------------------------------------------------------------------------------


def test_mlflow_client_is_keel_client_under_every_import_path() -> None:
    from keel import MlflowClient
    from keel.client import MlflowClient as FromClient
    from keel.tracking import MlflowClient as FromTracking

    assert MlflowClient is FromClient is FromTracking is keel.Client is keel.MlflowClient
    assert keel.client.MlflowClient is keel.tracking.MlflowClient is keel.Client
    with pytest.raises(AttributeError):
        keel.tracking.NoSuchName  # noqa: B018


def test_python_dash_m_keel_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "keel", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "usage: keel" in done.stdout and "models" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "keel", "no-such-command"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


# ---------------------------------------------------------------------------------------------
# MlflowException and MLflow's error codes
# ---------------------------------------------------------------------------------------------


def test_mlflow_error_code_table_covers_every_grpc_status_but_ok() -> None:
    assert set(ex.MLFLOW_ERROR_CODES) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert ex.MLFLOW_ERROR_CODES[grpc.StatusCode.NOT_FOUND] == ("RESOURCE_DOES_NOT_EXIST", 404)
    assert ex.MLFLOW_ERROR_CODES[grpc.StatusCode.ALREADY_EXISTS] == ("RESOURCE_ALREADY_EXISTS", 400)
    assert ex.MLFLOW_ERROR_CODES[grpc.StatusCode.INVALID_ARGUMENT] == ("INVALID_PARAMETER_VALUE", 400)
    assert ex.MLFLOW_ERROR_CODES[grpc.StatusCode.UNAVAILABLE] == ("TEMPORARILY_UNAVAILABLE", 503)
    assert ex.MLFLOW_ERROR_CODES[grpc.StatusCode.CANCELLED] == ("CANCELLED", 499)
    for name, status in ex.MLFLOW_ERROR_CODES.values():
        assert getattr(ex.ErrorCode, name) == name and 400 <= status < 600


@pytest.mark.parametrize(
    ("error", "code", "http"),
    [
        (ex.NotFound("x", reason="RUN_NOT_FOUND"), "RESOURCE_DOES_NOT_EXIST", 404),
        (ex.AlreadyExists("x"), "RESOURCE_ALREADY_EXISTS", 400),
        (ex.InvalidArgument("x"), "INVALID_PARAMETER_VALUE", 400),
        (ex.FailedPrecondition("x"), "INVALID_STATE", 400),
        (ex.PermissionDenied("x"), "PERMISSION_DENIED", 403),
        (ex.Unauthenticated("x"), "UNAUTHENTICATED", 401),
        (ex.Unavailable("x"), "TEMPORARILY_UNAVAILABLE", 503),
        (ex.Internal("x"), "INTERNAL_ERROR", 500),
        (ex.DataLoss("x"), "INTERNAL_ERROR", 500),
        (ex.KeelError("x"), "INTERNAL_ERROR", 500),
    ],
)
def test_keel_errors_read_as_mlflow_exceptions(error: ex.KeelError, code: str, http: int) -> None:
    with pytest.raises(ex.MlflowException) as caught:
        raise error
    assert caught.value.error_code == code and caught.value.get_http_status_code() == http
    assert json.loads(caught.value.serialize_as_json()) == {"error_code": code, "message": "x"}
    assert caught.value.reason  # keel's reason stays alongside


def test_mlflow_exception_raised_the_mlflow_way() -> None:
    err = ex.MlflowException("no such model", error_code=ex.RESOURCE_DOES_NOT_EXIST)
    assert isinstance(err, ex.NotFound) and err.code == grpc.StatusCode.NOT_FOUND
    assert err.error_code == "RESOURCE_DOES_NOT_EXIST" and str(err).startswith("no such model")
    # MLflow's proto enum numbers are accepted too (3001 = RESOURCE_ALREADY_EXISTS)
    assert isinstance(ex.MlflowException("dup", error_code=3001), ex.AlreadyExists)
    assert ex.MlflowException("x", error_code=ex.ErrorCode.BAD_REQUEST).error_code == "BAD_REQUEST"
    assert ex.MlflowException("plain").error_code == "INTERNAL_ERROR"
    assert ex.MlflowException("odd", error_code=424242).error_code == "INTERNAL_ERROR"
    invalid = ex.MlflowException.invalid_parameter_value("bad")
    assert isinstance(invalid, ex.InvalidArgument) and invalid.error_code == "INVALID_PARAMETER_VALUE"


# ---------------------------------------------------------------------------------------------
# http:// tracking URIs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def port_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, str]]:
    root = tmp_path_factory.mktemp("names")
    mlflow_port = free_port()
    env = {"KEEL_DB_URL": f"sqlite:///{root}/keel.db", "KEEL_ARTIFACT_URI": f"file://{root}/artifacts"}
    with server_process(["--mlflow-port", str(mlflow_port)], env=env, cwd=root) as handle:
        yield handle, f"http://127.0.0.1:{mlflow_port}"


def test_http_uri_of_an_mlflow_port_means_its_grpc_service(port_server: tuple[ServerHandle, str]) -> None:
    handle, url = port_server
    assert resolve_tracking_uri(url) == handle.uri
    assert resolve_tracking_uri(url + "/") == handle.uri
    client = keel.Client(url)
    assert client.tracking_uri == handle.uri
    experiment_id = client.create_experiment("via-http")
    assert keel.Client(handle.uri).get_experiment(experiment_id).name == "via-http"
    # the variable, in a fresh process; MLFLOW_TRACKING_URI is not read
    code = "import keel; print(keel.get_tracking_uri()); print(keel.get_experiment_by_name('via-http').experiment_id)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_TRACKING", "MLFLOW_"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "KEEL_TRACKING_URI": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [handle.uri, experiment_id]
    ignored = subprocess.run(
        [sys.executable, "-c", "import keel; print(keel.get_tracking_uri())"],
        env={**env, "MLFLOW_TRACKING_URI": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ignored.stdout.strip() == "grpc://127.0.0.1:50051"


def test_set_tracking_uri_http_then_fluent_calls_use_grpc(port_server: tuple[ServerHandle, str]) -> None:
    handle, url = port_server
    code = f"""
import keel
keel.set_tracking_uri({url!r})
assert keel.get_tracking_uri() == {handle.uri!r}, keel.get_tracking_uri()
with keel.start_run() as run:
    keel.log_metric("m", 1.0)
print(run.info.run_id)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert keel.Client(handle.uri).get_run(done.stdout.strip()).data.metrics == {"m": 1.0}


class _Stub(BaseHTTPRequestHandler):
    """Not a keel MLflow port: answers its paths with fixed bodies."""

    answers = {
        SERVER_INFO_PATH: (200, b"<html>not json</html>"),
    }

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status, body = self.answers.get(
            self.path.split("?")[0], (404, b'{"error_code": "ENDPOINT_NOT_FOUND"}')
        )
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def stub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


ADVICE = "keel speaks gRPC; use grpc://host:port"


def test_http_uri_that_is_not_a_keel_port_says_what_to_do(stub_url: str) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for uri, why in [
        (closed, "cannot reach"),
        (stub_url + "/prefix", "answered HTTP 404"),  # an MLflow server, or anything else
        (stub_url, "did not answer keel's server info"),  # 200, but not JSON
        ("http://:5000", "not a URL of the form"),
    ]:
        with pytest.raises(ex.InvalidArgument) as caught:
            keel.set_tracking_uri(uri)
        message = str(caught.value)
        assert ADVICE in message and "--mlflow-port" in message and why in message, message
        assert caught.value.reason == "INVALID_TRACKING_URI"
        with pytest.raises(ex.InvalidArgument):
            keel.Client(uri)
    assert keel.get_tracking_uri() != closed  # a refused URI is not kept


def test_server_info_with_a_wildcard_host_is_reached_where_the_port_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = json.dumps({"grpc_uri": "grpc://0.0.0.0:50999", "keel_version": "x"}).encode()
    monkeypatch.setitem(_Stub.answers, SERVER_INFO_PATH, (200, body))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert (
            resolve_tracking_uri(f"http://127.0.0.1:{server.server_address[1]}") == "grpc://127.0.0.1:50999"
        )
        monkeypatch.setitem(_Stub.answers, SERVER_INFO_PATH, (200, b'{"grpc_uri": "ftp://x"}'))
        with pytest.raises(ex.InvalidArgument, match="not a grpc:// URI"):
            resolve_tracking_uri(f"http://localhost:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# log_model(name=...), serialization_format
# ---------------------------------------------------------------------------------------------


def test_log_model_takes_name_as_mlflow_3_does(port_server: tuple[ServerHandle, str]) -> None:
    handle, _ = port_server
    from sklearn.linear_model import LinearRegression

    keel.set_tracking_uri(handle.uri)
    X = np.arange(12, dtype=float).reshape(6, 2)
    model = LinearRegression().fit(X, X.sum(axis=1))
    with keel.start_run() as run:
        by_name = keel.sklearn.log_model(model, name="by-name")
        by_path = keel.sklearn.log_model(model, artifact_path="by-path")
        same = keel.sklearn.log_model(model, artifact_path="same", name="same")
        default = keel.pyfunc.log_model(python_model=_Doubler())
        with pytest.raises(ex.InvalidArgument, match="pass one of them"):
            keel.sklearn.log_model(model, artifact_path="a", name="b")
        with pytest.raises(ex.MlflowException):
            keel.pyfunc.log_model("a", python_model=_Doubler(), name="b")
    assert by_name.model_uri == f"runs:/{run.info.run_id}/by-name"
    assert (by_path.artifact_path, same.artifact_path, default.artifact_path) == ("by-path", "same", "model")
    assert keel.pyfunc.load_model(by_name.model_uri).predict(X[:1]).tolist() == model.predict(X[:1]).tolist()
    assert keel.pyfunc.load_model(default.model_uri).predict(pd.DataFrame({"a": [1.0]})) == [2.0]


class _Doubler(keel.pyfunc.PythonModel):
    def predict(self, context: object, model_input: pd.DataFrame) -> list[float]:
        return [2 * float(v) for v in model_input.iloc[:, 0]]


def test_pytorch_serialization_formats(port_server: tuple[ServerHandle, str], tmp_path: Path) -> None:
    import torch

    handle, _ = port_server
    keel.set_tracking_uri(handle.uri)
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5))
    example = np.ones((1, 3), dtype=np.float32)  # one row: the batch dimension still stays free
    with keel.start_run():
        exported = keel.pytorch.log_model(
            module, name="pt2", input_example=example, serialization_format="pt2"
        )
        pickled = keel.pytorch.log_model(module, name="pickled", serialization_format="pickle")
        with pytest.raises(ex.InvalidArgument, match="'pickle'.*'pt2'") as caught:
            keel.pytorch.log_model(module, name="x", serialization_format="torchscript")
        assert caught.value.reason == "UNSUPPORTED_FORMAT"
        with pytest.raises(ex.InvalidArgument, match="input_example"):
            keel.pytorch.log_model(module, name="y", serialization_format="pt2")
    assert module.training  # exporting traced it in eval mode and put it back
    files = {f.path for f in keel.Client(handle.uri).list_artifacts(exported.run_id, "pt2/data")}
    assert files == {"pt2/data/model.pt2"}
    batch = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    got = keel.pyfunc.load_model(exported.model_uri).predict(batch)
    module.eval()
    want = module(torch.from_numpy(batch)).detach().numpy()
    assert got.shape == (5, 2) and np.allclose(got, want, atol=1e-6)
    assert np.allclose(keel.pyfunc.load_model(pickled.model_uri).predict(batch), want, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# search_runs columns and system tags
# ---------------------------------------------------------------------------------------------


def test_search_runs_dataframe_has_mlflow_columns_and_system_tags(
    port_server: tuple[ServerHandle, str],
) -> None:
    handle, _ = port_server
    keel.set_tracking_uri(handle.uri)
    keel.set_experiment("frame-columns")
    with keel.start_run(run_name="first") as first:
        keel.log_metric("rmse", 0.5)
        keel.log_param("model", "cnn")
    with keel.start_run(run_name="second", tags={"mlflow.source.type": "JOB", "team": "cv"}) as second:
        keel.log_param("lr", "0.1")
    frame = keel.search_runs(order_by=["attributes.start_time ASC"])
    assert list(frame.columns[:6]) == [
        "run_id",
        "experiment_id",
        "status",
        "artifact_uri",
        "start_time",
        "end_time",
    ]
    assert list(frame["run_id"]) == [first.info.run_id, second.info.run_id]
    assert str(frame["start_time"].dtype) == "datetime64[ns, UTC]" == str(frame["end_time"].dtype)
    assert frame["end_time"].notna().all()
    assert list(frame["tags.mlflow.runName"]) == ["first", "second"]
    assert frame["tags.mlflow.user"].notna().all()
    assert list(frame["tags.mlflow.source.type"]) == ["LOCAL", "JOB"]  # the user's tag wins
    assert frame["tags.mlflow.source.name"].iloc[0] == (sys.argv[0] or "<console>")
    # the test runs from keel's git checkout: the commit is known
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if head and os.path.isfile(sys.argv[0]):
        assert frame["tags.mlflow.source.git.commit"].iloc[0] in (head, None)
    # missing values as MLflow writes them (NaN for metrics, None for params and tags, which
    # pandas 3's string columns hold as NaN)
    assert np.isnan(frame["metrics.rmse"].iloc[1]) and pd.isna(frame["params.model"].iloc[1])
    assert pd.isna(frame["tags.team"].iloc[0]) and pd.isna(frame["params.lr"].iloc[0])
    metric_at = list(frame.columns).index("metrics.rmse")
    assert metric_at < list(frame.columns).index("params.model") < list(frame.columns).index("tags.team")
    empty = keel.search_runs(filter_string="params.model = 'nothing'")
    assert list(empty.columns[:6]) == list(frame.columns[:6]) and len(empty) == 0


def test_runs_of_experiment_zero_exist_as_on_mlflow(port_server: tuple[ServerHandle, str]) -> None:
    handle, _ = port_server
    keel.set_tracking_uri(handle.uri)
    with keel.start_run(experiment_id=0) as run:
        pass
    assert run.info.experiment_id == "0"
    assert run.info.run_id in set(keel.search_runs(experiment_ids=[0])["run_id"])


def test_git_context_of_a_checkout(tmp_path: Path) -> None:
    from keel.fluent import _git_context

    assert _git_context(str(tmp_path)) == {}  # not a checkout
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "remote", "add", "origin", "https://user:secret@example.com/r.git"],
        check=True,
    )
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "a",
        "GIT_AUTHOR_EMAIL": "a@b",
        "GIT_COMMITTER_NAME": "a",
        "GIT_COMMITTER_EMAIL": "a@b",
    }
    subprocess.run(
        ["git", "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True, env=env
    )
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert _git_context(str(tmp_path)) == {
        "mlflow.source.git.commit": head,
        "mlflow.source.git.branch": "main",
        "mlflow.source.git.repoURL": "https://example.com/r.git",  # credentials dropped
    }


# ---------------------------------------------------------------------------------------------
# keel models serve --port: HTTP, as mlflow models serve
# ---------------------------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serving.add_arguments(parser)
    return parser.parse_args(["-m", "model", *argv])


def test_serve_port_flags(capsys: pytest.CaptureFixture[str]) -> None:
    http = free_port()
    grpc_port, http_port = serving.resolve_ports(_args("--port", str(http)))
    assert http_port == http and grpc_port > http  # the first free port after it
    assert serving.resolve_ports(_args("-p", str(http), "--grpc-port", "7001")) == (7001, http)
    assert capsys.readouterr().err == ""
    # the old form: --port is gRPC when --http-port is given, with a warning
    assert serving.resolve_ports(_args("--port", "8500", "--http-port", "8080")) == (8500, 8080)
    assert "deprecated" in capsys.readouterr().err
    assert serving.resolve_ports(_args("--port", "8500", "--http-port", "8080", "--reuse-port")) == (
        8500,
        8080,
    )
    assert capsys.readouterr().err == ""  # model workers are started with the old form
    assert serving.resolve_ports(_args("--http-port", "0", "--grpc-port", "0")) == (0, 0)  # HTTP off
    with pytest.raises(ValueError, match="drop --port"):
        serving.resolve_ports(_args("--port", "1", "--grpc-port", "2", "--http-port", "3"))
    default_grpc, default_http = serving.resolve_ports(_args())
    assert default_http == serving.DEFAULT_HTTP_PORT and default_grpc != default_http
    _, any_http = serving.resolve_ports(_args("--port", "0"))
    assert any_http > 0


def test_models_serve_port_is_http_as_mlflow(tmp_path: Path) -> None:
    """``keel models serve -m PATH --port P`` answers MLflow's scoring on P (the seed's command
    line); gRPC listens on the port the ready line names."""
    import requests

    from keel.pyfunc import save_model

    save_model(str(tmp_path / "m"), python_model=_Doubler())
    http = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keel", "models", "serve", "-m", str(tmp_path / "m"), "--port", str(http)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"(http 127.0.0.1:{http})" in line, line + (
            process.stderr.read() if process.poll() is not None else ""
        )
        grpc_port = int(line.split("listening on 127.0.0.1:")[1].split()[0])
        assert grpc_port != http
        reply = requests.post(
            f"http://127.0.0.1:{http}/invocations",
            json={"columns": ["a"], "data": [[1.0], [2.5]]},
            timeout=30,
        )
        assert reply.status_code == 200 and reply.json() == {"predictions": [2.0, 5.0]}
        assert keel.Client(f"grpc://127.0.0.1:{grpc_port}").predict(
            "m", pd.DataFrame({"a": [3.0]})
        ).predictions == [6.0]
    finally:
        process.terminate()
        process.wait(timeout=30)
