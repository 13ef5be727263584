"""Runs INSIDE the MLflow venv (build/venv-mlflow3), never in keel's: the real ``mlflow`` client.

    python mlflow_populate.py populate URI OUT.json [--bulk-runs N] [--big-mib M]
    python mlflow_populate.py dump URI OUT.json

``populate`` writes the seed flows (shared/seeds) into a running ``mlflow server``:

- 000 (PyTorch guide, with sklearn in place of torch): params, per-epoch metrics, a checkpoint and
  a metadata file, ``log_model(registered_model_name=)``, ``register_model`` + description.
- 002 (registry tutorial): the best run by ``search_runs`` ordered by a metric, ``register_model``
  with tags, stages with ``archive_existing_versions``, aliases, descriptions, model tags.
- 003 (registry lab): ``create_registered_model`` + ``create_model_version`` from a run's own
  artifacts (MLflow 2's layout), a deleted version (a gap in the numbers), ``Archived``.
- Tracking habits: nested runs, FAILED / KILLED / still RUNNING runs, NaN and infinities, a long
  metric history, nested artifact folders, an empty file, a big file, odd key names; a deleted run
  and a deleted experiment; ``--bulk-runs`` small runs for throughput.

``dump`` reads everything back through the same client (an oracle independent of keel's importer)
and writes it as JSON: experiments, runs (info, params, tags, every metric point, every artifact
file with its size and sha256), logged models with their files, registered models and versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag, ViewType  # noqa: E402

T0 = 1_700_000_000_000  # fixed metric timestamps (ms): the comparison checks them exactly
# Given, not inferred: inference imports the model in a subprocess, seconds per log_model.
REQS = ["scikit-learn", "skops", "cloudpickle"]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _model():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True, as_frame=True)
    return LogisticRegression(max_iter=300).fit(x, y), x


def populate(uri: str, bulk_runs: int, big_mib: int, work: Path) -> dict:
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    made: dict = {}

    # ---- seed 000: train, log, register, describe ------------------------------------------
    exp = mlflow.set_experiment("production-models")
    client.set_experiment_tag(exp.experiment_id, "team", "vision")
    client.set_experiment_tag(exp.experiment_id, "mlflow.note.content", "CNN models for production")
    model, x = _model()
    with mlflow.start_run(run_name="cnn-v1") as run:
        mlflow.log_params(
            {"model": "SimpleCNN", "epochs": 10, "batch_size": 32, "learning_rate": 0.001, "total_parameters": 95050}
        )
        for epoch in range(10):
            mlflow.log_metrics(
                {
                    "train_loss": 2.3 / (epoch + 1),
                    "train_accuracy": 8.12 * (epoch + 1),
                    "val_loss": 2.29 / (epoch + 1),
                    "val_accuracy": 13.75 + epoch,
                },
                step=epoch,
                timestamp=T0 + epoch * 1000,
            )
        mlflow.log_artifact(str(_write(work / "best_model.pt", os.urandom(2 * 1024 * 1024 + 17))))
        mlflow.log_artifact(str(_write(work / "model_metadata.json", json.dumps({"classes": 10}).encode())))
        mlflow.set_tag("mlflow.note.content", "first CNN")
        mlflow.sklearn.log_model(
            model, name="model", registered_model_name="image-classifier", input_example=x.head(3), pip_requirements=REQS
        )
        made["cnn_run"] = run.info.run_id
    version = mlflow.register_model(f"runs:/{made['cnn_run']}/model", "simple-cnn-classifier")
    client.update_model_version("simple-cnn-classifier", version.version, description="SimpleCNN trained with lr=0.001")

    # ---- seed 002: best run by a metric, register with tags, stages, aliases -----------------
    mlflow.set_experiment("registry-tutorial")
    for i, rmse in enumerate([0.9, 0.7, 0.8, 0.75]):
        with mlflow.start_run(run_name=f"rf-{i}"):
            mlflow.log_param("n_estimators", 10 * (i + 1))
            mlflow.log_metric("rmse", rmse, step=0, timestamp=T0)
            mlflow.sklearn.log_model(model, name="model", pip_requirements=REQS)
    tutorial = client.get_experiment_by_name("registry-tutorial").experiment_id
    runs = mlflow.search_runs([tutorial], order_by=["metrics.rmse ASC"], output_format="list")
    for rank, best in enumerate(runs[:3]):
        mv = mlflow.register_model(
            f"runs:/{best.info.run_id}/model", "fraud-model", tags={"rank": str(rank), "validated": "yes"}
        )
        client.update_model_version("fraud-model", mv.version, description=f"rank {rank} by rmse")
    client.update_registered_model("fraud-model", description="Fraud detection, ranked by rmse")
    client.set_registered_model_tag("fraud-model", "owner", "risk-team")
    client.set_registered_model_tag("fraud-model", "task", "classification")
    client.transition_model_version_stage("fraud-model", "1", "Staging")
    client.transition_model_version_stage("fraud-model", "1", "Production")
    client.transition_model_version_stage("fraud-model", "2", "Production", archive_existing_versions=True)
    client.transition_model_version_stage("fraud-model", "3", "Staging")
    client.set_registered_model_alias("fraud-model", "champion", "2")
    client.set_registered_model_alias("fraud-model", "challenger", "3")
    client.set_model_version_tag("fraud-model", "2", "approved_by", "alice")

    # ---- seed 003: create_registered_model + create_model_version from run artifacts ---------
    mlflow.set_experiment("registry-lab")
    saved = work / "saved-model"
    mlflow.sklearn.save_model(model, str(saved), serialization_format="cloudpickle", pip_requirements=REQS)
    with mlflow.start_run(run_name="lab-run") as run:
        mlflow.log_artifacts(str(saved), "sk_model")
        made["lab_run"] = run.info.run_id
    client.create_registered_model("lab-model", tags={"lab": "3"}, description="registered the long way")
    for i in range(4):
        source = f"{run.info.artifact_uri}/sk_model" if i % 2 == 0 else f"runs:/{run.info.run_id}/sk_model"
        client.create_model_version("lab-model", source, run_id=run.info.run_id, tags={"i": str(i)})
    client.delete_model_version("lab-model", "2")  # a gap: versions 1, 3, 4
    client.transition_model_version_stage("lab-model", "1", "Archived")
    client.transition_model_version_stage("lab-model", "3", "Production")
    client.set_registered_model_alias("lab-model", "stable", "3")

    # ---- tracking habits -----------------------------------------------------------------
    mlflow.set_experiment("tracking-habits")
    with mlflow.start_run(run_name="hyperparam-search") as parent:
        mlflow.log_param("search", "grid")
        for lr in (0.1, 0.01):
            with mlflow.start_run(run_name=f"lr-{lr}", nested=True):
                mlflow.log_param("lr", lr)
                mlflow.log_metric("loss", lr * 3, step=1, timestamp=T0 + 5)
        made["parent_run"] = parent.info.run_id
    with mlflow.start_run(run_name="edge-values") as run:
        history = [Metric("long_history", math.sin(i / 10), T0 + i, i) for i in range(2500)]
        odd = [
            Metric("odd", float("nan"), T0, 0),
            Metric("odd", float("inf"), T0 + 1, 1),
            Metric("odd", float("-inf"), T0 + 2, 2),
            Metric("odd", 1.5, T0 + 3, 2),  # two points at one step
            Metric("odd", -0.0, T0 + 4, 10**12),
            Metric("with space", 1.0, T0, 0),
            Metric("nested/key", 2.0, T0, 0),
        ]
        for i in range(0, len(history), 1000):
            client.log_batch(run.info.run_id, metrics=history[i : i + 1000])
        client.log_batch(
            run.info.run_id,
            metrics=odd,
            params=[Param("with space", "a b"), Param("nested/key", "x" * 500), Param("empty", "")],
            tags=[RunTag("unicode", "héllo ✓"), RunTag("multi", "line1\nline2")],
        )
        root = work / "tree"
        _write(root / "a" / "b" / "c.txt", b"deep")
        _write(root / "a" / "top.csv", b"x,y\n1,2\n")
        _write(root / "empty.bin", b"")
        _write(root / "big.bin", os.urandom(big_mib * 1024 * 1024))
        mlflow.log_artifacts(str(root))
        mlflow.log_text("hello", "notes/readme.md")
        made["edge_run"] = run.info.run_id
    with mlflow.start_run(run_name="failed-run") as run:
        mlflow.log_metric("loss", 9.0, timestamp=T0)
    client.set_terminated(run.info.run_id, "FAILED", end_time=T0 + 60_000)
    with mlflow.start_run(run_name="killed-run") as run:
        mlflow.log_param("p", 1)
    client.set_terminated(run.info.run_id, "KILLED")
    running = client.create_run(exp_id := client.get_experiment_by_name("tracking-habits").experiment_id, run_name="still-running")
    client.log_metric(running.info.run_id, "progress", 0.5, timestamp=T0, step=3)
    with mlflow.start_run(run_name="deleted-run") as run:
        mlflow.log_param("gone", "yes")
    client.delete_run(run.info.run_id)
    made["deleted_run"] = run.info.run_id

    gone = client.create_experiment("old-experiments", tags={"era": "2023"})
    old = client.create_run(gone, run_name="old-run", start_time=T0 - 10**9)
    client.log_param(old.info.run_id, "legacy", "true")
    client.log_metric(old.info.run_id, "acc", 0.5, timestamp=T0, step=0)
    client.set_terminated(old.info.run_id, "FINISHED", end_time=T0 - 10**9 + 3600_000)
    client.delete_experiment(gone)
    made["deleted_experiment"] = gone

    # ---- bulk: many small runs (throughput) ----------------------------------------------
    bulk = client.create_experiment("bulk", tags={"kind": "bulk"})
    small = _write(work / "small.txt", b"s" * 4096)
    for i in range(bulk_runs):
        r = client.create_run(bulk, run_name=f"bulk-{i}", start_time=T0 + i)
        metrics = [Metric(k, j * 0.1 + i, T0 + j, j) for k in ("loss", "acc", "lr") for j in range(50)]
        params = [Param(f"p{k}", str(i * k)) for k in range(5)]
        client.log_batch(r.info.run_id, metrics=metrics, params=params, tags=[RunTag("i", str(i))])
        client.log_artifact(r.info.run_id, str(small))
        client.set_terminated(r.info.run_id, "FINISHED", end_time=T0 + i + 1000)
    del exp_id
    return made


# ---------------------------------------------------------------- dump
def _files(download, listing, root: str = "") -> list[dict]:
    """Every file under ``root`` (recursive): path, size, sha256 of the downloaded bytes."""
    out = []
    for info in listing(root or None):
        if info.is_dir:
            out.extend(_files(download, listing, info.path))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(download(info.path, tmp)).read_bytes()
        # the size of the bytes themselves: MLflow lists an empty file without a size
        out.append({"path": info.path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return sorted(out, key=lambda f: f["path"])


def _num(value: float):
    return value if math.isfinite(value) else repr(value)  # JSON has no NaN/inf


def dump(uri: str) -> dict:
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    out: dict = {"experiments": [], "runs": [], "logged_models": [], "models": []}
    experiments = client.search_experiments(view_type=ViewType.ALL, max_results=1000)
    for e in experiments:
        out["experiments"].append(
            {
                "id": e.experiment_id,
                "name": e.name,
                "lifecycle_stage": e.lifecycle_stage,
                "tags": dict(e.tags),
                "creation_time": e.creation_time,
            }
        )
        for run in client.search_runs([e.experiment_id], run_view_type=ViewType.ALL, max_results=50000):
            rid = run.info.run_id
            metrics = {}
            for key in run.data.metrics:
                points = client.get_metric_history(rid, key)
                metrics[key] = sorted([p.step, p.timestamp, _num(p.value)] for p in points)
            out["runs"].append(
                {
                    "run_id": rid,
                    "experiment_id": e.experiment_id,
                    "experiment_name": e.name,
                    "run_name": run.info.run_name,
                    "status": run.info.status,
                    "start_time": run.info.start_time,
                    "end_time": run.info.end_time,
                    "user_id": run.info.user_id,
                    "lifecycle_stage": run.info.lifecycle_stage,
                    "params": dict(run.data.params),
                    "tags": dict(run.data.tags),
                    "metrics": metrics,
                    "artifacts": _files(
                        lambda p, d, rid=rid: client.download_artifacts(rid, p, d),
                        lambda p, rid=rid: client.list_artifacts(rid, p),
                    ),
                }
            )
        for lm in client.search_logged_models(experiment_ids=[e.experiment_id], max_results=1000):
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            repo = get_artifact_repository(lm.artifact_location)
            out["logged_models"].append(
                {
                    "model_id": lm.model_id,
                    "name": lm.name,
                    "source_run_id": lm.source_run_id,
                    "creation_timestamp": lm.creation_timestamp,
                    "files": _files(repo.download_artifacts, repo.list_artifacts),
                }
            )
    for m in client.search_registered_models(max_results=1000):
        # get_model_version: searches leave the aliases out
        found = client.search_model_versions(f"name = '{m.name}'", max_results=10000)
        versions = [client.get_model_version(m.name, v.version) for v in found]
        out["models"].append(
            {
                "name": m.name,
                "description": m.description or "",
                "tags": dict(m.tags),
                "aliases": {a: str(v) for a, v in (m.aliases or {}).items()},
                "creation_timestamp": m.creation_timestamp,
                "versions": sorted(
                    (
                        {
                            "version": str(v.version),
                            "current_stage": v.current_stage,
                            "description": v.description or "",
                            "tags": dict(v.tags),
                            "source": v.source,
                            "run_id": v.run_id,
                            "model_id": getattr(v, "model_id", None),
                            "status": v.status,
                            "aliases": sorted(v.aliases or []),
                            "user_id": v.user_id,
                            "creation_timestamp": v.creation_timestamp,
                        }
                        for v in versions
                    ),
                    key=lambda v: int(v["version"]),
                ),
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["populate", "dump"])
    parser.add_argument("uri")
    parser.add_argument("out", nargs="?")
    parser.add_argument("--bulk-runs", type=int, default=40)
    parser.add_argument("--big-mib", type=int, default=24)
    args = parser.parse_args()
    started = time.monotonic()
    if args.mode == "populate":
        work = Path(tempfile.mkdtemp(prefix="mlflow-populate-"))
        try:
            result = populate(args.uri, args.bulk_runs, args.big_mib, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    else:
        result = dump(args.uri)
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    print(f"{args.mode} took {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
