"""``keel models serve --workers N``: N model worker processes behind one port.

Each worker is a complete single-process server (gRPC keel v1 + KServe v2, and HTTP) that
binds the same ports with SO_REUSEPORT; the kernel spreads connections over them, so CPU-bound
models use N cores and the GIL of one process never caps throughput. This parent only
supervises: it reserves the port (when 0 is asked for), starts the workers, prints the ready
line once all of them are listening, restarts a worker that dies (at most ``MAX_RESTARTS`` in
a row without a healthy minute), and forwards SIGTERM/SIGINT for a graceful stop.

Clients see one address; a single gRPC channel sticks to one worker (one TCP connection), so
spread load with several channels or connections (HTTP clients do so naturally).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from keel_server.inference.standalone import READY_LINE, ServeOptions

MAX_RESTARTS = 5
START_TIMEOUT_S = 300.0


@contextlib.contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """A port bound (not listening) with SO_REUSEPORT so workers can join it and nobody else takes it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _command(options: ServeOptions, port: int, http_port: int) -> list[str]:
    cmd = [
        sys.executable, "-m", "keel.cli.serving",
        "-m", options.model_uri,
        "--host", options.host,
        "--port", str(port),
        "--http-port", str(http_port),
        "--workers", "1",
        "--reuse-port",
        "--max-batch-size", str(options.max_batch_size),
        "--max-batch-delay-ms", str(options.max_batch_delay_ms),
        "--poll-seconds", str(options.poll_seconds),
    ]  # fmt: skip
    if options.name:
        cmd += ["--name", options.name]
    if options.tracking_uri:
        cmd += ["--tracking-uri", options.tracking_uri]
    return cmd


def _start(cmd: list[str]) -> subprocess.Popen[str]:
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in child.stdout:  # the worker prints its ready line once the model is loaded
        if line.startswith("keel models serve listening"):
            break
        sys.stdout.write(line)
        if time.monotonic() > deadline:
            break
    else:
        child.wait()
        raise RuntimeError(f"a model worker exited with {child.returncode} before listening")
    threading.Thread(target=_drain, args=(child.stdout,), daemon=True).start()
    return child


def _drain(stream: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(line)


def supervise(options: ServeOptions) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(_reserved_port(options.host, options.port))
        http_port = (
            stack.enter_context(_reserved_port(options.host, options.http_port)) if options.http_port else 0
        )
        cmd = _command(options, port, http_port)
        children = [_start(cmd) for _ in range(options.workers)]
    http = f" (http {options.host}:{http_port})" if http_port else ""
    print(
        READY_LINE.format(host=options.host, port=port) + http + f" with {options.workers} workers",
        flush=True,
    )
    restarts, healthy_since = 0, time.monotonic()
    while not stop.wait(0.5):
        if time.monotonic() - healthy_since > 60:
            restarts = 0
        for i, child in enumerate(children):
            if child.poll() is None:
                continue
            if restarts >= MAX_RESTARTS:
                print(
                    f"keel models serve: worker died {restarts} times in a row; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                stop.set()
                break
            print(
                f"keel models serve: worker {child.pid} exited with {child.returncode}; restarting",
                file=sys.stderr,
                flush=True,
            )
            restarts += 1
            healthy_since = time.monotonic()
            children[i] = _start(cmd)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0
