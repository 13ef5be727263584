"""The artifact contract: the same tests on the local store and on S3 (SeaweedFS, auth on),
over every database backend."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import grpc
import pytest
from art_helpers import ArtifactServer, make_run

import keel
from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.exceptions import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

BAD_PATHS = ["..", "a/../b", "../escape", "/etc/passwd", "a\\b", "a\x00b", "a//b", "a/", ".", "./a", "a/./b"]


def _stub(server: ArtifactServer) -> artifacts_pb2_grpc.ArtifactServiceStub:
    return artifacts_pb2_grpc.ArtifactServiceStub(grpc.insecure_channel(server.uri.removeprefix("grpc://")))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_upload_download_roundtrip(art_server: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    client = art_server.client()
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks and a ragged tail
    info = client.log_artifact(run_id, str(_write(tmp_path / "model.bin", data)), "ckpt")
    assert (info.path, info.is_dir, info.file_size) == ("ckpt/model.bin", False, len(data))
    assert info.sha256 == hashlib.sha256(data).hexdigest()

    stat = client.stat_artifact("ckpt/model.bin", run_id=run_id)
    assert (stat.file_size, stat.sha256) == (len(data), info.sha256)
    assert client.stat_artifact("ckpt", run_id=run_id).is_dir

    local = client.download_artifacts(run_id, "ckpt/model.bin", str(tmp_path / "dl"))
    assert local == str(tmp_path / "dl" / "model.bin")
    assert Path(local).read_bytes() == data
    assert not list((tmp_path / "dl").glob("*.keel-part"))


def test_many_part_upload_keeps_part_order(art_server: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    """On S3: more parts than are sent at once (each 8 MiB block different, so parts completed
    out of order or listed in the wrong order would change the bytes)."""
    mib = 1024 * 1024
    data = b"".join(bytes([i]) * 8 * mib for i in range(7)) + b"tail"
    info = art_server.client().log_artifact(run_id, str(_write(tmp_path / "big.bin", data)), "parts")
    assert (info.file_size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    local = art_server.client().download_artifacts(run_id, "parts/big.bin", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == data


def test_empty_file(art_server: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    client = art_server.client()
    info = client.log_artifact(run_id, str(_write(tmp_path / "empty.txt", b"")))
    assert info.file_size == 0 and info.sha256 == hashlib.sha256(b"").hexdigest()
    assert Path(client.download_artifacts(run_id, "empty.txt", str(tmp_path / "dl"))).read_bytes() == b""


def test_upload_replaces_existing(art_server: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    client = art_server.client()
    client.log_text(run_id, "first version", "notes.txt")
    client.log_text(run_id, "second", "notes.txt")
    assert keel.artifacts.load_text(f"runs:/{run_id}/notes.txt", tracking_uri=art_server.uri) == "second"
    assert client.stat_artifact("notes.txt", run_id=run_id).file_size == len("second")
    assert [f.path for f in client.list_artifacts(run_id)] == ["notes.txt"]


def test_list_direct_recursive_and_paged(art_server: ArtifactServer, run_id: str) -> None:
    client = art_server.client()
    for path in ("a.txt", "a/x.txt", "a/y/z.txt", "a0.txt", "b/c.txt", "top.txt"):
        client.log_text(run_id, path, path)
    # The order is the store's key order (byte order on the local store, AWS and MinIO; path
    # components on SeaweedFS): compare as sets, then check that paging reproduces it exactly.
    root = client.list_artifacts(run_id)
    assert sorted((f.path, f.is_dir) for f in root) == [
        ("a", True), ("a.txt", False), ("a0.txt", False), ("b", True), ("top.txt", False)
    ]  # fmt: skip
    assert {(f.path, f.is_dir) for f in client.list_artifacts(run_id, "a")} == {("a/x.txt", False), ("a/y", True)}
    recursive = client.list_artifacts_under(run_id=run_id, recursive=True)
    assert sorted(f.path for f in recursive) == ["a.txt", "a/x.txt", "a/y/z.txt", "a0.txt", "b/c.txt", "top.txt"]
    assert all(f.sha256 == hashlib.sha256(f.path.encode()).hexdigest() for f in recursive)

    # Paging with every page size gives the same entries, each once, in the same order.
    stub = _stub(art_server)
    for recursive_flag, expected in ((False, [f.path for f in root]), (True, [f.path for f in recursive])):
        for size in (1, 2, 4):
            seen, token = [], ""
            while True:
                page = stub.ListArtifacts(
                    pb.ListArtifactsRequest(ref=pb.ArtifactRef(run_id=run_id), recursive=recursive_flag, page_size=size, page_token=token)
                )
                assert len(page.files) <= size
                seen += [f.path for f in page.files]
                token = page.next_page_token
                if not token:
                    break
            assert seen == expected
    assert client.list_artifacts(run_id, "missing") == []


def test_list_bad_page_arguments(art_server: ArtifactServer, run_id: str) -> None:
    stub = _stub(art_server)
    with pytest.raises(grpc.RpcError) as err:
        stub.ListArtifacts(pb.ListArtifactsRequest(ref=pb.ArtifactRef(run_id=run_id), page_size=-1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.ListArtifacts(pb.ListArtifactsRequest(ref=pb.ArtifactRef(run_id=run_id), page_token="garbage!"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_delete_file_and_prefix(art_server: ArtifactServer, run_id: str) -> None:
    client = art_server.client()
    for path in ("keep.txt", "d/1.txt", "d/2.txt", "d/e/3.txt"):
        client.log_text(run_id, "x", path)
    assert client.delete_artifacts("d/1.txt", run_id=run_id) == 1
    assert client.delete_artifacts("d", run_id=run_id) == 2
    assert client.delete_artifacts("d", run_id=run_id) == 0
    assert [f.path for f in client.list_artifacts(run_id)] == ["keep.txt"]
    with pytest.raises(NotFound):
        client.stat_artifact("d/e/3.txt", run_id=run_id)


@pytest.mark.parametrize("bad", BAD_PATHS, ids=repr)
def test_bad_paths_are_invalid_argument(art_server: ArtifactServer, run_id: str, bad: str, tmp_path: Path) -> None:
    stub = _stub(art_server)
    ref = pb.ArtifactRef(run_id=run_id, path=bad)
    calls = [
        lambda: stub.StatArtifact(pb.StatArtifactRequest(ref=ref)),
        lambda: stub.ListArtifacts(pb.ListArtifactsRequest(ref=ref)),
        lambda: stub.DeleteArtifact(pb.DeleteArtifactRequest(ref=ref)),
        lambda: list(stub.DownloadArtifact(pb.DownloadArtifactRequest(ref=ref))),
        lambda: stub.UploadArtifact(iter([pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref)), pb.UploadArtifactRequest(chunk=b"x")])),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "artifact path" in err.value.details()
    # Through a URI too: runs:/<id>/<bad> and <root>/<bad>.
    client = art_server.client()
    if "\x00" not in bad:
        with pytest.raises(InvalidArgument):
            client.stat_artifact(artifact_uri=f"runs:/{run_id}/{bad}")


def test_unknown_run(art_server: ArtifactServer, tmp_path: Path) -> None:
    client = art_server.client()
    with pytest.raises(NotFound) as err:
        client.list_artifacts("0" * 32)
    assert err.value.reason == "RUN_NOT_FOUND"
    with pytest.raises(NotFound):
        client.log_text("f" * 32, "x", "a.txt")
    with pytest.raises(NotFound):
        keel.artifacts.download_artifacts(f"runs:/{'0' * 32}/x", dst_path=str(tmp_path), tracking_uri=art_server.uri)


def test_missing_file(art_server: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    client = art_server.client()
    with pytest.raises(NotFound) as err:
        client.download_artifacts(run_id, "nope.bin", str(tmp_path))
    assert err.value.reason == "ARTIFACT_NOT_FOUND"
    assert not list(tmp_path.iterdir())


def test_uris_resolve_and_stay_under_root(art_server: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    client = art_server.client()
    client.log_text(run_id, "hello", "model/MLmodel")
    resolved = client.resolve_artifact_uri(f"runs:/{run_id}/model")
    assert resolved.startswith(art_server.root_uri + "/") and resolved.endswith(f"/{run_id}/artifacts/model")
    # The store URI works as a root, and listing is relative to it.
    assert [f.path for f in client.list_artifacts_under(artifact_uri=resolved)] == ["MLmodel"]
    local = keel.artifacts.download_artifacts(artifact_uri=resolved, dst_path=str(tmp_path / "a"), tracking_uri=art_server.uri)
    assert Path(local, "MLmodel").read_text() == "hello"
    local = keel.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(tmp_path / "b"), tracking_uri=art_server.uri)
    assert local == str(tmp_path / "b" / "model") and Path(local, "MLmodel").read_text() == "hello"

    scheme = art_server.root_uri.split("://")[0]
    outside = "file:///etc" if scheme == "file" else "s3://some-other-bucket/x"
    with pytest.raises(PermissionDenied):
        client.stat_artifact(artifact_uri=outside)
    with pytest.raises(InvalidArgument):
        client.stat_artifact(artifact_uri=art_server.root_uri + "/../x")
    with pytest.raises(InvalidArgument):
        client.stat_artifact(artifact_uri="gs://bucket/x")
    with pytest.raises(InvalidArgument):
        client.resolve_artifact_uri("")


def test_checksum_and_size_mismatch_store_nothing(art_server: ArtifactServer, run_id: str) -> None:
    stub = _stub(art_server)
    ref = pb.ArtifactRef(run_id=run_id, path="bad.bin")
    wrong = hashlib.sha256(b"other").hexdigest()
    cases = [
        [pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, sha256=wrong)), pb.UploadArtifactRequest(chunk=b"data")],
        [pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref)), pb.UploadArtifactRequest(chunk=b"data"),
         pb.UploadArtifactRequest(trailer=pb.UploadTrailer(sha256=wrong))],
        [pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, size=5)), pb.UploadArtifactRequest(chunk=b"data")],
        [pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, size=3)), pb.UploadArtifactRequest(chunk=b"data")],
        [pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, sha256="not-hex"))],
        [pb.UploadArtifactRequest(chunk=b"no header first")],
        [pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref)), pb.UploadArtifactRequest(chunk=b"x" * (4 * 1024 * 1024 + 1))],
    ]  # fmt: skip
    reasons = []
    for messages in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.UploadArtifact(iter(messages))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        reasons.append(keel.exceptions.from_rpc_error(err.value).reason)
    assert reasons == [
        "CHECKSUM_MISMATCH", "CHECKSUM_MISMATCH", "SIZE_MISMATCH", "SIZE_MISMATCH",
        "INVALID_SHA256", "MISSING_HEADER", "CHUNK_TOO_LARGE",
    ]  # fmt: skip
    with pytest.raises(NotFound):
        art_server.client().stat_artifact("bad.bin", run_id=run_id)
    assert art_server.client().list_artifacts(run_id) == []


def test_upload_needs_a_file_path(art_server: ArtifactServer, run_id: str) -> None:
    stub = _stub(art_server)
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadArtifact(iter([pb.UploadArtifactRequest(header=pb.UploadHeader(ref=pb.ArtifactRef(run_id=run_id)))]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.StatArtifact(pb.StatArtifactRequest(ref=pb.ArtifactRef(run_id=run_id, artifact_uri=f"runs:/{run_id}")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # both run_id and artifact_uri


def test_download_from_offset(art_server: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    client = art_server.client()
    data = os.urandom(2 * 1024 * 1024 + 5)
    client.log_artifact(run_id, str(_write(tmp_path / "f.bin", data)))
    stub = _stub(art_server)
    for offset in (0, 1, 1024 * 1024, len(data) - 1, len(data)):
        messages = list(stub.DownloadArtifact(pb.DownloadArtifactRequest(ref=pb.ArtifactRef(run_id=run_id, path="f.bin"), offset=offset)))
        header = messages[0].header
        assert (header.file_size, header.offset, header.sha256) == (len(data), offset, hashlib.sha256(data).hexdigest())
        assert b"".join(m.chunk for m in messages[1:]) == data[offset:]
    for bad in (-1, len(data) + 1):
        with pytest.raises(grpc.RpcError) as err:
            list(stub.DownloadArtifact(pb.DownloadArtifactRequest(ref=pb.ArtifactRef(run_id=run_id, path="f.bin"), offset=bad)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:  # a folder is not downloadable as a file
        client.log_text(run_id, "x", "dir/x.txt")
        list(stub.DownloadArtifact(pb.DownloadArtifactRequest(ref=pb.ArtifactRef(run_id=run_id, path="dir"))))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_tree_upload_download_and_copy(art_server: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    client = art_server.client()
    src = tmp_path / "model"
    files = {"MLmodel": b"flavors: {}", "data/weights.bin": os.urandom(100_000), "data/sub/deep.txt": b"deep"}
    for rel, content in files.items():
        _write(src / rel, content)
    uploaded = client.log_artifacts(run_id, str(src), "model")
    assert sorted(f.path for f in uploaded) == sorted(f"model/{r}" for r in files)

    local = Path(client.download_artifacts(run_id, "model", str(tmp_path / "out")))
    assert {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()} == files

    source = client.resolve_artifact_uri(f"runs:/{run_id}/model")
    # Copies land in a run's artifacts (the registry's snapshots are written by the registry only).
    target = client.resolve_artifact_uri(f"runs:/{make_run(art_server.root_uri)}/copied")
    count, total = client.copy_artifacts(source, target)
    assert (count, total) == (3, sum(map(len, files.values())))
    copied = client.list_artifacts_under(artifact_uri=target, recursive=True)
    assert {f.path: f.sha256 for f in copied} == {r: hashlib.sha256(c).hexdigest() for r, c in files.items()}
    with pytest.raises(InvalidArgument):
        client.copy_artifacts(source, source + "/inner")


def test_presigned_urls(art_server: ArtifactServer, run_id: str) -> None:
    client = art_server.client()
    client.log_text(run_id, "presigned!", "p.txt")
    if art_server.store_kind == "local":
        with pytest.raises(FailedPrecondition) as err:
            client.create_presigned_url("p.txt", run_id=run_id)
        assert err.value.reason == "PRESIGN_UNSUPPORTED"
        return
    url, expires = client.create_presigned_url("p.txt", run_id=run_id, expires_in=60)
    assert url.startswith("http://127.0.0.1") and expires > 0
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"presigned!"
    put_url, _ = client.create_presigned_url("put.txt", run_id=run_id, method="PUT")
    request = urllib.request.Request(put_url, data=b"direct", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
    assert keel.artifacts.load_text(f"runs:/{run_id}/put.txt", tracking_uri=art_server.uri) == "direct"
    with pytest.raises(InvalidArgument):
        client.create_presigned_url("p.txt", run_id=run_id, expires_in=10**7)
    with pytest.raises(NotFound):
        client.create_presigned_url("missing.txt", run_id=run_id)
