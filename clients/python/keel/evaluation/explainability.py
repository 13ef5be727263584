"""SHAP explanations of ``keel.evaluate`` (MLflow's ``log_model_explainability``).

On a deterministic sample of the evaluation rows (``explainability_nsamples``, default 2,000)
SHAP values are computed with ``shap.Explainer`` and written as MLflow's artifacts
``shap_beeswarm_plot.png``, ``shap_summary_plot.png`` and ``shap_feature_importance_plot.png``,
plus ``shap_feature_importance.json`` (mean absolute SHAP value per feature, largest first). A
baseline model gets the same files with ``baseline_`` before their names (MLflow logs nothing
for a baseline).

Which explainer: with ``explainability_algorithm`` unset, shap chooses from the model itself
(TreeExplainer's exact, fast path-dependent algorithm for tree ensembles, LinearExplainer for
linear models); a model it cannot read (a pipeline, an SVC, a plain callable) is explained
through its predictions (probabilities for classifiers), with shap choosing ``exact`` (up to 10
features) or ``permutation``. ``exact``, ``permutation``, ``partition`` and ``kernel`` force
that model-agnostic algorithm, against a background of at most ``BACKGROUND_ROWS`` rows.

What is explained: the prediction of a regressor; for a binary classifier the output for the
positive class (a probability, or the log-odds where shap reads a linear or boosted model); for
a multiclass classifier one output per class (the beeswarm shows, per row, the class it
predicts; the importances average the classes).

When: ``log_model_explainability`` defaults to True when shap is installed, as in MLflow, and
then an evaluation shap cannot explain (non-numeric features, a multiclass model without
``predict_proba``, an explainer error) is logged without SHAP artifacts and a warning. Asked for
(``log_model_explainability=True`` or any ``explainability_*`` key), it is never skipped: a
missing shap is ``MissingExtra`` naming ``keel-ml[eval]``, anything shap cannot explain an
``InvalidArgument`` saying why, both before anything is logged.

The beeswarm and importance plots are drawn on an Agg canvas without pyplot; shap's legacy
summary plot needs pyplot's current figure, so it gets one of its own that is closed afterwards
(the caller's current figure is restored). With ``log_plots=False`` only the JSON is written.
"""

from __future__ import annotations

import io
import json
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from keel.evaluation.data import EvalData
from keel.evaluation.predictors import Predictor
from keel.exceptions import InvalidArgument, KeelError
from keel.extras import require
from keel.models.utils import is_dataframe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

CONFIG_KEYS = frozenset(
    {
        "log_model_explainability",
        "explainability_algorithm",
        "explainability_nsamples",
        "explainability_kernel_link",
    }
)
ALGORITHMS = ("exact", "permutation", "partition", "kernel")  # MLflow's set
KERNEL_LINKS = ("identity", "logit")
DEFAULT_NSAMPLES = 2000  # MLflow's default
# Rows the model-agnostic algorithms mask with (shap's own default for its Independent masker).
BACKGROUND_ROWS = 100
# Features shown in the plots (shap's default for beeswarm and bar).
MAX_DISPLAY = 10

BEESWARM_PLOT = "shap_beeswarm_plot.png"
SUMMARY_PLOT = "shap_summary_plot.png"
IMPORTANCE_PLOT = "shap_feature_importance_plot.png"
IMPORTANCE_JSON = "shap_feature_importance.json"
BASELINE_PREFIX = "baseline_"

PURPOSE = (
    "keel.evaluate computes SHAP explanations with it; "
    "evaluator_config={'log_model_explainability': False} skips them"
)

Mode = Literal["off", "default", "asked"]


@dataclass(frozen=True)
class ExplainabilityConfig:
    # off: log_model_explainability=False; default: unset (on when shap is installed, skipped
    # with a warning when impossible); asked: True or an explainability_* key (never skipped)
    mode: Mode = "default"
    algorithm: str | None = None  # None: chosen from the model
    nsamples: int = DEFAULT_NSAMPLES
    kernel_link: str = "identity"


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason="INVALID_EVALUATOR_CONFIG")


