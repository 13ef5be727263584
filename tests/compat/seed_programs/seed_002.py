"""Seed 002 (the Model Registry tutorial: best run by search_runs, register with tags,
lifecycle stages, archive-existing on transition), as MLflow code.

Derived from /work/shared/seeds/002_d560815b5ee586c8.txt. The tutorial assumes the quickstart
has logged runs with a ``val_rmse`` metric and a ``model`` to the Default experiment, so the
program first does that (wine-quality-like synthetic regression). The seed's fallback address
``http://localhost:5000`` is written ``http://127.0.0.1:5000`` like the other seeds'.
Prints one JSON summary line.
"""

import json
import os

import mlflow
import mlflow.sklearn
import numpy as np
from sklearn.datasets import make_regression
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or "http://127.0.0.1:5000"
mlflow.set_tracking_uri(tracking_uri)

summary = {"seed": "002", "val_rmses": []}

# The quickstart: a few runs with val_rmse and a model, in the Default experiment
X, y = make_regression(n_samples=300, n_features=11, noise=10.0, random_state=0)
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
for alpha in (0.01, 1.0, 10.0):
    with mlflow.start_run(experiment_id="0"):
        model = ElasticNet(alpha=alpha, random_state=0).fit(X_train, y_train)
        val_rmse = float(np.sqrt(mean_squared_error(y_val, model.predict(X_val))))
        mlflow.log_param("alpha", alpha)
        mlflow.log_metric("val_rmse", val_rmse)
        mlflow.sklearn.log_model(model, artifact_path="model")
        summary["val_rmses"].append(val_rmse)

# ### Get your experiment's Run ID: the run with the lowest val_rmse
experiment_ids = [0]  # 'Default' experiment
order_pred = ["metrics.val_rmse asc"]  # sort by lowest validation error
runs_df = mlflow.search_runs(experiment_ids=experiment_ids, order_by=order_pred, max_results=10)
run_id = runs_df.loc[0]["run_id"]
print(f"Run run_id: {run_id} had lowest validation error: {runs_df.loc[0]['metrics.val_rmse']}")
summary["best_run_id"] = run_id
summary["best_run_name"] = runs_df.loc[0]["tags.mlflow.runName"]
summary["search_columns"] = list(runs_df.columns)

# ### Register the run's model in the Model Registry
model_uri = f"runs:/{run_id}/model"
name = "Wine Quality"
tags = {"run_id": run_id, "sem_ver": "0.1.0"}
registered_model = mlflow.register_model(model_uri=model_uri, name=name, tags=tags)
print(f"Name: {registered_model.name}, Version: {registered_model.version}")

# ### Transitioning between lifecycle states
from mlflow import MlflowClient  # noqa: E402 - where the seed imports it

client = MlflowClient()
client.transition_model_version_stage(name="Wine Quality", version=1, stage="Staging")
# The UI's checkbox: moving another version to Staging archives the one there
second = mlflow.register_model(model_uri=model_uri, name=name)
client.transition_model_version_stage(
    name="Wine Quality", version=second.version, stage="Staging", archive_existing_versions=True
)
summary["stages"] = {
    str(v.version): v.current_stage for v in client.search_model_versions("name = 'Wine Quality'")
}
print(json.dumps(summary))
