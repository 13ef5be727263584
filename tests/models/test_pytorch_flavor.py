"""keel.pytorch: whole-module round trips, loading without the training script, code_paths,
devices and pyfunc predict on synthetic image data (no torchvision)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

import keel.pyfunc
import keel.pytorch
from keel.exceptions import InvalidArgument
from keel.models import Model, infer_signature


class SimpleCNN(nn.Module):
    """The seed workflow's image classifier, scaled down: 1x28x28 images, 10 classes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(8 * 7 * 7, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def cnn() -> SimpleCNN:
    torch.manual_seed(0)
    model = SimpleCNN()
    # one quick training step on synthetic images so the weights are not the initial ones
    images, labels = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model(images), labels).backward()
    opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((5, 1, 28, 28)).astype(np.float32)


def _expected(model: nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def test_layout_matches_mlflow(tmp_path: Path, cnn: SimpleCNN, images: np.ndarray) -> None:
    keel.pytorch.save_model(cnn, str(tmp_path / "m"), input_example=images[:2])
    assert (tmp_path / "m" / "data" / "model.pth").is_file()
    assert (tmp_path / "m" / "data" / "pickle_module_info.txt").read_text() == "cloudpickle"
    flavors = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())["flavors"]
    assert flavors["pytorch"]["model_data"] == "data"
    assert flavors["pytorch"]["pytorch_version"] == torch.__version__
    assert flavors["python_function"]["loader_module"] == "keel.pytorch"
    reqs = (tmp_path / "m" / "requirements.txt").read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in reqs  # local label (+cpu) dropped
    # the signature comes from the example and the model's output on it
    sig = Model.load(str(tmp_path / "m")).signature
    assert sig == infer_signature(images, _expected(cnn, images))


def test_round_trip_native_and_pyfunc(tmp_path: Path, cnn: SimpleCNN, images: np.ndarray) -> None:
    keel.pytorch.save_model(
        cnn, str(tmp_path / "m"), signature=infer_signature(images, _expected(cnn, images))
    )
    loaded = keel.pytorch.load_model(str(tmp_path / "m"))
    assert isinstance(loaded, SimpleCNN)
    assert next(loaded.parameters()).device.type == "cpu"
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(torch.from_numpy(images)).numpy(), _expected(cnn, images))
    pf = keel.pyfunc.load_model(str(tmp_path / "m"))
    out = pf.predict(images)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, _expected(cnn, images))
    with pytest.raises(InvalidArgument, match="expected dtype float32, got float64"):
        pf.predict(images.astype(np.float64))
    with pytest.raises(InvalidArgument, match=r"expected shape \(-1, 1, 28, 28\)"):
        pf.predict(images[:, 0])


def test_pyfunc_predict_runs_in_eval_mode_without_grad(tmp_path: Path, images: np.ndarray) -> None:
    torch.manual_seed(0)
    model = SimpleCNN().train()  # saved in training mode: dropout active
    keel.pytorch.save_model(model, str(tmp_path / "m"))
    pf = keel.pyfunc.load_model(str(tmp_path / "m"))
    first, second = pf.predict(images), pf.predict(images)
    np.testing.assert_array_equal(first, second)  # deterministic: eval() was applied
    assert not pf.get_raw_model().training


def test_dataframe_input(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    keel.pytorch.save_model(model, str(tmp_path / "m"))
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [0.5, 0.1], "c": [3.0, 1.0]})
    out = keel.pyfunc.load_model(str(tmp_path / "m")).predict(df)
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.tensor(df.to_numpy(), dtype=torch.float32)).numpy())


def test_device_option(tmp_path: Path, cnn: SimpleCNN) -> None:
    keel.pytorch.save_model(cnn, str(tmp_path / "m"))
    assert next(
        keel.pytorch.load_model(str(tmp_path / "m"), device="cpu").parameters()
    ).device == torch.device("cpu")
    pf = keel.pyfunc.load_model(str(tmp_path / "m"), model_config={"device": "cpu"})
    assert next(pf.get_raw_model().parameters()).device == torch.device("cpu")


def _run_fresh(code: str, cwd: Path) -> str:
    """Run in a new interpreter whose sys.path has no tests/ directory."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_loads_without_the_training_script(tmp_path: Path, images: np.ndarray) -> None:
    """A model class from a local module (like train.py) is pickled by value."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "train_script.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x).relu()\n"
    )
    sys.path.insert(0, str(src))
    try:
        import train_script  # type: ignore[import-not-found]

        torch.manual_seed(0)
        net = train_script.Net()
        keel.pytorch.save_model(net, str(tmp_path / "m"))
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("train_script", None)
    x = np.ones((1, 4), np.float32)
    expected = net(torch.from_numpy(x)).detach().numpy().round(6).tolist()
    got = _run_fresh(
        f"""
        import numpy as np, keel.pyfunc
        print(keel.pyfunc.load_model({str(tmp_path / "m")!r}).predict(np.ones((1, 4), np.float32)).round(6).tolist())
        """,
        tmp_path,
    )
    assert got == str(expected)


def test_code_paths_ship_the_source(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "netlib.py").write_text(
        "import torch\nclass Twice(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n"
    )
    sys.path.insert(0, str(src))
    try:
        import netlib  # type: ignore[import-not-found]

        keel.pytorch.save_model(netlib.Twice(), str(tmp_path / "m"), code_paths=[str(src / "netlib.py")])
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("netlib", None)
    assert (tmp_path / "m" / "code" / "netlib.py").is_file()
    assert yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())["flavors"]["pytorch"]["code"] == "code"
    (src / "netlib.py").unlink()  # the model must use its own copy
    got = _run_fresh(
        f"""
        import torch, keel.pytorch
        m = keel.pytorch.load_model({str(tmp_path / "m")!r})
        print(type(m).__module__, m(torch.ones(2)).tolist())
        """,
        tmp_path,
    )
    assert got == "netlib [2.0, 2.0]"


def test_rejects_non_modules(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="must be a torch.nn.Module"):
        keel.pytorch.save_model(object(), str(tmp_path / "m"))  # type: ignore[arg-type]
