"""Each seed program (tests/compat/seed_programs, MLflow code) with ``mlflow`` written as ``keel``,
a mechanical rename that keeps ``MlflowClient``, runs unchanged against a real ``keel server``
process reached through its MLflow port's URL (``http://...``, as the seeds write it): the SDK
learns the gRPC address from that port. What each program did is then checked through
``keel.Client`` over gRPC."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_fixtures import ServerHandle, free_port, server_process

import keel

pytestmark = pytest.mark.e2e

PROGRAMS = Path(__file__).resolve().parent / "seed_programs"
ROOT = Path(__file__).resolve().parents[2]
# The address the seeds give their tracking server (seed 002 reads MLFLOW_TRACKING_URI first).
SEED_ADDRESS = re.compile(r"http://(?:127\.0\.0\.1|localhost):5000")
RUN_TIMEOUT_S = 420


def rename(source: str, tracking_url: str) -> str:
    """The mechanical rename: the name ``mlflow`` -> ``keel`` (imports, attribute access), and
    the strings that name the package or its variables: ``"mlflow"`` (``python -m mlflow``) and
    ``"MLFLOW_..."`` (``MLFLOW_TRACKING_URI`` -> ``KEEL_TRACKING_URI``). ``MlflowClient``,
    ``MlflowException`` and other strings (tag names such as ``mlflow.runName``) stay. The seeds'
    server address becomes the test server's."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    edits: list[tuple[int, int, str]] = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        begin = starts[token.start[0] - 1] + token.start[1]
        end = starts[token.end[0] - 1] + token.end[1]
        if token.type == tokenize.NAME and token.string == "mlflow":
            edits.append((begin, end, "keel"))
        elif token.type == tokenize.STRING:
            quote = token.string[0]
            inner = token.string[1:-1]
            if token.string[-1] == quote and quote in "'\"" and inner == "mlflow":
                edits.append((begin, end, f"{quote}keel{quote}"))
            elif token.string[-1] == quote and quote in "'\"" and re.fullmatch(r"MLFLOW_[A-Z_]+", inner):
                edits.append((begin, end, f"{quote}KEEL_{inner[len('MLFLOW_') :]}{quote}"))
    for begin, end, text in reversed(edits):
        source = source[:begin] + text + source[end:]
    return SEED_ADDRESS.sub(tracking_url, source)


def test_rename_is_mechanical() -> None:
    source = (
        "import mlflow\nimport mlflow.sklearn\nfrom mlflow import MlflowClient\n"
        "from mlflow.tracking import MlflowClient\nfrom mlflow.exceptions import MlflowException\n"
        'mlflow.set_tracking_uri("http://127.0.0.1:5000")\nos.environ.get("MLFLOW_TRACKING_URI")\n'
        '[sys.executable, "-m", "mlflow", "models", "serve"]\ndf["tags.mlflow.runName"]\n'
    )
    assert rename(source, "http://127.0.0.1:1234") == (
        "import keel\nimport keel.sklearn\nfrom keel import MlflowClient\n"
        "from keel.tracking import MlflowClient\nfrom keel.exceptions import MlflowException\n"
        'keel.set_tracking_uri("http://127.0.0.1:1234")\nos.environ.get("KEEL_TRACKING_URI")\n'
        '[sys.executable, "-m", "keel", "models", "serve"]\ndf["tags.mlflow.runName"]\n'
    )


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[ServerHandle, str]]:
    """A fresh ``keel server`` process per program (the seeds name their models alike) with its
    MLflow port on; yields the handle and the port's URL."""
    mlflow_port = free_port()
    env = {
        "KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts",
    }
    with server_process(["--mlflow-port", str(mlflow_port)], env=env, cwd=tmp_path) as handle:
        yield handle, f"http://127.0.0.1:{mlflow_port}"


