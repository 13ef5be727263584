"""The MLflow port's artifact routes with the real mlflow client: the artifact proxy
(``/api/2.0/mlflow-artifacts/artifacts``) up, down, listed and deleted, the tracking API's
listing, the UI's file reads, multipart and presigned fallbacks, flat memory for a big file in a
``keel server`` process, bad inputs over raw HTTP, and the same files through keel's gRPC SDK."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from artifact_helpers import (
    artifact_repo,
    memory_kib,
    port_server_process,
    proxy_path,
    raw_http,
    reset_peak_rss,
    sha256_of,
    write_random_file,
)

import keel

LIST = "/api/2.0/mlflow-artifacts/artifacts"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def sdk(mlflow_port: Any) -> Any:
    return keel.Client(mlflow_port.grpc_uri)


@pytest.fixture()
def run(sdk: Any, request: pytest.FixtureRequest) -> tuple[str, str]:
    """(experiment id, run id) of a fresh run, made through keel's gRPC SDK."""
    experiment_id = sdk.create_experiment(f"artifacts-{request.node.name}"[:200])
    return experiment_id, sdk.create_run(experiment_id).info.run_id


def make_tree(root: Path) -> Path:
    """A folder with a file, a nested file and a name that needs URL quoting."""
    tree = root / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha")
    (tree / "sub" / "b.json").write_text('{"b": 1}')
    (tree / "sub" / "deeper" / "c d%.bin").write_bytes(b"\x00\x01\x02")
    return tree


def local_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# -- the mlflow client end to end -----------------------------------------------------------------
def test_fluent_log_list_download_and_the_grpc_door(mlflow_port: Any, sdk: Any, tmp_path: Path) -> None:
    """mlflow.log_artifact / log_artifacts in a run, MlflowClient.list_artifacts and
    download_artifacts (a file and a folder); keel's SDK sees the same files."""
    import mlflow

    tree = make_tree(tmp_path)
    single = tmp_path / "report.html"
    single.write_text("<h1>report</h1>")
    with mlflow.start_run() as active:
        mlflow.log_artifact(str(single))
        mlflow.log_artifacts(str(tree), artifact_path="tree")
        run_id = active.info.run_id
        assert active.info.artifact_uri.startswith("mlflow-artifacts:/")
    client = mlflow.MlflowClient()
    root = {(f.path, f.is_dir, f.file_size) for f in client.list_artifacts(run_id)}
    assert root == {("report.html", False, len(single.read_bytes())), ("tree", True, None)}
    assert [(f.path, f.is_dir) for f in client.list_artifacts(run_id, "tree/sub")] == [
        ("tree/sub/b.json", False),
        ("tree/sub/deeper", True),
    ]
    down = tmp_path / "down"
    down.mkdir()
    folder = client.download_artifacts(run_id, "tree", str(down))
    assert local_files(Path(folder)) == local_files(tree)
    file_path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="report.html", dst_path=str(down)
    )
    assert Path(file_path).read_text() == "<h1>report</h1>"

    # The gRPC door: the same files, paths and bytes.
    assert {(f.path, f.is_dir) for f in sdk.list_artifacts(run_id)} == {
        ("report.html", False),
        ("tree", True),
    }
    grpc_down = Path(sdk.download_artifacts(run_id, "tree", str(tmp_path / "grpc")))
    assert local_files(grpc_down) == local_files(tree)


def test_repository_round_trip_and_sdk_files_through_the_port(
    mlflow_port: Any, sdk: Any, run: Any, tmp_path: Path
) -> None:
    """The mlflow client's artifact repository for ``mlflow-artifacts:/<exp>/<run>/artifacts``
    (what every mlflow artifact call goes through), and files keel's SDK wrote read back over it."""
    experiment_id, run_id = run
    repo = artifact_repo(mlflow_port.http_url, experiment_id, run_id)
    tree = make_tree(tmp_path)
    repo.log_artifacts(str(tree), "tree")
    repo.log_artifact(str(tree / "a.txt"))
    assert [(f.path, f.is_dir, f.file_size) for f in repo.list_artifacts()] == [
        ("a.txt", False, 5),
        ("tree", True, None),
    ]
    assert [f.path for f in repo.list_artifacts("tree/sub/deeper")] == ["tree/sub/deeper/c d%.bin"]
    down = tmp_path / "down"
    down.mkdir()
    assert local_files(Path(repo.download_artifacts("tree", str(down)))) == local_files(tree)

    sdk.log_text(run_id, "from grpc", "notes/grpc.txt")
    assert [f.path for f in repo.list_artifacts("notes")] == ["notes/grpc.txt"]
    assert Path(repo.download_artifacts("notes/grpc.txt", str(down))).read_text() == "from grpc"
    # Overwriting through the port replaces what the SDK wrote.
    replacement = tmp_path / "grpc.txt"
    replacement.write_text("from http")
    repo.log_artifact(str(replacement), "notes")
    assert (
        Path(sdk.download_artifacts(run_id, "notes/grpc.txt", str(tmp_path / "g"))).read_text() == "from http"
    )


