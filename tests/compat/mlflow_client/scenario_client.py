"""Runs INSIDE an MLflow client venv (build/venv-mlflow3 or build/venv-mlflow2), never in keel's:
the real ``mlflow`` client against keel's MLflow REST port, through everything issue #16's first
test names. Prints, as its last stdout line, one JSON object of what it did and what it saw
(test_mlflow_clients.py asserts on it, then reads the same data through keel's gRPC SDK).

    python scenario_client.py URL TAG KEEL_MODEL KEEL_INPUT_JSON
    python scenario_client.py load URL INPUT_JSON URI...   (mlflow.pyfunc predictions of each URI)

TAG keeps this client's names apart from another's on the same server (experiment
``scenario-TAG``, model ``scenario-model-TAG``); KEEL_MODEL is a model version 1 registered
through keel, loaded here with ``mlflow.pyfunc.load_model``; KEEL_INPUT_JSON the rows to score it on.

Written for both the 3.x and 2.x clients: the only difference is how ``log_model`` names the
model (``name=`` in 3.x, ``artifact_path=`` in 2.x) and 3.x's logged models (``models:/<model_id>``).
"""

import hashlib
import json
import os
import sys
import tempfile

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from sklearn.linear_model import Ridge


def predictions(model, frame):
    return [round(float(v), 9) for v in np.asarray(model.predict(frame)).ravel()]


if sys.argv[1] == "load":  # versions registered through keel, loaded by the mlflow client
    mlflow.set_tracking_uri(sys.argv[2])
    rows = json.loads(sys.argv[3])
    frame = pd.DataFrame(rows["data"], columns=rows["columns"])
    print(json.dumps({uri: predictions(mlflow.pyfunc.load_model(uri), frame) for uri in sys.argv[4:]}))
    sys.exit(0)

URL, TAG, KEEL_MODEL, KEEL_INPUT = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
MLFLOW3 = int(mlflow.__version__.split(".")[0]) >= 3
EXPERIMENT = f"scenario-{TAG}"
MODEL = f"scenario-model-{TAG}"
BLOB_BYTES = 3 * 1024 * 1024 + 17  # more than one chunk of any transfer
out = {"mlflow_version": mlflow.__version__, "experiment": EXPERIMENT, "model": MODEL}
workdir = tempfile.mkdtemp(prefix=f"scenario-{TAG}-")
os.chdir(workdir)


def log_model(model, path, **kwargs):
    """MLflow 3 names a model with ``name=`` (``artifact_path`` is deprecated); MLflow 2 has only
    ``artifact_path``."""
    if MLFLOW3:
        return mlflow.sklearn.log_model(model, name=path, **kwargs)
    return mlflow.sklearn.log_model(model, artifact_path=path, **kwargs)


def error_code(call):
    try:
        call()
    except MlflowException as e:
        return e.error_code
    return None


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------- data and models
rng = np.random.RandomState(0)
columns = ["f0", "f1", "f2", "f3"]
X = pd.DataFrame(rng.rand(60, 4), columns=columns)
X_test = X.iloc[:5]
model_a = Ridge(alpha=0.5).fit(X, X @ np.array([1.0, 2.0, 3.0, 4.0]))
model_b = Ridge(alpha=2.0).fit(X, X @ np.array([-4.0, 1.0, 0.5, 2.0]) + 10)
expected_a, expected_b = predictions(model_a, X_test), predictions(model_b, X_test)
out["X_test"] = X_test.values.tolist()
out["expected"] = {"a": expected_a, "b": expected_b}

# ---------------------------------------------------------------- tracking
mlflow.set_tracking_uri(URL)
experiment = mlflow.set_experiment(EXPERIMENT)  # created on RESOURCE_DOES_NOT_EXIST
out["experiment_id"] = experiment.experiment_id
os.makedirs("dir/sub")
with open("dir/one.txt", "w") as f:
    f.write("one\n")
with open("dir/sub/two.csv", "w") as f:
    f.write("a,b\n1,2\n")
with open("blob.bin", "wb") as f:
    f.write(np.random.RandomState(1).bytes(BLOB_BYTES))
out["blob_sha256"] = sha256("blob.bin")

