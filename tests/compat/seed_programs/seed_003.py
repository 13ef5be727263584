"""Seed 003 (Lab 5: three ways to register a model, fetch a version, archive), as MLflow code.

Derived from /work/shared/seeds/003_81c12ec8ee22835f.txt: its code blocks in order. The seed's
tracking address ``http://127.0.0.1:8081`` is written ``http://127.0.0.1:5000`` like the other
seeds'; its ``UPDATE_HERE`` placeholders are the values of the run just logged, as its comments
show (``runs:/<run_id>/sklearn-model``, the run's artifact URI + ``/sklearn-model``). The
expected error of ``create_registered_model`` on an existing name is caught. Prints one JSON
summary line.
"""

import json

import mlflow
import mlflow.sklearn
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from sklearn.datasets import make_regression
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

mlflow.set_tracking_uri("http://127.0.0.1:5000")

summary = {"seed": "003"}

# #### Adding an MLflow Model to the Model Registry: 1. log_model(registered_model_name=...)
with mlflow.start_run() as run:
    X, y = make_regression(n_features=4, n_informative=2, random_state=0, shuffle=False)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
    params = {"max_depth": 2, "random_state": 42}
    model = RandomForestRegressor(**params)
    model.fit(X_train, y_train)

    # Infer the model signature
    y_pred = model.predict(X_test)
    signature = infer_signature(X_test, y_pred)

    # Log parameters and metrics using the MLflow APIs
    mlflow.log_params(params)
    mlflow.log_metrics({"mse": mean_squared_error(y_test, y_pred)})

    # Log the sklearn model and register as version 1
    mlflow.sklearn.log_model(
        sk_model=model,
        artifact_path="sklearn-model",
        signature=signature,
        registered_model_name="sk-learn-random-forest-reg-model",
    )
summary["run_id"] = run.info.run_id

# 2. mlflow.register_model() with the run's URI
result = mlflow.register_model(f"runs:/{run.info.run_id}/sklearn-model", "sk-learn-random-forest-reg")
summary["register_model_version"] = str(result.version)

# 3. create_registered_model() + create_model_version()
from mlflow import MlflowClient  # noqa: E402 - where the seed imports it

client = MlflowClient()
try:
    client.create_registered_model("sk-learn-random-forest-reg-model")
    summary["create_registered_model_error"] = None
except MlflowException as e:
    # Note: You will get and error since model "sk-learn-random-forest-reg-model" already exists.
    summary["create_registered_model_error"] = e.error_code

client = MlflowClient()
result = client.create_model_version(
    name="sk-learn-random-forest-reg-model",
    source=f"{run.info.artifact_uri}/sklearn-model",
    run_id=run.info.run_id,
)
summary["create_model_version"] = str(result.version)

# ### Fetching an MLflow Model from the Model Registry: a specific version
import mlflow.pyfunc  # noqa: E402

model_name = "sk-learn-random-forest-reg-model"
model_version = 1

model = mlflow.pyfunc.load_model(model_uri=f"models:/{model_name}/{model_version}")

X, y = make_regression(n_features=4, n_informative=2, random_state=0, shuffle=False)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)

summary["predictions"] = [float(v) for v in model.predict(X_test)]
# the version made by create_model_version loads too
mlflow.pyfunc.load_model(model_uri=f"models:/{model_name}/{result.version}").predict(X_test)

# ### Archiving an MLflow Model
# Archive models version 1 from Production into Archived
client = MlflowClient()
client.transition_model_version_stage(name="sk-learn-random-forest-reg-model", version=1, stage="Archived")
print(json.dumps(summary))