def run_renamed(seed: str, url: str, tmp_path: Path) -> dict[str, Any]:
    """Copies the seed programs (with their project folders) to ``tmp_path``, every ``.py``
    file renamed, and runs ``seed``; returns its JSON summary line."""
    copy = tmp_path / "programs"
    shutil.copytree(PROGRAMS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for path in copy.rglob("*.py"):
        path.write_text(rename(path.read_text(encoding="utf-8"), url), encoding="utf-8")
    program = copy / f"{seed}.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KEEL_TRACKING"))}
    done = subprocess.run(
        [sys.executable, str(program)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"{seed} failed:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    last = done.stdout.strip().splitlines()[-1]
    return dict(json.loads(last))


def test_seed_000_pytorch(server: tuple[ServerHandle, str], tmp_path: Path) -> None:
    handle, url = server
    out = run_renamed("seed_000", url, tmp_path)
    client = keel.Client(handle.uri)
    run = client.get_run(out["run_ids"][0])
    assert run.info.run_name == "cnn-v1" and run.info.status == "FINISHED"
    assert run.data.params["model"] == "SimpleCNN" and set(run.data.metrics) >= {"train_loss", "val_accuracy"}
    assert run.data.tags["mlflow.source.type"] == "LOCAL" and run.data.tags["mlflow.user"]
    assert {"best_model.pt", "model_metadata.json", "pytorch_model"} <= set(out["run_artifacts"])
    assert out["run_prediction_matches"] and out["production_prediction_matches"] and out["checkpoint_loaded"]
    assert out["archive_version_0"] in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
    assert {"MLmodel", "conda.yaml", "requirements.txt"} <= set(out["custom_env_files"])
    name = out["model_name"]
    assert out["listed_models"] == [name]
    version = client.get_model_version(name, out["registered_version"])
    assert version.description == "SimpleCNN trained with lr=0.001" and version.run_id == run.info.run_id
    assert out["second_version"] == "2"
    assert out["stages"] == {"1": "Production", "2": "Production"}


def test_seed_001_models_and_registry(server: tuple[ServerHandle, str], tmp_path: Path) -> None:
    handle, url = server
    out = run_renamed("seed_001", url, tmp_path)
    client = keel.Client(handle.uri)
    assert out["custom_model_predictions"] == [2.0, 4.0, 6.0]
    assert out["evaluate_metrics"]["accuracy_score"] > 0.5
    assert out["serving"]["ping"] == 200 and out["serving"]["seed_body_status"] == 200
    assert len(out["serving"]["predictions"]) == 2
    versions = {v.version: v for v in client.search_model_versions("name = 'MyModel'")}
    assert set(versions) == {"1", "2"} and versions["2"].current_stage == "Production"
    assert out["production_predictions"] == out["local_predictions"]
    project_run = client.get_run(out["project_run_id"])
    assert project_run.info.status == "FINISHED" and project_run.data.params["lr"] == "0.02"
    assert out["autolog_run_id"] and client.get_run(out["autolog_run_id"]).data.params


def test_seed_002_registry_tutorial(server: tuple[ServerHandle, str], tmp_path: Path) -> None:
    handle, url = server
    out = run_renamed("seed_002", url, tmp_path)
    client = keel.Client(handle.uri)
    best = client.get_run(out["best_run_id"])
    assert best.data.metrics["val_rmse"] == min(out["val_rmses"])
    assert out["best_run_name"] == best.info.run_name
    v1 = client.get_model_version("Wine Quality", "1")
    assert v1.tags == {"run_id": out["best_run_id"], "sem_ver": "0.1.0"} and v1.current_stage == "Archived"
    assert client.get_model_version("Wine Quality", "2").current_stage == "Staging"
    assert out["search_columns"][:6] == [
        "run_id",
        "experiment_id",
        "status",
        "artifact_uri",
        "start_time",
        "end_time",
    ]
    assert (
        "tags.mlflow.runName" in out["search_columns"] and "tags.mlflow.source.name" in out["search_columns"]
    )


def test_seed_003_registry_lab(server: tuple[ServerHandle, str], tmp_path: Path) -> None:
    handle, url = server
    out = run_renamed("seed_003", url, tmp_path)
    client = keel.Client(handle.uri)
    assert out["create_registered_model_error"] == "RESOURCE_ALREADY_EXISTS"
    name = "sk-learn-random-forest-reg-model"
    versions = {v.version: v for v in client.search_model_versions(f"name = '{name}'")}
    assert set(versions) == {"1", "2"} and versions["1"].current_stage == "Archived"
    assert versions["2"].run_id == out["run_id"]
    assert [v.version for v in client.search_model_versions("name = 'sk-learn-random-forest-reg'")] == ["1"]
    assert len(out["predictions"]) == 20


def test_seed_004_tracking_models_evaluation(server: tuple[ServerHandle, str], tmp_path: Path) -> None:
    handle, url = server
    out = run_renamed("seed_004", url, tmp_path)
    client = keel.Client(handle.uri)
    run = client.get_run(out["tracking_run_id"])
    assert set(run.data.params) >= {"alpha", "l1_ratio"} and set(run.data.metrics) >= {"rmse", "r2", "mae"}
    assert {"MLmodel", "python_env.yaml", "requirements.txt"} <= set(out["model_files"])
    assert out["enforcement_error"]
    assert "eval_accuracy_score" in out["evaluate_metrics"]
    assert "eval_accuracy_score" in out["baseline_metrics"]
    versions = {v.version: v for v in client.search_model_versions("name = 'MyModel'")}
    assert set(versions) == {"1", "2", "3"} and versions["3"].current_stage == "Staging"