def parse_config(config: Mapping[str, Any]) -> ExplainabilityConfig:
    """The explainability keys of ``evaluator_config``; a value keel would not use is an error."""
    enabled = config.get("log_model_explainability")
    if enabled is not None and not isinstance(enabled, bool):
        raise _invalid(f"evaluator_config['log_model_explainability'] must be True or False, got {enabled!r}")
    tuning = sorted(key for key in CONFIG_KEYS - {"log_model_explainability"} if key in config)
    if enabled is False:
        if tuning:
            raise _invalid(
                f"evaluator_config sets {tuning} but log_model_explainability is False, so they would do "
                "nothing; drop them or enable explainability"
            )
        return ExplainabilityConfig(mode="off")
    algorithm = config.get("explainability_algorithm")
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise _invalid(
            f"evaluator_config['explainability_algorithm'] must be one of {list(ALGORITHMS)} "
            f"(or unset: chosen from the model), got {algorithm!r}"
        )
    nsamples = config.get("explainability_nsamples", DEFAULT_NSAMPLES)
    if isinstance(nsamples, bool) or not isinstance(nsamples, int | np.integer) or nsamples < 1:
        raise _invalid(
            f"evaluator_config['explainability_nsamples'] must be a positive integer (rows to explain), "
            f"got {nsamples!r}"
        )
    link = config.get("explainability_kernel_link", "identity")
    if "explainability_kernel_link" in config and algorithm != "kernel":
        raise _invalid(
            "evaluator_config['explainability_kernel_link'] applies to explainability_algorithm='kernel' only "
            f"(the algorithm is {algorithm!r}); drop it or set the algorithm to 'kernel'"
        )
    if link not in KERNEL_LINKS:
        raise _invalid(
            f"evaluator_config['explainability_kernel_link'] must be one of {list(KERNEL_LINKS)}, got {link!r}"
        )
    return ExplainabilityConfig(
        mode="asked" if enabled or tuning else "default",
        algorithm=algorithm,
        nsamples=int(nsamples),
        kernel_link=link,
    )


def _shap() -> Any:
    """shap (or ``MissingExtra`` naming ``keel-ml[eval]``), imported without the
    PendingDeprecationWarnings newer matplotlib gives for the colormaps shap makes at import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return require("shap", "eval", purpose=PURPOSE)


def load_shap(config: ExplainabilityConfig) -> Any:
    """shap, or None when explainability is off, or on by default and shap is missing (as in
    MLflow, the evaluation goes on without it). Asked for, a missing shap is ``MissingExtra``."""
    if config.mode == "off":
        return None
    if config.mode == "asked":
        return _shap()
    try:
        return _shap()
    except KeelError as exc:
        log.info("model explainability skipped: %s", exc)
        return None


class Unexplainable(InvalidArgument):
    """What shap cannot explain (raised when asked for, a warning otherwise)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="EXPLAINABILITY_UNSUPPORTED")


@dataclass
class Explanation:
    """SHAP values of a sample: ``values`` is rows x features, or rows x features x classes for a
    multiclass model (``classes`` then names the last axis)."""

    values: np.ndarray
    base_values: np.ndarray  # rows, or rows x classes
    data: np.ndarray  # the explained rows (float), rows x features
    feature_names: list[str]
    explainer: str  # the shap class that computed them
    explained: str  # what output, in words
    classes: list[Any] | None = None
    seconds: float = 0.0  # time spent computing the values

    def mean_abs(self) -> np.ndarray:
        """Mean absolute SHAP value per feature (averaged over the classes of a multiclass model)."""
        magnitude = np.abs(self.values).mean(axis=0)
        return magnitude.mean(axis=-1) if magnitude.ndim == 2 else magnitude

    def to_json(self) -> dict[str, Any]:
        importance = self.mean_abs()
        order = np.argsort(-importance, kind="stable")
        out: dict[str, Any] = {
            "explained": self.explained,
            "explainer": self.explainer,
            "num_rows": int(self.values.shape[0]),
            "mean_abs_shap": {self.feature_names[i]: float(importance[i]) for i in order},
        }
        if self.classes is not None:
            per_class = np.abs(self.values).mean(axis=0)
            out["mean_abs_shap_per_class"] = {
                str(label): {self.feature_names[i]: float(per_class[i, k]) for i in order}
                for k, label in enumerate(self.classes)
            }
        return out

    def single_output(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, base values) of one output per row: for a multiclass model, the class whose
        output is largest (the class the model predicts)."""
        if self.classes is None:
            return self.values, self.base_values
        outputs = self.base_values + self.values.sum(axis=1)  # rows x classes
        chosen = outputs.argmax(axis=1)
        rows = np.arange(len(chosen))
        return self.values[rows, :, chosen], self.base_values[rows, chosen]


# ---------------------------------------------------------------------------------------------
# computing
# ---------------------------------------------------------------------------------------------


def _numeric_sample(features: Any, rows: np.ndarray) -> tuple[Any, np.ndarray]:
    """(the sampled rows as the model takes them, the same rows as floats); NaNs are filled with
    the column mean (as MLflow does), since shap's maskers cannot hold them."""
    if is_dataframe(features):
        sample = features.iloc[rows]
        kinds = {str(c): sample[c].dtype.kind for c in sample.columns}
        bad = [c for c, kind in kinds.items() if kind not in "biuf"]
        if bad:
            raise Unexplainable(f"SHAP needs numeric features; columns {bad[:10]} are not numeric")
        values = sample.to_numpy(dtype=float)
    else:
        sample = np.asarray(features)[rows]
        if sample.dtype.kind not in "biuf":
            raise Unexplainable(f"SHAP needs numeric features; the data's dtype is {sample.dtype}")
        values = sample.astype(float)
    if np.isnan(values).any():
        means = np.nan_to_num(np.nanmean(values, axis=0))
        values = np.where(np.isnan(values), means, values)
        sample = (
            sample.fillna(dict(zip(sample.columns, means, strict=True))) if is_dataframe(sample) else values
        )
    return sample, values


