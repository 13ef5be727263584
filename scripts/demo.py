"""`make demo`: keel's main job end to end, on the embedded default (SQLite + a local folder).

1. starts `keel server` (all four services, plus MLflow-compatible HTTP scoring) in a temp dir;
2. trains three iris classifiers, logging params, metrics and models, and registers each;
3. finds the best run with search_runs and promotes its version to Production;
4. deploys `models:/iris-classifier/Production` and queries it three ways: keel's gRPC
   Predict, KServe v2 ModelInfer (the unmodified tritonclient) and HTTP /invocations;
5. stops everything it started and removes the temp dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

MODEL = "iris-classifier"
CANDIDATES = [
    {"n_estimators": 2, "max_depth": 1},
    {"n_estimators": 10, "max_depth": 2},
    {"n_estimators": 50, "max_depth": None},
]


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(workdir: str, http_port: int) -> tuple[subprocess.Popen[str], int]:
    command = [
        sys.executable, "-m", "keel.cli", "server", "--port", "0", "--http-port", str(http_port),
        "--db-url", f"sqlite:///{workdir}/keel.db", "--artifact-uri", f"file://{workdir}/artifacts",
        "--log-level", "WARNING",
    ]  # fmt: skip
    log = open(os.path.join(workdir, "server.log"), "w")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=workdir)
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(r"listening on [^:]+:(\d+)", line)
        if match:
            return process, int(match.group(1))
    raise SystemExit(f"keel server did not start; see {workdir}/server.log")


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="keel-demo-")
    http_port = free_port()
    started = time.monotonic()
    process, port = start_server(workdir, http_port)
    try:
        return run_demo(port, http_port, workdir, started)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"\nstopped keel server (pid {process.pid}) and removed {workdir}")


def run_demo(port: int, http_port: int, workdir: str, started: float) -> int:
    import keel
    import keel.sklearn
    from keel.models import infer_signature

    uri = f"grpc://127.0.0.1:{port}"
    step(f"keel server is up at {uri} (HTTP scoring on :{http_port}) in {time.monotonic() - started:.1f}s")
    print(f"   database sqlite:///{workdir}/keel.db, artifacts {workdir}/artifacts")
    keel.set_tracking_uri(uri)
    client = keel.Client()

    step("Training three iris classifiers, logging each run and registering its model")
    iris = load_iris(as_frame=True)
    X = iris.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    X_train, X_test, y_train, y_test = train_test_split(X, iris.target, test_size=0.3, random_state=0)
    experiment = keel.set_experiment("iris-demo")
    for params in CANDIDATES:
        with keel.start_run(run_name=f"rf-{params['n_estimators']}-trees") as run:
            model = RandomForestClassifier(random_state=0, **params).fit(X_train, y_train)
            predicted = model.predict(X_test)
            metrics = {
                "accuracy": accuracy_score(y_test, predicted),
                "f1_macro": f1_score(y_test, predicted, average="macro"),
            }
            keel.log_params(params)
            keel.log_metrics(metrics)
            info = keel.sklearn.log_model(
                model, "model", signature=infer_signature(X_test, predicted), input_example=X_test.head(3),
                registered_model_name=MODEL,
            )  # fmt: skip
            print(
                f"   run {run.info.run_id[:8]} {params} accuracy={metrics['accuracy']:.3f} -> {MODEL} v{info.registered_model_version}"
            )

    step("Choosing the best run with search_runs and promoting its version to Production")
    best = keel.search_runs(
        experiment_ids=[experiment.experiment_id],
        order_by=["metrics.accuracy DESC"],
        max_results=1,
        output_format="list",
    )[0]
    version = client.search_model_versions(f"name = '{MODEL}' and run_id = '{best.info.run_id}'")[0]
    promoted = client.transition_model_version_stage(
        MODEL, version.version, "Production", archive_existing_versions=True
    )
    print(
        f"   best run {best.info.run_id[:8]} (accuracy {best.data.metrics['accuracy']:.3f}) is {MODEL} v{promoted.version}, now {promoted.current_stage}"
    )

    step(f"Serving models:/{MODEL}/Production as deployment 'iris'")
    deployment = client.create_deployment("iris", f"models:/{MODEL}/Production")
    if deployment.state != "READY":
        raise SystemExit(f"deployment is {deployment.state}: {deployment.state_message}")
    print(
        f"   deployment 'iris' is {deployment.state}, answering with {deployment.model_name} v{deployment.model_version}"
    )

    rows = X_test.head(3)
    expected = [int(v) for v in y_test.head(3)]

    step("Querying over keel's gRPC Predict")
    prediction = client.predict("iris", rows)
    print(f"   predictions {prediction.predictions} (labels {expected}) from v{prediction.model_version}")

    step("Querying over KServe v2 ModelInfer with the unmodified tritonclient")
    import tritonclient.grpc as triton

    triton_client = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
    metadata = triton_client.get_model_metadata("iris")
    inputs = []
    for spec in metadata.inputs:
        if len(metadata.inputs) == 1:  # one tensor holding every column
            array = rows.to_numpy(dtype=np.float64 if spec.datatype == "FP64" else np.float32)
        else:  # one tensor per column
            array = rows[spec.name].to_numpy(dtype=np.float64 if spec.datatype == "FP64" else np.float32)
        tensor = triton.InferInput(spec.name, list(array.shape), spec.datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = triton_client.infer("iris", inputs)
    output = metadata.outputs[0].name
    print(
        f"   server live={triton_client.is_server_live()} model ready={triton_client.is_model_ready('iris')}"
    )
    print(
        f"   {output} = {result.as_numpy(output).tolist()} (model version {result.get_response().model_version})"
    )

    step("Querying over MLflow-compatible HTTP /invocations")
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        print(f"   HTTP {response.status}: {response.read().decode()}")

    step("Summary")
    print(f"   3 runs logged, {MODEL} has {len(client.search_model_versions(f'name = {MODEL!r}'))} versions,")
    print(
        f"   v{promoted.version} in Production, served over gRPC, KServe v2 and HTTP in {time.monotonic() - started:.1f}s total"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
