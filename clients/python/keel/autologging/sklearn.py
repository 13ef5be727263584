"""scikit-learn autologging: every ``fit`` (and ``fit_transform`` / ``fit_predict``) of an
estimator, a pipeline or a hyper-parameter search is logged to the active run, or to a new run
that ends with the call.

What is logged (names are MLflow's):

- params: ``estimator.get_params(deep=True)`` (values cut to 6000 characters);
- tags: ``estimator_name``, ``estimator_class``;
- metrics on the training data, for classifiers and regressors: ``training_score``
  (``estimator.score``) and ``training_accuracy_score``, ``training_precision_score``,
  ``training_recall_score``, ``training_f1_score``, ``training_log_loss``, ``training_roc_auc``
  or ``training_mean_squared_error``, ``training_root_mean_squared_error``,
  ``training_mean_absolute_error``, ``training_r2_score``;
- the fitted model as artifact ``model`` (with a signature inferred from the first rows);
- for ``GridSearchCV`` / ``RandomizedSearchCV``: ``best_<param>`` params, ``best_cv_score``,
  ``cv_results.csv``, the best estimator as ``best_estimator`` and one child run per candidate
  (its params and its ``mean_*``/``std_*``/``rank_*`` cross-validation results).

Only the outermost fit is logged: the steps a pipeline fits, or the candidates a search fits,
are not logged again. That guard is process-wide, so two fits running at the same time in two
threads log only the first one. Autologging never breaks a fit: the first logging failure of a
fit becomes a ``KeelAutologgingWarning`` (later ones log records), and once the server is
found unreachable the fit's remaining logging is skipped (see ``keel.autologging.common``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keel.autologging.common import (
    MAX_KEY_CHARS,
    FailureReporter,
    PatchSet,
    Session,
    check_registered_model_name,
    close_session,
    open_session,
    param_items,
    refuse_not_done,
    string_tags,
    version_supported,
)
from keel.extras import require

log = logging.getLogger(__name__)

PATCHED_METHODS = ("fit", "fit_transform", "fit_predict")
SIGNATURE_ROWS = 5  # rows of the training data used to infer the signature / as input example
MODEL_PATH = "model"
BEST_ESTIMATOR_PATH = "best_estimator"
CV_RESULTS_FILE = "cv_results.csv"
# the scikit-learn versions this integration is tested with (disable_for_unsupported_versions)
SUPPORTED_VERSIONS = ("1.3", "2.0")
_CLASSIFIER_METRICS = ("accuracy_score", "precision_score", "recall_score", "f1_score", "log_loss", "roc_auc")
_REGRESSOR_METRICS = ("mean_squared_error", "root_mean_squared_error", "mean_absolute_error", "r2_score")


@dataclass(frozen=True)
class AutologSettings:
    log_models: bool = True
    log_input_examples: bool = False
    log_model_signatures: bool = True
    registered_model_name: str | None = None
    exclusive: bool = False
    silent: bool = False
    max_tuning_runs: int | None = None  # child runs per search; None = every candidate
    serialization_format: str = "cloudpickle"
    extra_tags: dict[str, str] = field(default_factory=dict)


_lock = threading.Lock()
_settings: AutologSettings | None = None  # None: autologging is off
_patches = PatchSet()  # the fit methods replaced, put back with disable=True
_depth = 0  # autologged fits in progress in this process (nested fits are not logged)


def autolog(
    log_models: bool = True,
    log_input_examples: bool = False,
    log_model_signatures: bool = True,
    registered_model_name: str | None = None,
    disable: bool = False,
    silent: bool = False,
    max_tuning_runs: int | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    exclusive: bool = False,
    disable_for_unsupported_versions: bool = False,
    serialization_format: str = "cloudpickle",
    log_datasets: bool = False,
    log_post_training_metrics: bool = False,
    pos_label: Any = None,
) -> None:
    """Log every scikit-learn fit (see the module docstring for what is logged).

    ``registered_model_name`` registers each logged model under that name (a new version per
    fit). ``exclusive`` logs nothing while the user has a run open. ``silent`` turns
    logging-failure warnings into log records. ``disable_for_unsupported_versions`` leaves
    scikit-learn alone outside the versions this is tested with (1.3 to 1.x).
    ``serialization_format`` is the logged models' (``cloudpickle`` or ``pickle``).
    ``disable=True`` restores scikit-learn's own methods. MLflow's ``log_datasets``,
    ``log_post_training_metrics`` and ``pos_label`` ask for what keel does not do: anything but
    False / None is an ``InvalidArgument``.
    """
    global _settings
    from keel.exceptions import InvalidArgument

    refuse_not_done(
        "scikit-learn",
        log_datasets=log_datasets,
        log_post_training_metrics=log_post_training_metrics,
        pos_label=pos_label,
    )
    if max_tuning_runs is not None and (not isinstance(max_tuning_runs, int) or max_tuning_runs < 0):
        raise InvalidArgument(
            f"max_tuning_runs must be a non-negative int or None, got {max_tuning_runs!r}",
            reason="INVALID_ARGUMENT",
        )
    if serialization_format not in ("cloudpickle", "pickle"):
        raise InvalidArgument(
            f"serialization_format must be 'cloudpickle' or 'pickle', got {serialization_format!r}",
            reason="INVALID_ARGUMENT",
        )
    registered_model_name = check_registered_model_name(registered_model_name)
    tags = string_tags(extra_tags)
    with _lock:
        if disable:
            _patches.restore_all()
            _settings = None
            return
        require("sklearn", "sklearn", purpose="needed for scikit-learn autologging")
        if disable_for_unsupported_versions and not version_supported("scikit-learn", *SUPPORTED_VERSIONS):
            log.info("scikit-learn autologging stays off: its version is outside %s", SUPPORTED_VERSIONS)
            _patches.restore_all()
            _settings = None
            return
        _settings = AutologSettings(
            log_models=log_models,
            log_input_examples=log_input_examples,
            log_model_signatures=log_model_signatures,
            registered_model_name=registered_model_name,
            exclusive=exclusive,
            silent=silent,
            max_tuning_runs=max_tuning_runs,
            serialization_format=serialization_format,
            extra_tags=tags,
        )
        if not _patches:
            _patch_all()


# ---------------------------------------------------------------------------------------------
# Patching
# ---------------------------------------------------------------------------------------------


def _estimator_classes() -> list[type]:
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.utils import all_estimators

    classes = [cls for _, cls in all_estimators()]
    return [*classes, Pipeline, GridSearchCV, RandomizedSearchCV]


def _owners() -> Iterator[tuple[type, str]]:
    """(class that defines the method, method name) for every estimator's fit methods: patching
    the defining class covers its subclasses, the user's included."""
    seen: set[tuple[type, str]] = set()
    for cls in _estimator_classes():
        for name in PATCHED_METHODS:
            owner = next((klass for klass in cls.__mro__ if name in klass.__dict__), None)
            if owner is None or not owner.__module__.startswith("sklearn") or (owner, name) in seen:
                continue
            seen.add((owner, name))
            yield owner, name