def _rows(n: int, wanted: int, seed: int) -> np.ndarray:
    if n <= wanted:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, wanted, replace=False))


@dataclass(frozen=True)
class _Target:
    """What output of the model is explained."""

    model_type: str
    classes: list[Any] | None  # the model's classes (those of its probabilities)
    pos_label: Any  # binary classification only
    multiclass: bool
    has_proba: bool

    def describe(self, through_model: bool) -> str:
        if self.model_type == "regressor":
            return "prediction"
        if not through_model and not self.has_proba:
            return "predicted label (as a number)"
        if self.multiclass:
            return "model output per class" if through_model else "probability per class"
        return (
            f"model output for class {self.pos_label}"
            if through_model
            else f"probability of class {self.pos_label}"
        )


def _model_function(
    predictor: Predictor, target: _Target, frame_columns: list[str] | None
) -> Callable[[Any], Any]:
    """f(rows) -> what is explained, for the model-agnostic explainers (which pass arrays)."""

    def model_input(x: Any) -> Any:
        if frame_columns is not None and not is_dataframe(x):
            import pandas as pd

            x = pd.DataFrame(np.asarray(x), columns=frame_columns)
        return predictor.model_input(x)

    if (
        target.model_type == "classifier"
        and target.has_proba
        and predictor.proba_fn is not None
        and target.classes
    ):
        proba_fn, classes = predictor.proba_fn, target.classes
        if target.multiclass:
            return lambda x: np.asarray(proba_fn(model_input(x)), dtype=float)
        column = classes.index(target.pos_label)
        return lambda x: np.asarray(proba_fn(model_input(x)), dtype=float)[:, column]
    predict_fn = predictor.predict_fn

    def predict(x: Any) -> np.ndarray:
        return np.asarray(predict_fn(model_input(x))).astype(float).ravel()

    return predict


def _check_target(predictor: Predictor, target: _Target, targets: np.ndarray) -> None:
    if target.model_type != "classifier" or target.has_proba:
        return
    if target.multiclass:
        raise Unexplainable(
            f"the {predictor.role} has no usable predict_proba; SHAP explains a multiclass model through "
            "its class probabilities"
        )
    if targets.dtype.kind not in "biuf":
        raise Unexplainable(
            f"the {predictor.role} has no usable predict_proba and its labels are not numeric; SHAP explains "
            "a classifier through its probabilities (or numeric labels)"
        )


def _select(values: np.ndarray, base: np.ndarray, target: _Target) -> tuple[np.ndarray, np.ndarray]:
    """The explained output(s) out of what a model-specific explainer returned."""
    base = np.broadcast_to(np.asarray(base, dtype=float), values.shape[:1] + values.shape[2:]).copy()
    if values.ndim == 3 and values.shape[2] == 1:
        return values[:, :, 0], base[:, 0]
    if target.model_type == "regressor" or target.multiclass:
        if target.multiclass and (values.ndim != 3 or values.shape[2] != len(target.classes or [])):
            raise ValueError(
                f"shap returned values of shape {values.shape} for {len(target.classes or [])} classes"
            )
        return values, base
    classes = target.classes or []
    if values.ndim == 3 and values.shape[2] == len(classes):
        k = classes.index(target.pos_label)
        return values[:, :, k], base[:, k]
    if values.ndim == 2:  # a binary model's single margin, that of classes[1]
        sign = -1.0 if classes and target.pos_label == classes[0] else 1.0
        return sign * values, sign * base
    raise ValueError(f"shap returned values of shape {values.shape} for a binary classifier")


