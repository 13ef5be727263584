"""keel.evaluate's SHAP explanations (issue #19) against a real in-process keel server: MLflow's
artifacts for classifiers and regressors, with and without a baseline, the JSON of mean |SHAP|
per feature, every explainability key of evaluator_config, and the clear error without shap
(simulated in a subprocess with ``sys.modules['shap'] = None``, not by uninstalling).

Data is synthetic and small (a few hundred rows, tens of explained rows) with one informative
feature, which must rank first."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import keel
from keel.evaluation import evaluate
from keel.exceptions import InvalidArgument, KeelError

PLOTS = ("shap_beeswarm_plot", "shap_summary_plot", "shap_feature_importance_plot")
ALL_SHAP = (*PLOTS, "shap_feature_importance")
INFORMATIVE = 2  # the column the labels depend on
NSAMPLES = 40


def _read(uri: str) -> bytes:
    path = keel.artifacts.download_artifacts(artifact_uri=uri)
    with open(path if os.path.isfile(path) else os.path.join(path, os.path.basename(uri)), "rb") as f:
        return f.read()


def _png_ok(content: bytes) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(content))
    assert image.format == "PNG"
    assert image.size[0] > 200 and image.size[1] > 100


def _importance(result, name: str = "shap_feature_importance") -> dict:
    return json.loads(_read(result.artifacts[name].uri))


def _assert_sane(report: dict, informative: str, rows: int = NSAMPLES) -> None:
    importance = report["mean_abs_shap"]
    assert list(importance)[0] == informative, importance
    values = list(importance.values())
    assert all(v >= 0 for v in values) and values == sorted(values, reverse=True)
    # the informative feature carries most of the explanation
    assert importance[informative] > 3 * sum(v for k, v in importance.items() if k != informative)
    assert report["num_rows"] == rows


@pytest.fixture(scope="module")
def synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(240, 5))
    return {
        "X": X,
        "binary": (X[:, INFORMATIVE] > 0).astype(int),
        "multiclass": np.digitize(X[:, INFORMATIVE], [-0.5, 0.5]),
        "continuous": 3.0 * X[:, INFORMATIVE] + 0.05 * rng.normal(size=len(X)),
    }


def _run_artifacts(run_id: str | None) -> set[str]:
    assert run_id is not None
    return {f.path for f in keel.artifacts.list_artifacts(run_id=run_id)}


# ---------------------------------------------------------------------------------------------
# what is logged
# ---------------------------------------------------------------------------------------------


def test_classifier_with_baseline_logs_both_explanations(tracking, synthetic) -> None:
    X, y = synthetic["X"], synthetic["binary"]
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    linear = LogisticRegression().fit(X, y)
    result = evaluate(
        forest,
        (X, y),
        model_type="classifier",
        baseline_model=linear,
        evaluator_config={"log_model_explainability": True, "explainability_nsamples": NSAMPLES},
    )
    expected = {*ALL_SHAP, *(f"baseline_{name}" for name in ALL_SHAP)}
    assert expected <= set(result.artifacts)
    listed = _run_artifacts(result.run_id)
    for name in expected:
        artifact = result.artifacts[name]
        assert artifact.path in listed and artifact.uri == f"runs:/{result.run_id}/{artifact.path}"
    assert result.artifacts["shap_beeswarm_plot"].path == "shap_beeswarm_plot.png"
    assert (
        result.artifacts["baseline_shap_feature_importance"].path == "baseline_shap_feature_importance.json"
    )
    for name in (*PLOTS, *(f"baseline_{p}" for p in PLOTS)):
        _png_ok(_read(result.artifacts[name].uri))

    candidate = _importance(result)
    baseline = _importance(result, "baseline_shap_feature_importance")
    _assert_sane(candidate, f"feature_{INFORMATIVE + 1}")  # MLflow's default names, 1-based
    _assert_sane(baseline, f"feature_{INFORMATIVE + 1}")
    # shap chose from the model: its exact tree algorithm for the forest, the linear one for the baseline
    assert candidate["explainer"] == "TreeExplainer" and baseline["explainer"] == "LinearExplainer"
    assert candidate["explained"] == "model output for class 1"
    assert "mean_abs_shap_per_class" not in candidate
    # metrics are still only the candidate's
    assert not any("baseline" in key for key in keel.Client().get_run(result.run_id).data.metrics)


def test_regressor_dataframe_prefix_and_no_baseline(tracking, synthetic) -> None:
    X, y = synthetic["X"], synthetic["continuous"]
    columns = ["age", "bmi", "dose", "weight", "height"]
    frame = pd.DataFrame(X, columns=columns).assign(outcome=y)
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(frame[columns], y)
    result = evaluate(
        model,
        frame,
        targets="outcome",
        model_type="regressor",
        evaluator_config={"metric_prefix": "val_", "explainability_nsamples": NSAMPLES},
    )
    assert set(ALL_SHAP) <= set(result.artifacts)
    assert not any(name.startswith("baseline_") for name in result.artifacts)
    assert result.artifacts["shap_summary_plot"].path == "val_shap_summary_plot.png"
    assert {f"val_{name}.png" for name in PLOTS} | {"val_shap_feature_importance.json"} <= _run_artifacts(
        result.run_id
    )
    for name in PLOTS:
        _png_ok(_read(result.artifacts[name].uri))
    report = _importance(result)
    _assert_sane(report, "dose")
    assert report["explained"] == "prediction" and report["explainer"] == "TreeExplainer"
    # a prediction moves by about 3 per unit of 'dose' (std 1): mean |SHAP| is of that order
    assert 1.0 < report["mean_abs_shap"]["dose"] < 5.0


def test_regressor_through_its_predictions_with_a_baseline(tracking, synthetic) -> None:
    """A plain callable (no estimator shap can read) is explained through its predictions;
    explainability is on by default."""
    X, y = synthetic["X"], synthetic["continuous"]
    model = LinearRegression().fit(X, y)
    result = evaluate(
        lambda rows: model.predict(rows),
        (X, y),
        model_type="regressor",
        baseline_model=RandomForestRegressor(n_estimators=5, random_state=0).fit(X, y),
        evaluator_config={"explainability_nsamples": 15, "log_plots": False},
    )
    # log_plots=False: the values are still computed and logged, the PNGs are not drawn
    assert {"shap_feature_importance", "baseline_shap_feature_importance"} <= set(result.artifacts)
    assert not any(name in result.artifacts for name in PLOTS)
    report = _importance(result)
    _assert_sane(report, f"feature_{INFORMATIVE + 1}", rows=15)
    assert report["explainer"] == "ExactExplainer"  # shap's choice for 5 features
    _assert_sane(
        _importance(result, "baseline_shap_feature_importance"), f"feature_{INFORMATIVE + 1}", rows=15
    )


def test_multiclass_reports_each_class(tracking, synthetic) -> None:
    X, y = synthetic["X"], synthetic["multiclass"]
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    result = evaluate(
        model, (X, y), model_type="classifier", evaluator_config={"explainability_nsamples": NSAMPLES}
    )
    for name in PLOTS:
        _png_ok(_read(result.artifacts[name].uri))
    report = _importance(result)
    _assert_sane(report, f"feature_{INFORMATIVE + 1}")
    assert report["explained"] == "model output per class"
    per_class = report["mean_abs_shap_per_class"]
    assert set(per_class) == {"0", "1", "2"}
    for label in per_class:
        assert max(per_class[label], key=per_class[label].get) == f"feature_{INFORMATIVE + 1}"


def test_logged_model_uri_and_pipeline(tracking, synthetic) -> None:
    """A model URI is explained through its raw estimator; a pipeline (which shap cannot read)
    through its probabilities."""
    X, y = synthetic["X"], synthetic["binary"]
    with keel.start_run():
        info = keel.sklearn.log_model(
            RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y), "model"
        )
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    config = {"explainability_nsamples": 20, "log_plots": False}
    from_uri = evaluate(info.model_uri, (X, y), model_type="classifier", evaluator_config=config)
    assert _importance(from_uri)["explainer"] == "TreeExplainer"
    piped = evaluate(pipeline, (X, y), model_type="classifier", evaluator_config={**config, "pos_label": 0})
    report = _importance(piped)
    assert report["explainer"] == "ExactExplainer" and report["explained"] == "probability of class 0"
    _assert_sane(report, f"feature_{INFORMATIVE + 1}", rows=20)


@pytest.mark.parametrize(
    ("algorithm", "explainer"),
    [
        ("exact", "ExactExplainer"),
        ("permutation", "PermutationExplainer"),
        ("partition", "PartitionExplainer"),
        ("kernel", "KernelExplainer"),
    ],
)
def test_each_algorithm(tracking, synthetic, algorithm: str, explainer: str) -> None:
    X, y = synthetic["X"], synthetic["binary"]
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    config = {"explainability_algorithm": algorithm, "explainability_nsamples": 12, "log_plots": False}
    result = evaluate(model, (X, y), model_type="classifier", evaluator_config=config)
    report = _importance(result)
    assert report["explainer"] == explainer and report["explained"] == "probability of class 1"
    _assert_sane(report, f"feature_{INFORMATIVE + 1}", rows=12)


def test_kernel_link(tracking, synthetic) -> None:
    X, y = synthetic["X"], synthetic["binary"]
    model = LogisticRegression().fit(X, y)  # probabilities strictly inside (0, 1)
    config = {
        "explainability_algorithm": "kernel",
        "explainability_kernel_link": "logit",
        "explainability_nsamples": 10,
        "log_plots": False,
    }
    logit = _importance(evaluate(model, (X, y), model_type="classifier", evaluator_config=config))
    identity = _importance(
        evaluate(
            model,
            (X, y),
            model_type="classifier",
            evaluator_config={**config, "explainability_kernel_link": "identity"},
        )
    )
    name = f"feature_{INFORMATIVE + 1}"
    assert list(logit["mean_abs_shap"])[0] == name
    # on the log-odds scale the values are those of the linear model, far above probabilities
    assert logit["mean_abs_shap"][name] > 1.0 > identity["mean_abs_shap"][name]


def test_off_and_sample_larger_than_data(tracking, synthetic) -> None:
    X, y = synthetic["X"][:30], synthetic["binary"][:30]
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    off = evaluate(
        model, (X, y), model_type="classifier", evaluator_config={"log_model_explainability": False}
    )
    assert not any("shap" in name for name in off.artifacts)
    assert not any("shap" in path for path in _run_artifacts(off.run_id))
    whole = evaluate(model, (X, y), model_type="classifier", evaluator_config={"log_plots": False})
    assert _importance(whole)["num_rows"] == 30  # the default 2,000 caps at the data's rows


def test_the_callers_pyplot_figure_is_left_alone(tracking, synthetic) -> None:
    import matplotlib.pyplot as plt

    X, y = synthetic["X"], synthetic["binary"]
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    mine = plt.figure()
    try:
        before = plt.get_fignums()
        evaluate(model, (X, y), model_type="classifier", evaluator_config={"explainability_nsamples": 10})
        assert plt.get_fignums() == before
        assert plt.gcf() is mine
    finally:
        plt.close(mine)


# ---------------------------------------------------------------------------------------------
# what cannot be explained
# ---------------------------------------------------------------------------------------------


def _text_feature_data(synthetic) -> pd.DataFrame:
    X, y = synthetic["X"], synthetic["binary"]
    return pd.DataFrame({"x": X[:, INFORMATIVE], "colour": np.where(y == 1, "red", "blue"), "label": y})


def _label_of_x(frame: pd.DataFrame) -> np.ndarray:
    return (frame["x"].to_numpy() > 0).astype(int)


def test_asked_for_and_impossible_is_an_error_before_logging(tracking, synthetic) -> None:
    with pytest.raises(InvalidArgument, match=r"SHAP needs numeric features; columns \['colour'\]") as err:
        evaluate(
            _label_of_x,
            _text_feature_data(synthetic),
            targets="label",
            model_type="classifier",
            evaluator_config={"log_model_explainability": True},
        )
    assert err.value.reason == "EXPLAINABILITY_UNSUPPORTED"
    # a multiclass model without probabilities cannot be explained either
    X, y = synthetic["X"], synthetic["multiclass"]
    with pytest.raises(InvalidArgument, match="no usable predict_proba") as err:
        evaluate(
            lambda rows: np.digitize(np.asarray(rows)[:, INFORMATIVE], [-0.5, 0.5]),
            (X, y),
            model_type="classifier",
            evaluator_config={"explainability_nsamples": 5},  # an explainability key: asked for
        )
    assert err.value.reason == "EXPLAINABILITY_UNSUPPORTED"
    assert keel.search_runs(output_format="list") == []


def test_on_by_default_and_impossible_is_a_warning(tracking, synthetic, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="keel.evaluation.explainability"):
        result = evaluate(
            _label_of_x, _text_feature_data(synthetic), targets="label", model_type="classifier"
        )
    assert "accuracy_score" in result.metrics
    assert not any("shap" in name for name in result.artifacts)
    assert any(
        "model explainability skipped" in r.getMessage() and "colour" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"log_model_explainability": "yes"}, "log_model_explainability'\\] must be True or False"),
        (
            {"explainability_algorithm": "tree"},
            "must be one of \\['exact', 'permutation', 'partition', 'kernel'\\]",
        ),
        ({"explainability_nsamples": 0}, "explainability_nsamples'\\] must be a positive integer"),
        ({"explainability_nsamples": 2.5}, "explainability_nsamples'\\] must be a positive integer"),
        ({"explainability_nsamples": True}, "explainability_nsamples'\\] must be a positive integer"),
        ({"explainability_kernel_link": "logit"}, "applies to explainability_algorithm='kernel' only"),
        (
            {"explainability_algorithm": "kernel", "explainability_kernel_link": "probit"},
            "must be one of \\['identity', 'logit'\\]",
        ),
        (
            {"log_model_explainability": False, "explainability_nsamples": 10},
            "sets \\['explainability_nsamples'\\] but log_model_explainability is False",
        ),
    ],
)
def test_bad_explainability_config_creates_no_run(tracking, synthetic, config, message) -> None:
    X, y = synthetic["X"], synthetic["binary"]
    with pytest.raises(KeelError, match=message) as err:
        evaluate(DummyClassifier().fit(X, y), (X, y), model_type="classifier", evaluator_config=config)
    assert err.value.reason == "INVALID_EVALUATOR_CONFIG"
    assert keel.search_runs(output_format="list") == []


# ---------------------------------------------------------------------------------------------
# without shap
# ---------------------------------------------------------------------------------------------

WITHOUT_SHAP = textwrap.dedent(
    """
    import json, sys, uuid
    sys.modules["shap"] = None  # what makes `import shap` fail as if it were not installed
    import numpy as np
    import keel
    from keel.exceptions import MissingExtra

    keel.set_experiment(f"without-shap-{uuid.uuid4().hex[:8]}")

    X = np.random.default_rng(0).normal(size=(50, 3))
    y = (X[:, 0] > 0).astype(int)
    def model(rows):
        return (np.asarray(rows)[:, 0] > 0).astype(int)

    out = {}
    for name, config in [
        ("asked", {"log_model_explainability": True}),
        ("tuned", {"explainability_algorithm": "permutation"}),
    ]:
        try:
            keel.evaluate(model, (X, y), model_type="classifier", evaluator_config=config)
            out[name] = None
        except MissingExtra as exc:
            out[name] = {"message": exc.message, "reason": exc.reason, "extra": exc.extra, "code": exc.code.name}
    result = keel.evaluate(model, (X, y), model_type="classifier")  # on by default: skipped, no error
    out["default"] = sorted(result.artifacts)
    out["runs"] = len(keel.search_runs(output_format="list"))
    print(json.dumps(out))
    """
)


def test_without_shap_asking_names_the_extra_and_the_default_skips(eval_server) -> None:
    env = {**os.environ, "KEEL_TRACKING_URI": eval_server.uri}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SHAP],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("asked", "tuned"):
        error = out[name]
        assert error is not None, f"{name}: no error without shap"
        assert error["message"].startswith("shap is not installed (keel.evaluate computes SHAP explanations")
        assert error["message"].endswith("pip install 'keel-ml[eval]'")
        assert (error["reason"], error["extra"], error["code"]) == (
            "MISSING_EXTRA",
            "eval",
            "FAILED_PRECONDITION",
        )
    assert out["default"] == ["confusion_matrix", "eval_results_table"]  # a callable has no probabilities
    assert out["runs"] == 1  # the errors were raised before anything was logged
