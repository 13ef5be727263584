"""The artifact disk fills up mid-upload: a 20 MiB tmpfs this test mounts (root needed;
skipped with the reason otherwise). The upload fails RESOURCE_EXHAUSTED with reason
STORE_FULL, nothing of it is visible (StatArtifact NOT_FOUND), its staging file is gone (the
space is free again), and the same server takes the next upload that fits."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_fixtures import running_server

import keel
from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.exceptions import NotFound, ResourceExhausted

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

MiB = 1024 * 1024


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        pytest.skip(f"mounting a 20 MiB tmpfs is not permitted here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def _staging(root: Path) -> list[str]:
    folder = root / ".keel-staging"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _free_mib(root: Path) -> float:
    stat = os.statvfs(root)
    return stat.f_bavail * stat.f_frsize / MiB


def test_disk_full_mid_upload_is_store_full_and_leaves_nothing(small_disk: Path, tmp_path: Path) -> None:
    free_before = _free_mib(small_disk)
    with running_server(f"sqlite:///{tmp_path}/keel.db", f"file://{small_disk}/artifacts") as handle:
        client = keel.Client(handle.uri)
        run_id = client.create_run(client.create_experiment("chaos-disk")).info.run_id
        client.log_text(run_id, "fits", "small.txt")

        # Size not announced: the disk fills while the bytes arrive (mid-upload).
        ref = pb.ArtifactRef(run_id=run_id, path="huge.bin")

        def messages() -> Iterator[pb.UploadArtifactRequest]:
            yield pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref))
            for _ in range(10):  # 40 MiB into 20
                yield pb.UploadArtifactRequest(chunk=b"x" * (4 * MiB))

        channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        try:
            with pytest.raises(grpc.RpcError) as err:
                artifacts_pb2_grpc.ArtifactServiceStub(channel).UploadArtifact(messages(), timeout=60)
        finally:
            channel.close()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
        assert "no room" in (err.value.details() or "")
        with pytest.raises(NotFound):
            client.stat_artifact("huge.bin", run_id=run_id)
        root = small_disk / "artifacts"
        assert _staging(root) == []  # the space is free again
        assert _free_mib(small_disk) > free_before - 1

        # Through the SDK (size announced: refused before any byte is written).
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(30 * MiB))
        with pytest.raises(ResourceExhausted) as sdk_err:
            client.log_artifact(run_id, str(big))
        assert sdk_err.value.reason == "STORE_FULL"
        with pytest.raises(NotFound):
            client.stat_artifact("big.bin", run_id=run_id)
        assert _staging(root) == []

        # The same server goes on: the next upload that fits is stored.
        fits = tmp_path / "fits.bin"
        fits.write_bytes(os.urandom(8 * MiB))
        info = client.log_artifact(run_id, str(fits))
        assert info.file_size == 8 * MiB
        assert sorted(f.path for f in client.list_artifacts(run_id)) == ["fits.bin", "small.txt"]
