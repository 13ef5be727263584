"""Metric computation for ``keel.evaluate`` and sklearn autologging.

Names are those of MLflow's default evaluator (``accuracy_score``, ``f1_score``, ``roc_auc``,
``root_mean_squared_error``...) so that MLflow users' threshold dicts and dashboards keep working.
scikit-learn is imported inside the functions: ``import keel`` never pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.exceptions import InvalidArgument
from keel.extras import require

AVERAGES = ("weighted", "macro", "micro")

# Every name a classifier evaluation can produce (which ones appear depends on binary vs
# multiclass and on whether the model gives probabilities).
BINARY_METRICS = (
    "example_count",
    "accuracy_score",
    "precision_score",
    "recall_score",
    "f1_score",
    "true_negatives",
    "false_positives",
    "false_negatives",
    "true_positives",
    "log_loss",
    "roc_auc",
    "precision_recall_auc",
)
MULTICLASS_METRICS = (
    "example_count",
    "accuracy_score",
    "precision_score",
    "recall_score",
    "f1_score",
    *(f"{name}_{avg}" for name in ("precision_score", "recall_score", "f1_score") for avg in AVERAGES),
    "log_loss",
    "roc_auc",
)
CLASSIFIER_METRICS = tuple(dict.fromkeys(BINARY_METRICS + MULTICLASS_METRICS))
REGRESSOR_METRICS = (
    "example_count",
    "mean_absolute_error",
    "mean_squared_error",
    "root_mean_squared_error",
    "r2_score",
    "mean_absolute_percentage_error",
    "max_error",
    "sum_on_target",
    "mean_on_target",
)
METRICS_BY_MODEL_TYPE: dict[str, tuple[str, ...]] = {
    "classifier": CLASSIFIER_METRICS,
    "regressor": REGRESSOR_METRICS,
}

# Direction of each metric, used when a MetricThreshold leaves greater_is_better unset.
LOWER_IS_BETTER = frozenset(
    {
        "log_loss",
        "false_positives",
        "false_negatives",
        "mean_absolute_error",
        "mean_squared_error",
        "root_mean_squared_error",
        "mean_absolute_percentage_error",
        "max_error",
    }
)
NO_DIRECTION = frozenset(
    {"example_count", "sum_on_target", "mean_on_target", "true_negatives", "true_positives"}
)


@dataclass(frozen=True)
class ClassLayout:
    """The label set of a classification problem.

    ``labels`` is every label seen (targets, predictions and the model's ``classes_``), sorted;
    ``pos_label`` is set for binary problems only.
    """

    labels: list[Any]
    pos_label: Any | None

    @property
    def is_binary(self) -> bool:
        return self.pos_label is not None

def sklearn_metrics() -> Any:
    """``sklearn.metrics``, or ``MissingExtra`` naming ``keel-ml[eval]``."""
    return require("sklearn.metrics", "eval", purpose="keel.evaluate computes its metrics with it")


def class_layout(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[Any] | None = None, pos_label: Any = None
) -> ClassLayout:
    """Decide binary vs multiclass and the positive label.

    The default positive label is ``1`` when it is one of the labels, else the greater of the
    two (scikit-learn's ``classes_[1]``), as MLflow does.
    """
    seen = np.concatenate(
        [
            np.asarray(y_true).ravel(),
            np.asarray(y_pred).ravel(),
            np.asarray(classes if classes is not None else []),
        ]
    )
    try:
        labels = sorted(set(seen.tolist()))
    except TypeError as exc:  # e.g. str and int labels mixed
        raise InvalidArgument(
            f"targets and predictions hold labels of mixed types that cannot be ordered: {exc}; "
            "use one label type (all str or all numbers)",
            reason="INVALID_LABELS",
        ) from None
    if len(labels) > 2:
        if pos_label is not None and pos_label not in labels:
            raise InvalidArgument(
                f"pos_label {pos_label!r} is not one of the labels {labels[:20]}", reason="INVALID_POS_LABEL"
            )
        return ClassLayout(labels, None)
    if pos_label is None:
        pos_label = 1 if 1 in labels else labels[-1]
    elif pos_label not in labels:
        raise InvalidArgument(
            f"pos_label {pos_label!r} is not one of the labels {labels}; set evaluator_config['pos_label'] to one of them",
            reason="INVALID_POS_LABEL",
        )
    return ClassLayout(labels, pos_label)


def _proba_column(proba: np.ndarray, classes: Sequence[Any], label: Any) -> np.ndarray:
    return proba[:, list(classes).index(label)]


def classifier_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    y_proba: np.ndarray | None = None,
    classes: Sequence[Any] | None = None,
    *,
    pos_label: Any = None,
    average: str = "weighted",
) -> dict[str, float]:
    """MLflow's classifier metrics, computed with scikit-learn.

    ``y_proba`` (n_rows x n_classes) comes with ``classes``, the label of each column (the
    estimator's ``classes_``); without it there is no ``log_loss`` / ``roc_auc``.
    Multiclass ``precision_score``/``recall_score``/``f1_score`` use ``average`` (MLflow's
    default: weighted) and every average also has its own name (``f1_score_macro``...).
    """
    skm = sklearn_metrics()

    if average not in AVERAGES:
        raise InvalidArgument(
            f"average {average!r} is not supported; use one of {AVERAGES}", reason="INVALID_EVALUATOR_CONFIG"
        )
    layout = class_layout(y_true, y_pred, classes, pos_label)
    out: dict[str, float] = {"example_count": float(len(y_true))}
    try:
        out["accuracy_score"] = float(skm.accuracy_score(y_true, y_pred))
        if layout.is_binary:
            pos = layout.pos_label
            neg = next((label for label in layout.labels if label != pos), None)
            kw: dict[str, Any] = {"pos_label": pos, "average": "binary", "zero_division": 0}
            out["precision_score"] = float(skm.precision_score(y_true, y_pred, **kw))
            out["recall_score"] = float(skm.recall_score(y_true, y_pred, **kw))
            out["f1_score"] = float(skm.f1_score(y_true, y_pred, **kw))
            if neg is not None:
                tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[neg, pos]).ravel()
                out.update(
                    true_negatives=float(tn),
                    false_positives=float(fp),
                    false_negatives=float(fn),
                    true_positives=float(tp),
                )
        else:
            for name, fn in (
                ("precision_score", skm.precision_score),
                ("recall_score", skm.recall_score),
                ("f1_score", skm.f1_score),
            ):
                for avg in AVERAGES:
                    out[f"{name}_{avg}"] = float(
                        fn(y_true, y_pred, labels=layout.labels, average=avg, zero_division=0)
                    )
                out[name] = out[f"{name}_{average}"]
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(
            f"cannot compute classification metrics: {exc}. A classifier's predictions must be class labels "
            "of the same kind as the targets (use model_type='regressor' for continuous values)",
            reason="INVALID_PREDICTIONS",
        ) from None
    if y_proba is not None and classes is not None:
        out.update(_probability_metrics(y_true, y_proba, list(classes), layout, average))
    return out


def _probability_metrics(
    y_true: np.ndarray, y_proba: np.ndarray, classes: list[Any], layout: ClassLayout, average: str
) -> dict[str, float]:
    """log_loss, roc_auc (and binary precision_recall_auc). A metric that is undefined on this
    data (one class only in the targets, say) is left out rather than logged as garbage."""
    skm = sklearn_metrics()

    out: dict[str, float] = {}
    if set(np.unique(y_true).tolist()) - set(classes):
        return out  # targets the model cannot give a probability for: no probability metrics
    try:
        out["log_loss"] = float(skm.log_loss(y_true, y_proba, labels=classes))
    except ValueError:
        pass
    if len(np.unique(y_true)) < 2:
        return out
    try:
        if layout.is_binary:
            pos_scores = (
                _proba_column(y_proba, classes, layout.pos_label) if layout.pos_label in classes else None
            )
            if pos_scores is not None:
                is_pos = np.asarray(y_true) == layout.pos_label
                out["roc_auc"] = float(skm.roc_auc_score(is_pos, pos_scores))
                precision, recall, _ = skm.precision_recall_curve(is_pos, pos_scores)
                out["precision_recall_auc"] = float(skm.auc(recall, precision))
        else:
            avg = (
                "macro" if average == "micro" else average
            )  # ovr roc_auc has no micro average for multiclass
            out["roc_auc"] = float(
                skm.roc_auc_score(y_true, y_proba, labels=classes, multi_class="ovr", average=avg)
            )
    except ValueError:
        pass
    return out


def regressor_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MLflow's regressor metrics, computed with scikit-learn."""
    skm = sklearn_metrics()

    try:
        y_true = np.asarray(y_true, dtype=float)
        y_pred = np.asarray(y_pred, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"a regressor's targets and predictions must be numbers: {exc}", reason="INVALID_PREDICTIONS"
        ) from None
    for what, values in (("targets", y_true), ("predictions", y_pred)):
        if not np.all(np.isfinite(values)):
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise InvalidArgument(
                f"the {what} hold a NaN or infinite value (first at row {bad}); drop or impute those rows",
                reason="INVALID_PREDICTIONS",
            )
    mse = float(skm.mean_squared_error(y_true, y_pred))
    return {
        "example_count": float(len(y_true)),
        "mean_absolute_error": float(skm.mean_absolute_error(y_true, y_pred)),
        "mean_squared_error": mse,
        "root_mean_squared_error": math.sqrt(mse),
        # R² is undefined for fewer than two rows; sklearn warns and returns nan, so skip the call
        "r2_score": float(skm.r2_score(y_true, y_pred)) if len(y_true) >= 2 else math.nan,
        "mean_absolute_percentage_error": float(skm.mean_absolute_percentage_error(y_true, y_pred)),
        "max_error": float(skm.max_error(y_true, y_pred)),
        "sum_on_target": float(np.sum(y_true)),
        "mean_on_target": float(np.mean(y_true)),
    }
