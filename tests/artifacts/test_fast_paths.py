"""The fast paths of the artifact service keep its guarantees: hand-framed chunk messages are
exactly protobuf's encoding, the writer's helper thread leaves nothing behind when it fails, and
the local store's hard-link ``copy_tree`` gives snapshots that later uploads and deletes of the
source cannot change."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from art_helpers import ArtifactServer, artifact_server, make_run

from keel.artifacts import _transfer
from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel_server.artifacts.stores import local as local_store
from keel_server.common.errors import InvalidArgument, ResourceExhausted

MiB = 1024 * 1024


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, MiB, 4 * MiB + 3])
def test_framed_chunks_are_protobuf_encoding(size: int) -> None:
    data = os.urandom(size)
    framed = _transfer.frame_chunk(data)
    assert framed == pb.UploadArtifactRequest(chunk=data).SerializeToString()
    assert framed == pb.DownloadArtifactResponse(chunk=data).SerializeToString()
    view = _transfer.parse_chunk(framed)
    assert view is not None and bytes(view) == data
    assert isinstance(_transfer.parse_download_response(framed), memoryview)


def test_other_messages_are_parsed_as_protobuf() -> None:
    header = pb.UploadArtifactRequest(header=pb.UploadHeader(ref=pb.ArtifactRef(run_id="r", path="a"), size=3))
    parsed = _transfer.parse_upload_request(header.SerializeToString())
    assert isinstance(parsed, pb.UploadArtifactRequest) and parsed.header.size == 3
    trailer = pb.UploadArtifactRequest(trailer=pb.UploadTrailer(sha256="0" * 64)).SerializeToString()
    assert _transfer.parse_chunk(trailer) is None
    # A chunk followed by anything else (another field, a second chunk) is not "chunk only".
    twice = _transfer.frame_chunk(b"ab") + _transfer.frame_chunk(b"cd")
    assert _transfer.parse_chunk(twice) is None
    assert _transfer.parse_upload_request(twice).chunk == b"cd"  # type: ignore[union-attr]
    assert _transfer.parse_chunk(b"\x12\x05ab") is None  # truncated


@pytest.fixture(scope="module")
def art_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactServer]:
    """The local store over SQLite (the S3 store has its own paths; its guarantees are covered
    by the contract and failure suites)."""
    with artifact_server("local", "sqlite", tmp_path_factory.mktemp("art-fast")) as server:
        yield server


def _local(art_server: ArtifactServer) -> local_store.LocalArtifactStore:
    assert art_server.handle.running is not None
    store = art_server.handle.running.app.artifact_store
    assert isinstance(store, local_store.LocalArtifactStore)
    return store


def _put(store: local_store.LocalArtifactStore, uri: str, data: bytes, chunk: int = MiB) -> None:
    writer = store.open_writer(uri)
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    writer.commit(len(data), hashlib.sha256(data).hexdigest())


def _read(store: local_store.LocalArtifactStore, uri: str) -> bytes:
    info, chunks = store.open_reader(uri)
    data = b"".join(chunks)
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    return data


def _staging(store: local_store.LocalArtifactStore) -> list[str]:
    return os.listdir(store.staging) if os.path.isdir(store.staging) else []


def test_multi_chunk_upload_through_helper_thread(art_server: ArtifactServer) -> None:
    store = _local(art_server)
    uri = f"{store.root_uri}/fast/multi.bin"
    data = os.urandom(5 * MiB + 17)
    _put(store, uri, data, chunk=MiB // 2)
    assert _read(store, uri) == data
    assert _staging(store) == []


def test_helper_thread_failure_leaves_nothing(art_server: ArtifactServer, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _local(art_server)
    uri = f"{store.root_uri}/fast/full-disk.bin"
    calls = {"n": 0}
    real = local_store._write_all

    def failing(fd: int, data: bytes | memoryview) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(local_store, "_write_all", failing)
    writer = store.open_writer(uri)
    with pytest.raises(ResourceExhausted, match="has no room for .*No space left") as err:
        for _ in range(8):
            writer.write(os.urandom(MiB))
        writer.commit(8 * MiB, "")
    assert err.value.reason == "STORE_FULL"
    writer.abort()
    assert _staging(store) == []
    assert not os.path.exists(store.path_of(uri))


def test_reserve_space_keeps_the_length_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "reserved.bin"
    with open(path, "wb") as f:
        _transfer.reserve_space(f.fileno(), 8 * MiB, str(path))
        st = os.fstat(f.fileno())
        assert st.st_size == 0  # the length is what has been written, nothing more
        if _transfer._fallocate is not None and st.st_blocks:  # a filesystem that can reserve
            assert st.st_blocks * 512 >= 8 * MiB
        # More than the whole disk: refused before fallocate, which would fill the disk first.
        too_big = shutil.disk_usage(tmp_path).total + 1024 * MiB
        with pytest.raises(OSError) as err:
            _transfer.reserve_space(f.fileno(), too_big, str(path))
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
        assert "bytes needed" in str(err.value)


def test_upload_announced_larger_than_the_free_space_is_refused_up_front(art_server: ArtifactServer) -> None:
    store = _local(art_server)
    run_id = make_run(store.root_uri)
    os.makedirs(store.base, exist_ok=True)
    size = shutil.disk_usage(store.base).total + 1024 * MiB  # more than the whole disk
    ref = pb.ArtifactRef(run_id=run_id, path="too/big.bin")

    def messages() -> Iterator[pb.UploadArtifactRequest]:
        yield pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, size=size))
        yield pb.UploadArtifactRequest(chunk=b"x" * 1024)

    stub = artifacts_pb2_grpc.ArtifactServiceStub(grpc.insecure_channel(art_server.uri.removeprefix("grpc://")))
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadArtifact(messages())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "has no room for" in err.value.details() and "free space there" in err.value.details()
    assert _staging(store) == []
    assert not os.path.exists(store.path_of(f"{store.root_uri}/too/big.bin"))


def test_checksum_mismatch_after_threaded_writes_leaves_nothing(art_server: ArtifactServer) -> None:
    store = _local(art_server)
    uri = f"{store.root_uri}/fast/bad-sum.bin"
    writer = store.open_writer(uri)
    for _ in range(4):
        writer.write(os.urandom(MiB))
    with pytest.raises(InvalidArgument):
        writer.commit(4 * MiB, "0" * 64)
    assert _staging(store) == []
    assert not os.path.exists(store.path_of(uri))


def test_copy_tree_links_and_snapshot_survives_overwrite_and_delete(art_server: ArtifactServer) -> None:
    store = _local(art_server)
    src, dst = f"{store.root_uri}/fast/run/model", f"{store.root_uri}/fast/registry/v1"
    files = {"MLmodel": b"flavors: {}\n", "data/model.pkl": os.urandom(3 * MiB), "data/deep/x.txt": b"x"}
    for rel, data in files.items():
        _put(store, f"{src}/{rel}", data)
    assert store.copy_tree(src, dst) == (3, sum(len(d) for d in files.values()))
    for rel, data in files.items():
        s, d = Path(store.path_of(f"{src}/{rel}")), Path(store.path_of(f"{dst}/{rel}"))
        assert d.stat().st_ino == s.stat().st_ino  # linked, not copied
        assert _read(store, f"{dst}/{rel}") == data
    assert _staging(store) == []

    # Overwriting the source replaces its inode: the snapshot keeps the old bytes.
    _put(store, f"{src}/data/model.pkl", b"retrained")
    assert _read(store, f"{dst}/data/model.pkl") == files["data/model.pkl"]
    store.delete(src)
    for rel, data in files.items():
        assert _read(store, f"{dst}/{rel}") == data


def test_copy_tree_replaces_destination(art_server: ArtifactServer) -> None:
    store = _local(art_server)
    src, dst = f"{store.root_uri}/fast/replace/src", f"{store.root_uri}/fast/replace/dst"
    _put(store, f"{src}/a.txt", b"new a")
    _put(store, f"{dst}/a.txt", b"old a")
    _put(store, f"{dst}/stale/b.txt", b"old b")
    assert store.copy_tree(src, dst) == (1, 5)
    assert _read(store, f"{dst}/a.txt") == b"new a"
    assert not os.path.exists(store.path_of(f"{dst}/stale"))
    assert store._recall(f"{dst}/stale/b.txt", 5) == ""  # its checksum row went with it
    assert _staging(store) == []
    # A single file onto a folder, and onto a file.
    _put(store, f"{src}.bin", b"one file")
    assert store.copy_tree(f"{src}.bin", dst) == (1, 8)
    assert _read(store, dst) == b"one file"
    assert store.copy_tree(f"{src}/a.txt", dst) == (1, 5)
    assert _read(store, dst) == b"new a"


def test_copy_tree_falls_back_to_copying_across_devices(
    art_server: ArtifactServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _local(art_server)
    src, dst = f"{store.root_uri}/fast/xdev/src", f"{store.root_uri}/fast/xdev/dst"
    data = os.urandom(2 * MiB)
    _put(store, f"{src}/m.bin", data)

    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(local_store.os, "link", no_link)
    assert store.copy_tree(src, dst) == (1, len(data))
    s, d = Path(store.path_of(f"{src}/m.bin")), Path(store.path_of(f"{dst}/m.bin"))
    assert d.stat().st_ino != s.stat().st_ino
    assert _read(store, f"{dst}/m.bin") == data
    assert _staging(store) == []


def test_copy_tree_failure_leaves_nothing(art_server: ArtifactServer, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _local(art_server)
    src, dst = f"{store.root_uri}/fast/fail/src", f"{store.root_uri}/fast/fail/dst"
    for i in range(3):
        _put(store, f"{src}/f{i}", b"x" * i)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(local_store.os, "link", broken)
    with pytest.raises(OSError):
        store.copy_tree(src, dst)
    assert not os.path.exists(store.path_of(dst))
    assert _staging(store) == []
