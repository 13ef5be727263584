"""keel.sklearn: the directory format, round trips and pyfunc predict."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

import keel.pyfunc
import keel.sklearn
from keel.exceptions import AlreadyExists, InvalidArgument, NotFound
from keel.models import Model, infer_signature


def test_directory_layout_and_mlmodel_keys(tmp_path: Path, classifier, tabular) -> None:
    X, _ = tabular
    path = tmp_path / "model"
    keel.sklearn.save_model(
        classifier, str(path), signature=infer_signature(X, classifier.predict(X)), input_example=X.head(3)
    )
    assert sorted(os.listdir(path)) == [
        "MLmodel",
        "conda.yaml",
        "input_example.json",
        "model.pkl",
        "python_env.yaml",
        "requirements.txt",
        "serving_input_example.json",
    ]
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    assert {
        "flavors",
        "signature",
        "saved_input_example_info",
        "model_uuid",
        "utc_time_created",
        "keel_version",
    } <= set(mlmodel)
    assert mlmodel["flavors"]["sklearn"]["pickled_model"] == "model.pkl"
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "cloudpickle"
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.sklearn"
    assert mlmodel["flavors"]["python_function"]["env"] == {
        "conda": "conda.yaml",
        "virtualenv": "python_env.yaml",
    }
    assert mlmodel["saved_input_example_info"]["type"] == "dataframe"
    reqs = (path / "requirements.txt").read_text().split()
    import sklearn

    assert f"scikit-learn=={sklearn.__version__}" in reqs and any(r.startswith("keel-ml==") for r in reqs)
    assert any(r.startswith("cloudpickle==") for r in reqs)
    conda = yaml.safe_load((path / "conda.yaml").read_text())
    assert {"pip": reqs} in conda["dependencies"]
    assert yaml.safe_load((path / "python_env.yaml").read_text())["dependencies"] == ["-r requirements.txt"]


def test_round_trip_native_and_pyfunc(tmp_path: Path, classifier, tabular) -> None:
    X, _ = tabular
    path = tmp_path / "model"
    keel.sklearn.save_model(classifier, str(path), signature=infer_signature(X, classifier.predict(X)))
    loaded = keel.sklearn.load_model(str(path))
    np.testing.assert_array_equal(loaded.predict(X), classifier.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), classifier.predict_proba(X))
    pf = keel.pyfunc.load_model(path.as_uri())  # file:// form
    np.testing.assert_array_equal(pf.predict(X), classifier.predict(X))
    assert pf.metadata.signature is not None and pf.metadata.run_id is None
    assert type(pf.get_raw_model()).__name__ == "Pipeline"


def test_predict_method_predict_proba(tmp_path: Path, classifier, tabular) -> None:
    X, _ = tabular
    keel.sklearn.save_model(classifier, str(tmp_path / "p"), predict_method="predict_proba")
    np.testing.assert_allclose(
        keel.pyfunc.load_model(str(tmp_path / "p")).predict(X), classifier.predict_proba(X)
    )
    # MLflow's name for the same option, and a load-time override
    keel.sklearn.save_model(classifier, str(tmp_path / "m"), pyfunc_predict_fn="predict_proba")
    assert (
        yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())["flavors"]["python_function"]["predict_fn"]
        == "predict_proba"
    )
    keel.sklearn.save_model(classifier, str(tmp_path / "d"))
    pf = keel.pyfunc.load_model(str(tmp_path / "d"), model_config={"predict_method": "predict_proba"})
    assert pf.predict(X).shape == (len(X), 2)
    with pytest.raises(InvalidArgument, match="no method 'transform_all'"):
        keel.sklearn.save_model(classifier, str(tmp_path / "x"), predict_method="transform_all")


def test_signature_inferred_from_input_example(tmp_path: Path, classifier, tabular) -> None:
    X, _ = tabular
    keel.sklearn.save_model(classifier, str(tmp_path / "m"), input_example=X.head(2))
    meta = Model.load(str(tmp_path / "m"))
    assert meta.signature == infer_signature(X, classifier.predict(X))
    example = meta.load_input_example(str(tmp_path / "m"))
    assert example.equals(X.head(2).reset_index(drop=True))


def test_enforcement_applies_through_pyfunc(tmp_path: Path, classifier, tabular) -> None:
    X, _ = tabular
    keel.sklearn.save_model(classifier, str(tmp_path / "m"), signature=infer_signature(X))
    pf = keel.pyfunc.load_model(str(tmp_path / "m"))
    # reordered columns plus an extra one still predict the same
    shuffled = X[["petals", "sepal_width", "sepal_length"]].assign(note="x")
    np.testing.assert_array_equal(pf.predict(shuffled), classifier.predict(X))
    with pytest.raises(InvalidArgument, match="missing input column 'petals'"):
        pf.predict(X.drop(columns=["petals"]))


def test_ndarray_model(tmp_path: Path) -> None:
    from sklearn.tree import DecisionTreeRegressor

    X = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = X.sum(axis=1)
    reg = DecisionTreeRegressor(random_state=0).fit(X, y)
    keel.sklearn.save_model(reg, str(tmp_path / "r"), input_example=X[:2])
    pf = keel.pyfunc.load_model(str(tmp_path / "r"))
    np.testing.assert_array_equal(pf.predict(X), reg.predict(X))
    with pytest.raises(InvalidArgument, match="expected dtype float64, got int64"):
        pf.predict(X.astype(np.int64))


def test_refuses_to_overwrite_and_reports_missing(tmp_path: Path, classifier) -> None:
    keel.sklearn.save_model(classifier, str(tmp_path / "m"))
    with pytest.raises(AlreadyExists, match="exists and is not empty"):
        keel.sklearn.save_model(classifier, str(tmp_path / "m"))
    with pytest.raises(NotFound, match="does not exist"):
        keel.sklearn.load_model(str(tmp_path / "nope"))
    with pytest.raises(NotFound, match="no MLmodel file"):
        keel.sklearn.load_model(str(tmp_path))


def test_pip_requirement_options(tmp_path: Path, classifier) -> None:
    keel.sklearn.save_model(classifier, str(tmp_path / "a"), pip_requirements=["scikit-learn", "numpy<3"])
    assert (tmp_path / "a" / "requirements.txt").read_text().split() == ["scikit-learn", "numpy<3"]
    keel.sklearn.save_model(classifier, str(tmp_path / "b"), extra_pip_requirements=["xgboost==2.0"])
    assert (tmp_path / "b" / "requirements.txt").read_text().split()[-1] == "xgboost==2.0"
    with pytest.raises(InvalidArgument, match="only one of"):
        keel.sklearn.save_model(
            classifier, str(tmp_path / "c"), pip_requirements=["a"], extra_pip_requirements=["b"]
        )


def test_local_transformer_is_pickled_by_value(tmp_path: Path, tabular) -> None:
    """A FunctionTransformer whose function lives in a local module (not installed) loads in a
    fresh interpreter that cannot import that module."""
    import subprocess
    import sys

    X, y = tabular
    src = tmp_path / "src"
    src.mkdir()
    (src / "my_features.py").write_text("def double(x):\n    return x * 2\n")
    sys.path.insert(0, str(src))
    try:
        import my_features  # type: ignore[import-not-found]
        from sklearn.linear_model import LinearRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer

        model = make_pipeline(FunctionTransformer(my_features.double), LinearRegression()).fit(X, y)
        keel.sklearn.save_model(model, str(tmp_path / "m"))
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("my_features", None)
    np.save(tmp_path / "x.npy", X.to_numpy())
    code = (
        "import numpy as np, pandas as pd, keel.sklearn\n"
        f"X = pd.DataFrame(np.load({str(tmp_path / 'x.npy')!r}), columns={list(X.columns)!r})\n"
        f"print(keel.sklearn.load_model({str(tmp_path / 'm')!r}).predict(X)[:3].tolist())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert out.stdout.strip() == str(model.predict(X)[:3].tolist())


def test_plain_estimator_fast_path_predicts_the_same_without_warnings(tmp_path) -> None:
    """pyfunc hands a checked numeric table to a plain estimator as an array: same answers, no
    feature-name warning, and pipelines keep getting the DataFrame."""
    import warnings

    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import keel.pyfunc
    import keel.sklearn
    from keel.models import infer_signature

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sl", "sw", "pl", "pw"]
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    pipeline = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0)).fit(
        X, y
    )
    for name, model in (("forest", forest), ("pipeline", pipeline)):
        path = tmp_path / name
        keel.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)))
        loaded = keel.pyfunc.load_model(str(path))
        shuffled = X[["pw", "sl", "pl", "sw"]].head(20)  # by name, in any order
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = loaded.predict(shuffled)
        assert list(got) == list(model.predict(X.head(20))), name
        assert loaded.get_raw_model() is not None and hasattr(loaded.get_raw_model(), "feature_names_in_")
    assert keel.sklearn.SklearnImpl(forest, "predict").array_columns == ["sl", "sw", "pl", "pw"]
    assert keel.sklearn.SklearnImpl(pipeline, "predict").array_columns is None
    assert keel.sklearn.SklearnImpl(forest.fit(X.to_numpy(), y), "predict").array_columns is None


def _iris_named() -> tuple[object, object]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sl", "sw", "pl", "pw"]
    return X, y


@pytest.mark.parametrize("kind", ["forest", "pipeline"])
def test_column_block_predicts_as_its_dataframe(tmp_path: Path, kind: str) -> None:
    """A ColumnBlock (what tensor protocols send) answers as the same table as a DataFrame,
    whether the flavor takes the array (forest) or needs the frame (pipeline)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from keel.models.utils import ColumnBlock

    X, y = _iris_named()
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    model = (forest if kind == "forest" else make_pipeline(StandardScaler(), forest)).fit(X, y)
    keel.sklearn.save_model(model, str(tmp_path / "m"), signature=infer_signature(X, model.predict(X)))
    loaded = keel.pyfunc.load_model(str(tmp_path / "m"))
    rows = X.head(30).to_numpy()
    expected = list(model.predict(X.head(30)))
    assert list(loaded.predict(ColumnBlock(rows, list(X.columns)))) == expected
    # int columns widen to the signature's double, as on the DataFrame path
    ints = rows.round().astype(np.int64)
    assert list(loaded.predict(ColumnBlock(ints, list(X.columns)))) == list(
        model.predict(X.head(30).round().astype(np.int64))
    )
    # the array the model gets is its own: the caller's block is untouched
    before = rows.copy()
    loaded.predict(ColumnBlock(rows, list(X.columns)))
    assert np.array_equal(rows, before)