with mlflow.start_run(run_name="train-a") as run:
    run_a = run.info.run_id
    mlflow.log_param("alpha", 0.5)
    mlflow.log_params({"target": "a", "features": 4})
    for step, rmse in enumerate([0.9, 0.5, 0.25]):
        mlflow.log_metric("rmse", rmse, step=step)
    mlflow.log_metrics({"r2": 0.97, "mae": 0.2})
    mlflow.set_tag("team", "keel")
    mlflow.set_tags({"purpose": "scenario", "client": TAG})
    mlflow.log_text("hello from mlflow\n", "notes/hello.txt")
    mlflow.log_dict({"alpha": 0.5, "columns": columns}, "config/params.json")
    mlflow.log_artifact("blob.bin", artifact_path="data")
    mlflow.log_artifacts("dir", artifact_path="dir")
    signature = infer_signature(X, model_a.predict(X))
    info_a = log_model(
        model_a, "model", signature=signature, input_example=X_test, registered_model_name=MODEL
    )
    mlflow.log_metric("rmse", 0.2, step=3)
out["run_a"] = run_a
out["artifact_uri_a"] = run.info.artifact_uri
out["model_uri_a"] = info_a.model_uri
out["registered_version_a"] = str(info_a.registered_model_version)

with mlflow.start_run(run_name="train-b") as run:
    run_b = run.info.run_id
    mlflow.log_params({"alpha": 2.0, "target": "b", "features": 4})
    mlflow.log_metric("rmse", 0.4)
    log_model(model_b, "model", signature=signature)
out["run_b"] = run_b

# ---------------------------------------------------------------- registry
version_b = mlflow.register_model(f"runs:/{run_b}/model", MODEL, tags={"origin": "register_model", "step": 2})
out["registered_version_b"] = str(version_b.version)
client = MlflowClient()
client.update_registered_model(MODEL, description="the scenario's model")
client.set_registered_model_tag(MODEL, "owner", "scenario")
client.update_model_version(MODEL, "1", description="ridge on target a")
client.set_model_version_tag(MODEL, "2", "validated", "yes")
client.set_model_version_tag(MODEL, "2", "scratch", "x")
client.delete_model_version_tag(MODEL, "2", "scratch")
extra = client.create_model_version(
    MODEL, source=f"{out['artifact_uri_a']}/model", run_id=run_a, description="to delete"
)
out["created_version"] = str(extra.version)
client.delete_model_version(MODEL, extra.version)
out["deleted_version_error"] = error_code(lambda: client.get_model_version(MODEL, extra.version))
out["create_existing_error"] = error_code(lambda: client.create_registered_model(MODEL))
out["missing_model_error"] = error_code(lambda: client.get_registered_model(f"no-such-model-{TAG}"))
scratch = f"scratch-{TAG}"
client.create_registered_model(scratch, tags={"kind": "scratch"}, description="renamed then deleted")
client.rename_registered_model(scratch, f"{scratch}-renamed")
out["renamed"] = client.get_registered_model(f"{scratch}-renamed").description
client.delete_registered_model(f"{scratch}-renamed")
out["renamed_deleted_error"] = error_code(lambda: client.get_registered_model(f"{scratch}-renamed"))

# transitions, the last with archive_existing_versions
client.transition_model_version_stage(MODEL, "1", "Production")
client.transition_model_version_stage(MODEL, "2", "Staging")
out["latest_production_before"] = [
    v.version for v in client.get_latest_versions(MODEL, stages=["Production"])
]
moved = client.transition_model_version_stage(MODEL, "2", "Production", archive_existing_versions=True)
out["transition_answer"] = {"version": str(moved.version), "stage": moved.current_stage}
out["stages"] = {str(v.version): v.current_stage for v in client.search_model_versions(f"name = '{MODEL}'")}
out["latest_by_stage"] = {
    v.current_stage: str(v.version)
    for v in client.get_latest_versions(MODEL, stages=["Production", "Archived"])
}

# aliases
client.set_registered_model_alias(MODEL, "champion", "2")
client.set_registered_model_alias(MODEL, "challenger", "1")
client.set_registered_model_alias(MODEL, "scratch", "1")
client.delete_registered_model_alias(MODEL, "scratch")
out["champion"] = str(client.get_model_version_by_alias(MODEL, "champion").version)
registered = client.get_registered_model(MODEL)
out["registered"] = {
    "description": registered.description,
    "tags": dict(registered.tags),
    "aliases": {k: str(v) for k, v in registered.aliases.items()},
}
versions = {str(v.version): v for v in client.search_model_versions(f"name = '{MODEL}'")}
out["versions"] = {
    k: {
        "run_id": v.run_id,
        "description": v.description,
        "tags": dict(v.tags),
        "aliases": sorted(client.get_model_version(MODEL, k).aliases),
        "status": v.status,
    }
    for k, v in versions.items()
}
out["search_registered"] = [
    m.name for m in client.search_registered_models(filter_string=f"name = '{MODEL}'")
]
out["download_uri"] = client.get_model_version_download_uri(MODEL, "1")