def _through_model(shap: Any, predictor: Predictor, sample: Any, background: Any) -> tuple[Any, Any] | None:
    """shap's explainer for the estimator itself (tree, linear), or None where it has none."""
    model = predictor.raw_model
    if model is None:
        return None
    for masker in (None, background):  # no masker first: TreeExplainer's path-dependent algorithm
        try:
            explainer = shap.Explainer(model) if masker is None else shap.Explainer(model, masker)
        except Exception:  # TypeError: not callable / not a model shap reads
            continue
        try:
            return explainer, explainer(sample)
        except Exception as exc:
            log.debug(
                "shap's %s failed on the %s (%s); explaining its predictions",
                type(explainer).__name__,
                predictor.role,
                exc,
            )
            return None
    return None


def explain(
    predictor: Predictor,
    data: EvalData,
    model_type: str,
    config: ExplainabilityConfig,
    pos_label: Any = None,
    labels: list[Any] | None = None,
    has_proba: bool | None = None,
) -> Explanation:
    """SHAP values of ``predictor`` on a sample of ``data``. ``labels`` (every label seen) and
    ``pos_label`` (binary only) describe a classification problem."""
    shap = _shap()
    started = time.perf_counter()
    rows = _rows(len(data), config.nsamples, seed=0)
    sample, sample_values = _numeric_sample(data.features, rows)
    background_rows = _rows(len(rows), BACKGROUND_ROWS, seed=1)
    background = sample_values[background_rows]
    classes = predictor.classes
    multiclass = model_type == "classifier" and len(labels or classes or []) > 2
    if has_proba is None:
        has_proba = predictor.proba_fn is not None and bool(classes)
    target = _Target(model_type, classes, pos_label, multiclass, has_proba)
    _check_target(predictor, target, data.targets)
    if target.classes and pos_label is not None and pos_label not in target.classes:
        raise Unexplainable(
            f"the {predictor.role}'s classes {target.classes} do not include pos_label {pos_label!r}"
        )

    result = None
    if config.algorithm is None:
        result = _through_model(shap, predictor, sample, background)
    if result is not None:
        explainer, raw = result
        values, base = _select(np.asarray(raw.values, dtype=float), np.asarray(raw.base_values), target)
        through_model = True
    else:
        frame_columns = [str(c) for c in data.features.columns] if is_dataframe(data.features) else None
        function = _model_function(predictor, target, frame_columns)
        n_features = sample_values.shape[1]
        if config.algorithm == "kernel":
            explainer = shap.KernelExplainer(function, background, link=config.kernel_link)
            raw = explainer(sample_values, silent=True)
        else:
            explainer = shap.Explainer(
                function, background, feature_names=data.feature_names, algorithm=config.algorithm or "auto"
            )
            options: dict[str, Any] = {"silent": True}
            if isinstance(explainer, shap.PermutationExplainer):  # it needs 2 * features + 1 per row
                options["max_evals"] = max(500, 2 * n_features + 1)
            raw = explainer(sample_values, **options)
        values = np.asarray(raw.values, dtype=float)
        base = np.broadcast_to(
            np.asarray(raw.base_values, dtype=float), values.shape[:1] + values.shape[2:]
        ).copy()
        through_model = False
    return Explanation(
        values=values,
        base_values=base,
        data=sample_values,
        feature_names=list(data.feature_names),
        explainer=type(explainer).__name__,
        explained=target.describe(through_model),
        classes=list(target.classes) if multiclass and target.classes else None,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------


def _height(n_features: int) -> float:
    return 1.5 + 0.45 * min(n_features, MAX_DISPLAY)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _agg_figure(width: float, height: float) -> Figure:
    from keel.evaluation.plots import _figure

    return _figure(width, height)


def _shap_explanation(shap: Any, values: np.ndarray, base: np.ndarray, explanation: Explanation) -> Any:
    return shap.Explanation(
        values=values, base_values=base, data=explanation.data, feature_names=explanation.feature_names
    )


def beeswarm_png(shap: Any, explanation: Explanation) -> bytes:
    values, base = explanation.single_output()
    fig = _agg_figure(8.0, _height(values.shape[1]))
    ax = fig.add_subplot()
    shap.plots.beeswarm(
        _shap_explanation(shap, values, base, explanation),
        max_display=MAX_DISPLAY,
        ax=ax,
        show=False,
        plot_size=None,
    )
    if explanation.classes is not None:
        ax.set_title("SHAP values of the predicted class")
    return _png(fig)


def importance_png(shap: Any, explanation: Explanation) -> bytes:
    values = (
        np.abs(explanation.values).mean(axis=2) if explanation.classes is not None else explanation.values
    )
    base = np.zeros(values.shape[0])
    fig = _agg_figure(8.0, _height(values.shape[1]))
    ax = fig.add_subplot()
    shap.plots.bar(
        _shap_explanation(shap, values, base, explanation), max_display=MAX_DISPLAY, ax=ax, show=False
    )
    if explanation.classes is not None:
        ax.set_xlabel("mean(|SHAP value|), averaged over the classes")
    return _png(fig)


def summary_png(shap: Any, explanation: Explanation) -> bytes:
    """shap's legacy ``summary_plot`` (a dot plot; stacked per-class bars for a multiclass model),
    which draws on pyplot's current figure: it gets a figure of its own, closed afterwards."""
    plt = require("matplotlib.pyplot", "eval", purpose=PURPOSE)
    previous = plt.gcf() if plt.get_fignums() else None
    with plt.ioff():
        fig = plt.figure()
    try:
        if explanation.classes is not None:
            shap.summary_plot(
                [explanation.values[:, :, k] for k in range(explanation.values.shape[2])],
                explanation.data,
                feature_names=explanation.feature_names,
                class_names=[str(c) for c in explanation.classes],
                max_display=MAX_DISPLAY,
                show=False,
                rng=np.random.default_rng(0),
            )
        else:
            shap.summary_plot(
                explanation.values,
                explanation.data,
                feature_names=explanation.feature_names,
                max_display=MAX_DISPLAY,
                show=False,
                rng=np.random.default_rng(0),
            )
        return _png(fig)
    finally:
        plt.close(fig)
        if previous is not None and plt.fignum_exists(previous.number):
            plt.figure(previous.number)


def render(explanation: Explanation, log_plots: bool) -> dict[str, bytes]:
    """File name -> content: the three plots (when ``log_plots``) and the JSON."""
    files: dict[str, bytes] = {}
    if log_plots:
        shap = _shap()
        files[BEESWARM_PLOT] = beeswarm_png(shap, explanation)
        files[SUMMARY_PLOT] = summary_png(shap, explanation)
        files[IMPORTANCE_PLOT] = importance_png(shap, explanation)
    files[IMPORTANCE_JSON] = json.dumps(explanation.to_json(), indent=2).encode()
    return files


def artifacts(
    predictor: Predictor,
    data: EvalData,
    model_type: str,
    config: ExplainabilityConfig,
    log_plots: bool,
    *,
    baseline: bool = False,
    pos_label: Any = None,
    labels: list[Any] | None = None,
    has_proba: bool | None = None,
) -> tuple[dict[str, bytes], Explanation | None]:
    """The SHAP files of one model (names ``baseline_``-prefixed for the baseline) and its
    explanation. Asked for, whatever fails is an ``InvalidArgument``; on by default, a warning
    and no files."""
    try:
        explanation = explain(
            predictor, data, model_type, config, pos_label=pos_label, labels=labels, has_proba=has_proba
        )
        files = render(explanation, log_plots)
    except KeelError as exc:
        if config.mode == "asked":
            raise
        log.warning("model explainability skipped for the %s: %s", predictor.role, exc.message)
        return {}, None
    except Exception as exc:  # shap's own failures: an unsupported model or data
        message = f"SHAP could not explain the {predictor.role}: {type(exc).__name__}: {exc}"
        if config.mode == "asked":
            raise InvalidArgument(
                f"{message}; choose another evaluator_config['explainability_algorithm'] "
                f"({', '.join(ALGORITHMS)}) or set log_model_explainability=False",
                reason="EXPLAINABILITY_FAILED",
            ) from exc
        log.warning("model explainability skipped: %s", message)
        return {}, None
    prefix = BASELINE_PREFIX if baseline else ""
    return {prefix + name: content for name, content in files.items()}, explanation