def test_delete_through_raw_http(mlflow_port: Any, sdk: Any, run: Any, tmp_path: Path) -> None:
    experiment_id, run_id = run
    repo = artifact_repo(mlflow_port.http_url, experiment_id, run_id)
    repo.log_artifacts(str(make_tree(tmp_path)), "tree")
    reply = raw_http(mlflow_port.http_url, "DELETE", proxy_path(experiment_id, run_id, "tree/a.txt"))
    assert (reply.status, reply.json()) == (200, {})
    assert [f.path for f in sdk.list_artifacts(run_id, "tree")] == ["tree/sub"]
    reply = raw_http(mlflow_port.http_url, "DELETE", proxy_path(experiment_id, run_id, "tree/sub"))
    assert reply.status == 200
    assert sdk.list_artifacts(run_id) == []
    # Deleting what is not there succeeds, as on mlflow server; reading it is a 404.
    assert (
        raw_http(mlflow_port.http_url, "DELETE", proxy_path(experiment_id, run_id, "tree/gone.txt")).status
        == 200
    )
    reply = raw_http(mlflow_port.http_url, "GET", proxy_path(experiment_id, run_id, "tree/a.txt"))
    assert reply.status == 404
    assert reply.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # The mlflow client's own delete (MlflowArtifactsRepository.delete_artifacts) of the run root.
    repo.log_artifact(str(tmp_path / "tree" / "a.txt"))
    repo.delete_artifacts()
    assert repo.list_artifacts() == []


