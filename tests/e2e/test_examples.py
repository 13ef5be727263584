"""Every example in examples/ runs against a real `keel server` process and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from server_fixtures import ServerHandle, server_process

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("examples")
    env = {"KEEL_DB_URL": f"sqlite:///{root}/keel.db", "KEEL_ARTIFACT_URI": f"file://{root}/artifacts"}
    with server_process(env=env, cwd=root) as handle:
        yield handle


def run_example(server: ServerHandle, script: str, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KEEL_TRACKING_URI": server.uri},
        cwd=ROOT,
    )
    assert result.returncode == 0, (
        f"{script} {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def test_pytorch_cnn_train_then_use(server: ServerHandle) -> None:
    out = run_example(
        server,
        "pytorch_cnn/train_and_register_model.py",
        "--experiment-name",
        "production",
        "--run-name",
        "cnn-v1",
        "--model-name",
        "image-classifier",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--lr",
        "0.003",
    )
    run_id = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Run ID: "))
    assert "Model Version: 1" in out

    use = "pytorch_cnn/load_and_use_models.py"
    assert "Model: image-classifier" in run_example(server, use, "list")
    assert "Version 1:" in run_example(server, use, "versions", "image-classifier")
    assert "Accuracy on 8 synthetic images" in run_example(server, use, "from-run", run_id, "--predict")
    assert "Predictions:" in run_example(
        server, use, "from-registry", "image-classifier", "--version", "1", "--predict"
    )
    assert "now in stage Production" in run_example(
        server, use, "transition", "image-classifier", "1", "Production"
    )
    assert "Predictions:" in run_example(
        server, use, "from-registry", "image-classifier", "--stage", "Production", "--predict"
    )


def test_sklearn_random_forest_three_ways(server: ServerHandle) -> None:
    out = run_example(server, "sklearn_random_forest.py")
    assert "create_model_version created sk-learn-random-forest-reg-model version 3" in out
    assert "is now Archived" in out


def test_registry_best_run(server: ServerHandle) -> None:
    out = run_example(server, "registry_best_run.py")
    assert "is now in Production" in out


def test_custom_pyfunc(server: ServerHandle) -> None:
    out = run_example(server, "custom_pyfunc.py")
    assert "['junior', 'mid', 'senior']" in out


def test_evaluate_with_baseline(server: ServerHandle) -> None:
    out = run_example(server, "evaluate_with_baseline.py")
    assert "fails validation, as it should" in out
