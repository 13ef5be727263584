"""What goes wrong: cut uploads and downloads, a store that stops, wrong credentials, an
unknown store scheme. Each leaves nothing half-written and says clearly what happened."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from art_helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    ArtifactServer,
    CuttingProxy,
    make_run,
    private_seaweedfs,
    wait_until,
)
from backends import make_database_url, make_s3_bucket, s3_client
from server_fixtures import running_server, s3_settings

import keel
from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.exceptions import FailedPrecondition, Unavailable

MiB = 1024 * 1024


def _stub(uri: str) -> artifacts_pb2_grpc.ArtifactServiceStub:
    return artifacts_pb2_grpc.ArtifactServiceStub(grpc.insecure_channel(uri.removeprefix("grpc://")))


def _leftovers(server: ArtifactServer) -> list[str]:
    """Uploads in progress the store still holds: staging files, or open S3 multipart uploads."""
    if server.store_kind == "local":
        staging = Path(server.root_uri.removeprefix("file://"), ".keel-staging")
        return [p.name for p in staging.iterdir()] if staging.exists() else []
    assert server.s3 is not None
    client = s3_client(server.s3["endpoint"], server.s3["access_key"], server.s3["secret_key"])
    return [u.object_name for u in client._list_multipart_uploads(server.s3["bucket"]).uploads]


def test_upload_cut_off_halfway_leaves_nothing(art_server: ArtifactServer, run_id: str) -> None:
    """40 MiB sent (S3: several parts uploaded) of an announced 64 MiB, then the client dies."""
    ref = pb.ArtifactRef(run_id=run_id, path="cut/big.bin")

    def messages() -> Iterator[pb.UploadArtifactRequest]:
        yield pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, size=64 * MiB))
        for _ in range(20):
            yield pb.UploadArtifactRequest(chunk=os.urandom(2 * MiB))
        raise RuntimeError("client crashed half-way")

    with pytest.raises(grpc.RpcError) as err:
        _stub(art_server.uri).UploadArtifact(messages())
    assert err.value.code() == grpc.StatusCode.CANCELLED or err.value.code() == grpc.StatusCode.UNKNOWN
    client = art_server.client()
    wait_until(lambda: not _leftovers(art_server), what="the server to abort the cut upload")
    with pytest.raises(keel.exceptions.NotFound):
        client.stat_artifact("cut/big.bin", run_id=run_id)
    assert client.list_artifacts(run_id) == []


def test_download_cut_off_resumes_from_offset(art_server: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    data = os.urandom(24 * MiB)
    (tmp_path / "f.bin").write_bytes(data)
    art_server.client().log_artifact(run_id, str(tmp_path / "f.bin"))
    proxy = CuttingProxy(art_server.handle.port, cut_after=16 * MiB, direction="down")
    try:
        client = keel.Client(f"grpc://127.0.0.1:{proxy.port}")
        local = client.download_artifacts(run_id, "f.bin", str(tmp_path / "dl"))
        assert hashlib.sha256(Path(local).read_bytes()).digest() == hashlib.sha256(data).digest()
        assert proxy.connections == 2  # cut once, then resumed on a new connection
        # Resumed, not restarted: the second connection carried only the rest of the file.
        assert proxy.per_connection[1]["down"] < len(data) - MiB, proxy.per_connection
    finally:
        proxy.close()
    assert not list((tmp_path / "dl").glob("*.keel-part"))


def test_upload_cut_off_is_retried_whole(art_server: ArtifactServer, run_id: str, tmp_path: Path) -> None:
    data = os.urandom(24 * MiB)
    (tmp_path / "u.bin").write_bytes(data)
    proxy = CuttingProxy(art_server.handle.port, cut_after=8 * MiB, direction="up")
    try:
        info = keel.Client(f"grpc://127.0.0.1:{proxy.port}").log_artifact(run_id, str(tmp_path / "u.bin"))
        assert proxy.connections == 2
    finally:
        proxy.close()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    local = art_server.client().download_artifacts(run_id, "u.bin", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == data
    wait_until(lambda: not _leftovers(art_server), what="the cut attempt to be aborted")


def test_s3_stopped_mid_test_is_unavailable(tmp_path: Path) -> None:
    """A private SeaweedFS (the shared one keeps running): stop it, and calls fail fast with
    UNAVAILABLE naming the store, never hang."""
    with private_seaweedfs(tmp_path / "weed") as weed, make_database_url("sqlite", tmp_path) as db_url:
        with running_server(
            db_url, "s3://private-bucket/keel", services=("artifacts",),
            s3_endpoint_url=f"http://{weed.endpoint}", s3_access_key=ACCESS_KEY, s3_secret_key=SECRET_KEY,
        ) as handle:  # fmt: skip
            assert handle.running is not None
            run_id = make_run(handle.running.app.artifact_store.root_uri)
            client = keel.Client(handle.uri)
            client.log_text(run_id, "before the outage", "a.txt")  # the bucket was created on first use
            weed.stop()

            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                _stub(handle.uri).StatArtifact(pb.StatArtifactRequest(ref=pb.ArtifactRef(run_id=run_id, path="a.txt")), timeout=30)
            assert time.monotonic() - started < 10
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert f"artifact store s3://private-bucket/keel at http://{weed.endpoint} is unavailable" in err.value.details()

            started = time.monotonic()
            with pytest.raises(Unavailable) as sdk_err:  # the SDK retried, then gave up with the reason
                client.log_text(run_id, "during the outage", "b.txt")
            assert time.monotonic() - started < 60
            assert sdk_err.value.reason == "ARTIFACT_STORE_UNAVAILABLE"


def test_wrong_s3_secret_is_a_clear_error(tmp_path: Path) -> None:
    with make_s3_bucket() as s3, make_database_url("sqlite", tmp_path) as db_url:
        wrong = {**s3_settings(s3), "s3_secret_key": "not-the-secret"}
        with running_server(db_url, s3["artifact_uri"], services=("artifacts",), **wrong) as handle:
            assert handle.running is not None
            run_id = make_run(handle.running.app.artifact_store.root_uri)
            with pytest.raises(FailedPrecondition) as err:
                keel.Client(handle.uri).log_text(run_id, "x", "a.txt")
    assert err.value.reason == "ARTIFACT_STORE_AUTH_FAILED"
    assert "refused keel's credentials" in err.value.message and "KEEL_S3_SECRET_KEY" in err.value.message


def test_unknown_scheme_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keel.cli", "server", "--port", "0", "--services", "artifacts",
         "--db-url", f"sqlite:///{tmp_path}/k.db", "--artifact-uri", "gs://bucket/x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]  # earlier lines are JSON logs (migrations)
    assert last.startswith("keel server: cannot start: unknown artifact store scheme 'gs'"), result.stderr
    assert "known schemes: file, s3" in last and "Traceback" not in result.stderr


def test_s3_without_endpoint_refused_at_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_S3_")}
    result = subprocess.run(
        [sys.executable, "-m", "keel.cli", "server", "--port", "0", "--services", "artifacts",
         "--db-url", f"sqlite:///{tmp_path}/k.db", "--artifact-uri", "s3://bucket/x"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode != 0 and "KEEL_S3_ENDPOINT_URL" in result.stderr
