"""scikit-learn autologging against a real in-process keel server: an estimator, a pipeline,
a grid search, and a fit that must go on when logging fails."""

from __future__ import annotations

import socket
import uuid
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import keel
from keel.autologging import KeelAutologgingWarning
from keel.autologging import sklearn as sklearn_autolog

ORIGINAL_FIT = LogisticRegression.fit


@pytest.fixture()
def autologging(tracking) -> Iterator[object]:
    """Autologging on for one test (off again afterwards, whatever happens)."""
    sklearn_autolog.autolog()
    try:
        yield tracking
    finally:
        sklearn_autolog.autolog(disable=True)
    assert LogisticRegression.fit is ORIGINAL_FIT


def _runs() -> list:
    """Every run of the test's experiment (each test gets a fresh one)."""
    return keel.search_runs(output_format="list")


def test_estimator_fit_logs_to_a_new_run(autologging, binary_data) -> None:
    X_train, X_test, y_train, _ = binary_data
    model = LogisticRegression(C=0.5, max_iter=500).fit(X_train, y_train)
    assert keel.active_run() is None  # the autologged run ended with the fit
    [run] = _runs()
    assert run.info.status == "FINISHED"
    assert run.data.params["C"] == "0.5" and run.data.params["max_iter"] == "500"
    assert run.data.tags["estimator_name"] == "LogisticRegression"
    assert run.data.tags["estimator_class"] == "sklearn.linear_model._logistic.LogisticRegression"
    pred = model.predict(X_train)
    metrics = run.data.metrics
    assert metrics["training_accuracy_score"] == pytest.approx(skm.accuracy_score(y_train, pred))
    assert metrics["training_f1_score"] == pytest.approx(skm.f1_score(y_train, pred))
    assert metrics["training_score"] == pytest.approx(model.score(X_train, y_train))
    assert metrics["training_roc_auc"] == pytest.approx(
        skm.roc_auc_score(y_train, model.predict_proba(X_train)[:, 1])
    )
    assert metrics["training_log_loss"] == pytest.approx(skm.log_loss(y_train, model.predict_proba(X_train)))
    # the model, with its signature, loads back and predicts the same
    uri = f"runs:/{run.info.run_id}/model"
    loaded = keel.pyfunc.load_model(uri)
    assert loaded.metadata.signature is not None and loaded.metadata.signature.inputs is not None
    assert np.array_equal(loaded.predict(X_test), model.predict(X_test))


def test_fit_inside_an_active_run_logs_there(autologging, regression_data) -> None:
    X_train, _, y_train, _ = regression_data
    with keel.start_run() as run:
        model = LinearRegression().fit(X_train, y_train)
        assert keel.active_run() is not None  # the user's run stays open
    [logged] = _runs()
    assert logged.info.run_id == run.info.run_id
    pred = model.predict(X_train)
    assert logged.data.metrics["training_root_mean_squared_error"] == pytest.approx(
        np.sqrt(skm.mean_squared_error(y_train, pred))
    )
    assert logged.data.metrics["training_r2_score"] == pytest.approx(skm.r2_score(y_train, pred))
    assert logged.data.params["fit_intercept"] == "True"


def test_pipeline_logs_once_with_step_params(autologging, binary_data) -> None:
    X_train, X_test, y_train, _ = binary_data
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=2.0)).fit(X_train, y_train)
    [run] = _runs()  # the steps' own fits are not logged again
    assert run.data.tags["estimator_name"] == "Pipeline"
    assert run.data.params["logisticregression__C"] == "2.0"
    assert run.data.params["standardscaler__with_mean"] == "True"
    assert run.data.metrics["training_accuracy_score"] == pytest.approx(pipe.score(X_train, y_train))
    loaded = keel.sklearn.load_model(f"runs:/{run.info.run_id}/model")
    assert isinstance(loaded, Pipeline) and np.array_equal(loaded.predict(X_test), pipe.predict(X_test))
    # patching keeps sklearn's conditional methods conditional
    assert hasattr(pipe, "fit_transform") is False and hasattr(
        make_pipeline(StandardScaler()), "fit_transform"
    )
    make_pipeline(StandardScaler()).fit_transform(X_train)  # fit_transform is logged too
    assert len(_runs()) == 2


