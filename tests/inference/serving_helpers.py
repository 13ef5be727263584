"""Helpers of the inference tests: the iris model and `keel models serve` as a child process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server_fixtures import free_port

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
READY = re.compile(r"keel models serve listening on [^:]+:(\d+)")


def iris_frame() -> Any:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = IRIS_COLUMNS
    return X, y


def save_iris(path: Path, seed: int = 0, n_estimators: int = 50) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    import keel.sklearn

    X, y = iris_frame()
    model = RandomForestClassifier(n_estimators=n_estimators, random_state=seed).fit(X, y)
    keel.sklearn.save_model(model, str(path), input_example=X.head(3))
    return model


@dataclass
class Served:
    port: int
    http_port: int
    process: subprocess.Popen[str]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@contextmanager
def serve_process(model_uri: str, *extra: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``keel models serve`` as a child process (the way users run it); ready when it prints
    its listening line, which it does only after the model is loaded."""
    http_port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "keel.cli.serving",
        "-m",
        model_uri,
        "--port",  # HTTP, as mlflow models serve
        str(http_port),
        "--grpc-port",
        "0",
        *extra,
    ]
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    assert process.stdout is not None
    port = 0
    for line in process.stdout:
        match = READY.search(line)
        if match:
            port = int(match.group(1))
            break
    if not port:
        process.wait(timeout=30)
        err = process.stderr.read() if process.stderr else ""
        raise RuntimeError(f"keel models serve exited with {process.returncode}: {err[-2000:]}")
    try:
        yield Served(port, http_port, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
