"""One way to call whatever ``keel.evaluate`` is given as a model.

A model may be a model URI (loaded with ``keel.pyfunc.load_model``), a ``PyFuncModel``, a fitted
estimator (anything with ``predict``) or a plain callable ``f(X) -> predictions``. Class
probabilities come from the estimator's ``predict_proba`` (the raw model's, for a pyfunc model)
when it has one and knows its ``classes_``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.evaluation.data import EvalData
from keel.exceptions import InvalidArgument, KeelError
from keel.models.utils import is_dataframe, is_series


@dataclass
class Predictor:
    role: str  # "model" or "baseline_model", for messages
    predict_fn: Callable[[Any], Any]
    proba_fn: Callable[[Any], Any] | None = None
    classes: list[Any] | None = None
    input_names: list[str] | None = None  # a pyfunc model's named input columns
    # the estimator itself (a pyfunc model's raw model), for SHAP's model-specific explainers
    raw_model: Any = None

    def model_input(self, features: Any) -> Any:
        """``features`` (a DataFrame or a 2-D array) as the model takes them: a pyfunc model with
        named columns needs a DataFrame, even when the user holds arrays."""
        if self.input_names and not is_dataframe(features) and len(self.input_names) == features.shape[1]:
            import pandas as pd

            return pd.DataFrame(features, columns=self.input_names)
        return features

    def _inputs(self, data: EvalData) -> Any:
        return self.model_input(data.features)

    def predict(self, data: EvalData) -> np.ndarray:
        try:
            raw = self.predict_fn(self._inputs(data))
        except KeelError:
            raise
        except Exception as exc:
            raise InvalidArgument(
                f"the {self.role} failed to predict on the evaluation data: {type(exc).__name__}: {exc}",
                reason="PREDICT_FAILED",
            ) from exc
        out = _one_column(raw, self.role)
        if len(out) != len(data):
            raise InvalidArgument(
                f"the {self.role} returned {len(out)} predictions for {len(data)} rows",
                reason="INVALID_PREDICTIONS",
            )
        return out

    def predict_proba(self, data: EvalData) -> np.ndarray | None:
        """Probabilities (rows x classes), or None when the model has none or they are unusable;
        evaluation then goes on without the probability metrics and curves."""
        if self.proba_fn is None or not self.classes:
            return None
        try:
            proba = np.asarray(self.proba_fn(self._inputs(data)), dtype=float)
        except Exception:  # e.g. an SVC fitted without probability=True
            return None
        if proba.ndim != 2 or proba.shape != (len(data), len(self.classes)):
            return None
        return proba


def _one_column(raw: Any, role: str) -> np.ndarray:
    if is_dataframe(raw):
        if raw.shape[1] != 1:
            raise InvalidArgument(
                f"the {role} returned {raw.shape[1]} columns per row; predict must return one value per row",
                reason="INVALID_PREDICTIONS",
            )
        raw = raw.iloc[:, 0]
    values = raw.to_numpy() if is_series(raw) else np.asarray(raw)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.ravel()
    if values.ndim != 1:
        raise InvalidArgument(
            f"the {role} returned predictions of shape {values.shape}; predict must return one value per row "
            "(a classifier returns labels, not probabilities)",
            reason="INVALID_PREDICTIONS",
        )
    return values


def estimator_parts(estimator: Any) -> tuple[Callable[[Any], Any] | None, list[Any] | None]:
    proba = getattr(estimator, "predict_proba", None)  # hasattr is False where sklearn's available_if says no
    classes = getattr(estimator, "classes_", None)
    if not callable(proba) or classes is None:
        return None, None
    return proba, list(np.asarray(classes).tolist())


def resolve_predictor(model: Any, role: str = "model") -> Predictor:
    """A ``Predictor`` for any accepted model form; anything else is an ``InvalidArgument``."""
    from keel.pyfunc.pyfunc_model import PyFuncModel

    if isinstance(model, str):
        from keel.pyfunc import load_model

        model = load_model(model)
    if isinstance(model, PyFuncModel):
        proba, classes = estimator_parts(model.get_raw_model())
        inputs = model.metadata.get_input_schema()
        names = (
            [str(n) for n in inputs.input_names()]
            if inputs is not None and not inputs.is_tensor_spec() and inputs.has_input_names()
            else None
        )
        return Predictor(role, model.predict, proba, classes, names, raw_model=model.get_raw_model())
    predict = getattr(model, "predict", None)
    if callable(predict):
        proba, classes = estimator_parts(model)
        return Predictor(role, predict, proba, classes, raw_model=model)
    if callable(model):
        return Predictor(role, model)
    raise InvalidArgument(
        f"{role} must be a model URI, a PyFuncModel, a fitted estimator with predict() or a callable; "
        f"got {type(model).__name__}",
        reason="INVALID_MODEL",
    )