# ---------------------------------------------------------------- loads
out["loads"] = {
    "runs:/a": predictions(mlflow.pyfunc.load_model(f"runs:/{run_a}/model"), X_test),
    "sklearn runs:/b": predictions(mlflow.sklearn.load_model(f"runs:/{run_b}/model"), X_test),
    "models:/1": predictions(mlflow.pyfunc.load_model(f"models:/{MODEL}/1"), X_test),
    "models:/latest": predictions(mlflow.pyfunc.load_model(f"models:/{MODEL}/latest"), X_test),
    "models:/Production": predictions(mlflow.pyfunc.load_model(f"models:/{MODEL}/Production"), X_test),
    "models:/Archived": predictions(mlflow.pyfunc.load_model(f"models:/{MODEL}/Archived"), X_test),
    "models:@champion": predictions(mlflow.pyfunc.load_model(f"models:/{MODEL}@champion"), X_test),
    "models:@challenger": predictions(mlflow.sklearn.load_model(f"models:/{MODEL}@challenger"), X_test),
}
if MLFLOW3:  # log_model's own URI is the logged model's, models:/<model_id>
    out["loads"]["logged model"] = predictions(mlflow.pyfunc.load_model(info_a.model_uri), X_test)
    logged = mlflow.get_logged_model(info_a.model_id)
    out["logged_model"] = {
        "name": logged.name,
        "status": str(logged.status),
        "source_run_id": logged.source_run_id,
    }
keel_input = pd.DataFrame(KEEL_INPUT["data"], columns=KEEL_INPUT["columns"])
out["keel_model"] = {}
for flavor in (mlflow.pyfunc, mlflow.sklearn):
    try:  # recorded, not raised: the test says which way of loading failed and why
        loaded = predictions(flavor.load_model(f"models:/{KEEL_MODEL}/1"), keel_input)
    except Exception as e:  # noqa: BLE001
        loaded = f"{type(e).__name__}: {e}"
    out["keel_model"][flavor.__name__] = loaded

# ---------------------------------------------------------------- search_runs to a DataFrame
frame = mlflow.search_runs(experiment_names=[EXPERIMENT], order_by=["metrics.rmse ASC"])
out["search"] = {
    "columns": list(frame.columns),
    "run_ids": list(frame["run_id"]),
    "run_names": list(frame["tags.mlflow.runName"]),
    "alpha": list(frame["params.alpha"]),
    "rmse": [float(v) for v in frame["metrics.rmse"]],
    "status": list(frame["status"]),
}
filtered = mlflow.search_runs(
    experiment_ids=[experiment.experiment_id], filter_string="params.target = 'a' and metrics.r2 > 0.9"
)
out["search_filtered"] = list(filtered["run_id"])

# ---------------------------------------------------------------- artifacts down
out["artifacts"] = {
    "top": sorted(f.path for f in client.list_artifacts(run_a)),
    "dir": sorted((f.path, f.is_dir) for f in client.list_artifacts(run_a, "dir")),
    "blob_size": [f.file_size for f in client.list_artifacts(run_a, "data")],
}
blob = mlflow.artifacts.download_artifacts(run_id=run_a, artifact_path="data/blob.bin", dst_path="down")
folder = client.download_artifacts(run_a, "dir", "down")
out["downloaded"] = {
    "blob_sha256": sha256(blob),
    "dir_files": sorted(
        os.path.relpath(os.path.join(r, n), folder) for r, _, ns in os.walk(folder) for n in ns
    ),
    "two_csv": open(os.path.join(folder, "sub", "two.csv")).read(),
    "text": mlflow.artifacts.load_text(f"runs:/{run_a}/notes/hello.txt"),
    "dict": mlflow.artifacts.load_dict(f"{out['artifact_uri_a']}/config/params.json"),
}
out["metric_history"] = {
    key: [[m.step, m.value] for m in client.get_metric_history(run_a, key)] for key in ("rmse", "r2")
}
print(json.dumps(out))
