"""`/metrics` of a real `keel server` process: every family of issue #13 is present and moves
through a small seed flow (tracking, a registered sklearn model, an artifact up and down, a
deployment answering over gRPC and HTTP, the upload sweeper removing a leftover)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from backends import make_database_url, selected_backends
from prometheus_client.parser import text_string_to_metric_families
from server_fixtures import ServerHandle, free_port, server_process

import keel

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
DEPLOYMENT = "metrics-iris"
COLUMNS = ["a", "b", "c", "d"]


def scrape(port: int) -> tuple[Samples, set[str]]:
    """Every sample of /metrics by (sample name, labels), and the family names."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: Samples = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(body):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def rpc_methods(samples: Samples) -> set[str]:
    return {dict(labels)["method"] for name, labels in samples if name == "keel_rpc_duration_seconds_count"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, int, int]]:
    root = tmp_path_factory.mktemp("metrics")
    # A leftover of a dead upload (no owner in its name): the sweep at start removes it, since
    # KEEL_STALE_UPLOAD_SECONDS=0 counts every upload not of this process as dead.
    staging = root / "artifacts" / ".keel-staging"
    staging.mkdir(parents=True)
    (staging / "leftover.part").write_bytes(b"x" * 10)
    metrics_port, http_port = free_port(), free_port()
    env = {
        "KEEL_DB_URL": f"sqlite:///{root}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{root}/artifacts",
        "KEEL_STALE_UPLOAD_SECONDS": "0",
    }
    args = ["--metrics-port", str(metrics_port), "--http-port", str(http_port)]
    with server_process(args=args, env=env, cwd=root) as handle:
        yield handle, metrics_port, http_port