def test_column_block_violations_read_as_on_the_dataframe_path(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from keel.models.utils import ColumnBlock

    X, y = _iris_named()
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    keel.sklearn.save_model(model, str(tmp_path / "m"), signature=infer_signature(X, model.predict(X)))
    loaded = keel.pyfunc.load_model(str(tmp_path / "m"))
    columns = list(X.columns)
    for block in (
        ColumnBlock(np.ones((2, 4), dtype=bool), columns),  # bool is never a number
        ColumnBlock(np.array([["a", "b", "c", "d"]], dtype=object), columns),  # strings
        ColumnBlock(np.ones((2, 4)), ["sl", "sw", "pl", "petal"]),  # a missing column
    ):
        with pytest.raises(InvalidArgument) as from_block:
            loaded.predict(block)
        with pytest.raises(InvalidArgument) as from_frame:
            loaded.predict(block.to_frame())
        assert from_block.value.reason == "SIGNATURE_MISMATCH"
        assert str(from_block.value) == str(from_frame.value)


def test_enforce_column_block_takes_only_uniform_numeric_blocks_in_schema_order() -> None:
    from keel.models.enforcement import enforce_column_block
    from keel.models.schema import ColSpec, Schema
    from keel.models.utils import ColumnBlock

    doubles = Schema([ColSpec("double", "a"), ColSpec("double", "b")])
    checked = enforce_column_block(ColumnBlock(np.array([[1, 2]], dtype=np.int32), ["a", "b"]), doubles)
    assert checked is not None and checked.dtype == np.float64 and checked.tolist() == [[1.0, 2.0]]
    longs = Schema([ColSpec("long", "a"), ColSpec("long", "b")])
    assert enforce_column_block(ColumnBlock(np.ones((1, 2)), ["a", "b"]), longs) is None  # double → long: no
    mixed = Schema([ColSpec("long", "a"), ColSpec("double", "b")])
    assert enforce_column_block(ColumnBlock(np.ones((1, 2), dtype=np.int64), ["a", "b"]), mixed) is None
    assert enforce_column_block(ColumnBlock(np.ones((1, 2)), ["b", "a"]), doubles) is None  # order
    strings = Schema([ColSpec("string", "a")])
    assert enforce_column_block(ColumnBlock(np.array([["x"]], dtype=object), ["a"]), strings) is None