def _patch_all() -> None:
    for owner, name in _owners():
        entry = owner.__dict__[name]
        if inspect.isfunction(entry):
            _patches.wrap(owner, name, _patched)
        elif inspect.isfunction(getattr(entry, "fn", None)):
            # sklearn's available_if descriptor (Pipeline.fit_transform...): wrap the function it
            # guards, so hasattr() keeps answering as before
            _patches.wrap(entry, "fn", _patched)


def _enter() -> AutologSettings | None:
    """The settings when this call is to be logged (autologging on and no fit in progress)."""
    global _depth
    with _lock:
        if _settings is None or _depth > 0:
            return None
        _depth += 1
        return _settings


def _leave() -> None:
    global _depth
    with _lock:
        _depth -= 1


def _patched(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def fit_and_log(self: Any, *args: Any, **kwargs: Any) -> Any:
        settings = _enter()
        if settings is None:
            return original(self, *args, **kwargs)
        try:
            return _autologged_call(settings, original, self, args, kwargs)
        finally:
            _leave()

    return fit_and_log


# ---------------------------------------------------------------------------------------------
# One autologged fit
# ---------------------------------------------------------------------------------------------


def _fit_inputs(
    original: Callable[..., Any], self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Any, Any]:
    """(X, y, sample_weight) of a fit call, whatever the method's parameter names."""
    try:
        bound = inspect.signature(original).bind(self, *args, **kwargs).arguments
        names = list(inspect.signature(original).parameters)[1:]
    except (TypeError, ValueError):
        return (args[0] if args else None), (args[1] if len(args) > 1 else None), kwargs.get("sample_weight")
    x = bound.get(names[0]) if names else None
    y = bound.get(names[1]) if len(names) > 1 and names[1] in ("y", "Y") else kwargs.get("y")
    extra = bound.get("params") or bound.get("fit_params") or bound.get("kwargs") or {}
    sample_weight = bound.get(
        "sample_weight", extra.get("sample_weight") if isinstance(extra, dict) else None
    )
    return x, y, sample_weight


def _autologged_call(
    settings: AutologSettings,
    original: Callable[..., Any],
    estimator: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    reporter = FailureReporter(settings.silent)
    session = reporter.safely("start a run", lambda: open_session(settings.exclusive))
    if session is None:
        return original(estimator, *args, **kwargs)
    reporter.safely("log the estimator's params and tags", lambda: _log_params_and_tags(settings, estimator))
    try:
        result = original(estimator, *args, **kwargs)
    except KeyboardInterrupt:
        close_session(reporter, session, "KILLED")
        raise
    except BaseException:
        close_session(reporter, session, "FAILED")
        raise
    inputs = reporter.safely("read the fit arguments", lambda: _fit_inputs(original, estimator, args, kwargs))
    x, y, sample_weight = inputs or (None, None, None)
    if y is not None:
        reporter.safely("log training metrics", lambda: _log_training_metrics(estimator, x, y, sample_weight))
    if _is_search(estimator):
        reporter.safely("log the search results", lambda: _log_search(settings, reporter, session, estimator))
    if settings.log_models:
        reporter.safely("log the model", lambda: _log_model(settings, reporter, estimator, x, MODEL_PATH))
    close_session(reporter, session, "FINISHED")
    return result


def _log_params_and_tags(settings: AutologSettings, estimator: Any) -> None:
    import keel

    keel.log_params(param_items(estimator.get_params(deep=True)))
    cls = type(estimator)
    keel.set_tags(
        {
            "estimator_name": cls.__name__,
            "estimator_class": f"{cls.__module__}.{cls.__qualname__}",
            **settings.extra_tags,
        }
    )


def _labels(y: Any) -> np.ndarray | None:
    values = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.ravel()
    return values if values.ndim == 1 else None  # multi-output targets get training_score only


def _training_metrics(estimator: Any, x: Any, y: Any, sample_weight: Any) -> dict[str, float]:
    from sklearn.base import is_classifier, is_regressor

    from keel.evaluation.metrics import classifier_metrics, regressor_metrics
    from keel.evaluation.predictors import estimator_parts

    metrics: dict[str, float] = {}
    if callable(getattr(estimator, "score", None)):
        kw = {"sample_weight": sample_weight} if sample_weight is not None else {}
        metrics["score"] = float(estimator.score(x, y, **kw))
    labels = _labels(y)
    if labels is None or not callable(getattr(estimator, "predict", None)):
        return metrics
    predictions = np.asarray(estimator.predict(x)).ravel()
    if is_classifier(estimator):
        proba_fn, classes = estimator_parts(estimator)
        proba = np.asarray(proba_fn(x)) if proba_fn is not None else None
        computed = classifier_metrics(labels, predictions, proba, classes)
        metrics.update({k: v for k, v in computed.items() if k in _CLASSIFIER_METRICS})
    elif is_regressor(estimator):
        computed = regressor_metrics(labels, predictions)
        metrics.update({k: v for k, v in computed.items() if k in _REGRESSOR_METRICS})
    return metrics


def _log_training_metrics(estimator: Any, x: Any, y: Any, sample_weight: Any) -> None:
    import keel

    if _is_search(estimator) and not hasattr(estimator, "best_estimator_"):
        return  # refit=False: the search cannot predict
    metrics = _training_metrics(estimator, x, y, sample_weight)
    if metrics:
        keel.log_metrics({f"training_{k}": v for k, v in metrics.items()})


def _first_rows(x: Any) -> Any:
    if hasattr(x, "iloc"):
        return x.iloc[:SIGNATURE_ROWS]
    return x[:SIGNATURE_ROWS]


def _log_model(
    settings: AutologSettings, reporter: FailureReporter, estimator: Any, x: Any, artifact_path: str
) -> None:
    from keel import sklearn as keel_sklearn

    # pyfunc predict of a transformer is its transform; an estimator with neither (DBSCAN...)
    # cannot serve predictions, so it is not logged as a model
    method = next((m for m in ("predict", "transform") if callable(getattr(estimator, m, None))), None)
    if method is None:
        log.info("not logging %s as a model: it has neither predict nor transform", type(estimator).__name__)
        return
    sample = _first_rows(x) if x is not None else None
    signature = None
    if settings.log_model_signatures and sample is not None:
        signature = reporter.safely("infer the model signature", lambda: _infer_signature(estimator, sample))
    keel_sklearn.log_model(
        estimator,
        artifact_path,
        signature=signature,
        input_example=sample if settings.log_input_examples else None,
        registered_model_name=settings.registered_model_name if artifact_path == MODEL_PATH else None,
        predict_method=method,
        serialization_format=settings.serialization_format,
    )


def _infer_signature(estimator: Any, sample: Any) -> Any:
    from keel.models import infer_signature

    for method in ("predict", "transform"):
        fn = getattr(estimator, method, None)
        if callable(fn):
            return infer_signature(sample, fn(sample))
    return infer_signature(sample)


# ---------------------------------------------------------------------------------------------
# Hyper-parameter searches
# ---------------------------------------------------------------------------------------------


def _is_search(estimator: Any) -> bool:
    from sklearn.model_selection._search import BaseSearchCV

    return isinstance(estimator, BaseSearchCV)


def _log_search(settings: AutologSettings, reporter: FailureReporter, session: Session, search: Any) -> None:
    import keel

    if not hasattr(search, "cv_results_"):
        return
    if isinstance(getattr(search, "best_params_", None), dict):
        keel.log_params(param_items({f"best_{k}": v for k, v in search.best_params_.items()}))
    best_score = getattr(search, "best_score_", None)
    if best_score is not None:
        keel.log_metrics({"best_cv_score": float(best_score)})
    reporter.safely(f"log {CV_RESULTS_FILE}", lambda: _log_cv_results(search.cv_results_))
    if settings.log_models and hasattr(search, "best_estimator_"):
        reporter.safely(
            "log the best estimator",
            lambda: _log_model(settings, reporter, search.best_estimator_, None, BEST_ESTIMATOR_PATH),
        )
    reporter.safely("log the candidates as child runs", lambda: _log_child_runs(settings, session, search))


def _log_cv_results(cv_results: Mapping[str, Any]) -> None:
    import pandas as pd

    import keel

    with tempfile.TemporaryDirectory(prefix="keel-autolog-") as tmp:
        path = os.path.join(tmp, CV_RESULTS_FILE)
        pd.DataFrame(cv_results).to_csv(path, index=False)
        keel.log_artifact(path)


def _candidate_order(search: Any) -> list[int]:
    """Candidates best first (by the rank of the refit metric)."""
    results = search.cv_results_
    refit = search.refit if isinstance(search.refit, str) else "score"
    rank = results.get(f"rank_test_{refit}")
    if rank is None:
        rank = next((v for k, v in results.items() if k.startswith("rank_test_")), None)
    count = len(results["params"])
    return (
        list(range(count)) if rank is None else [int(i) for i in np.argsort(np.asarray(rank), kind="stable")]
    )


def _log_child_runs(settings: AutologSettings, session: Session, search: Any) -> None:
    from keel.client import Client
    from keel.entities import Metric, Param, RunTag

    client = Client()
    parent = client.get_run(session.run_id)
    results = search.cv_results_
    order = _candidate_order(search)
    if settings.max_tuning_runs is not None:
        order = order[: settings.max_tuning_runs]
    cls = type(search.estimator)
    tags = {"estimator_name": cls.__name__, "estimator_class": f"{cls.__module__}.{cls.__qualname__}"}
    base_name = parent.info.run_name or session.run_id[:8]
    for i in order:
        child = client.create_run(
            parent.info.experiment_id, run_name=f"{base_name}-{i}", parent_run_id=session.run_id, tags=tags
        )
        metrics = [
            Metric(key, float(values[i]), 0, 0)
            for key, values in results.items()
            if key.startswith(("mean_", "std_", "rank_"))
            and len(key) <= MAX_KEY_CHARS
            and _is_real(values[i])
        ]
        params = [Param(k, v) for k, v in param_items(results["params"][i]).items()]
        client.log_batch(
            child.info.run_id,
            metrics=metrics,
            params=params,
            tags=[RunTag(k, v) for k, v in settings.extra_tags.items()],
        )
        client.set_terminated(child.info.run_id)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