def test_metric_families_move_through_a_seed_flow(
    server: tuple[ServerHandle, int, int], tmp_path: Path
) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from keel import sklearn as keel_sklearn

    handle, metrics_port, http_port = server
    # The start sweep runs on a background thread: wait (bounded) until it has counted.
    deadline = time.monotonic() + 10
    before, families = scrape(metrics_port)
    while value(before, "keel_sweeper_actions_total", sweeper="uploads", action="removed") < 1:
        assert time.monotonic() < deadline, "the upload sweeper never counted the leftover"
        time.sleep(0.05)
        before, families = scrape(metrics_port)

    for family in (
        "keel_rpc_duration_seconds",
        "keel_db_connections_in_use",
        "keel_artifact_bytes",
        "keel_model_load_seconds",
        "keel_predict_seconds",
        "keel_predict_batch_rows",
        "keel_sweeper_actions",
    ):
        assert family in families, family
    # Present from the start, at zero until something happens.
    for sweeper, action in (("registrations", "finished"), ("registrations", "failed")):
        assert ("keel_sweeper_actions_total", frozenset({("sweeper", sweeper), ("action", action)})) in before
    assert ("keel_artifact_bytes_total", frozenset({("direction", "in")})) in before
    assert ("keel_artifact_bytes_total", frozenset({("direction", "out")})) in before
    # SQLite is not pooled: the gauge is documented to read 0 there.
    assert value(before, "keel_db_connections_in_use") == 0

    # -- the seed flow through the SDK ----------------------------------------------------
    keel.set_tracking_uri(handle.uri)
    client = keel.Client(handle.uri)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    frame = pd.DataFrame(X, columns=COLUMNS)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(rng.bytes(100_000))
    with keel.start_run() as run:
        keel.log_param("C", 1.0)
        keel.log_metric("accuracy", 0.9)
        model = LogisticRegression().fit(frame, y)
        keel_sklearn.log_model(model, "model", input_example=frame.head(3), registered_model_name=DEPLOYMENT)
        client.log_artifact(run.info.run_id, str(blob), "data")
    downloaded = client.download_artifacts(run.info.run_id, "data/blob.bin", str(tmp_path / "down"))
    assert Path(downloaded).read_bytes() == blob.read_bytes()

    deployment = client.create_deployment(DEPLOYMENT, f"models:/{DEPLOYMENT}/1")
    assert deployment.state == "READY", deployment
    want = model.predict(frame.head(5)).tolist()
    assert client.predict(DEPLOYMENT, frame.head(5)).predictions == want
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/deployments/{DEPLOYMENT}/invocations",
        data=json.dumps({"dataframe_records": frame.head(2).to_dict("records")}).encode(),
        headers={"Content-Type": "application/json"},
    )
    reply = json.loads(urllib.request.urlopen(request, timeout=10).read())
    assert reply == {"predictions": want[:2]}

    after, _ = scrape(metrics_port)

    # -- every family moved ---------------------------------------------------------------
    methods = rpc_methods(after)
    for method in (
        "/keel.tracking.v1.TrackingService/CreateRun",
        "/keel.artifacts.v1.ArtifactService/UploadArtifact",
        "/keel.artifacts.v1.ArtifactService/DownloadArtifact",
        "/keel.registry.v1.ModelRegistryService/CreateModelVersion",
        "/keel.inference.v1.InferenceService/CreateDeployment",
        "/keel.inference.v1.InferenceService/Predict",
    ):
        assert method in methods, (method, sorted(methods))
    predict_ok = value(
        after,
        "keel_rpc_duration_seconds_count",
        method="/keel.inference.v1.InferenceService/Predict",
        code="OK",
    )
    assert predict_ok >= 1

    def moved_bytes(direction: str) -> float:
        name = "keel_artifact_bytes_total"
        return value(after, name, direction=direction) - value(before, name, direction=direction)

    bytes_in, bytes_out = moved_bytes("in"), moved_bytes("out")
    assert bytes_in >= 100_000  # the blob, plus the model's files
    # The blob (and the model's files, when the inference service fetched them through the service).
    assert bytes_out >= 100_000

    assert value(after, "keel_model_load_seconds_count", deployment=DEPLOYMENT) >= 1
    assert value(after, "keel_model_load_seconds_sum", deployment=DEPLOYMENT) > 0

    def moved(name: str) -> float:
        return value(after, name, deployment=DEPLOYMENT) - value(before, name, deployment=DEPLOYMENT)

    assert moved("keel_predict_seconds_count") == 2  # one gRPC Predict, one HTTP /invocations
    assert moved("keel_predict_seconds_sum") > 0
    assert moved("keel_predict_batch_rows_count") == 2
    assert moved("keel_predict_batch_rows_sum") == 7  # 5 rows + 2 rows

    assert value(after, "keel_sweeper_actions_total", sweeper="uploads", action="removed") >= 1
    assert ("keel_db_connections_in_use", frozenset()) in after

    # A deleted deployment's series go (label sets stay as few as the deployments).
    client.delete_deployment(DEPLOYMENT)
    gone, _ = scrape(metrics_port)
    assert value(gone, "keel_predict_seconds_count", deployment=DEPLOYMENT) == 0
    assert not any(dict(labels).get("deployment") == DEPLOYMENT for _, labels in gone)


@pytest.mark.parametrize("backend", [b for b in selected_backends() if b != "sqlite"])
def test_db_gauge_counts_pooled_connections_in_use(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gauge reads the pool of the database the server runs on, at scrape time."""
    from prometheus_client import REGISTRY

    from keel_server.common import db as dbmod
    from keel_server.common.db import open_database

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("keel_db_connections_in_use")

    with make_database_url(backend) as url:
        database = open_database(url, max_connections=4)
        monkeypatch.setattr(dbmod.db, "obj", database)
        try:
            assert gauge() == 0
            holding, release = threading.Event(), threading.Event()

            def hold() -> None:
                with database.connection_context():
                    holding.set()
                    release.wait(10)

            other = threading.Thread(target=hold)
            other.start()
            try:
                assert holding.wait(10)
                database.connect()
                try:
                    assert gauge() == 2
                finally:
                    database.close()
                assert gauge() == 1
            finally:
                release.set()
                other.join(10)
            assert gauge() == 0
        finally:
            database.close_all()  # before the database is dropped
