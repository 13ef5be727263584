"""Fixtures of the evaluation and autologging tests: fixed datasets and one in-process keel
server (temp-file SQLite, local artifact root) shared by the whole folder. Evaluation and
autologging are client-side features, so SQLite is the only backend they need."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from server_fixtures import ServerHandle, running_server


@pytest.fixture(scope="session")
def eval_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    root: Path = tmp_path_factory.mktemp("keel-eval")
    with running_server(f"sqlite:///{root}/keel.db", f"file://{root}/artifacts") as handle:
        yield handle


@pytest.fixture()
def tracking(eval_server: ServerHandle) -> Iterator[object]:
    """A keel.Client of the shared server, with the fluent API pointed at it, a fresh experiment
    per test, and no run left active afterwards."""
    import keel

    keel.set_tracking_uri(eval_server.uri)
    keel.set_experiment(f"eval-{uuid.uuid4().hex[:12]}")
    yield keel.Client(eval_server.uri)
    while keel.active_run() is not None:
        keel.end_run()


@pytest.fixture(scope="session")
def binary_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Breast-cancer split: (X_train, X_test, y_train, y_test), fixed seed; features standardised
    so that linear models converge in a few milliseconds."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import scale

    X, y = load_breast_cancer(return_X_y=True)
    X = scale(X)
    return tuple(train_test_split(X, y, test_size=0.3, random_state=0))  # type: ignore[return-value]


@pytest.fixture(scope="session")
def iris_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True)
    return tuple(train_test_split(X, y, test_size=0.4, random_state=0, stratify=y))  # type: ignore[return-value]


@pytest.fixture(scope="session")
def regression_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    return tuple(train_test_split(X, y, test_size=0.3, random_state=0))  # type: ignore[return-value]
