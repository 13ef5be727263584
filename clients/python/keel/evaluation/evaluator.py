"""``keel.evaluate``: score a model (and optionally a baseline) on labelled data, log the metrics
and plots to a run, and enforce validation thresholds."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keel.evaluation import explainability, plots
from keel.evaluation.data import EvalData, prepare_data
from keel.evaluation.metrics import (
    AVERAGES,
    class_layout,
    classifier_metrics,
    regressor_metrics,
    sklearn_metrics,
)
from keel.evaluation.predictors import Predictor, resolve_predictor
from keel.evaluation.validation import (
    MetricThreshold,
    ModelValidationFailedException,
    check_thresholds,
    plan_thresholds,
)
from keel.exceptions import InvalidArgument
from keel.extras import require

MODEL_TYPES = ("classifier", "regressor")
# Table of per-row predictions, in the {"columns": [...], "data": [...]} layout of mlflow.log_table.
PREDICTIONS_TABLE = "eval_results_table.json"

# evaluator_config keys keel reads (MLflow's names); any other key is an error
CONFIG_KEYS = (
    frozenset({"metric_prefix", "pos_label", "average", "log_predictions", "log_plots"})
    | explainability.CONFIG_KEYS
)


@dataclass
class EvaluationArtifact:
    """One logged artifact: ``uri`` is ``runs:/<run_id>/<path>``; ``path`` is inside the run."""

    uri: str
    path: str


@dataclass
class EvaluationResult:
    """What ``keel.evaluate`` computed and logged. Metric names carry the metric prefix."""

    metrics: dict[str, float]
    artifacts: dict[str, EvaluationArtifact] = field(default_factory=dict)
    baseline_model_metrics: dict[str, float] | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class _Config:
    metric_prefix: str = ""
    pos_label: Any = None
    average: str = "weighted"
    log_predictions: bool = True
    log_plots: bool = True
    explain: explainability.ExplainabilityConfig = field(default_factory=explainability.ExplainabilityConfig)


def _parse_config(evaluator_config: Mapping[str, Any] | None) -> _Config:
    config = dict(evaluator_config or {})
    if evaluator_config is not None and not isinstance(evaluator_config, Mapping):
        raise InvalidArgument("evaluator_config must be a dict", reason="INVALID_EVALUATOR_CONFIG")
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise InvalidArgument(
            f"evaluator_config has unknown keys {unknown}; keel reads {sorted(CONFIG_KEYS)}",
            reason="INVALID_EVALUATOR_CONFIG",
        )
    prefix = config.get("metric_prefix") or ""
    if not isinstance(prefix, str) or "/" in prefix or ".." in prefix:
        raise InvalidArgument(
            f"metric_prefix must be a string without '/' or '..', got {prefix!r}",
            reason="INVALID_EVALUATOR_CONFIG",
        )
    average = config.get("average", "weighted")
    if average not in AVERAGES:
        raise InvalidArgument(
            f"evaluator_config['average'] must be one of {AVERAGES}, got {average!r}",
            reason="INVALID_EVALUATOR_CONFIG",
        )
    for key in ("log_predictions", "log_plots"):
        if not isinstance(config.get(key, True), bool):
            raise InvalidArgument(
                f"evaluator_config[{key!r}] must be True or False", reason="INVALID_EVALUATOR_CONFIG"
            )
    return _Config(
        metric_prefix=prefix,
        pos_label=config.get("pos_label"),
        average=average,
        log_predictions=config.get("log_predictions", True),
        log_plots=config.get("log_plots", True),
        explain=explainability.parse_config(config),
    )


@dataclass
class _Scored:
    predictions: np.ndarray
    proba: np.ndarray | None
    classes: list[Any] | None
    metrics: dict[str, float]


def _score(predictor: Predictor, data: EvalData, model_type: str, config: _Config) -> _Scored:
    predictions = predictor.predict(data)
    if model_type == "regressor":
        return _Scored(predictions, None, None, regressor_metrics(data.targets, predictions))
    proba = predictor.predict_proba(data)
    classes = predictor.classes if proba is not None else None
    metrics = classifier_metrics(
        data.targets, predictions, proba, classes, pos_label=config.pos_label, average=config.average
    )
    return _Scored(predictions, proba, classes, metrics)


def _write_artifacts(
    out_dir: str,
    data: EvalData,
    scored: _Scored,
    model_type: str,
    config: _Config,
    extra_files: Mapping[str, bytes],
) -> list[str]:
    """Write the plots, ``extra_files`` (the SHAP ones) and the predictions table into
    ``out_dir``; the file names written."""
    files: dict[str, bytes | None] = {}
    y_true, y_pred = data.targets, scored.predictions
    if config.log_plots:
        if model_type == "classifier":
            layout = class_layout(y_true, y_pred, scored.classes, config.pos_label)
            files["confusion_matrix.png"] = plots.confusion_matrix_png(y_true, y_pred, layout.labels)
            if scored.proba is not None and scored.classes is not None:
                files["roc_curve_plot.png"] = plots.roc_curve_png(
                    y_true, scored.proba, scored.classes, layout.pos_label
                )
                files["precision_recall_curve_plot.png"] = plots.precision_recall_curve_png(
                    y_true, scored.proba, scored.classes, layout.pos_label
                )
        else:
            files["residuals_plot.png"] = plots.residuals_png(y_true, y_pred)
            files["predicted_vs_actual_plot.png"] = plots.predicted_vs_actual_png(y_true, y_pred)
    files.update(extra_files)
    written = []
    for name, content in files.items():
        if content is None:  # e.g. no ROC curve when the targets hold one class only
            continue
        name = config.metric_prefix + name
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(content)
        written.append(name)
    if config.log_predictions:
        name = config.metric_prefix + PREDICTIONS_TABLE
        _predictions_table(data, scored, model_type).to_json(
            os.path.join(out_dir, name), orient="split", index=False
        )
        written.append(name)
    return written


def _predictions_table(data: EvalData, scored: _Scored, model_type: str) -> Any:
    import pandas as pd

    columns: dict[str, Any] = {data.target_name: data.targets, "prediction": scored.predictions}
    if model_type == "regressor":
        columns["residual"] = data.targets.astype(float) - scored.predictions.astype(float)
    elif scored.proba is not None and scored.classes is not None:
        for i, label in enumerate(scored.classes):
            columns[f"probability_{label}"] = scored.proba[:, i]
    if data.target_name == "prediction":
        columns = {("target" if k == data.target_name else k): v for k, v in columns.items()}
    return pd.DataFrame(columns)


def _log(
    result_metrics: dict[str, float],
    data: EvalData,
    scored: _Scored,
    model_type: str,
    config: _Config,
    extra_files: Mapping[str, bytes],
) -> tuple[str, dict[str, EvaluationArtifact]]:
    """Log metrics and artifacts to the active run, or to a new run ended afterwards."""
    import keel

    run = keel.active_run()
    started = run is None
    if run is None:
        run = keel.start_run()
    run_id = run.info.run_id
    try:
        keel.log_metrics(result_metrics)
        artifacts: dict[str, EvaluationArtifact] = {}
        with tempfile.TemporaryDirectory(prefix="keel-evaluate-") as tmp:
            names = _write_artifacts(tmp, data, scored, model_type, config, extra_files)
            if names:
                keel.log_artifacts(tmp)
        for name in names:
            key = os.path.splitext(name[len(config.metric_prefix) :])[0]
            artifacts[key] = EvaluationArtifact(uri=f"runs:/{run_id}/{name}", path=name)
    except BaseException:
        if started:
            keel.end_run("FAILED")
        raise
    if started:
        keel.end_run()
    return run_id, artifacts


def _explain(
    predictor: Predictor, scored: _Scored, data: EvalData, model_type: str, config: _Config, *, baseline: bool
) -> dict[str, bytes]:
    labels, pos_label = None, None
    if model_type == "classifier":
        layout = class_layout(data.targets, scored.predictions, scored.classes, config.pos_label)
        labels, pos_label = layout.labels, layout.pos_label
    files, _ = explainability.artifacts(
        predictor,
        data,
        model_type,
        config.explain,
        config.log_plots,
        baseline=baseline,
        pos_label=pos_label,
        labels=labels,
        has_proba=scored.proba is not None,  # usable probabilities, as the metrics found them
    )
    return files


def evaluate(
    model: Any,
    data: Any,
    targets: Any = None,
    model_type: str | None = None,
    baseline_model: Any = None,
    evaluator_config: Mapping[str, Any] | None = None,
    validation_thresholds: Mapping[str, MetricThreshold] | None = None,
    feature_names: Sequence[str] | None = None,
) -> EvaluationResult:
    """Evaluate ``model`` on labelled ``data``, log the results to the active run (or a new one)
    and check ``validation_thresholds``.

    - ``model`` / ``baseline_model``: a model URI, a ``PyFuncModel``, a fitted estimator or a
      callable ``f(X) -> predictions``.
    - ``data``: a DataFrame with ``targets`` naming its label column, a 2-D array with
      ``targets`` the labels, or an ``(X, y)`` pair.
    - ``model_type``: ``"classifier"`` or ``"regressor"``.
    - ``evaluator_config``: ``metric_prefix`` (prepended to metric and artifact names),
      ``pos_label`` (binary classification), ``average`` (``weighted``, ``macro`` or ``micro``:
      what the unsuffixed multiclass precision/recall/f1 use), ``log_predictions`` and
      ``log_plots`` (default True); MLflow's ``log_model_explainability`` (default True when
      shap is installed), ``explainability_algorithm``, ``explainability_nsamples`` (default
      2,000) and ``explainability_kernel_link`` (see ``keel.evaluation.explainability``).
    - ``validation_thresholds``: ``{"accuracy_score": MetricThreshold(...)}``; after logging,
      raises ``ModelValidationFailedException`` listing every failed bound.

    The baseline's metrics are returned in ``baseline_model_metrics`` but not logged; its plots
    are not drawn, but its SHAP artifacts are logged, named ``baseline_shap_*``.
    """
    if model_type not in MODEL_TYPES:
        raise InvalidArgument(
            f"model_type must be 'classifier' or 'regressor', got {model_type!r}", reason="INVALID_MODEL_TYPE"
        )
    config = _parse_config(evaluator_config)
    # before predicting or logging anything: a missing package is MissingExtra naming keel-ml[eval]
    sklearn_metrics()
    if config.log_plots:
        require("matplotlib.figure", "eval", purpose=plots.PLOTS_PURPOSE)
    explaining = explainability.load_shap(config.explain) is not None
    plan = plan_thresholds(
        validation_thresholds, model_type, baseline_model is not None, config.metric_prefix
    )
    prepared = prepare_data(data, targets, feature_names)
    candidate_predictor = resolve_predictor(model, "model")
    candidate = _score(candidate_predictor, prepared, model_type, config)
    baseline_predictor = resolve_predictor(baseline_model, "baseline_model") if baseline_model is not None else None
    baseline = _score(baseline_predictor, prepared, model_type, config) if baseline_predictor is not None else None
    # computed before anything is logged, so that an explanation asked for and impossible fails early
    shap_files: dict[str, bytes] = {}
    if explaining:
        shap_files.update(_explain(candidate_predictor, candidate, prepared, model_type, config, baseline=False))
        if baseline_predictor is not None and baseline is not None:
            shap_files.update(_explain(baseline_predictor, baseline, prepared, model_type, config, baseline=True))

    def prefixed(metrics: dict[str, float]) -> dict[str, float]:
        return {config.metric_prefix + name: value for name, value in metrics.items()}

    metrics = prefixed(candidate.metrics)
    run_id, artifacts = _log(metrics, prepared, candidate, model_type, config, shap_files)
    result = EvaluationResult(
        metrics=metrics,
        artifacts=artifacts,
        baseline_model_metrics=prefixed(baseline.metrics) if baseline is not None else None,
        run_id=run_id,
    )
    failures = check_thresholds(plan, candidate.metrics, baseline.metrics if baseline is not None else None)
    if failures:
        raise ModelValidationFailedException(failures, result)
    return result