# -- response shapes ---------------------------------------------------------------------------------
def test_listing_shapes(mlflow_port: Any, run: Any, tmp_path: Path) -> None:
    """The proxy lists base names (MLflow's shape, file_size only on files, nothing when empty);
    the tracking API's list has run-relative paths and the run's artifact URI."""
    experiment_id, run_id = run
    artifact_repo(mlflow_port.http_url, experiment_id, run_id).log_artifacts(str(make_tree(tmp_path)))
    base = f"{experiment_id}/{run_id}/artifacts"
    reply = raw_http(mlflow_port.http_url, "GET", f"{LIST}?path={base}")
    assert reply.json() == {
        "files": [{"path": "a.txt", "is_dir": False, "file_size": 5}, {"path": "sub", "is_dir": True}]
    }
    reply = raw_http(mlflow_port.http_url, "GET", f"{LIST}?path={base}/sub/")
    assert [f["path"] for f in reply.json()["files"]] == ["b.json", "deeper"]
    for empty in ("nothing-here", "a.txt"):  # a missing folder and a file list as nothing
        reply = raw_http(mlflow_port.http_url, "GET", f"{LIST}?path={base}/{empty}")
        assert (reply.status, reply.json()) == (200, {})
    # The UI's spelling of the same API.
    reply = raw_http(mlflow_port.http_url, "GET", f"/ajax-api/2.0/mlflow-artifacts/artifacts?path={base}")
    assert reply.status == 200 and len(reply.json()["files"]) == 2

    status, body = mlflow_port.call("GET", "artifacts/list", query={"run_id": run_id, "path": "sub"})
    assert status == 200
    assert body == {
        "root_uri": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
        "files": [
            {"path": "sub/b.json", "is_dir": False, "file_size": 8},
            {"path": "sub/deeper", "is_dir": True},
        ],
    }
    status, body = mlflow_port.call("GET", "artifacts/list", query={"run_uuid": run_id})
    assert status == 200 and [f["path"] for f in body["files"]] == ["a.txt", "sub"]
    status, body = mlflow_port.call("GET", "artifacts/list", query={"run_id": run_id, "path": "sub/nothing"})
    assert (status, body) == (200, {"root_uri": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"})


def test_download_headers_and_head(mlflow_port: Any, run: Any) -> None:
    experiment_id, run_id = run
    path = proxy_path(experiment_id, run_id, "page.html")
    assert raw_http(mlflow_port.http_url, "PUT", path, b"<script>alert(1)</script>").status == 200
    reply = raw_http(mlflow_port.http_url, "GET", path)
    assert reply.body == b"<script>alert(1)</script>"
    assert reply.headers["content-length"] == str(len(reply.body))
    # Never rendered inline on this origin.
    assert reply.headers["content-disposition"].startswith('attachment; filename="page.html"')
    assert reply.headers["x-content-type-options"] == "nosniff"
    head = raw_http(mlflow_port.http_url, "HEAD", path)
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", str(len(reply.body)))
    # A name beyond latin-1 goes out in RFC 6266 form.
    named = proxy_path(experiment_id, run_id, quote("модель.txt"))
    assert raw_http(mlflow_port.http_url, "PUT", named, b"x").status == 200
    reply = raw_http(mlflow_port.http_url, "GET", named)
    assert reply.status == 200
    assert "filename*=UTF-8''%D0%BC%D0%BE%D0%B4%D0%B5%D0%BB%D1%8C.txt" in reply.headers["content-disposition"]


def test_ui_file_reads(mlflow_port: Any, sdk: Any, run: Any) -> None:
    """``/get-artifact`` (run files) and ``/model-versions/get-artifact`` (a registered version's
    snapshot), as mlflow server serves them to its UI."""
    experiment_id, run_id = run
    sdk.log_text(run_id, "flavors: {}\n", "model/MLmodel")
    status, body = mlflow_port.call("GET", "/get-artifact", query={"run_id": run_id, "path": "model/MLmodel"})
    assert (status, body) == (200, "flavors: {}\n")
    name = f"ui-reads-{run_id[:8]}"
    sdk.create_registered_model(name)
    version = sdk.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    query = {"name": name, "version": str(version.version), "path": "MLmodel"}
    status, body = mlflow_port.call("GET", "/model-versions/get-artifact", query=query)
    assert (status, body) == (200, "flavors: {}\n")
    status, body = mlflow_port.call("GET", "/get-artifact", query={"run_id": run_id})
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    status, body = mlflow_port.call(
        "GET", "/get-artifact", query={"run_id": run_id, "path": "../../etc/passwd"}
    )
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"


def test_model_version_files_through_the_proxy(mlflow_port: Any, sdk: Any, run: Any, tmp_path: Path) -> None:
    """A registered version's files (``model-versions/<name>/<version>``, what get-download-uri
    answers) list and download through the proxy, for the mlflow client too; they never change."""
    import mlflow

    experiment_id, run_id = run
    artifact_repo(mlflow_port.http_url, experiment_id, run_id).log_artifacts(
        str(make_tree(tmp_path)), "model"
    )
    name = f"proxy model {run_id[:6]}"  # a name that needs quoting
    sdk.create_registered_model(name)
    sdk.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    base = f"model-versions/{quote(name, safe='')}/1"
    reply = raw_http(mlflow_port.http_url, "GET", f"{LIST}?path={quote(base)}")
    assert reply.json() == {
        "files": [{"path": "a.txt", "is_dir": False, "file_size": 5}, {"path": "sub", "is_dir": True}]
    }
    reply = raw_http(mlflow_port.http_url, "GET", f"{LIST}/{base}/sub/b.json")
    assert (reply.status, reply.body) == (200, b'{"b": 1}')
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path / "down"))
    assert local_files(Path(local)) == local_files(tmp_path / "tree")
    for method, body in (("PUT", b"changed"), ("DELETE", None)):
        reply = raw_http(mlflow_port.http_url, method, f"{LIST}/{base}/a.txt", body)
        assert (reply.status, reply.json()["error_code"]) == (403, "PERMISSION_DENIED"), reply.body
    reply = raw_http(mlflow_port.http_url, "GET", f"{LIST}/{base}/a.txt")
    assert reply.body == b"alpha"
    reply = raw_http(mlflow_port.http_url, "GET", f"{LIST}/model-versions/{quote(name, safe='')}/x/a.txt")
    assert (reply.status, reply.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    reply = raw_http(mlflow_port.http_url, "GET", f"{LIST}/model-versions/no-such-model/1/a.txt")
    assert (reply.status, reply.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    reply = raw_http(mlflow_port.http_url, "GET", f"{LIST}/{base}/%2e%2e/%2e%2e/etc/passwd")
    assert (reply.status, reply.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


# -- multipart and presigned: the client falls back ------------------------------------------------
def test_multipart_upload_falls_back_to_one_put(
    mlflow_port: Any, sdk: Any, run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_id, run_id = run
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "1")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(5 * MIB))
    data = tmp_path / "parts.bin"
    write_random_file(data, 6 * MIB)
    artifact_repo(mlflow_port.http_url, experiment_id, run_id).log_artifact(str(data), "mpu")
    assert [(f.path, f.file_size) for f in sdk.list_artifacts(run_id, "mpu")] == [("mpu/parts.bin", 6 * MIB)]
    for step in ("create", "complete", "abort"):
        reply = raw_http(
            mlflow_port.http_url,
            "POST",
            f"/api/2.0/mlflow-artifacts/mpu/{step}/{experiment_id}/{run_id}/artifacts/x.bin",
            b'{"path": "x.bin", "num_parts": 1}',
            {"Content-Type": "application/json"},
        )
        assert reply.status == 501
        assert reply.json()["error_code"] == "NOT_IMPLEMENTED"
        assert reply.json()["message"].startswith(
            "Multipart upload is not supported for the current artifact repository"
        )


def test_presigned_download_falls_back_to_the_proxy(
    mlflow_port: Any, run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_id, run_id = run
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "true")
    repo = artifact_repo(mlflow_port.http_url, experiment_id, run_id)
    source = tmp_path / "f.txt"
    source.write_text("through the proxy")
    repo.log_artifact(str(source))
    reply = raw_http(
        mlflow_port.http_url,
        "GET",
        f"/api/2.0/mlflow-artifacts/presigned/{experiment_id}/{run_id}/artifacts/f.txt",
    )
    assert reply.status == 501
    down = tmp_path / "down"
    down.mkdir()
    assert Path(repo.download_artifacts("f.txt", str(down))).read_text() == "through the proxy"


# -- bad inputs ---------------------------------------------------------------------------------------
TRAVERSALS = [
    "../../../etc/passwd",
    "a/../../b",
    "%2e%2e/%2e%2e/etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%252e%252e%252fetc",  # twice encoded
    "/etc/passwd",  # absolute after the run's root
    "a%00b",  # NUL
    "a%5c..%5cb",  # backslashes
    "a/./b",
    "a%23/../b",  # '#' hiding a segment
]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("bad", TRAVERSALS)
def test_traversal_is_refused(mlflow_port: Any, sdk: Any, run: Any, method: str, bad: str) -> None:
    experiment_id, run_id = run
    sdk.log_text(run_id, "keep", "keep.txt")
    before = sorted(p for p in mlflow_port.root.rglob("*"))
    body = b"payload" if method == "PUT" else None
    reply = raw_http(mlflow_port.http_url, method, proxy_path(experiment_id, run_id, bad), body)
    assert reply.status == 400, reply.body
    assert reply.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert sorted(p for p in mlflow_port.root.rglob("*")) == before
    assert [f.path for f in sdk.list_artifacts(run_id)] == ["keep.txt"]


@pytest.mark.parametrize(
    "path",
    [
        "",
        "1",
        "1/x",
        "x/y/notartifacts/a.txt",
        "%2e%2e/%2e%2e/artifacts/a",
        "_registry/m/1/artifacts/MLmodel",
    ],
)
def test_paths_outside_a_run_are_refused(mlflow_port: Any, path: str) -> None:
    for method, body in (("GET", None), ("PUT", b"x"), ("DELETE", None)):
        reply = raw_http(mlflow_port.http_url, method, f"{LIST}/{path}", body)
        assert reply.status in (400, 404), (method, path, reply.body)
        assert reply.json()["error_code"] in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
    reply = raw_http(mlflow_port.http_url, "GET", f"{LIST}?path={path}")
    assert reply.status in (400, 404), reply.body


def test_wrong_experiment_unknown_run_and_missing_arguments(mlflow_port: Any, sdk: Any, run: Any) -> None:
    experiment_id, run_id = run
    sdk.log_text(run_id, "x", "x.txt")
    other = sdk.create_experiment(f"other-{run_id[:8]}")
    reply = raw_http(mlflow_port.http_url, "GET", proxy_path(other, run_id, "x.txt"))
    assert (reply.status, reply.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    reply = raw_http(mlflow_port.http_url, "PUT", proxy_path(other, run_id, "y.txt"), b"y")
    assert reply.status == 404
    assert [f.path for f in sdk.list_artifacts(run_id)] == ["x.txt"]
    reply = raw_http(mlflow_port.http_url, "GET", proxy_path(experiment_id, "0" * 32, "x.txt"))
    assert (reply.status, reply.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    reply = raw_http(mlflow_port.http_url, "GET", LIST)
    assert (reply.status, reply.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    status, body = mlflow_port.call("GET", "artifacts/list")
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    # A folder cannot be downloaded as a file; the run root cannot be uploaded to.
    sdk.log_text(run_id, "z", "folder/z.txt")
    reply = raw_http(mlflow_port.http_url, "GET", proxy_path(experiment_id, run_id, "folder"))
    assert reply.status == 400
    reply = raw_http(mlflow_port.http_url, "PUT", proxy_path(experiment_id, run_id), b"root")
    assert reply.status == 400


def test_short_and_chunked_bodies_store_nothing(mlflow_port: Any, sdk: Any, run: Any) -> None:
    experiment_id, run_id = run
    host, port = "127.0.0.1", int(mlflow_port.http_url.rsplit(":", 1)[1])
    path = proxy_path(experiment_id, run_id, "short.bin")
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n".encode() + b"x" * 400)
        conn.shutdown(socket.SHUT_WR)  # the client goes away 600 bytes early
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"TRUNCATED_BODY" in answer
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".encode()
        )
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert sdk.list_artifacts(run_id) == []


def test_connection_stays_in_step_after_a_refused_upload(mlflow_port: Any, sdk: Any, run: Any) -> None:
    """A PUT refused after its body started streaming leaves the keep-alive connection usable:
    the rest of the body is read and dropped, never taken for the next request."""
    experiment_id, run_id = run
    import http.client

    port = int(mlflow_port.http_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = (
            b"GET /health HTTP/1.1\r\n\r\n" * 320_000
        )  # ~8 MB (several chunks) that would parse as requests
        connection.request("PUT", proxy_path(experiment_id, run_id, ""), body=body)
        first = connection.getresponse()
        assert first.status == 400
        assert not first.will_close  # same connection for the next request
        first.read()
        connection.request("GET", f"{LIST}?path={experiment_id}/{run_id}/artifacts")
        second = connection.getresponse()
        assert (second.status, second.read()) == (200, b"{}")
    finally:
        connection.close()
    assert sdk.list_artifacts(run_id) == []


# -- a big file, flat memory ---------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.slow
def test_big_file_up_and_down_with_flat_server_memory(tmp_path: Path) -> None:
    """64 MiB up and down through ``keel server --mlflow-port`` with the mlflow client; the
    server's peak RSS grows by well under the file's size (it streams, never buffers the file)."""
    size = 64 * MIB
    bound_kib = 40 * 1024
    source = tmp_path / "big.bin"
    write_random_file(source, size)
    with port_server_process(tmp_path / "server") as server:
        pid = server.process.pid
        client = keel.Client(server.grpc_uri)
        experiment_id = client.create_experiment("big")
        run_id = client.create_run(experiment_id).info.run_id
        repo = artifact_repo(server.http_url, experiment_id, run_id)
        warm = tmp_path / "warm.txt"
        warm.write_text("warm up every code path once")
        (tmp_path / "down").mkdir()
        repo.log_artifact(str(warm))
        repo.download_artifacts("warm.txt", str(tmp_path / "down"))

        assert reset_peak_rss(pid), "cannot reset VmHWM of the server process"
        before = memory_kib(pid)["VmHWM"]
        repo.log_artifact(str(source))
        grown_up = memory_kib(pid)["VmHWM"] - before
        assert reset_peak_rss(pid)
        before = memory_kib(pid)["VmHWM"]
        local = Path(repo.download_artifacts("big.bin", str(tmp_path / "down")))
        grown_down = memory_kib(pid)["VmHWM"] - before
        assert sha256_of(local) == sha256_of(source)
        assert grown_up < bound_kib, f"upload grew the server's peak RSS by {grown_up} KiB"
        assert grown_down < bound_kib, f"download grew the server's peak RSS by {grown_down} KiB"

        # The gRPC door reads the same bytes.
        info = {f.path: f for f in client.list_artifacts(run_id)}["big.bin"]
        assert info.file_size == size
        assert info.sha256 == sha256_of(source)
        os.unlink(local)
