"""Models and servers shared by the inference tests: an iris RandomForest (column signature),
a small PyTorch MLP (float32 tensor signature) and a model directory that cannot load."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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


@pytest.fixture(scope="session")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    path = tmp_path_factory.mktemp("models") / "iris"
    return str(path), save_iris(path)


@pytest.fixture(scope="session")
def torch_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    import torch

    import keel.pytorch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    path = tmp_path_factory.mktemp("models") / "mlp"
    example = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    keel.pytorch.save_model(net, str(path), input_example=example)
    return str(path), net


@pytest.fixture(scope="session")
def broken_model(tmp_path_factory: pytest.TempPathFactory, iris_model: tuple[str, Any]) -> str:
    """A copy of the iris model whose pickle is garbage: loading it fails."""
    import shutil

    path = tmp_path_factory.mktemp("models") / "broken"
    shutil.copytree(iris_model[0], path)
    (path / "model.pkl").write_bytes(b"not a pickle")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        "--port",
        "0",
        "--http-port",
        str(http_port),
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
