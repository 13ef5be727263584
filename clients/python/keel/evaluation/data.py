"""Turn the ``data``/``targets``/``feature_names`` of ``keel.evaluate`` into features + labels.

Accepted shapes (as MLflow's):

- a DataFrame and ``targets="<label column>"``;
- a 2-D numpy array (or list of rows) and ``targets=<array of labels>``;
- an ``(X, y)`` pair, where ``targets`` may name the label column (used in the predictions table).

Features keep their type (a DataFrame stays a DataFrame, an array an array) so that an estimator
fitted on arrays is not handed column names, and vice versa.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.exceptions import InvalidArgument
from keel.models.utils import is_dataframe, is_series

DEFAULT_TARGET_NAME = "target"


@dataclass
class EvalData:
    features: Any  # a DataFrame or a 2-D ndarray, as handed to the model
    targets: np.ndarray  # 1-D
    feature_names: list[str]
    target_name: str

    def __len__(self) -> int:
        return len(self.targets)


def _labels(y: Any, what: str) -> np.ndarray:
    if is_dataframe(y):
        if y.shape[1] != 1:
            raise InvalidArgument(
                f"{what} must be one column of labels, got {y.shape[1]} columns", reason="INVALID_TARGETS"
            )
        y = y.iloc[:, 0]
    values = y.to_numpy() if is_series(y) else np.asarray(y)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.ravel()
    if values.ndim != 1:
        raise InvalidArgument(
            f"{what} must be 1-D (one label per row), got shape {values.shape}", reason="INVALID_TARGETS"
        )
    return values


def _select(df: Any, feature_names: Sequence[str] | None) -> Any:
    if feature_names is None:
        return df
    missing = [name for name in feature_names if name not in df.columns]
    if missing:
        raise InvalidArgument(
            f"feature_names {missing} are not columns of the data (columns: {list(df.columns)[:30]})",
            reason="INVALID_FEATURE_NAMES",
        )
    return df[list(feature_names)]


def _array_features(data: Any, feature_names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    try:
        x = np.asarray(data)
    except ValueError as exc:  # ragged lists
        raise InvalidArgument(f"data cannot be read as a 2-D array: {exc}", reason="INVALID_DATA") from None
    if x.ndim != 2:
        hint = " (one feature? reshape it with x.reshape(-1, 1))" if x.ndim == 1 else ""
        raise InvalidArgument(
            f"data must be 2-D (rows x features), got shape {x.shape}{hint}", reason="INVALID_DATA"
        )
    if feature_names is None:
        return x, [f"feature_{i + 1}" for i in range(x.shape[1])]  # MLflow's default names
    if len(feature_names) != x.shape[1]:
        raise InvalidArgument(
            f"feature_names has {len(feature_names)} names but the data has {x.shape[1]} columns",
            reason="INVALID_FEATURE_NAMES",
        )
    return x, [str(name) for name in feature_names]


def prepare_data(data: Any, targets: Any = None, feature_names: Sequence[str] | None = None) -> EvalData:
    """Split ``data`` into features and labels; every mistake is an ``InvalidArgument`` saying how
    to pass the data instead."""
    if feature_names is not None and (
        isinstance(feature_names, str) or not isinstance(feature_names, Sequence)
    ):
        raise InvalidArgument("feature_names must be a list of column names", reason="INVALID_FEATURE_NAMES")
    if data is None:
        raise InvalidArgument(
            "data is required: a DataFrame, a 2-D array or an (X, y) pair", reason="INVALID_DATA"
        )
    if isinstance(data, tuple):
        if len(data) != 2:
            raise InvalidArgument(
                f"a tuple data must be an (X, y) pair, got {len(data)} items", reason="INVALID_DATA"
            )
        if targets is not None and not isinstance(targets, str):
            raise InvalidArgument(
                "with data=(X, y) the labels are y; targets may only name the label column (a str)",
                reason="INVALID_TARGETS",
            )
        x, y = data
        target_name = targets or DEFAULT_TARGET_NAME
        if is_dataframe(x):
            features = _select(x, feature_names)
            names = [str(c) for c in features.columns]
        else:
            features, names = _array_features(x, feature_names)
        labels = _labels(y, "y of the (X, y) pair")
    elif is_dataframe(data):
        if not isinstance(targets, str):
            raise InvalidArgument(
                "with a DataFrame, targets must name its label column, e.g. targets='label'",
                reason="INVALID_TARGETS",
            )
        if targets not in data.columns:
            raise InvalidArgument(
                f"targets column {targets!r} is not in the DataFrame (columns: {list(data.columns)[:30]})",
                reason="INVALID_TARGETS",
            )
        features = _select(data.drop(columns=[targets]), feature_names)
        names = [str(c) for c in features.columns]
        labels = _labels(data[targets], f"column {targets!r}")
        target_name = targets
    else:
        if targets is None or isinstance(targets, str):
            raise InvalidArgument(
                "with array data, targets must be the array of labels (or pass data=(X, y))",
                reason="INVALID_TARGETS",
            )
        features, names = _array_features(data, feature_names)
        labels = _labels(targets, "targets")
        target_name = DEFAULT_TARGET_NAME
    if len(labels) == 0:
        raise InvalidArgument("data has no rows to evaluate on", reason="INVALID_DATA")
    if len(labels) != len(features):
        raise InvalidArgument(
            f"data has {len(features)} rows but there are {len(labels)} labels; they must match",
            reason="INVALID_TARGETS",
        )
    if labels.dtype.kind in "fc" and np.isnan(labels).any():
        row = int(np.flatnonzero(np.isnan(labels))[0])
        raise InvalidArgument(
            f"the labels hold NaN (first at row {row}); drop those rows", reason="INVALID_TARGETS"
        )
    return EvalData(features=features, targets=labels, feature_names=names, target_name=target_name)
