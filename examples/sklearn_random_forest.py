"""Seed 003: the three ways to register a scikit-learn model, then fetch a version and archive it.

    python examples/sklearn_random_forest.py [--model-name sk-learn-random-forest-reg-model]

1. keel.sklearn.log_model(..., registered_model_name=...)   (logs and registers in one call)
2. keel.register_model("runs:/<run_id>/sklearn-model", name)  (after the run)
3. Client.create_registered_model + Client.create_model_version
"""

from __future__ import annotations

import argparse
import os
import sys

from sklearn.datasets import make_regression
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

import keel
import keel.pyfunc
import keel.sklearn
from keel.exceptions import AlreadyExists
from keel.models import infer_signature


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("KEEL_TRACKING_URI", "grpc://127.0.0.1:50051")
    )
    parser.add_argument("--model-name", default="sk-learn-random-forest-reg-model")
    args = parser.parse_args(argv)
    keel.set_tracking_uri(args.tracking_uri)
    keel.set_experiment("sklearn-random-forest")
    name = args.model_name

    X, y = make_regression(n_features=4, n_informative=2, random_state=0, shuffle=False)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)

    # 1. Log and register in one call.
    with keel.start_run() as run:
        params = {"max_depth": 2, "random_state": 42}
        model = RandomForestRegressor(**params).fit(X_train, y_train)
        y_pred = model.predict(X_test)
        keel.log_params(params)
        keel.log_metrics({"mse": mean_squared_error(y_test, y_pred)})
        info = keel.sklearn.log_model(
            sk_model=model,
            artifact_path="sklearn-model",
            signature=infer_signature(X_test, y_pred),
            registered_model_name=name,
        )
    print(f"1. log_model registered {name} version {info.registered_model_version}")

    # 2. Register an existing run's model afterwards.
    version = keel.register_model(f"runs:/{run.info.run_id}/sklearn-model", name)
    print(f"2. register_model created {name} version {version.version}")

    # 3. An explicit registered model, then a version from a source URI.
    client = keel.Client()
    try:
        client.create_registered_model(name)
    except AlreadyExists as exc:
        print(f"3. create_registered_model refused a duplicate, as expected: {exc.message}")
    explicit = client.create_model_version(
        name=name, source=f"runs:/{run.info.run_id}/sklearn-model", run_id=run.info.run_id
    )
    print(f"3. create_model_version created {name} version {explicit.version}")

    # Fetch a specific version and predict.
    loaded = keel.pyfunc.load_model(f"models:/{name}/1")
    predictions = loaded.predict(X_test)
    assert abs(float(predictions[0]) - float(y_pred[0])) < 1e-9, "loaded model predicts differently"
    print(f"models:/{name}/1 predicts {len(predictions)} rows, first {float(predictions[0]):.3f}")

    # Archive version 1.
    client.transition_model_version_stage(name=name, version=1, stage="Production")
    archived = client.transition_model_version_stage(name=name, version=1, stage="Archived")
    print(f"version {archived.version} is now {archived.current_stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
