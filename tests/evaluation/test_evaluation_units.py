"""Evaluation without a server: metrics against scikit-learn's own functions on fixed data,
plots as real PNGs, threshold semantics and every bad input."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LinearRegression, LogisticRegression

from keel.evaluation import MetricThreshold, plots
from keel.evaluation.data import prepare_data
from keel.evaluation.metrics import classifier_metrics, regressor_metrics
from keel.evaluation.predictors import resolve_predictor
from keel.evaluation.validation import check_thresholds, plan_thresholds
from keel.exceptions import InvalidArgument

# ----------------------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def binary_fit(binary_data):
    X_train, X_test, y_train, y_test = binary_data
    model = LogisticRegression().fit(X_train, y_train)
    return model, X_test, y_test, model.predict(X_test), model.predict_proba(X_test)


def test_binary_metrics_match_sklearn(binary_fit) -> None:
    model, _, y, pred, proba = binary_fit
    got = classifier_metrics(y, pred, proba, list(model.classes_))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    precision, recall, _ = skm.precision_recall_curve(y, proba[:, 1])
    expected = {
        "example_count": len(y),
        "accuracy_score": skm.accuracy_score(y, pred),
        "precision_score": skm.precision_score(y, pred),
        "recall_score": skm.recall_score(y, pred),
        "f1_score": skm.f1_score(y, pred),
        "true_negatives": tn,
        "false_positives": fp,
        "false_negatives": fn,
        "true_positives": tp,
        "log_loss": skm.log_loss(y, proba),
        "roc_auc": skm.roc_auc_score(y, proba[:, 1]),
        "precision_recall_auc": skm.auc(recall, precision),
    }
    assert got == pytest.approx(expected, rel=1e-12)
    assert 0.9 < got["accuracy_score"] < 1.0  # a real model, not a degenerate one


def test_multiclass_metrics_match_sklearn(iris_data) -> None:
    X_train, X_test, y_train, y_test = iris_data
    model = LogisticRegression(max_iter=2000, C=0.05).fit(
        X_train, y_train
    )  # weak on purpose: not all correct
    pred, proba = model.predict(X_test), model.predict_proba(X_test)
    got = classifier_metrics(y_test, pred, proba, list(model.classes_))
    assert got["accuracy_score"] < 1.0
    for name, fn in (
        ("precision_score", skm.precision_score),
        ("recall_score", skm.recall_score),
        ("f1_score", skm.f1_score),
    ):
        for avg in ("macro", "weighted", "micro"):
            assert got[f"{name}_{avg}"] == pytest.approx(fn(y_test, pred, average=avg, zero_division=0)), (
                name,
                avg,
            )
        assert got[name] == got[f"{name}_weighted"]  # MLflow's default average
    assert got["log_loss"] == pytest.approx(skm.log_loss(y_test, proba))
    assert got["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y_test, proba, multi_class="ovr", average="weighted")
    )
    assert "true_positives" not in got and "precision_recall_auc" not in got

    macro = classifier_metrics(y_test, pred, proba, list(model.classes_), average="macro")
    assert macro["f1_score"] == macro["f1_score_macro"]
    assert macro["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y_test, proba, multi_class="ovr", average="macro")
    )


def test_string_labels_and_pos_label() -> None:
    y = np.array(["spam", "ham", "spam", "ham", "spam", "ham"])
    pred = np.array(["spam", "spam", "spam", "ham", "ham", "ham"])
    got = classifier_metrics(y, pred)  # no label 1: the greater label ("spam") is positive
    assert got["precision_score"] == pytest.approx(skm.precision_score(y, pred, pos_label="spam"))
    ham = classifier_metrics(y, pred, pos_label="ham")
    assert ham["recall_score"] == pytest.approx(skm.recall_score(y, pred, pos_label="ham"))
    assert "log_loss" not in got  # no probabilities, no probability metrics
    with pytest.raises(InvalidArgument, match="pos_label 'eggs' is not one of the labels") as err:
        classifier_metrics(y, pred, pos_label="eggs")
    assert err.value.reason == "INVALID_POS_LABEL"


def test_regressor_metrics_match_sklearn(regression_data) -> None:
    X_train, X_test, y_train, y_test = regression_data
    pred = LinearRegression().fit(X_train, y_train).predict(X_test)
    got = regressor_metrics(y_test, pred)
    mse = skm.mean_squared_error(y_test, pred)
    assert got == pytest.approx(
        {
            "example_count": len(y_test),
            "mean_absolute_error": skm.mean_absolute_error(y_test, pred),
            "mean_squared_error": mse,
            "root_mean_squared_error": math.sqrt(mse),
            "r2_score": skm.r2_score(y_test, pred),
            "mean_absolute_percentage_error": skm.mean_absolute_percentage_error(y_test, pred),
            "max_error": skm.max_error(y_test, pred),
            "sum_on_target": float(np.sum(y_test)),
            "mean_on_target": float(np.mean(y_test)),
        },
        rel=1e-12,
    )


def test_bad_predictions_are_precise_errors() -> None:
    with pytest.raises(InvalidArgument, match="predictions hold a NaN .* row 1") as err:
        regressor_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, 3.0]))
    assert err.value.reason == "INVALID_PREDICTIONS"
    with pytest.raises(InvalidArgument, match="must be numbers"):
        regressor_metrics(np.array([1.0, 2.0]), np.array(["a", "b"]))
    # a regressor's continuous output evaluated as a classifier
    with pytest.raises(InvalidArgument, match="model_type='regressor'"):
        classifier_metrics(np.array([0, 1, 0, 1]), np.array([0.1, 0.7, 0.2, 0.93]))
    with pytest.raises(InvalidArgument, match="mixed types"):
        classifier_metrics(np.array([0, 1], dtype=object), np.array(["a", "b"], dtype=object))


# ----------------------------------------------------------------------------- plots


def _assert_png(content: bytes | None) -> None:
    from PIL import Image

    assert content is not None and content[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(content))
    image.verify()  # checks the chunks' CRCs, not just the header
    image = Image.open(io.BytesIO(content))
    assert image.format == "PNG" and image.size[0] >= 300 and image.size[1] >= 300
    assert len(np.unique(np.asarray(image.convert("L")))) > 10  # something is drawn


def test_plots_are_valid_pngs(binary_fit, iris_data) -> None:
    model, _, y, pred, proba = binary_fit
    classes = list(model.classes_)
    _assert_png(plots.confusion_matrix_png(y, pred, classes))
    _assert_png(plots.roc_curve_png(y, proba, classes, 1))
    _assert_png(plots.precision_recall_curve_png(y, proba, classes, 1))
    _assert_png(plots.residuals_png(y.astype(float), proba[:, 1]))
    _assert_png(plots.predicted_vs_actual_png(y.astype(float), proba[:, 1]))
    # multiclass: one curve per class
    X_train, X_test, y_train, y_test = iris_data
    iris = LogisticRegression(max_iter=2000).fit(X_train, y_train)
    _assert_png(plots.roc_curve_png(y_test, iris.predict_proba(X_test), list(iris.classes_), None))
    # no curve can be drawn when the targets hold a single class
    assert plots.roc_curve_png(np.ones(5, dtype=int), np.full((5, 2), 0.5), [0, 1], 1) is None


def test_plots_leave_no_pyplot_state() -> None:
    import sys

    plots.residuals_png(np.arange(10.0), np.arange(10.0) + 1)
    if (
        "matplotlib.pyplot" in sys.modules
    ):  # another test may have imported it; then no figure may be left open
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []


# ----------------------------------------------------------------------------- thresholds


def _plan(thresholds, model_type="classifier", baseline=True, prefix=""):
    return plan_thresholds(thresholds, model_type, baseline, prefix)


def test_thresholds_pass() -> None:
    plan = _plan(
        {
            "accuracy_score": MetricThreshold(
                threshold=0.8, min_absolute_change=0.05, min_relative_change=0.05, greater_is_better=True
            ),
            "log_loss": MetricThreshold(
                threshold=0.5, min_absolute_change=0.1
            ),  # lower is better, known direction
        }
    )
    candidate = {"accuracy_score": 0.9, "log_loss": 0.2}
    baseline = {"accuracy_score": 0.6, "log_loss": 0.5}
    assert check_thresholds(plan, candidate, baseline) == []
    # exactly on the bound passes (>=)
    assert check_thresholds(_plan({"accuracy_score": MetricThreshold(threshold=0.9)}), candidate, None) == []


def test_threshold_failures_list_every_bound() -> None:
    plan = _plan(
        {
            "accuracy_score": MetricThreshold(
                threshold=0.95, min_absolute_change=0.05, min_relative_change=0.5, greater_is_better=True
            ),
            "log_loss": MetricThreshold(min_relative_change=0.5),
            "f1_score": MetricThreshold(threshold=0.1),
        }
    )
    failures = check_thresholds(
        plan,
        {"accuracy_score": 0.9, "log_loss": 0.4, "f1_score": 0.8},
        {"accuracy_score": 0.88, "log_loss": 0.5, "f1_score": 0.1},
    )
    got = {(f.metric, f.check): f for f in failures}
    assert set(got) == {
        ("accuracy_score", "threshold"),
        ("accuracy_score", "min_absolute_change"),
        ("accuracy_score", "min_relative_change"),
        ("log_loss", "min_relative_change"),
    }
    assert got[("accuracy_score", "min_absolute_change")].required == pytest.approx(0.93)
    assert got[("accuracy_score", "min_relative_change")].required == pytest.approx(0.88 * 1.5)
    assert got[("log_loss", "min_relative_change")].required == pytest.approx(0.25)  # lower is better
    text = str(got[("accuracy_score", "min_absolute_change")])
    assert "candidate=0.9" in text and "baseline=0.88" in text and ">= 0.93" in text
    assert "<= 0.25" in str(got[("log_loss", "min_relative_change")])


def test_threshold_missing_and_zero_baseline() -> None:
    plan = _plan(
        {"roc_auc": MetricThreshold(threshold=0.5), "f1_score": MetricThreshold(min_relative_change=0.1)}
    )
    failures = check_thresholds(plan, {"f1_score": 0.0}, {"f1_score": 0.0})
    assert [(f.metric, f.check) for f in failures] == [
        ("roc_auc", "missing"),
        ("f1_score", "min_relative_change"),
    ]
    assert "no value" in str(failures[0])
    assert check_thresholds(plan, {"roc_auc": 0.7, "f1_score": 0.01}, {"f1_score": 0.0}) == []


def test_threshold_keys_may_carry_the_prefix() -> None:
    plan = _plan({"eval_accuracy_score": MetricThreshold(threshold=0.5)}, prefix="eval_")
    assert list(plan.thresholds) == ["accuracy_score"]


@pytest.mark.parametrize(
    ("thresholds", "model_type", "baseline", "reason", "message"),
    [
        (
            {"accuracy": MetricThreshold(threshold=0.8)},
            "classifier",
            False,
            "UNKNOWN_METRIC",
            "did you mean 'accuracy_score'",
        ),
        (
            {"accuracy_score": MetricThreshold(threshold=0.8)},
            "regressor",
            False,
            "UNKNOWN_METRIC",
            "unknown regressor metric",
        ),
        (
            {"accuracy_score": MetricThreshold(min_absolute_change=0.1)},
            "classifier",
            False,
            "BASELINE_REQUIRED",
            "baseline_model",
        ),
        (
            {"accuracy_score": 0.8},
            "classifier",
            False,
            "INVALID_THRESHOLD",
            "must be a keel.evaluation.MetricThreshold",
        ),
        (
            {"example_count": MetricThreshold(threshold=10)},
            "classifier",
            False,
            "INVALID_THRESHOLD",
            "greater_is_better",
        ),
        ([("accuracy_score", 0.8)], "classifier", False, "INVALID_THRESHOLD", "must be a dict"),
    ],
)
def test_bad_thresholds(thresholds, model_type, baseline, reason, message) -> None:
    with pytest.raises(InvalidArgument, match=message) as err:
        plan_thresholds(thresholds, model_type, baseline)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one of"),
        ({"threshold": "high"}, "threshold must be a finite number"),
        ({"threshold": float("nan")}, "threshold must be a finite number"),
        ({"min_absolute_change": -0.1}, "min_absolute_change must be a positive number"),
        ({"min_relative_change": 5}, r"min_relative_change must be a number in \(0, 1\]"),
        ({"threshold": 0.5, "greater_is_better": "yes"}, "greater_is_better must be"),
    ],
)
def test_bad_metric_threshold(kwargs, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        MetricThreshold(**kwargs)


# ----------------------------------------------------------------------------- data and models


def test_data_shapes() -> None:
    X = np.arange(12.0).reshape(4, 3)
    y = np.array([0, 1, 0, 1])
    pair = prepare_data((X, y), targets="label")
    assert pair.target_name == "label" and pair.feature_names == ["feature_1", "feature_2", "feature_3"]
    arr = prepare_data(X, targets=y, feature_names=["a", "b", "c"])
    assert arr.feature_names == ["a", "b", "c"] and list(arr.targets) == [0, 1, 0, 1]
    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(label=y)
    frame = prepare_data(df, targets="label", feature_names=["c", "a"])
    assert list(frame.features.columns) == ["c", "a"] and frame.target_name == "label"
    column = prepare_data((X, y.reshape(-1, 1)))  # an (n, 1) label column is fine
    assert column.targets.shape == (4,)


@pytest.mark.parametrize(
    ("data", "targets", "feature_names", "message"),
    [
        (None, None, None, "data is required"),
        (pd.DataFrame({"a": [1, 2]}), None, None, "targets must name its label column"),
        (pd.DataFrame({"a": [1, 2]}), "label", None, "targets column 'label' is not in the DataFrame"),
        (np.ones((3, 2)), None, None, "targets must be the array of labels"),
        (np.ones((3, 2)), [1, 0], None, "3 rows but there are 2 labels"),
        (np.ones(3), [1, 0, 1], None, "reshape it with x.reshape"),
        ((np.ones((3, 2)), [1, 0, 1], [0]), None, None, "an \\(X, y\\) pair, got 3 items"),
        ((np.ones((3, 2)), [1, 0, 1]), [1, 0, 1], None, "targets may only name the label column"),
        ((np.ones((0, 2)), []), None, None, "no rows"),
        (np.ones((3, 2)), [1, 0, 1], ["only_one"], "feature_names has 1 names but the data has 2 columns"),
        (pd.DataFrame({"a": [1], "y": [0]}), "y", ["zz"], "feature_names \\['zz'\\] are not columns"),
        (np.ones((3, 2)), [1.0, np.nan, 0.0], None, "labels hold NaN"),
        (np.ones((3, 2)), [1, 0, 1], "ab", "feature_names must be a list"),
    ],
)
def test_bad_data(data, targets, feature_names, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        prepare_data(data, targets, feature_names)


def test_model_forms(binary_fit) -> None:
    model, X, y, pred, _ = binary_fit
    data = prepare_data((X, y))
    estimator = resolve_predictor(model)
    assert estimator.classes == [0, 1] and estimator.predict_proba(data) is not None
    function = resolve_predictor(lambda rows: model.predict(rows))
    assert np.array_equal(function.predict(data), pred) and function.predict_proba(data) is None
    with pytest.raises(InvalidArgument, match="baseline_model must be a model URI.*got int") as err:
        resolve_predictor(42, "baseline_model")
    assert err.value.reason == "INVALID_MODEL"
    with pytest.raises(InvalidArgument, match="returned 2 predictions for"):
        resolve_predictor(lambda rows: [0, 1]).predict(data)
    with pytest.raises(InvalidArgument, match="a classifier returns labels, not probabilities"):
        resolve_predictor(model.predict_proba).predict(data)
    with pytest.raises(InvalidArgument, match="the model failed to predict.*NotFittedError") as err:
        resolve_predictor(LogisticRegression()).predict(data)
    assert err.value.reason == "PREDICT_FAILED"
