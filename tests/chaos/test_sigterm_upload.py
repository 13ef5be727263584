"""SIGTERM while a long upload is in flight (the long-search case is
tests/foundation/test_shutdown.py): the server stops taking new calls, the upload either
finishes within the grace period (and is stored) or is cut at the grace (and nothing of it is
visible, its staging file removed); the process exits 0 within grace + SHUTDOWN_BOUND_SECONDS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_fixtures import server_process, sigterm_and_wait

import keel
from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.exceptions import NotFound
from keel_server.common.server import SHUTDOWN_BOUND_SECONDS

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.slow]

MiB = 1024 * 1024
GRACE_SECONDS = 2.0
SLACK_SECONDS = 1.5


def _paced(
    ref: pb.ArtifactRef, chunks: int, interval: float, started: threading.Event
) -> Iterator[pb.UploadArtifactRequest]:
    yield pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, size=chunks * MiB))
    for _ in range(chunks):
        started.set()
        yield pb.UploadArtifactRequest(chunk=b"u" * MiB)
        time.sleep(interval)


def _staging(root: Path) -> list[str]:
    folder = root / ".keel-staging"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(
    ("chunks", "finishes"), [(6, True), (40, False)], ids=["finishes-in-grace", "cut-at-grace"]
)
def test_sigterm_during_a_long_upload(tmp_path: Path, chunks: int, finishes: bool) -> None:
    root = tmp_path / "artifacts"
    env = {
        "KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{root}",
        "KEEL_GRACE_SECONDS": str(GRACE_SECONDS),
    }
    with server_process(env=env, cwd=tmp_path) as handle:
        process = handle.process
        assert process is not None
        client = keel.Client(handle.uri)
        run_id = client.create_run(client.create_experiment("chaos-sigterm")).info.run_id
        ref = pb.ArtifactRef(run_id=run_id, path="long.bin")
        started = threading.Event()
        channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        try:
            # 0.2 s a MiB: 6 MiB end ~1.2 s after SIGTERM (inside the grace), 40 MiB could not.
            upload = artifacts_pb2_grpc.ArtifactServiceStub(channel).UploadArtifact.future(
                _paced(ref, chunks, 0.2, started), timeout=60
            )
            assert started.wait(30)
            time.sleep(0.1)
            rc, elapsed, stderr = sigterm_and_wait(process)
            assert rc == 0, stderr[-2000:]
            bound = GRACE_SECONDS + SHUTDOWN_BOUND_SECONDS + SLACK_SECONDS
            assert elapsed < bound, f"exit took {elapsed:.1f} s after SIGTERM (bound {bound:.1f} s)"
            if finishes:
                assert upload.result(timeout=30).file_size == chunks * MiB
            else:
                with pytest.raises(grpc.RpcError) as err:
                    upload.result(timeout=30)
                assert err.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        finally:
            channel.close()

    with server_process(env=env, cwd=tmp_path) as again:  # what is visible afterwards
        client = keel.Client(again.uri)
        if finishes:
            assert client.stat_artifact("long.bin", run_id=run_id).file_size == chunks * MiB
        else:
            with pytest.raises(NotFound):
                client.stat_artifact("long.bin", run_id=run_id)
        deadline = time.monotonic() + 30
        while _staging(root) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _staging(root) == []
