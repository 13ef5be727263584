"""keel.pyfunc: custom PythonModel save/load, artifacts, code_paths, metadata and the loader
allowlist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import keel.pyfunc
from keel.exceptions import InvalidArgument
from keel.models import ColSpec, ModelSignature, ParamSchema, ParamSpec, Schema


class Scaler(keel.pyfunc.PythonModel):
    """Reads its factor from an artifact in load_context, as a tokenizer or weights would be."""

    def load_context(self, context: keel.pyfunc.PythonModelContext) -> None:
        with open(context.artifacts["config"]) as f:
            self.factor = json.load(f)["factor"]
        self.offset = context.model_config.get("offset", 0)

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        power = (params or {}).get("power", 1)
        return (model_input["x"] * self.factor + self.offset) ** power


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"factor": 3}))
    return p


SIG = ModelSignature(
    inputs=Schema([ColSpec("double", "x")]), params=ParamSchema([ParamSpec("power", "long", 1)])
)


def test_python_model_round_trip_with_artifacts(tmp_path: Path, config_file: Path) -> None:
    path = tmp_path / "m"
    keel.pyfunc.save_model(
        str(path),
        python_model=Scaler(),
        artifacts={"config": str(config_file)},
        signature=SIG,
        model_config={"offset": 1},
    )
    conf = yaml.safe_load((path / "MLmodel").read_text())["flavors"]["python_function"]
    assert conf["loader_module"] == "keel.pyfunc.model"
    assert conf["python_model"] == "python_model.pkl"
    assert conf["artifacts"] == {"config": {"path": "artifacts/config.json", "uri": str(config_file)}}
    config_file.unlink()  # the model owns a copy
    model = keel.pyfunc.load_model(str(path))
    df = pd.DataFrame({"x": [1.0, 2.0]})
    np.testing.assert_array_equal(model.predict(df), [4.0, 7.0])
    np.testing.assert_array_equal(model.predict(df, params={"power": 2}), [16.0, 49.0])
    # load-time config overrides the saved one
    assert keel.pyfunc.load_model(str(path), model_config={"offset": 0}).predict(df).tolist() == [3.0, 6.0]
    unwrapped = model.unwrap_python_model()
    assert isinstance(unwrapped, Scaler) and unwrapped.factor == 3
    assert model.metadata.signature == SIG
    assert model.metadata.run_id is None
    assert (path / "artifacts" / "config.json").is_file()


def test_artifact_directories_are_copied(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    (vocab / "words.txt").write_text("a\nb\n")

    class Vocab(keel.pyfunc.PythonModel):
        def load_context(self, context):  # type: ignore[no-untyped-def]
            self.words = (Path(context.artifacts["vocab"]) / "words.txt").read_text().split()

        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return [self.words[i] for i in model_input]

    keel.pyfunc.save_model(str(tmp_path / "m"), python_model=Vocab(), artifacts={"vocab": str(vocab)})
    assert keel.pyfunc.load_model(str(tmp_path / "m")).predict([1, 0]) == ["b", "a"]


def test_predict_without_context_argument(tmp_path: Path) -> None:
    class NoContext(keel.pyfunc.PythonModel):
        def predict(self, model_input, params=None):  # type: ignore[no-untyped-def,override]
            return len(model_input)

    keel.pyfunc.save_model(str(tmp_path / "m"), python_model=NoContext())
    assert keel.pyfunc.load_model(str(tmp_path / "m")).predict([1, 2, 3]) == 3


def test_code_paths_for_python_model(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "helpers").mkdir(parents=True)
    (src / "helpers" / "__init__.py").write_text("def shout(s):\n    return s.upper() + '!'\n")
    (src / "mymodel.py").write_text(
        "import keel.pyfunc\nfrom helpers import shout\n"
        "class Shout(keel.pyfunc.PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return [shout(s) for s in model_input]\n"
    )
    sys.path.insert(0, str(src))
    try:
        import mymodel  # type: ignore[import-not-found]

        keel.pyfunc.save_model(
            str(tmp_path / "m"),
            python_model=mymodel.Shout(),
            code_paths=[str(src / "mymodel.py"), str(src / "helpers")],
        )
    finally:
        sys.path.remove(str(src))
        for name in ("mymodel", "helpers"):
            sys.modules.pop(name, None)
    code = f"import keel.pyfunc; print(keel.pyfunc.load_model({str(tmp_path / 'm')!r}).predict(['hi']))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert out.stdout.strip() == "['HI!']"


def test_unwrap_requires_a_python_model(tmp_path: Path, classifier) -> None:
    import keel.sklearn

    keel.sklearn.save_model(classifier, str(tmp_path / "m"))
    with pytest.raises(InvalidArgument, match="unwrap_python_model"):
        keel.pyfunc.load_model(str(tmp_path / "m")).unwrap_python_model()


def test_save_requires_a_python_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="python_model must be"):
        keel.pyfunc.save_model(str(tmp_path / "m"))


def _mlmodel_with_loader(tmp_path: Path, loader_module: str) -> Path:
    path = tmp_path / "evil"
    path.mkdir()
    (path / "MLmodel").write_text(
        yaml.safe_dump({"flavors": {"python_function": {"loader_module": loader_module}}})
    )
    return path


def test_loader_module_is_never_imported(tmp_path: Path) -> None:
    """A model naming an arbitrary module is refused before anything is imported."""
    name = "keel_test_should_never_be_imported"
    (tmp_path / f"{name}.py").write_text("raise SystemExit('imported!')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        path = _mlmodel_with_loader(tmp_path, name)
        with pytest.raises(InvalidArgument) as e:
            keel.pyfunc.load_model(str(path))
        assert e.value.reason == "UNSUPPORTED_FLAVOR"
        assert f"loader_module '{name}' is not one keel can load" in e.value.message
        assert name not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))


def test_known_mlflow_loader_modules_map_to_keel_loaders() -> None:
    from keel.models.flavor_registry import LOADER_MODULES, PYFUNC_LOADERS

    assert LOADER_MODULES["mlflow.sklearn"] == LOADER_MODULES["keel.sklearn"] == "sklearn"
    assert LOADER_MODULES["mlflow.pytorch"] == "pytorch"
    assert LOADER_MODULES["mlflow.pyfunc.model"] == "python_model"
    assert set(LOADER_MODULES.values()) == set(PYFUNC_LOADERS)


def test_model_without_pyfunc_flavor(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.mkdir()
    (path / "MLmodel").write_text(yaml.safe_dump({"flavors": {"sklearn": {"pickled_model": "model.pkl"}}}))
    with pytest.raises(InvalidArgument, match=r"has no 'python_function' flavor; it has \['sklearn'\]"):
        keel.pyfunc.load_model(str(path))


def test_import_keel_models_stays_light() -> None:
    code = (
        "import sys, keel, keel.models, keel.pyfunc\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
