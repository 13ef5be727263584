"""Helpers of the artifact suite: in-process servers per (artifact store, database) pair, runs
created straight through the Peewee models, and a private SeaweedFS for tests that stop it."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends import make_database_url, make_s3_bucket
from server_fixtures import ServerHandle, running_server, s3_settings

from keel_server.common import db as dbmod

STORES = ("local", "s3")


@dataclass
class ArtifactServer:
    handle: ServerHandle
    store_kind: str
    s3: dict[str, Any] | None

    @property
    def uri(self) -> str:
        return self.handle.uri

    @property
    def root_uri(self) -> str:
        assert self.handle.running is not None
        return self.handle.running.app.artifact_store.root_uri

    def client(self) -> Any:
        import keel

        return keel.Client(self.uri)


def make_run(root_uri: str) -> str:
    """An experiment and a run with keel's default artifact layout, inserted directly."""
    exp = dbmod.Experiment.create(name=f"exp-{uuid.uuid4().hex}", artifact_location="")
    exp.artifact_location = f"{root_uri}/{exp.experiment_id}"
    exp.save()
    run_id = uuid.uuid4().hex
    dbmod.Run.create(
        run_id=run_id, experiment=exp, start_time=dbmod.now_ms(), artifact_uri=f"{exp.artifact_location}/{run_id}/artifacts"
    )
    return run_id


@contextlib.contextmanager
def artifact_server(store_kind: str, db_kind: str, folder: Path) -> Iterator[ArtifactServer]:
    with make_database_url(db_kind, folder) as db_url, contextlib.ExitStack() as stack:
        s3: dict[str, Any] | None = None
        overrides: dict[str, Any] = {}
        if store_kind == "s3":
            s3 = stack.enter_context(make_s3_bucket())
            artifact_uri = s3["artifact_uri"]
            overrides = s3_settings(s3)
        else:
            artifact_uri = f"file://{folder}/artifacts"
        with running_server(db_url, artifact_uri, services=("artifacts",), **overrides) as handle:
            yield ArtifactServer(handle, store_kind, s3)


# ---------------------------------------------------------------- a private SeaweedFS
WEED = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "weed")
ACCESS_KEY, SECRET_KEY = "keelprivate", "keelprivate-secret-456"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class PrivateS3:
    endpoint: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def private_seaweedfs(folder: Path) -> Iterator[PrivateS3]:
    """``weed mini`` with auth on, on its own ports (base 28433+k, away from with_services.sh's)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "s3.json").write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "p",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    (folder / "data").mkdir(exist_ok=True)
    base = 28433
    chosen = None
    for k in range(40):
        ports = (base + k, base + 555 + k, base + 1000 + k, base + 1020 + k, base + 5313 + k)
        if all(_port_free(p) and _port_free(p + 10000) for p in ports):
            chosen = ports
            break
    assert chosen, "no free port set for a private SeaweedFS"
    s3, filer, master, volume, admin = chosen
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            WEED, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={folder / 's3.json'}", f"-s3.port={s3}", f"-filer.port={filer}", f"-master.port={master}",
            f"-volume.port={volume}", f"-admin.port={admin}",
            f"-s3.localSocket={folder / 's3.sock'}", f"-filer.localSocket={folder / 'filer.sock'}",
        ],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    server = PrivateS3(endpoint=f"127.0.0.1:{s3}", process=process)
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness check: /healthz answers 200
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{s3}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (folder / "weed.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "private SeaweedFS did not become ready in 30 s"
            time.sleep(0.1)
        yield server
    finally:
        server.stop()
        log.close()
        for p in chosen:  # weed leaves some gRPC unix sockets behind
            for sock in glob.glob(f"/tmp/seaweedfs-*-grpc-{p + 10000}.sock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sock)
        shutil.rmtree(folder / "data", ignore_errors=True)


# ---------------------------------------------------------------- a TCP proxy that cuts connections
class CuttingProxy:
    """A loopback TCP proxy in front of a gRPC server. The first ``cuts`` connections are reset
    once ``cut_after`` bytes have flowed in ``direction`` ("down": server→client, "up":
    client→server); later connections pass untouched. Counts the bytes of each direction."""

    def __init__(self, target_port: int, cut_after: int, direction: str, cuts: int = 1) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.direction = direction
        self.cuts_left = cuts
        self.bytes = {"up": 0, "down": 0}
        # Bytes each connection carried, by direction (in accept order).
        self.per_connection: list[dict[str, int]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.connections += 1
                counts = {"up": 0, "down": 0}
                self.per_connection.append(counts)
                cut = self.cuts_left > 0
                self.cuts_left -= 1 if cut else 0
                self._sockets += [client, upstream]
            state = {"moved": 0}
            for src, dst, direction in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(
                    target=self._pump,
                    args=(src, dst, direction, cut and direction == self.direction, state, counts, (client, upstream)),
                    daemon=True,
                ).start()

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        direction: str,
        cut: bool,
        state: dict[str, int],
        counts: dict[str, int],
        pair: tuple[socket.socket, ...],
    ) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self.bytes[direction] += len(data)
                    counts[direction] += len(data)
                if cut:
                    state["moved"] += len(data)
                    if state["moved"] >= self.cut_after:
                        self._reset(pair)
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _reset(pair: tuple[socket.socket, ...]) -> None:
        for s in pair:  # SO_LINGER 0: close with RST, as a dropped network path would look
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # shutdown() wakes the other pump thread blocked in recv() on this socket; a bare
            # close() would not, and the peer would never learn the connection is gone.
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()


def wait_until(condition: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Polls ``condition()`` (a readiness check, bounded in time) until it is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