def test_grid_search_logs_child_run_per_candidate(autologging, iris_data) -> None:
    X_train, _, y_train, _ = iris_data
    grid = {"C": [0.01, 0.1, 1.0], "fit_intercept": [True, False]}
    search = GridSearchCV(LogisticRegression(max_iter=2000), grid, cv=3).fit(X_train, y_train)
    runs = _runs()
    [parent] = [r for r in runs if r.info.parent_run_id is None]
    children = [r for r in runs if r.info.parent_run_id == parent.info.run_id]
    assert len(runs) == 1 + 6 and len(children) == 6
    assert parent.data.tags["estimator_name"] == "GridSearchCV"
    assert parent.data.params["best_C"] == str(search.best_params_["C"])
    assert parent.data.params["estimator__max_iter"] == "2000"
    assert parent.data.metrics["best_cv_score"] == pytest.approx(search.best_score_)
    assert parent.data.metrics["training_score"] == pytest.approx(search.score(X_train, y_train))
    results = search.cv_results_
    for child in children:
        index = next(
            i
            for i, params in enumerate(results["params"])
            if {k: str(v) for k, v in params.items()} == child.data.params
        )
        assert child.data.metrics["mean_test_score"] == pytest.approx(results["mean_test_score"][index])
        assert child.data.metrics["rank_test_score"] == results["rank_test_score"][index]
        assert child.info.status == "FINISHED"
    artifacts = {f.path for f in keel.artifacts.list_artifacts(run_id=parent.info.run_id)}
    assert {"model", "best_estimator", "cv_results.csv"} <= artifacts
    best = keel.sklearn.load_model(f"runs:/{parent.info.run_id}/best_estimator")
    assert isinstance(best, LogisticRegression) and best.C == search.best_params_["C"]


def test_max_tuning_runs_and_registered_model(tracking, iris_data) -> None:
    X_train, _, y_train, _ = iris_data
    name = f"autolog-{uuid.uuid4().hex[:12]}"
    sklearn_autolog.autolog(max_tuning_runs=2, registered_model_name=name)
    try:
        GridSearchCV(LogisticRegression(max_iter=2000), {"C": [0.01, 0.1, 1.0]}, cv=3).fit(X_train, y_train)
    finally:
        sklearn_autolog.autolog(disable=True)
    runs = _runs()
    children = [r for r in runs if r.info.parent_run_id]
    assert len(children) == 2
    assert sorted(float(c.data.metrics["rank_test_score"]) for c in children) == [1.0, 2.0]  # the best ones
    [version] = tracking.search_model_versions(f"name = '{name}'")
    assert str(version.version) == "1"


def test_logging_failure_is_a_warning_not_an_error(autologging, binary_data, monkeypatch) -> None:
    X_train, _, y_train, _ = binary_data

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(keel, "log_params", broken)
    with pytest.warns(KeelAutologgingWarning, match="params and tags: RuntimeError: disk on fire"):
        model = LogisticRegression().fit(X_train, y_train)
    assert model.score(X_train, y_train) > 0.9
    [run] = _runs()  # the rest was still logged
    assert "training_accuracy_score" in run.data.metrics and run.info.status == "FINISHED"


def test_unreachable_server_still_fits(autologging, binary_data, eval_server) -> None:
    X_train, _, y_train, _ = binary_data
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    keel.set_tracking_uri(f"grpc://127.0.0.1:{dead}")
    try:
        with pytest.warns(KeelAutologgingWarning, match="could not start a run"):
            model = LogisticRegression().fit(X_train, y_train)
    finally:
        keel.set_tracking_uri(eval_server.uri)
    assert model.coef_.shape == (1, X_train.shape[1])
    assert keel.active_run() is None


def test_failing_fit_raises_and_marks_the_run_failed(autologging) -> None:
    X = np.array([[0.0], [np.nan], [1.0]])
    with pytest.raises(ValueError, match="NaN"):
        LogisticRegression().fit(X, [0, 1, 0])
    [run] = _runs()
    assert run.info.status == "FAILED"
    assert keel.active_run() is None


def test_disable_restores_sklearn_and_universal_autolog(tracking, binary_data) -> None:
    X_train, _, y_train, _ = binary_data
    keel.autolog(log_models=False)
    try:
        assert LogisticRegression.fit is not ORIGINAL_FIT
        LogisticRegression().fit(X_train, y_train)
    finally:
        keel.autolog(disable=True)
    assert LogisticRegression.fit is ORIGINAL_FIT
    [run] = _runs()
    assert keel.artifacts.list_artifacts(run_id=run.info.run_id) == []  # log_models=False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LogisticRegression().fit(X_train, y_train)
    assert len(_runs()) == 1  # disabled: nothing new
def test_autolog_is_reachable_as_mlflow_users_call_it() -> None:
    import keel
    import keel.sklearn
    from keel.autologging import sklearn as sklearn_autologging

    assert keel.sklearn.autolog is sklearn_autologging.autolog
    assert callable(keel.autolog)
