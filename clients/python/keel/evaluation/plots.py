"""PNG plots of an evaluation: confusion matrix, ROC and precision-recall curves, residuals and
predicted-vs-actual.

Figures are drawn on matplotlib's Agg canvas directly (``matplotlib.figure.Figure``), never
through ``pyplot``: no global backend switch, no GUI, nothing left open in the user's session.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.evaluation.metrics import sklearn_metrics
from keel.extras import require

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Beyond this many classes, per-class ROC/PR curves are unreadable: draw the first ones only.
MAX_CURVE_CLASSES = 10
# Scatter plots of huge evaluations sample this many points (deterministically).
MAX_SCATTER_POINTS = 20_000


# why matplotlib is needed, as MissingExtra's message says it
PLOTS_PURPOSE = "keel.evaluate draws its plots with it; evaluator_config={'log_plots': False} skips them"


def _figure(width: float = 6.0, height: float = 5.0) -> Figure:
    canvas = require("matplotlib.backends.backend_agg", "eval", purpose=PLOTS_PURPOSE)
    figure = require("matplotlib.figure", "eval", purpose=PLOTS_PURPOSE)
    fig: Figure = figure.Figure(figsize=(width, height), dpi=100)
    canvas.FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_matrix_png(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[Any]) -> bytes:
    confusion_matrix = sklearn_metrics().confusion_matrix

    cm = confusion_matrix(y_true, y_pred, labels=list(labels))
    n = len(labels)
    size = min(4.0 + 0.5 * n, 16.0)
    fig = _figure(size, size * 0.85)
    ax = fig.add_subplot()
    image = ax.imshow(cm, interpolation="nearest", cmap="Blues")
    fig.colorbar(image, ax=ax)
    ticks = np.arange(n)
    ax.set_xticks(ticks, [str(label) for label in labels], rotation=45 if n > 6 else 0)
    ax.set_yticks(ticks, [str(label) for label in labels])
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title("Confusion matrix")
    if n <= 30:  # cell counts stay legible up to about this size
        middle = cm.max() / 2.0 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    color="white" if cm[i, j] > middle else "black",
                )
    return _png(fig)


def _one_vs_rest(
    y_true: np.ndarray, y_proba: np.ndarray, classes: Sequence[Any], pos_label: Any
) -> list[tuple[Any, np.ndarray, np.ndarray]]:
    """(label, is_label, score) per curve: the positive class for binary problems, each class
    (up to MAX_CURVE_CLASSES) present in the targets for multiclass ones."""
    present = set(np.unique(y_true).tolist())
    wanted = (
        [pos_label] if pos_label is not None else [c for c in classes if c in present][:MAX_CURVE_CLASSES]
    )
    out = []
    for label in wanted:
        is_label = np.asarray(y_true) == label
        if label in classes and 0 < is_label.sum() < len(is_label):  # a curve needs both outcomes
            out.append((label, is_label, y_proba[:, list(classes).index(label)]))
    return out


def roc_curve_png(
    y_true: np.ndarray, y_proba: np.ndarray, classes: Sequence[Any], pos_label: Any
) -> bytes | None:
    skm = sklearn_metrics()
    auc, roc_curve = skm.auc, skm.roc_curve

    curves = _one_vs_rest(y_true, y_proba, classes, pos_label)
    if not curves:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for label, is_label, score in curves:
        fpr, tpr, _ = roc_curve(is_label, score)
        ax.plot(fpr, tpr, label=f"{label} (AUC={auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title("ROC curve" + (" (one vs rest)" if pos_label is None else ""))
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def precision_recall_curve_png(
    y_true: np.ndarray, y_proba: np.ndarray, classes: Sequence[Any], pos_label: Any
) -> bytes | None:
    skm = sklearn_metrics()
    auc, precision_recall_curve = skm.auc, skm.precision_recall_curve

    curves = _one_vs_rest(y_true, y_proba, classes, pos_label)
    if not curves:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for label, is_label, score in curves:
        precision, recall, _ = precision_recall_curve(is_label, score)
        ax.plot(recall, precision, label=f"{label} (AUC={auc(recall, precision):.3f})")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_ylim(0.0, 1.05)
    ax.set_title("Precision-recall curve" + (" (one vs rest)" if pos_label is None else ""))
    ax.legend(loc="lower left", fontsize="small")
    return _png(fig)


def _sample(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(y_true) <= MAX_SCATTER_POINTS:
        return y_true, y_pred
    index = np.random.default_rng(0).choice(len(y_true), MAX_SCATTER_POINTS, replace=False)
    return y_true[index], y_pred[index]


def residuals_png(y_true: np.ndarray, y_pred: np.ndarray) -> bytes:
    y_true, y_pred = _sample(np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float))
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(y_pred, y_true - y_pred, s=10, alpha=0.6)
    ax.axhline(0.0, linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("Predicted value")
    ax.set_ylabel("Residual (actual - predicted)")
    ax.set_title("Residuals")
    return _png(fig)


def predicted_vs_actual_png(y_true: np.ndarray, y_pred: np.ndarray) -> bytes:
    y_true, y_pred = _sample(np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float))
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(y_true, y_pred, s=10, alpha=0.6)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("Actual value")
    ax.set_ylabel("Predicted value")
    ax.set_title("Predicted vs actual")
    return _png(fig)
