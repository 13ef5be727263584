"""The order of an upload stream, through raw stubs: header, chunks, then at most one trailer,
last. Anything after the trailer, or a second header, fails the upload with INVALID_ARGUMENT
``UNEXPECTED_MESSAGE`` and stores nothing (an existing file stays as it was)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import grpc
import pytest
from art_helpers import ArtifactServer

from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.exceptions import from_rpc_error

DATA = b"the bytes of the file"
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture()
def stub(art_server: ArtifactServer) -> Iterator[artifacts_pb2_grpc.ArtifactServiceStub]:
    with grpc.insecure_channel(art_server.uri.removeprefix("grpc://")) as channel:
        yield artifacts_pb2_grpc.ArtifactServiceStub(channel)


def _header(ref: pb.ArtifactRef, **fields: object) -> pb.UploadArtifactRequest:
    return pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, **fields))  # type: ignore[arg-type]


def _chunk(data: bytes) -> pb.UploadArtifactRequest:
    return pb.UploadArtifactRequest(chunk=data)


def _trailer(sha256: str) -> pb.UploadArtifactRequest:
    return pb.UploadArtifactRequest(trailer=pb.UploadTrailer(sha256=sha256))


def _refused(stub: artifacts_pb2_grpc.ArtifactServiceStub, messages: list[pb.UploadArtifactRequest]) -> str:
    """The details of the INVALID_ARGUMENT UNEXPECTED_MESSAGE the upload of ``messages`` fails with."""
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadArtifact(iter(messages), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert from_rpc_error(err.value).reason == "UNEXPECTED_MESSAGE"
    return str(err.value.details())


def _stat_code(stub: artifacts_pb2_grpc.ArtifactServiceStub, ref: pb.ArtifactRef) -> grpc.StatusCode:
    try:
        stub.StatArtifact(pb.StatArtifactRequest(ref=ref), timeout=30)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_a_chunk_after_the_trailer_is_refused_and_nothing_stored(
    stub: artifacts_pb2_grpc.ArtifactServiceStub, run_id: str
) -> None:
    ref = pb.ArtifactRef(run_id=run_id, path="late-chunk.bin")
    # The trailer's sha256 matches the bytes: only the order is wrong.
    details = _refused(stub, [_header(ref), _trailer(SHA), _chunk(DATA)])
    assert "the trailer must be the last message of an upload" in details
    assert _stat_code(stub, ref) == grpc.StatusCode.NOT_FOUND


def test_anything_after_the_trailer_or_a_second_header_is_refused(
    stub: artifacts_pb2_grpc.ArtifactServiceStub, run_id: str
) -> None:
    ref = pb.ArtifactRef(run_id=run_id, path="bad-order.bin")
    half = len(DATA) // 2
    cases = [
        [_header(ref), _chunk(DATA[:half]), _trailer(SHA), _chunk(DATA[half:])],
        [_header(ref), _chunk(DATA), _trailer(SHA), _trailer(SHA)],
        [_header(ref), _chunk(DATA), _trailer(SHA), _header(ref)],
        [_header(ref), _chunk(DATA), _header(ref), _chunk(DATA)],
        [_header(ref), _header(ref)],
    ]
    for messages in cases:
        _refused(stub, messages)
        assert _stat_code(stub, ref) == grpc.StatusCode.NOT_FOUND


def test_a_refused_upload_leaves_the_existing_file(
    stub: artifacts_pb2_grpc.ArtifactServiceStub, run_id: str
) -> None:
    ref = pb.ArtifactRef(run_id=run_id, path="kept.bin")
    stub.UploadArtifact(iter([_header(ref), _chunk(DATA), _trailer(SHA)]), timeout=30)
    other = b"replacement bytes"
    _refused(stub, [_header(ref), _trailer(hashlib.sha256(other).hexdigest()), _chunk(other)])
    info = stub.StatArtifact(pb.StatArtifactRequest(ref=ref), timeout=30)
    assert (info.file_size, info.sha256) == (len(DATA), SHA)


def test_header_chunks_trailer_is_accepted(stub: artifacts_pb2_grpc.ArtifactServiceStub, run_id: str) -> None:
    ref = pb.ArtifactRef(run_id=run_id, path="in-order.bin")
    half = len(DATA) // 2
    info = stub.UploadArtifact(
        iter([_header(ref, size=len(DATA)), _chunk(DATA[:half]), _chunk(DATA[half:]), _trailer(SHA)]),
        timeout=30,
    )
    assert (info.file_size, info.sha256) == (len(DATA), SHA)
    stat = stub.StatArtifact(pb.StatArtifactRequest(ref=ref), timeout=30)
    assert (stat.file_size, stat.sha256) == (len(DATA), SHA)
    # Without a trailer too (it is optional).
    bare = pb.ArtifactRef(run_id=run_id, path="no-trailer.bin")
    assert stub.UploadArtifact(iter([_header(bare), _chunk(DATA)]), timeout=30).sha256 == SHA
