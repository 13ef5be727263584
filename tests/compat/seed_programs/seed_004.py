"""Seed 004 (tracking, the model storage format, signatures and their enforcement, save vs log,
load, evaluate with and without a baseline, the ways to register), as MLflow code.

Derived from /work/shared/seeds/004_886da4f27b26d8f6.txt: its code blocks in order, with
synthetic data (``data/test_data.csv`` is written first) and iris from scikit-learn. The seed's
``mlflow ui`` / ``mlflow server`` shell commands are left out (the test starts the server). Its
``evaluate`` examples pass ``data=(X_test, y_test), targets="y_true"`` and the fitted estimator:
here ``data`` is a DataFrame with a ``y_true`` column and ``model`` the logged model's URI, which
is how MLflow's ``evaluate`` takes them. ``baseline_model`` is MLflow 2's keyword (MLflow 3
removed it): when the client refuses it, the summary says so. Prints one JSON summary line.
"""

import json
import os
import tempfile

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from sklearn.datasets import load_iris, make_regression
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

# ``mlflow server --host 127.0.0.1 --port 5000`` runs elsewhere; the code names it:
mlflow.set_tracking_uri("http://127.0.0.1:5000")

summary = {"seed": "004"}
workdir = tempfile.mkdtemp(prefix="seed004-")
os.chdir(workdir)

# # Tracking
X, y = make_regression(n_samples=200, n_features=4, noise=5.0, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
os.makedirs("data")
pd.DataFrame(X_test, columns=["a", "b", "c", "d"]).assign(y=y_test).to_csv("data/test_data.csv", index=False)
alpha, l1_ratio = 0.5, 0.5
with mlflow.start_run() as run:
    lr = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, random_state=42).fit(X_train, y_train)
    predicted = lr.predict(X_test)
    rmse = float(np.sqrt(mean_squared_error(y_test, predicted)))
    r2 = float(r2_score(y_test, predicted))
    mae = float(mean_absolute_error(y_test, predicted))
    mlflow.log_param("alpha", alpha)
    mlflow.log_param("l1_ratio", l1_ratio)
    mlflow.log_metric("rmse", rmse)
    mlflow.log_metric("r2", r2)
    mlflow.log_metric("mae", mae)
    mymodel = mlflow.sklearn.log_model(lr, "mymodel")
    mlflow.log_artifact("data/test_data.csv")
summary["tracking_run_id"] = run.info.run_id

# # Models: the model storage format (MLmodel, conda.yaml, python_env.yaml, requirements.txt)
summary["model_files"] = sorted(os.listdir(mlflow.artifacts.download_artifacts(mymodel.model_uri)))

# ### Model Signature: tensor-based (numpy in, numpy out) and column-based (a DataFrame)
iris = load_iris()
X_train, X_test, y_train, y_test = train_test_split(iris.data, iris.target, test_size=0.2, random_state=42)
tensor_signature = infer_signature(X_train, y_train)
summary["tensor_signature_inputs"] = tensor_signature.inputs.to_dict()
columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
frame_train = pd.DataFrame(X_train, columns=columns)
column_signature = infer_signature(frame_train, y_train)

# ### Model Signature Enforcement: a missing input is refused when loaded as python_function
classifier = RandomForestClassifier(n_estimators=20, random_state=0).fit(frame_train, y_train)
mlflow.sklearn.save_model(classifier, path="models/signed", signature=column_signature)
signed = mlflow.pyfunc.load_model("models/signed")
try:
    signed.predict(pd.DataFrame(X_test[:, :3], columns=columns[:3]))
    summary["enforcement_error"] = None
except MlflowException as e:
    summary["enforcement_error"] = e.error_code

# ## save_model vs log_model
model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X_train, y_train)
mlflow.sklearn.save_model(model, path="models/my_model")
with mlflow.start_run():
    mlflow.sklearn.log_model(model, artifact_path="model")

# ## Load Models
loaded = mlflow.pyfunc.load_model("models/my_model")
predictions = loaded.predict(X_test)
summary["load_predictions"] = [int(v) for v in predictions[:5]]

# # Model Evaluation 1. Without a baseline
eval_data = pd.DataFrame(X_test, columns=columns)
eval_data["y_true"] = y_test
with mlflow.start_run() as run:
    info = mlflow.sklearn.log_model(model, artifact_path="model")
    result = mlflow.evaluate(
        model=info.model_uri,
        data=eval_data,
        targets="y_true",
        model_type="classifier",
        evaluator_config={"metric_prefix": "eval_", "log_model_explainability": True},
    )
    print(result.metrics)
summary["evaluate_metrics"] = sorted(result.metrics)

# 2. With a baseline
baseline_model = DummyClassifier(strategy="most_frequent")
baseline_model.fit(X_train, y_train)
with mlflow.start_run() as run:
    info = mlflow.sklearn.log_model(model, artifact_path="model")
    baseline_info = mlflow.sklearn.log_model(baseline_model, artifact_path="baseline_model")
    try:
        result = mlflow.evaluate(
            model=info.model_uri,
            data=eval_data,
            targets="y_true",
            model_type="classifier",
            baseline_model=baseline_info.model_uri,
            evaluator_config={"metric_prefix": "eval_", "log_model_explainability": True},
        )
        print("Model metrics:", result.metrics)
        print("Baseline metrics:", result.baseline_model_metrics)
        summary["baseline_metrics"] = sorted(result.baseline_model_metrics)
    except (TypeError, MlflowException) as e:
        summary["baseline_metrics"] = f"unsupported by this client: {e}"

# # Model Registry: 1. automatic registration during log_model
with mlflow.start_run() as run:
    mlflow.sklearn.log_model(model, "model", registered_model_name="MyModel")
# 2. mlflow.register_model() with the logged model's URI
logged_model_uri = f"runs:/{run.info.run_id}/model"
model_version = mlflow.register_model(model_uri=logged_model_uri, name="MyModel")
# 4. the MlflowClient API
from mlflow.tracking import MlflowClient  # noqa: E402 - where the seed imports it

client = MlflowClient()
model_version = client.create_model_version(
    name="MyModel", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
)
# 5. Transition model to staging
client.transition_model_version_stage(name="MyModel", version=model_version.version, stage="Staging")
summary["staged_version"] = str(model_version.version)
print(json.dumps(summary))
