"""Shared pieces of the chaos suite: writers that keep a ledger of acknowledged points, the
exactly-once check, a private PostgreSQL cluster that can be stopped and started, a private
``keel server`` on a fixed port that can be killed and restarted, RSS and the report file.

Every loop here is bounded in count and in time; every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server_fixtures import ServerHandle, free_port, server_process

import keel
from keel.entities import Metric
from keel.exceptions import KeelError

FULL = os.environ.get("KEEL_CHAOS_FULL") == "1"


def bounded(short: float, full: float) -> float:
    """``full`` under ``make test-chaos`` (KEEL_CHAOS_FULL=1), ``short`` in ``make test``."""
    return full if FULL else short


# ---------------------------------------------------------------- writers and their ledger
@dataclass
class Ledger:
    """What each writer was told: acknowledged steps per key, every step it tried, and the
    errors it saw by ``CODE:REASON``."""

    acked: dict[str, list[int]] = field(default_factory=dict)
    attempted: dict[str, set[int]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def total_acked(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.acked.values())


def error_label(exc: KeelError) -> str:
    return f"{exc.code.name}:{exc.reason}"


def writer(
    uri: str, run_id: str, key: str, ledger: Ledger, stop: threading.Event, max_steps: int, deadline: float
) -> None:
    """Logs (key, step) for step 0, 1, ... with ``log_batch`` (request id: retried safely by the
    SDK) until ``stop``, ``max_steps`` or ``deadline``. A failed step is not retried by the
    writer (its outcome is unknown: stored or not, but never twice)."""
    client = keel.Client(uri)
    with ledger.lock:
        ledger.acked.setdefault(key, [])
        ledger.attempted.setdefault(key, set())
    for step in range(max_steps):
        if stop.is_set() or time.monotonic() > deadline:
            return
        with ledger.lock:
            ledger.attempted[key].add(step)
        try:
            client.log_batch(run_id, metrics=[Metric(key, float(step), int(time.time() * 1000), step)])
        except KeelError as exc:
            with ledger.lock:
                ledger.errors[error_label(exc)] += 1
            time.sleep(0.05)
            continue
        with ledger.lock:
            ledger.acked[key].append(step)


@contextlib.contextmanager
def writers(
    uri: str, run_id: str, count: int, max_steps: int, seconds: float
) -> Iterator[tuple[Ledger, threading.Event]]:
    """``count`` writer threads (keys w0..w<count-1>); joined (bounded) on exit."""
    ledger = Ledger()
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(
            target=writer, args=(uri, run_id, f"w{i}", ledger, stop, max_steps, deadline), daemon=True
        )
        for i in range(count)
    ]
    for t in threads:
        t.start()
    try:
        yield ledger, stop
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer did not finish within 60 s of the stop"


def wait_for_acks(ledger: Ledger, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while ledger.total_acked() < at_least:
        assert time.monotonic() < deadline, f"only {ledger.total_acked()} of {at_least} points acknowledged"
        time.sleep(0.02)


def assert_exactly_once(client: keel.Client, run_id: str, ledger: Ledger) -> dict[str, int]:
    """Every acknowledged point stored once; nothing stored twice; nothing never sent."""
    stored_total = 0
    for key, acked in ledger.acked.items():
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        stored_total += len(steps)
        duplicates = sorted(s for s, n in Counter(steps).items() if n > 1)
        assert not duplicates, f"{key}: steps stored twice: {duplicates[:20]}"
        missing = sorted(set(acked) - set(steps))
        assert not missing, f"{key}: acknowledged steps lost: {missing[:20]}"
        unknown = sorted(set(steps) - ledger.attempted[key])
        assert not unknown, f"{key}: steps stored that no writer sent: {unknown[:20]}"
    return {"acknowledged": sum(len(v) for v in ledger.acked.values()), "stored": stored_total}


# ---------------------------------------------------------------- a restartable keel server
class KeelProcess:
    """``keel server`` as a child process on a fixed port over ``env``; killable, restartable."""

    def __init__(self, env: dict[str, str], cwd: Path, args: list[str] | None = None) -> None:
        self.env = env
        self.cwd = cwd
        self.port = free_port()
        self.uri = f"grpc://127.0.0.1:{self.port}"
        self.args = ["--port", str(self.port), *(args or [])]
        self._stack = contextlib.ExitStack()
        self.handle: ServerHandle | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.handle is not None and self.handle.process is not None
        return self.handle.process.pid

    def start(self) -> None:
        self.handle = self._stack.enter_context(server_process(self.args, env=self.env, cwd=self.cwd))
        process = self.handle.process
        assert process is not None
        # Drain the server's output into a file: an undrained pipe fills (64 KiB) under an
        # outage's error logs and blocks the server's logging threads, which is not the server's fault.
        self.starts += 1
        for name, stream in (("stdout", process.stdout), ("stderr", process.stderr)):
            if stream is not None:
                target = self.cwd / f"keel-server-{self.starts}.{name}.log"
                threading.Thread(target=_drain, args=(stream, target), daemon=True).start()

    def kill(self) -> None:
        assert self.handle is not None and self.handle.process is not None
        self.handle.process.send_signal(signal.SIGKILL)
        self.handle.process.wait(timeout=30)
        self._stack.close()  # nothing left to stop
        self._stack = contextlib.ExitStack()

    def close(self) -> None:
        self._stack.close()


def _drain(stream: Any, target: Path) -> None:
    with open(target, "w") as out:
        for line in stream:
            out.write(line)
            out.flush()


@contextlib.contextmanager
def keel_process(env: dict[str, str], cwd: Path, args: list[str] | None = None) -> Iterator[KeelProcess]:
    server = KeelProcess(env, cwd, args)
    server.start()
    try:
        yield server
    finally:
        server.close()


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------- a private PostgreSQL cluster
def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not versions:
        import pytest

        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    return versions[-1].parent


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (trust auth) on 127.0.0.1:<free port>, run as the
    ``postgres`` user (initdb refuses root), in a temp folder it owns. The machine's shared
    PostgreSQL is never touched."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="keel-chaos-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    def _run(self, *command: str) -> None:
        full = (["runuser", "-u", "postgres", "--"] if self._as_postgres else []) + list(command)
        result = subprocess.run(full, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command[0]} failed: {result.stderr[-2000:]}{result.stdout[-1000:]}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.folder / "postgres.log"), "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


# ---------------------------------------------------------------- figures
def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def write_report(section: str, figures: dict[str, Any], local_dir: Path) -> Path:
    """Writes ``figures`` to ``local_dir/chaos-<section>.json`` and, when KEEL_CHAOS_REPORT
    names a file, merges them into it under ``section`` (one file for the whole run)."""
    local = local_dir / f"chaos-{section}.json"
    local.write_text(json.dumps(figures, indent=2, sort_keys=True))
    target = os.environ.get("KEEL_CHAOS_REPORT")
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {}
        if path.exists():
            with contextlib.suppress(ValueError):
                report = json.loads(path.read_text())
        report.setdefault("sections", {})[section] = figures
        report["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        report["full"] = FULL
        path.write_text(json.dumps(report, indent=2, sort_keys=True))
    return local
