"""Registration snapshots the model: deleting or overwriting the run's artifacts afterwards
does not change or break the registered version (local store, every database backend)."""

from __future__ import annotations

import numpy as np
import pytest
from registry_helpers import unique

import keel
from keel import exceptions as kx


def _train(offset: float):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LinearRegression

    X = np.arange(20, dtype=float).reshape(10, 2)
    return LinearRegression().fit(X, X.sum(axis=1) + offset), X


def test_version_survives_deleted_and_overwritten_run_artifacts(client) -> None:
    model, X = _train(0.0)
    with keel.start_run() as run:
        keel.sklearn.log_model(model, "model")
    run_id = run.info.run_id
    name = unique("snap")
    mv = keel.register_model(f"runs:/{run_id}/model", name)
    assert mv.status == "READY"
    expected = keel.pyfunc.load_model(f"models:/{name}/{mv.version}").predict(X)

    # Overwrite the run's model with a different one, then delete it altogether.
    other, _ = _train(100.0)
    with keel.start_run(run_id=run_id):
        keel.sklearn.log_model(other, "model")
    assert not np.allclose(keel.pyfunc.load_model(f"runs:/{run_id}/model").predict(X), expected)
    assert client.delete_artifacts("model", run_id=run_id) > 0
    with pytest.raises(kx.KeelError):
        keel.pyfunc.load_model(f"runs:/{run_id}/model")

    for uri in (f"models:/{name}/1", f"models:/{name}/latest", f"models:/{name}/None"):
        np.testing.assert_allclose(keel.pyfunc.load_model(uri).predict(X), expected)
    client.set_registered_model_alias(name, "champion", 1)
    np.testing.assert_allclose(keel.pyfunc.load_model(f"models:/{name}@champion").predict(X), expected)
