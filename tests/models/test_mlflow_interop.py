"""MLflow interoperability: directories written by MLflow load in keel and keel's sklearn
models load in MLflow.  Uses mlflow-skinny from the dev requirements."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import keel.pyfunc
import keel.pytorch
import keel.sklearn
from keel.models import Model, infer_signature

pytest.importorskip("mlflow")
import mlflow  # noqa: E402
import mlflow.models  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import mlflow.pytorch  # noqa: E402
import mlflow.sklearn  # noqa: E402

# requirement inference in MLflow spawns a subprocess; explicit requirements keep tests fast
REQS = ["scikit-learn", "cloudpickle"]


@pytest.fixture(autouse=True)
def _quiet_mlflow() -> None:
    logging.getLogger("mlflow").setLevel(logging.ERROR)


def test_mlflow_sklearn_model_loads_in_keel(tmp_path: Path, classifier, tabular) -> None:
    X, _ = tabular
    path = tmp_path / "mlflow_sk"
    mlflow.sklearn.save_model(
        classifier,
        str(path),
        serialization_format="cloudpickle",  # (skops, MLflow 3's default, is read too: tests/compat/mlflow_client)
        signature=mlflow.models.infer_signature(X, classifier.predict(X)),
        input_example=X.head(2),
        pip_requirements=REQS,
    )
    assert (
        yaml.safe_load((path / "MLmodel").read_text())["flavors"]["python_function"]["loader_module"]
        == "mlflow.sklearn"
    )
    native = keel.sklearn.load_model(str(path))
    np.testing.assert_array_equal(native.predict(X), classifier.predict(X))
    pf = keel.pyfunc.load_model(str(path))
    np.testing.assert_array_equal(pf.predict(X), classifier.predict(X))
    # MLflow's signature is keel's signature
    assert pf.metadata.signature == infer_signature(X, classifier.predict(X))
    assert pf.metadata.load_input_example(str(path)).shape == (2, 3)
    assert pf.metadata.extra["mlflow_version"] == mlflow.__version__  # MLflow keys are kept


def test_keel_sklearn_model_loads_in_mlflow(tmp_path: Path, classifier, tabular) -> None:
    X, _ = tabular
    path = tmp_path / "keel_sk"
    keel.sklearn.save_model(
        classifier, str(path), signature=infer_signature(X, classifier.predict(X)), input_example=X.head(2)
    )
    loaded = mlflow.sklearn.load_model(str(path))
    np.testing.assert_array_equal(loaded.predict(X), classifier.predict(X))
    meta = mlflow.models.Model.load(str(path))
    assert meta.signature == mlflow.models.infer_signature(X, classifier.predict(X))
    assert getattr(meta.load_input_example(str(path)), "shape", None) == (2, 3)
    # with keel installed, MLflow's pyfunc can load it too (it calls keel.sklearn._load_pyfunc)
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(str(path)).predict(X), classifier.predict(X))


def test_mlflow_pytorch_model_loads_in_keel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    path = tmp_path / "mlflow_pt"
    mlflow.pytorch.save_model(model, str(path), serialization_format="pickle", pip_requirements=["torch"])
    conf = yaml.safe_load((path / "MLmodel").read_text())["flavors"]
    assert (
        conf["pytorch"]["model_data"] == "data"
        and conf["python_function"]["loader_module"] == "mlflow.pytorch"
    )
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    native = keel.pytorch.load_model(str(path))
    with torch.no_grad():
        np.testing.assert_array_equal(native(torch.from_numpy(x)).numpy(), expected)
    np.testing.assert_array_equal(keel.pyfunc.load_model(str(path)).predict(x), expected)


def test_hand_written_mlflow_pytorch_layout(tmp_path: Path) -> None:
    """The layout MLflow 2.x writes, built by hand: data/model.pth + MLmodel naming
    mlflow.pytorch and its pickle module."""
    import cloudpickle

    model = nn.Linear(2, 1)
    data = tmp_path / "m" / "data"
    data.mkdir(parents=True)
    torch.save(model, data / "model.pth", pickle_module=cloudpickle)
    (data / "pickle_module_info.txt").write_text("mlflow.pytorch.pickle_module")
    (tmp_path / "m" / "MLmodel").write_text(
        yaml.safe_dump(
            {
                "flavors": {
                    "pytorch": {"model_data": "data", "pytorch_version": str(torch.__version__)},
                    "python_function": {
                        "loader_module": "mlflow.pytorch",
                        "data": "data",
                        "pickle_module_name": "mlflow.pytorch.pickle_module",
                    },
                },
                "mlflow_version": "2.10.2",
            }
        )
    )
    x = np.ones((3, 2), np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(keel.pyfunc.load_model(str(tmp_path / "m")).predict(x), expected)


def test_unknown_pickle_module_is_refused(tmp_path: Path) -> None:
    from keel.exceptions import InvalidArgument

    keel.pytorch.save_model(nn.Linear(2, 1), str(tmp_path / "m"))
    (tmp_path / "m" / "data" / "pickle_module_info.txt").write_text("evil.pickler")
    with pytest.raises(InvalidArgument, match="names pickle module 'evil.pickler'"):
        keel.pytorch.load_model(str(tmp_path / "m"))


# through Any: mypy cannot see mlflow.pyfunc's lazily bound names
_MlflowPythonModel: Any = mlflow.pyfunc.PythonModel


class MlflowDoubler(_MlflowPythonModel):
    def load_context(self, context):  # type: ignore[no-untyped-def]
        self.k = float(Path(context.artifacts["k"]).read_text())

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input * self.k


def test_mlflow_custom_pyfunc_loads_in_keel(tmp_path: Path) -> None:
    (tmp_path / "k.txt").write_text("2.5")
    path = tmp_path / "mlflow_pf"
    mlflow.pyfunc.save_model(
        str(path),
        python_model=MlflowDoubler(),
        artifacts={"k": str(tmp_path / "k.txt")},
        pip_requirements=["mlflow"],
    )
    model = keel.pyfunc.load_model(str(path))
    np.testing.assert_array_equal(model.predict(np.array([1.0, 2.0])), [2.5, 5.0])
    assert isinstance(model.unwrap_python_model(), MlflowDoubler)


def test_model_roundtrips_mlmodel_keys(tmp_path: Path, classifier) -> None:
    """Reading and re-writing an MLflow MLmodel keeps every key MLflow wrote."""
    path = tmp_path / "m"
    mlflow.sklearn.save_model(
        classifier, str(path), serialization_format="cloudpickle", pip_requirements=REQS
    )
    original = yaml.safe_load((path / "MLmodel").read_text())
    rewritten = Model.load(str(path)).to_dict()
    assert {k for k, v in original.items() if v is not None} <= set(rewritten)
    assert rewritten["flavors"] == original["flavors"]
