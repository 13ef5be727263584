"""Seed 001 (MLflow Models, custom Python models, evaluation, serving, registry, stages,
projects), as MLflow code.

Derived from /work/shared/seeds/001_9c782e214631d8c2.txt: the code of each section in order.
The seed sets no tracking URI (it assumes a tracking server); this program sets the same
address the other seeds use. ``mlflow models serve`` is run as the CLI (``python -m mlflow``,
``--env-manager local``, a free port) and its REST API is called as the seed's ``curl`` does.
The MLproject is the folder ``salary_model/`` beside this file, run with ``mlflow.projects.run``. Prints one JSON summary line.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

mlflow.set_tracking_uri("http://127.0.0.1:5000")

summary = {"seed": "001"}
workdir = tempfile.mkdtemp(prefix="seed001-")
os.chdir(workdir)

X, y = make_classification(
    n_samples=200, n_features=4, n_informative=3, n_redundant=0, class_sep=2.0, random_state=0
)
columns = ["feature1", "feature2", "feature3", "feature4"]
X = pd.DataFrame(X, columns=columns)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
model = LogisticRegression(max_iter=200).fit(X_train, y_train)

# ## MLflow Models: automatic logging with mlflow.autolog(), then the last active run
mlflow.autolog()
with mlflow.start_run(run_name="autologged"):
    LogisticRegression(max_iter=200).fit(X_train, y_train)
mlflow.autolog(disable=True)
summary["autolog_run_id"] = mlflow.last_active_run().info.run_id

# ### Model API Functions: save, log, load
path = os.path.join(workdir, "model")
mlflow.sklearn.save_model(model, path)  # Save to local filesystem
with mlflow.start_run(run_name="logged") as run:
    mlflow.sklearn.log_model(model, artifact_path="model")  # Log to MLflow Tracking
run_id = run.info.run_id
local_model = mlflow.sklearn.load_model(path)  # Load from a local folder
run_model = mlflow.sklearn.load_model(f"runs:/{run_id}/model")  # ... or from a run
summary["local_predictions"] = local_model.predict(X_test).tolist()
assert run_model.predict(X_test).tolist() == summary["local_predictions"]


# ## Custom Python Models
def my_custom_prediction_logic(input_data, factor):
    return [factor * float(v) for v in np.asarray(input_data).ravel()]


class MyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.tokenizer = 2.0  # what load_context prepares, here a constant factor

    def predict(self, context, input_data):
        return my_custom_prediction_logic(input_data, self.tokenizer)


mlflow.pyfunc.save_model(path="my_model", python_model=MyModel())
custom = mlflow.pyfunc.load_model("my_model")
summary["custom_model_predictions"] = [float(v) for v in custom.predict(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))]

# ### Model Evaluation: mlflow.evaluate() logs metrics to the run
eval_data = X_test.copy()
eval_data["label"] = y_test
with mlflow.start_run(run_name="evaluation"):
    result = mlflow.evaluate(
        f"runs:/{run_id}/model",
        data=eval_data,
        targets="label",
        model_type="classifier",
    )
summary["evaluate_metrics"] = {k: float(v) for k, v in result.metrics.items() if k == "accuracy_score"}

# ## Model Registry: register a run's model, or register while logging
mlflow.register_model(model_uri=f"runs:/{run_id}/model", name="MyModel")
with mlflow.start_run(run_name="registered-while-logging"):
    mlflow.sklearn.log_model(model, artifact_path="model", registered_model_name="MyModel")

# ## Model Stages: changing the stage programmatically
from mlflow.tracking import MlflowClient  # noqa: E402 - where the seed imports it

client = MlflowClient()
client.transition_model_version_stage(name="MyModel", version=2, stage="Production")

# ## Model Deployment 1. In code
production = mlflow.pyfunc.load_model("models:/MyModel/Production")
summary["production_predictions"] = [int(v) for v in production.predict(X_test)]


# ## Model Serving / Deployment 2. As REST API: mlflow models serve -m "models:/MyModel/1" --port 5000
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, content_type="application/json"):
    data = None if body is None else body.encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


serve_port = free_port()
server = subprocess.Popen(
    [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        "models:/MyModel/1",
        "--port",
        str(serve_port),
        "--env-manager",
        "local",
    ],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
    env={**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()},  # as `export` in the seed's shell
)
try:
    base = f"http://127.0.0.1:{serve_port}"
    deadline = time.monotonic() + 120
    while True:  # ready when /ping answers 200
        try:
            status, _ = http("GET", base + "/ping")
        except OSError:
            status = 0
        if status == 200 or server.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if status != 200:
        raise RuntimeError(f"models serve did not become ready ({status}): {server.stderr.read()[-2000:]}")
    serving = {
        "ping": status,
        "health": http("GET", base + "/health")[0],
        "version": http("GET", base + "/version")[0],
    }
    rows = X_test.iloc[:2].values.tolist()
    # the seed's curl body
    status, text = http("POST", base + "/invocations", json.dumps({"columns": columns, "data": rows}))
    serving["seed_body_status"] = status
    if status != 200:  # MLflow's documented form
        status, text = http(
            "POST", base + "/invocations", json.dumps({"dataframe_split": {"columns": columns, "data": rows}})
        )
    serving["predictions"] = json.loads(text)["predictions"]
    serving["records_status"] = http(
        "POST",
        base + "/invocations",
        json.dumps({"dataframe_records": X_test.iloc[:2].to_dict(orient="records")}),
    )[0]
    serving["csv_status"] = http(
        "POST", base + "/invocations", X_test.iloc[:2].to_csv(index=False), "text/csv"
    )[0]
    summary["serving"] = serving
finally:
    server.terminate()
    server.wait(timeout=60)

# ## MLflow Projects: the salary_model project (MLproject, train_model.py, python_env.yaml,
# requirements.txt, next to this file), run with a parameter
project = os.path.join(os.path.dirname(os.path.abspath(__file__)), "salary_model")
submitted = mlflow.projects.run(project, parameters={"learning_rate": 0.02}, env_manager="local")
summary["project_run_id"] = submitted.run_id
print(json.dumps(summary))
