"""Seed 002: pick the run with the lowest val_rmse, register it with tags, move it through stages.

    python examples/registry_best_run.py [--model-name "Wine Quality"]

Trains a few ElasticNet models on synthetic wine-like data so there are runs to choose from.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

import keel
import keel.sklearn


def train_candidates(experiment_id: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6))
    y = X @ np.array([0.5, -0.2, 0.1, 0.0, 0.3, -0.4]) + 5.5 + rng.normal(scale=0.3, size=400)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
    for alpha in (0.01, 0.1, 0.5, 1.0):
        with keel.start_run(experiment_id=experiment_id, run_name=f"elasticnet-alpha-{alpha}"):
            model = ElasticNet(alpha=alpha, l1_ratio=0.5).fit(X_train, y_train)
            rmse = float(np.sqrt(mean_squared_error(y_val, model.predict(X_val))))
            keel.log_params({"alpha": alpha, "l1_ratio": 0.5})
            keel.log_metric("val_rmse", rmse)
            keel.sklearn.log_model(model, "model")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("KEEL_TRACKING_URI", "grpc://127.0.0.1:50051")
    )
    parser.add_argument("--model-name", default="Wine Quality")
    parser.add_argument("--experiment-name", default="wine-quality")
    args = parser.parse_args(argv)
    keel.set_tracking_uri(args.tracking_uri)
    experiment = keel.set_experiment(args.experiment_name)
    train_candidates(experiment.experiment_id)

    runs = keel.search_runs(
        experiment_ids=[experiment.experiment_id],
        order_by=["metrics.val_rmse asc"],
        max_results=10,
        output_format="pandas",
    )
    run_id = runs.loc[0]["run_id"]
    print(f"Run {run_id} had the lowest validation error: {runs.loc[0]['metrics.val_rmse']:.4f}")

    model_uri = f"runs:/{run_id}/model"
    version = keel.register_model(
        model_uri=model_uri, name=args.model_name, tags={"run_id": run_id, "sem_ver": "0.1.0"}
    )
    print(f"Name: {version.name}, Version: {version.version}")

    client = keel.Client()
    client.transition_model_version_stage(name=args.model_name, version=version.version, stage="Staging")
    promoted = client.transition_model_version_stage(
        name=args.model_name, version=version.version, stage="Production", archive_existing_versions=True
    )
    print(f"Version {promoted.version} is now in {promoted.current_stage}")
    for event in client.list_model_history(args.model_name):
        print(
            f"  history: version {event.version} {event.from_stage or '-'} -> {event.to_stage} by {event.actor or '?'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
