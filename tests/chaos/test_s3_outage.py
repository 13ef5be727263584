"""The S3 server stops mid-download and mid-overwrite (a private SeaweedFS, restartable; the
shared one keeps running). A fresh upload cut by an S3 outage is covered by
tests/artifacts/test_leaks.py and an S3 that stays down by tests/artifacts/test_failures.py;
this adds the download and the overwrite:

- mid-download: the stream fails UNAVAILABLE (ARTIFACT_STORE_UNAVAILABLE) after some bytes;
  once S3 is back a download from the offset reached returns exactly the rest (sha256 of the
  whole matches), and the SDK's download_artifacts completes;
- mid-overwrite: the cut upload fails UNAVAILABLE and the old file stays whole and visible
  (StatArtifact gives the old size and checksum); a retry after S3 returns replaces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from backends import make_database_url, s3_client
from server_fixtures import running_server

import keel
from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.exceptions import Unavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "artifacts"))
from art_helpers import ACCESS_KEY, SECRET_KEY  # noqa: E402
from test_leaks import RestartableSeaweed, restartable_seaweed  # noqa: E402

pytestmark = [pytest.mark.chaos, pytest.mark.s3, pytest.mark.slow]

MiB = 1024 * 1024
SIZE = 64 * MiB


def _server(weed_endpoint: str, db_url: str) -> object:
    return running_server(
        db_url, "s3://chaos/keel", services=("tracking", "artifacts"),
        s3_endpoint_url=f"http://{weed_endpoint}", s3_access_key=ACCESS_KEY, s3_secret_key=SECRET_KEY,
    )  # fmt: skip


@contextlib.contextmanager
def _weed(folder: Path) -> Iterator[RestartableSeaweed]:
    """The private SeaweedFS; killed at the end (a SIGTERM'd weed holding data takes up to its
    15 s stop timeout, and this one's data is thrown away)."""
    with restartable_seaweed(folder) as weed:
        try:
            yield weed
        finally:
            if weed.process is not None and weed.process.poll() is None:
                weed.process.kill()
                weed.process.wait(timeout=30)


def _outage(weed: RestartableSeaweed) -> None:
    """S3 goes away at once (SIGKILL: a SIGTERM'd weed serving a stream may take seconds)."""
    assert weed.process is not None
    weed.process.kill()
    weed.process.wait(timeout=30)


def test_s3_stopped_mid_download_then_resumed_from_offset(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    (tmp_path / "big.bin").write_bytes(data)
    with _weed(tmp_path / "weed") as weed, make_database_url("sqlite", tmp_path) as db_url:
        s3_client(weed.endpoint, ACCESS_KEY, SECRET_KEY).make_bucket("chaos")
        with _server(weed.endpoint, db_url) as handle:  # type: ignore[attr-defined]
            client = keel.Client(handle.uri)
            run_id = client.create_run(client.create_experiment("chaos-s3-download")).info.run_id
            client.log_artifact(run_id, str(tmp_path / "big.bin"))
            ref = pb.ArtifactRef(run_id=run_id, path="big.bin")
            channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
            try:
                stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
                stream = stub.DownloadArtifact(pb.DownloadArtifactRequest(ref=ref), timeout=120)
                received = bytearray()
                with pytest.raises(grpc.RpcError) as err:
                    for message in stream:
                        if message.WhichOneof("message") == "chunk":
                            received += message.chunk
                            if (
                                len(received) >= MiB
                                and weed.process is not None
                                and weed.process.poll() is None
                            ):
                                _outage(weed)  # mid-download: the rest cannot come from S3
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
                assert MiB <= len(received) < SIZE
                assert bytes(received) == data[: len(received)]  # what came was right

                started = time.monotonic()
                with pytest.raises(Unavailable) as sdk_err:  # the SDK retries, then gives up
                    client.download_artifacts(run_id, "big.bin", str(tmp_path / "dl-down"))
                assert sdk_err.value.reason == "ARTIFACT_STORE_UNAVAILABLE"
                assert time.monotonic() - started < 30
                assert not list((tmp_path / "dl-down").rglob("big.bin"))  # nothing half-written shown

                weed.start()
                # Resume from the offset reached, as the SDK does: a freshly restarted SeaweedFS
                # may still answer InternalError (UNAVAILABLE) for a moment; each attempt goes on
                # from the bytes held so far (bounded: 30 s).
                deadline = time.monotonic() + 30
                while True:
                    try:
                        for message in stub.DownloadArtifact(
                            pb.DownloadArtifactRequest(ref=ref, offset=len(received)), timeout=120
                        ):
                            if message.WhichOneof("message") == "chunk":
                                received += message.chunk
                        break
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                        assert time.monotonic() < deadline, f"S3 not back within 30 s: {exc.details()}"
                        time.sleep(0.2)
                whole = bytes(received)
                assert hashlib.sha256(whole).digest() == hashlib.sha256(data).digest()
            finally:
                channel.close()
            local = client.download_artifacts(run_id, "big.bin", str(tmp_path / "dl"))
            assert hashlib.sha256(Path(local).read_bytes()).digest() == hashlib.sha256(data).digest()


def _slow_upload(
    ref: pb.ArtifactRef, size: int, pause_after: int, go_on: threading.Event
) -> Iterator[pb.UploadArtifactRequest]:
    yield pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, size=size))
    sent = 0
    while sent < size:
        if sent == pause_after:
            go_on.wait(60)
        yield pb.UploadArtifactRequest(chunk=b"n" * (4 * MiB))
        sent += 4 * MiB


def test_s3_stopped_mid_overwrite_keeps_the_old_file_whole(tmp_path: Path) -> None:
    old = os.urandom(3 * MiB)
    (tmp_path / "model.bin").write_bytes(old)
    with _weed(tmp_path / "weed") as weed, make_database_url("sqlite", tmp_path) as db_url:
        s3_client(weed.endpoint, ACCESS_KEY, SECRET_KEY).make_bucket("chaos")
        with _server(weed.endpoint, db_url) as handle:  # type: ignore[attr-defined]
            client = keel.Client(handle.uri)
            run_id = client.create_run(client.create_experiment("chaos-s3-overwrite")).info.run_id
            before = client.log_artifact(run_id, str(tmp_path / "model.bin"))
            ref = pb.ArtifactRef(run_id=run_id, path="model.bin")
            go_on = threading.Event()
            channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
            try:
                stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
                upload = stub.UploadArtifact.future(_slow_upload(ref, 32 * MiB, 12 * MiB, go_on), timeout=120)
                time.sleep(1.0)  # 12 MiB sent: multipart parts on S3
                _outage(weed)
                go_on.set()
                with pytest.raises(grpc.RpcError) as err:
                    upload.result(timeout=90)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                go_on.set()
                channel.close()
            weed.start()
            stat = client.stat_artifact("model.bin", run_id=run_id)  # the old file, whole
            assert (stat.file_size, stat.sha256) == (before.file_size, before.sha256)
            local = client.download_artifacts(run_id, "model.bin", str(tmp_path / "dl"))
            assert Path(local).read_bytes() == old
            (tmp_path / "model.bin").write_bytes(b"new" * 1000)
            after = client.log_artifact(run_id, str(tmp_path / "model.bin"))  # the retry succeeds
            assert client.stat_artifact("model.bin", run_id=run_id).sha256 == after.sha256
