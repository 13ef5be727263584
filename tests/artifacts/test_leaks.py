"""No leaks: what a dead upload leaves in the artifact store is removed.

- local store: the staging file of an upload whose server was killed (with its whole announced
  size reserved) goes at the next start; entries of live uploads of other processes sharing the
  folder stay until they are idle for ``stale_upload_seconds``;
- S3: a multipart upload that could not be aborted (S3 down when the upload failed) is aborted
  by the retry or, failing that, by the sweep at the next start.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import urllib3
from art_helpers import ACCESS_KEY, SECRET_KEY, WEED, make_run, wait_until
from backends import make_database_url, make_s3_bucket, s3_client
from server_fixtures import running_server, server_process

from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel_server.artifacts.stores import local as localmod
from keel_server.artifacts.stores import s3 as s3mod
from keel_server.artifacts.stores.local import STAGING_DIR, LocalArtifactStore
from keel_server.artifacts.stores.s3 import S3ArtifactStore
from keel_server.common.config import Settings
from keel_server.common.server import UploadSweeper, open_app

MiB = 1024 * 1024


def _run_in(db_url: str, root_uri: str) -> str:
    """A run whose artifacts live under ``root_uri``, created before the server starts."""
    app = open_app(replace(Settings(), db_url=db_url))
    try:
        return make_run(root_uri)
    finally:
        app.database.close()


def _staging(root: Path) -> list[str]:
    folder = root / STAGING_DIR
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _start_of(pid: int) -> str:
    start = localmod._process_start(pid)
    assert start, f"no /proc start time for pid {pid}"
    return start


def _entry(root: Path, owner: str, host: str, suffix: str = ".part", folder: bool = False) -> str:
    """A staging entry named as keel names them (``<uuid>.<pid>-<start>.<host><suffix>``)."""
    name = f"{uuid.uuid4().hex}.{owner}.{host}{suffix}"
    path = root / STAGING_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        path.mkdir()
        (path / "f.bin").write_bytes(b"x" * 1000)
    else:
        path.write_bytes(b"x" * 1000)
    return name


# ---------------------------------------------------------------- local store: the sweep rules
def test_local_sweep_removes_dead_owners_and_idle_entries_never_live_uploads(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    open_app(replace(Settings(), db_url=f"sqlite:///{tmp_path}/keel.db"))  # the checksum table
    store = LocalArtifactStore(f"file://{root}")
    host = localmod._HOST
    # A process that is gone, and this pid in an earlier life (same pid, another start time).
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    dead = [
        _entry(root, f"{dead_pid}-1", host),
        _entry(root, f"{os.getpid()}-1", host, ".copy", folder=True),
        _entry(root, f"{dead_pid}-1", host, ".old", folder=True),
    ]
    # A live process on this host (another replica sharing the folder), another host, and an
    # entry of an older keel that names no owner: only their age can tell them dead.
    replica = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        undecided = [
            _entry(root, f"{replica.pid}-{_start_of(replica.pid)}", host),
            _entry(root, f"{dead_pid}-1", "another-host.example"),
        ]
        legacy = root / STAGING_DIR / f"{uuid.uuid4().hex}.part"
        legacy.write_bytes(b"x")
        undecided.append(legacy.name)
        # This process's own upload in progress.
        writer = store.open_writer(f"file://{root}/live/a.bin", expected_size=2 * MiB)
        writer.write(b"a" * MiB)
        live = [n for n in _staging(root) if n not in dead + undecided]
        assert len(live) == 1 and live[0].endswith(".part")

        assert store.sweep(3600) == len(dead)
        assert _staging(root) == sorted(undecided + live)
        # Idle for the stale age (0 here): whoever owns them, except this process's live upload.
        assert store.sweep(0) == len(undecided)
        assert _staging(root) == live
        writer.write(b"b" * MiB)
        info = writer.commit(2 * MiB, "")
        assert info.size == 2 * MiB and (root / "live" / "a.bin").stat().st_size == 2 * MiB
        assert _staging(root) == []
    finally:
        assert replica.stdin is not None
        replica.stdin.close()
        replica.wait(timeout=30)


def test_local_copy_tree_leaves_nothing_in_staging_and_is_never_swept_midway(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    open_app(replace(Settings(), db_url=f"sqlite:///{tmp_path}/keel.db"))
    store = LocalArtifactStore(f"file://{root}")
    for name in ("a.bin", "b/c.bin"):
        writer = store.open_writer(f"file://{root}/src/{name}")
        writer.write(b"data of " + name.encode())
        writer.commit(None, "")
    store.copy_tree(f"file://{root}/src", f"file://{root}/dst")
    store.copy_tree(f"file://{root}/src", f"file://{root}/dst")  # over a folder: moved aside as .old
    assert (root / "dst" / "b" / "c.bin").read_bytes() == b"data of b/c.bin"
    assert _staging(root) == []
    assert store.sweep(0) == 0


def test_running_server_sweeps_periodically_and_stops_sweeping_at_shutdown(tmp_path: Path) -> None:
    """With a stale age of 0 the sweep runs every second: an entry idle that long goes while the
    server runs; the sweeper thread ends with the server."""
    root = tmp_path / "artifacts"
    with running_server(
        f"sqlite:///{tmp_path}/keel.db", f"file://{root}", services=("artifacts",), stale_upload_seconds=0.0
    ) as handle:
        assert handle.running is not None
        (sweeper,) = [
            h.__self__
            for h in handle.running.app.shutdown_hooks
            if isinstance(getattr(h, "__self__", None), UploadSweeper)
        ]
        assert sweeper.interval == 1.0
        # Entries of a replica elsewhere (only age tells). The second is made after the first
        # was removed, so a later pass than the one that removed the first removes it.
        for _ in range(2):
            name = _entry(root, "1-1", "another-host.example")
            wait_until(lambda: name not in _staging(root), 15, "the periodic sweep")  # noqa: B023
    assert not sweeper._thread.is_alive()


# ---------------------------------------------------------------- local store: a killed server
def _upload_messages(
    ref: pb.ArtifactRef, size: int, before: int, release: threading.Event, after: int = 0
) -> Iterator[pb.UploadArtifactRequest]:
    """Header announcing ``size`` bytes, ``before`` bytes, then waits for ``release`` (bounded)
    and sends ``after`` more bytes (chunks of 4 MiB)."""
    yield pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, size=size))
    for _ in range(before // (4 * MiB)):
        yield pb.UploadArtifactRequest(chunk=os.urandom(4 * MiB))
    release.wait(60)
    for _ in range(after // (4 * MiB)):
        yield pb.UploadArtifactRequest(chunk=os.urandom(4 * MiB))


def test_server_killed_mid_upload_leaves_no_staging_file_after_restart(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    env = {
        "KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{root}",
        "KEEL_SERVICES": "artifacts",
    }
    ref = pb.ArtifactRef(run_id=_run_in(env["KEEL_DB_URL"], f"file://{root}"), path="big.bin")
    release = threading.Event()
    with server_process(env=env, cwd=tmp_path) as first:
        assert first.process is not None
        channel = grpc.insecure_channel(f"127.0.0.1:{first.port}")
        try:
            upload = artifacts_pb2_grpc.ArtifactServiceStub(channel).UploadArtifact.future(
                _upload_messages(ref, 48 * MiB, 8 * MiB, release), timeout=120
            )
            wait_until(lambda: any(n.endswith(".part") for n in _staging(root)), 30, "the staging file")
            (part,) = _staging(root)
            assert os.stat(root / STAGING_DIR / part).st_blocks * 512 >= 48 * MiB  # reserved up front
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=30)
        finally:
            release.set()
            channel.close()
        with pytest.raises(grpc.RpcError):
            upload.result(timeout=30)
    assert _staging(root) == [part]  # what the crash left

    with server_process(env=env, cwd=tmp_path) as second:
        wait_until(lambda: not _staging(root), 30, "the start sweep to remove the dead upload's staging file")
        channel = grpc.insecure_channel(f"127.0.0.1:{second.port}")
        try:
            stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
            messages = [
                pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, size=5)),
                pb.UploadArtifactRequest(chunk=b"after"),
            ]
            info = stub.UploadArtifact(iter(messages), timeout=60)
            assert info.file_size == 5
            assert [p.read_bytes() for p in root.rglob("big.bin")] == [b"after"]
        finally:
            channel.close()
    assert _staging(root) == []


# ---------------------------------------------------------------- S3: the sweep and the abort retry
def _incomplete(s3: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    client = s3_client(s3["endpoint"], s3["access_key"], s3["secret_key"])
    result = client._list_multipart_uploads(s3["bucket"], prefix=prefix or None)
    return [(u.object_name, u.upload_id) for u in result.uploads]


def _s3_store(s3: dict[str, Any]) -> S3ArtifactStore:
    return S3ArtifactStore(s3["artifact_uri"], s3["endpoint_url"], s3["access_key"], s3["secret_key"])


def test_s3_sweep_aborts_stale_multipart_uploads_under_the_prefix_only(tmp_path: Path) -> None:
    open_app(replace(Settings(), db_url=f"sqlite:///{tmp_path}/keel.db"))
    with make_s3_bucket() as s3:
        store = _s3_store(s3)
        client = s3_client(s3["endpoint"], s3["access_key"], s3["secret_key"])
        prefix = store.prefix + "/"
        orphan = client._create_multipart_upload(s3["bucket"], f"{prefix}1/run/artifacts/cut.bin", {})
        client._upload_part(
            s3["bucket"], f"{prefix}1/run/artifacts/cut.bin", b"p" * (5 * MiB), None, orphan, 1
        )
        client._create_multipart_upload(s3["bucket"], f"{prefix}2/empty.bin", {})  # no part yet
        outside = client._create_multipart_upload(s3["bucket"], "elsewhere/x.bin", {})
        try:
            live = store.open_writer(f"{store.root_uri}/3/live.bin")
            live.write(b"l" * (9 * MiB))  # one part sent: a multipart upload in progress
            wait_until(lambda: len(_incomplete(s3, prefix)) == 3, 30, "the live upload's multipart upload")

            assert store.sweep(3600) == 0  # all fresh
            assert store.sweep(0) == 2  # stale at age 0, except the live one
            assert [key for key, _ in _incomplete(s3, prefix)] == [f"{prefix}3/live.bin"]
            live.abort()
            assert _incomplete(s3, prefix) == []
            assert [upload for _, upload in _incomplete(s3)] == [outside]  # not the store's
        finally:
            client._abort_multipart_upload(s3["bucket"], "elsewhere/x.bin", outside)


def test_s3_abort_that_fails_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_app(replace(Settings(), db_url=f"sqlite:///{tmp_path}/keel.db"))
    monkeypatch.setattr(s3mod, "ABORT_RETRY_DELAYS", (0.05, 0.1, 0.2))
    with make_s3_bucket() as s3:
        store = _s3_store(s3)
        real_abort = store.client._abort_multipart_upload
        calls: list[str] = []

        def flaky_abort(bucket: str, key: str, upload_id: str) -> None:
            calls.append(upload_id)
            if len(calls) == 1:
                raise urllib3.exceptions.ProtocolError("connection reset (S3 outage)")
            real_abort(bucket, key, upload_id)

        monkeypatch.setattr(store.client, "_abort_multipart_upload", flaky_abort)
        writer = store.open_writer(f"{store.root_uri}/1/cut.bin")
        writer.write(b"c" * (9 * MiB))
        wait_until(lambda: len(_incomplete(s3)) == 1, 30, "the multipart upload")
        writer.abort()  # the first abort fails; a background retry succeeds
        wait_until(lambda: not _incomplete(s3), 30, "the retried abort")
        assert len(calls) >= 2


# ---------------------------------------------------------------- S3: an outage, then a restart
class RestartableSeaweed:
    """A private ``weed mini`` (auth on) that can be stopped and started again on the same data
    and ports; base ports 38433+k, away from with_services.sh's and art_helpers'."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data").mkdir(exist_ok=True)
        identity = {"name": "p", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}  # fmt: skip
        (folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.ports: tuple[int, ...] = ()
        for k in range(40):
            base = 38433 + k
            ports = (base, base + 555, base + 1000, base + 1020, base + 5313)
            if all(_free(p) and _free(p + 10000) for p in ports):
                self.ports = ports
                break
        assert self.ports, "no free port set for a private SeaweedFS"
        self.endpoint = f"127.0.0.1:{self.ports[0]}"
        self.process: subprocess.Popen[bytes] | None = None
        self._logs: list[Any] = []

    def start(self) -> None:
        s3, filer, master, volume, admin = self.ports
        log = open(self.folder / f"weed-{len(self._logs)}.log", "wb")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        self.process = subprocess.Popen(
            [
                WEED, "mini", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", f"-s3.config={self.folder / 's3.json'}", f"-s3.port={s3}",
                f"-filer.port={filer}", f"-master.port={master}", f"-volume.port={volume}", f"-admin.port={admin}",
                f"-s3.localSocket={self.folder / 's3.sock'}", f"-filer.localSocket={self.folder / 'filer.sock'}",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        process = self.process
        deadline = time.monotonic() + 60
        while True:  # readiness check: /healthz answers 200
            try:
                with urllib.request.urlopen(f"http://{self.endpoint}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert process.poll() is None, f"weed exited: {log.name}"
            assert time.monotonic() < deadline, "private SeaweedFS did not become ready in 60 s"
            time.sleep(0.1)

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        self.stop()
        for log in self._logs:
            log.close()
        for p in self.ports:  # weed leaves some gRPC unix sockets behind
            for sock in glob.glob(f"/tmp/seaweedfs-*-grpc-{p + 10000}.sock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sock)


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@contextlib.contextmanager
def restartable_seaweed(folder: Path) -> Iterator[RestartableSeaweed]:
    weed = RestartableSeaweed(folder)
    try:
        weed.start()
        yield weed
    finally:
        weed.close()


def test_s3_outage_mid_upload_then_restart_aborts_the_orphaned_multipart_upload(tmp_path: Path) -> None:
    """S3 stops mid-upload: the upload fails and its abort too; the server dies before its
    retries succeed. The next server start sweeps the multipart upload away."""
    with restartable_seaweed(tmp_path / "weed") as weed, make_database_url("sqlite", tmp_path) as db_url:
        bucket = "leaks"
        s3 = {"endpoint": weed.endpoint, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "bucket": bucket}
        s3_client(weed.endpoint, ACCESS_KEY, SECRET_KEY).make_bucket(bucket)
        env = {
            "KEEL_DB_URL": db_url,
            "KEEL_ARTIFACT_URI": f"s3://{bucket}/keel",
            "KEEL_S3_ENDPOINT_URL": f"http://{weed.endpoint}",
            "KEEL_S3_ACCESS_KEY": ACCESS_KEY,
            "KEEL_S3_SECRET_KEY": SECRET_KEY,
            "KEEL_SERVICES": "artifacts",
        }
        ref = pb.ArtifactRef(run_id=_run_in(db_url, f"s3://{bucket}/keel"), path="big.bin")
        release = threading.Event()
        with server_process(env=env, cwd=tmp_path) as first:
            assert first.process is not None
            channel = grpc.insecure_channel(f"127.0.0.1:{first.port}")
            try:
                upload = artifacts_pb2_grpc.ArtifactServiceStub(channel).UploadArtifact.future(
                    _upload_messages(ref, 32 * MiB, 12 * MiB, release, after=20 * MiB), timeout=120
                )
                wait_until(lambda: len(_incomplete(s3, "keel/")) == 1, 30, "the multipart upload to start")
                weed.stop()  # the outage
                release.set()  # the rest of the stream arrives: the upload fails, its abort too
                with pytest.raises(grpc.RpcError) as err:
                    upload.result(timeout=60)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                first.process.send_signal(signal.SIGKILL)  # before any retry of the abort can succeed
                first.process.wait(timeout=30)
            finally:
                release.set()
                channel.close()

        weed.start()
        (leaked,) = _incomplete(s3, "keel/")  # what the outage left: invisible, holding storage
        assert leaked[0].startswith("keel/") and leaked[0].endswith("/big.bin")

        with server_process(env={**env, "KEEL_STALE_UPLOAD_SECONDS": "0"}, cwd=tmp_path) as second:
            wait_until(
                lambda: not _incomplete(s3, "keel/"), 30, "the start sweep to abort the multipart upload"
            )
            channel = grpc.insecure_channel(f"127.0.0.1:{second.port}")
            try:
                messages = [
                    pb.UploadArtifactRequest(header=pb.UploadHeader(ref=ref, size=5)),
                    pb.UploadArtifactRequest(chunk=b"after"),
                ]
                info = artifacts_pb2_grpc.ArtifactServiceStub(channel).UploadArtifact(
                    iter(messages), timeout=60
                )
                assert info.file_size == 5
            finally:
                channel.close()
