"""Session fixtures of the inference tests: saved iris, PyTorch and broken models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from serving_helpers import save_iris


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
