"""Small, fast fixtures for the model-format tests (no server needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def tabular() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "sepal_length": rng.normal(5.8, 0.8, 60),
            "sepal_width": rng.normal(3.0, 0.4, 60),
            "petals": rng.integers(1, 7, 60).astype(np.int64),
        }
    )
    y = (X["sepal_length"] + X["petals"] > 9).astype(np.int64).to_numpy()
    return X, y


@pytest.fixture(scope="session")
def classifier(tabular):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = tabular
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
