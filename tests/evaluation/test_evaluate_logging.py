"""keel.evaluate against a real in-process keel server: what lands in the run, model forms,
baselines and validation thresholds."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

import keel
from keel.evaluation import MetricThreshold, ModelValidationFailedException, evaluate
from keel.exceptions import KeelError

SHAP_ARTIFACTS = ("shap_beeswarm_plot", "shap_summary_plot", "shap_feature_importance_plot", "shap_feature_importance")


def _png_ok(content: bytes) -> None:
    from PIL import Image

    Image.open(io.BytesIO(content)).verify()
    assert Image.open(io.BytesIO(content)).format == "PNG"


def _read(uri: str) -> bytes:
    import os

    path = keel.artifacts.download_artifacts(artifact_uri=uri)
    with open(path if os.path.isfile(path) else os.path.join(path, os.path.basename(uri)), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def forest(binary_data):
    X_train, _, y_train, _ = binary_data
    return RandomForestClassifier(n_estimators=20, random_state=0).fit(X_train, y_train)


@pytest.fixture(scope="module")
def baseline(binary_data):
    X_train, _, y_train, _ = binary_data
    return DummyClassifier(strategy="most_frequent").fit(X_train, y_train)


def test_classifier_in_active_run_logs_metrics_plots_and_table(tracking, binary_data, forest) -> None:
    _, X_test, _, y_test = binary_data
    with keel.start_run() as run:
        result = evaluate(forest, (X_test, y_test), targets="label", model_type="classifier")
        assert (
            keel.active_run() is not None and keel.active_run().info.run_id == run.info.run_id
        )  # still open
    assert result.run_id == run.info.run_id
    pred = forest.predict(X_test)
    assert result.metrics["accuracy_score"] == pytest.approx(skm.accuracy_score(y_test, pred))
    assert result.metrics["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y_test, forest.predict_proba(X_test)[:, 1])
    )
    logged = tracking.get_run(run.info.run_id)
    assert logged.data.metrics == pytest.approx(result.metrics)
    assert logged.info.status == "FINISHED"

    assert set(result.artifacts) == {
        "confusion_matrix",
        "roc_curve_plot",
        "precision_recall_curve_plot",
        "eval_results_table",
        *SHAP_ARTIFACTS,  # explainability is on by default when shap is installed (as in MLflow)
    }
    listed = {f.path for f in keel.artifacts.list_artifacts(run_id=run.info.run_id)}
    assert {a.path for a in result.artifacts.values()} <= listed
    for name in ("confusion_matrix", "roc_curve_plot", "precision_recall_curve_plot"):
        assert result.artifacts[name].uri == f"runs:/{run.info.run_id}/{name}.png"
        _png_ok(_read(result.artifacts[name].uri))
    table = json.loads(_read(result.artifacts["eval_results_table"].uri))
    assert table["columns"] == ["label", "prediction", "probability_0", "probability_1"]
    assert len(table["data"]) == len(y_test)
    assert [row[1] for row in table["data"]] == pred.tolist()


def test_seed_workflow_prefix_and_baseline_in_new_run(tracking, binary_data, forest, baseline) -> None:
    """Seed 004: data=(X, y), targets='y_true', a DummyClassifier baseline, metric_prefix."""
    _, X_test, _, y_test = binary_data
    assert keel.active_run() is None
    result = evaluate(
        model=forest,
        data=(X_test, y_test),
        targets="y_true",
        model_type="classifier",
        baseline_model=baseline,
        evaluator_config={"metric_prefix": "eval_", "log_model_explainability": True},
        validation_thresholds={
            "accuracy_score": MetricThreshold(
                threshold=0.8, min_absolute_change=0.05, min_relative_change=0.05, greater_is_better=True
            )
        },
    )
    assert keel.active_run() is None  # the run evaluate started is ended
    run = tracking.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert all(key.startswith("eval_") for key in run.data.metrics)
    assert run.data.metrics["eval_accuracy_score"] == pytest.approx(result.metrics["eval_accuracy_score"])
    baseline_pred = baseline.predict(X_test)
    assert result.baseline_model_metrics is not None
    assert result.baseline_model_metrics["eval_accuracy_score"] == pytest.approx(
        skm.accuracy_score(y_test, baseline_pred)
    )
    assert not any(
        key.startswith("eval_") and "baseline" in key for key in run.data.metrics
    )  # baseline not logged
    assert result.artifacts["confusion_matrix"].path == "eval_confusion_matrix.png"


def test_failed_thresholds_raise_after_logging(tracking, binary_data, forest, baseline) -> None:
    _, X_test, _, y_test = binary_data
    with pytest.raises(ModelValidationFailedException) as err:
        # the baseline as candidate against the forest as baseline: it must fail every bound
        evaluate(
            baseline,
            (X_test, y_test),
            model_type="classifier",
            baseline_model=forest,
            validation_thresholds={
                "accuracy_score": MetricThreshold(
                    threshold=0.8, min_absolute_change=0.05, greater_is_better=True
                ),
                "f1_score": MetricThreshold(threshold=0.9),
                "recall_score": MetricThreshold(threshold=0.9),  # always predicting 1 passes this one
            },
        )
    exc = err.value
    assert exc.reason == "MODEL_VALIDATION_FAILED"
    assert {(f.metric, f.check) for f in exc.failures} == {
        ("accuracy_score", "threshold"),
        ("accuracy_score", "min_absolute_change"),
        ("f1_score", "threshold"),
    }
    candidate_acc = skm.accuracy_score(y_test, baseline.predict(X_test))
    forest_acc = skm.accuracy_score(y_test, forest.predict(X_test))
    change = next(f for f in exc.failures if f.check == "min_absolute_change")
    assert change.candidate == pytest.approx(candidate_acc)
    assert change.baseline == pytest.approx(forest_acc)
    assert change.required == pytest.approx(forest_acc + 0.05)
    assert "accuracy_score" in str(exc) and "f1_score" in str(exc) and "recall_score" not in str(exc)
    # the metrics were logged before the exception
    assert exc.result is not None and exc.result.run_id is not None
    assert tracking.get_run(exc.result.run_id).data.metrics["accuracy_score"] == pytest.approx(candidate_acc)


def test_multiclass_from_model_uri_and_pyfunc(tracking, iris_data) -> None:
    X_train, X_test, y_train, y_test = iris_data
    model = LogisticRegression(max_iter=2000).fit(X_train, y_train)
    with keel.start_run():
        info = keel.sklearn.log_model(model, "model")
    from_uri = evaluate(info.model_uri, X_test, targets=y_test, model_type="classifier")
    pyfunc = evaluate(keel.pyfunc.load_model(info.model_uri), X_test, targets=y_test, model_type="classifier")
    direct = evaluate(model, X_test, targets=y_test, model_type="classifier")
    assert from_uri.metrics == pytest.approx(direct.metrics) and pyfunc.metrics == pytest.approx(
        direct.metrics
    )
    assert direct.metrics["f1_score_macro"] == pytest.approx(
        skm.f1_score(y_test, model.predict(X_test), average="macro")
    )
    assert "roc_auc" in from_uri.metrics  # probabilities came from the loaded estimator
    _png_ok(_read(from_uri.artifacts["roc_curve_plot"].uri))


def test_regressor_dataframe_and_callable(tracking, regression_data) -> None:
    X_train, X_test, y_train, y_test = regression_data
    columns = [f"x{i}" for i in range(X_train.shape[1])]
    model = LinearRegression().fit(pd.DataFrame(X_train, columns=columns), y_train)
    frame = pd.DataFrame(X_test, columns=columns).assign(progression=y_test)
    result = evaluate(
        lambda df: model.predict(df),
        frame,
        targets="progression",
        model_type="regressor",
        baseline_model=DummyRegressor().fit(X_train, y_train),
        validation_thresholds={"r2_score": MetricThreshold(threshold=0.2, min_absolute_change=0.1)},
    )
    pred = model.predict(pd.DataFrame(X_test, columns=columns))
    assert result.metrics["root_mean_squared_error"] == pytest.approx(
        np.sqrt(skm.mean_squared_error(y_test, pred))
    )
    assert result.metrics["mean_absolute_percentage_error"] == pytest.approx(
        skm.mean_absolute_percentage_error(y_test, pred)
    )
    assert set(result.artifacts) == {
        "residuals_plot",
        "predicted_vs_actual_plot",
        "eval_results_table",
        *SHAP_ARTIFACTS,
        *(f"baseline_{name}" for name in SHAP_ARTIFACTS),
    }
    for name in ("residuals_plot", "predicted_vs_actual_plot"):
        _png_ok(_read(result.artifacts[name].uri))
    table = json.loads(_read(result.artifacts["eval_results_table"].uri))
    assert table["columns"] == ["progression", "prediction", "residual"]


@pytest.mark.parametrize(
    ("kwargs", "reason", "message"),
    [
        (
            {"model_type": "clustering"},
            "INVALID_MODEL_TYPE",
            "model_type must be 'classifier' or 'regressor'",
        ),
        ({"model_type": None}, "INVALID_MODEL_TYPE", "model_type must be"),
        (
            {"evaluator_config": {"metric_prefx": "x"}},
            "INVALID_EVALUATOR_CONFIG",
            "unknown keys \\['metric_prefx'\\]",
        ),
        ({"evaluator_config": {"average": "samples"}}, "INVALID_EVALUATOR_CONFIG", "average"),
        ({"evaluator_config": {"metric_prefix": "../x"}}, "INVALID_EVALUATOR_CONFIG", "metric_prefix"),
        (
            {"validation_thresholds": {"acc": MetricThreshold(threshold=1)}},
            "UNKNOWN_METRIC",
            "unknown classifier metric",
        ),
        ({"baseline_model": "no/such/model"}, "MODEL_NOT_FOUND", "does not exist"),
    ],
)
def test_bad_input_creates_no_run(tracking, binary_data, forest, kwargs, reason, message) -> None:
    _, X_test, _, y_test = binary_data
    call = {"model_type": "classifier", **kwargs}
    with pytest.raises(KeelError, match=message) as err:
        evaluate(forest, (X_test, y_test), **call)
    assert err.value.reason == reason
    assert keel.search_runs(output_format="list") == []  # the test's fresh experiment stays empty


def test_array_data_for_a_model_with_named_columns(tracking, binary_data) -> None:
    """A pyfunc model whose signature names its columns gets a DataFrame even when the user
    evaluates on plain arrays."""
    X_train, X_test, y_train, y_test = binary_data
    names = [f"f{i}" for i in range(X_train.shape[1])]
    model = LogisticRegression().fit(pd.DataFrame(X_train, columns=names), y_train)
    with keel.start_run():
        info = keel.sklearn.log_model(model, "model", input_example=pd.DataFrame(X_train[:3], columns=names))
    result = evaluate(
        info.model_uri, (X_test, y_test), model_type="classifier", evaluator_config={"log_plots": False}
    )
    expected = model.predict(pd.DataFrame(X_test, columns=names))
    assert result.metrics["accuracy_score"] == pytest.approx(skm.accuracy_score(y_test, expected))
    assert set(result.artifacts) == {"eval_results_table", "shap_feature_importance"}  # log_plots=False
