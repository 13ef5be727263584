"""Helpers of tests/compat/test_importer.py: a real ``mlflow server`` process, the scripts run in
its venv (tests/compat/mlflow_populate.py), and the field-by-field comparison of what MLflow
holds (the populate script's ``dump``, read with the ``mlflow`` client) with what keel holds
(read with ``keel.Client``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from server_fixtures import free_port

import keel
from keel.importers.mlflow import COMPLETE_TAG, CREATED_TAG, RUN_TAG, USER_TAG, VERSION_TAG

ROOT = Path(__file__).resolve().parents[2]
MLFLOW_VENV = ROOT / "build" / "venv-mlflow3"
POPULATE = Path(__file__).resolve().parent / "mlflow_populate.py"
IMPORT_PREFIX = "import.mlflow."
START_DEADLINE_S = 120.0


def mlflow_python() -> Path:
    python = MLFLOW_VENV / "bin" / "python"
    if not (MLFLOW_VENV / "bin" / "mlflow").exists():
        pytest.fail(f"the MLflow venv {MLFLOW_VENV} is missing: run `make mlflow-venvs`")
    return python


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[MlflowServer]:
    """``mlflow server`` (SQLite, proxied artifacts under ``root``) on a free port, ready when
    ``GET /health`` answers 200 (polled until a deadline)."""
    mlflow_python()
    port = free_port()
    log = open(root / "mlflow-server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(MLFLOW_VENV / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination", str(root / "mlartifacts"),
        ],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}: {_tail(root / 'mlflow-server.log')}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {START_DEADLINE_S}s: {_tail(root / 'mlflow-server.log')}")
            time.sleep(0.2)  # between polls of the readiness check
        yield MlflowServer(url, process)
    finally:
        # gunicorn/uvicorn workers are its children: end the whole session it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        log.close()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def run_in_mlflow_venv(mode: str, url: str, *args: str, timeout: float = 400.0) -> dict[str, Any]:
    """tests/compat/mlflow_populate.py MODE URL with the venv's python; the JSON it writes."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlflow-populate-") as tmp:
        out = Path(tmp) / f"{mode}.json"
        result = subprocess.run(
            [str(mlflow_python()), str(POPULATE), mode, url, str(out), *args],
            capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "MLFLOW_ENABLE_ASYNC_LOGGING": "false", "GIT_PYTHON_REFRESH": "quiet"},
            cwd=tmp,
        )  # fmt: skip
        assert result.returncode == 0, f"{POPULATE.name} {mode} failed:\n{result.stderr[-4000:]}"
        print(f"{POPULATE.name} {mode}: {time.monotonic() - started:.1f} s")
        return dict(json.loads(out.read_text()))


# ---------------------------------------------------------------- keel side
def keel_runs(client: keel.Client) -> dict[str, Any]:
    """Every imported keel run (all experiments, deleted ones too), by MLflow run id."""
    out: dict[str, Any] = {}
    for experiment in client.search_experiments(view_type="ALL"):
        token = None
        while True:
            page = client.search_runs(experiment.experiment_id, run_view_type="ALL", max_results=1000, page_token=token)
            for run in page:
                if RUN_TAG in run.data.tags:
                    assert run.data.tags[RUN_TAG] not in out, f"MLflow run {run.data.tags[RUN_TAG]} imported twice"
                    out[run.data.tags[RUN_TAG]] = run
            token = page.token
            if not token:
                break
    return out


def counts(client: keel.Client) -> dict[str, Any]:
    """What keel holds, counted: experiments, runs per experiment, versions per model, files."""
    runs = keel_runs(client)
    files = sum(len(client.list_artifacts_under(run_id=r.info.run_id, recursive=True)) for r in runs.values())
    models = {m.name: len(client.search_model_versions(f"name = '{m.name}'")) for m in client.search_registered_models()}
    return {
        "experiments": sorted(e.name for e in client.search_experiments(view_type="ALL")),
        "runs": len(runs),
        "versions": models,
        "files": files,
        "points": sum(
            len(client.get_metric_history(r.info.run_id, key)) for r in runs.values() for key in r.data.metrics
        ),
    }


def _imported_only(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.startswith(IMPORT_PREFIX)}


def _points(history: list[Any]) -> list[list[Any]]:
    return sorted([m.step, m.timestamp, m.value if math.isfinite(m.value) else repr(m.value)] for m in history)


def _files(client: keel.Client, **where: str) -> dict[str, tuple[int | None, str]]:
    """path -> (size, sha256) of every file under a run or artifact URI (hashing downloads when
    the listing has no checksum)."""
    out = {}
    for info in client.list_artifacts_under(recursive=True, **where):
        if info.is_dir:
            continue
        digest = info.sha256
        if not digest:
            with tempfile.TemporaryDirectory() as tmp:
                local = client.download_artifact_uri(
                    f"runs:/{where['run_id']}/{info.path}" if "run_id" in where else f"{where['artifact_uri']}/{info.path}", tmp
                )
                digest = hashlib.sha256(Path(local).read_bytes()).hexdigest()
        out[info.path] = (info.file_size, digest)
    return out


def assert_keel_matches(client: keel.Client, oracle: dict[str, Any], *, include_deleted: bool) -> None:
    """Everything the MLflow dump holds is in keel, field by field (and nothing twice)."""
    deleted_experiments = {e["id"] for e in oracle["experiments"] if e["lifecycle_stage"] == "deleted"}

    def wanted(run: dict[str, Any]) -> bool:
        if include_deleted:
            return True
        return run["lifecycle_stage"] != "deleted" and run["experiment_id"] not in deleted_experiments

    # ---- experiments
    for e in oracle["experiments"]:
        found = client.get_experiment_by_name(e["name"])
        if e["lifecycle_stage"] == "deleted" and not include_deleted:
            assert found is None, f"deleted experiment {e['name']} imported without --include-deleted"
            continue
        if e["name"] == "Default" and found is not None and not e["tags"]:
            continue  # keel's own Default, adopted
        assert found is not None, f"experiment {e['name']} not imported"
        assert found.lifecycle_stage == e["lifecycle_stage"], e["name"]
        assert _imported_only(found.tags) == e["tags"], e["name"]
        assert found.tags[CREATED_TAG] == str(e["creation_time"])

    # ---- runs
    runs = keel_runs(client)
    expected_runs = [r for r in oracle["runs"] if wanted(r)]
    assert set(runs) == {r["run_id"] for r in expected_runs}
    logged = {}
    for lm in oracle["logged_models"]:
        logged.setdefault(lm["source_run_id"], []).append(lm)
    for r in expected_runs:
        k = runs[r["run_id"]]
        where = f"run {r['run_name']} ({r['run_id']})"
        experiment = client.get_experiment(k.info.experiment_id)
        assert experiment.name == r["experiment_name"], where
        info = k.info
        assert (info.run_name, info.status, info.start_time, info.end_time, info.user_id, info.lifecycle_stage) == (
            r["run_name"], r["status"], r["start_time"], r["end_time"], r["user_id"], r["lifecycle_stage"]
        ), where  # fmt: skip
        assert k.data.params == r["params"], where
        source_tags = dict(r["tags"])
        parent = source_tags.pop("mlflow.parentRunId", None)
        # keel's own tags (keel.parentRunId: the parent, which is info.parent_run_id) left out
        keel_tags = {k: v for k, v in _imported_only(k.data.tags).items() if not k.startswith("keel.")}
        assert keel_tags == source_tags, f"{where}: {_diff(keel_tags, source_tags)}"
        assert info.parent_run_id == (runs[parent].info.run_id if parent else None), where
        if r["status"] in ("FINISHED", "FAILED", "KILLED"):
            assert k.data.tags.get(COMPLETE_TAG), f"{where}: no completion mark"
        assert set(k.data.metrics) == set(r["metrics"]), where
        for key, points in r["metrics"].items():
            assert _points(client.get_metric_history(info.run_id, key)) == points, f"{where} metric {key}"
        expected_files = {f["path"]: (f["size"], f["sha256"]) for f in r["artifacts"]}
        for lm in logged.get(r["run_id"], []):
            expected_files.update({f"{lm['name']}/{f['path']}": (f["size"], f["sha256"]) for f in lm["files"]})
        have_files = _files(client, run_id=info.run_id)
        assert have_files == expected_files, f"{where}: {_diff(have_files, expected_files)}"

    # ---- registered models and versions
    assert {m.name for m in client.search_registered_models()} == {m["name"] for m in oracle["models"]}
    for m in oracle["models"]:
        km = client.get_registered_model(m["name"])
        assert km.description == m["description"], m["name"]
        assert _imported_only(km.tags) == m["tags"], m["name"]
        assert km.aliases == m["aliases"], m["name"]
        versions = {v.version: v for v in client.search_model_versions(f"name = '{m['name']}'")}
        assert sorted(versions, key=int) == [v["version"] for v in m["versions"]], f"{m['name']}: numbers differ"
        for v in m["versions"]:
            kv = versions[v["version"]]
            where = f"{m['name']} v{v['version']}"
            assert (kv.current_stage, kv.description, kv.status) == (v["current_stage"], v["description"], "READY"), where
            assert _imported_only(kv.tags) == v["tags"], where
            assert sorted(kv.aliases) == v["aliases"], where
            assert kv.tags[VERSION_TAG] == v["version"], where
            assert kv.tags[CREATED_TAG] == str(v["creation_timestamp"]), where
            assert kv.tags.get(USER_TAG, "") == (v["user_id"] or ""), where
            assert runs[v["run_id"]].info.run_id == kv.run_id, where
            assert kv.source.startswith(f"runs:/{kv.run_id}/"), where
            # The version's own files (keel's registry snapshot) are the model MLflow registered.
            snapshot = _files(client, artifact_uri=client.get_model_version_download_uri(m["name"], v["version"]))
            path = kv.source.split("/", 2)[2] if kv.source.count("/") >= 2 else ""
            run_files = _files(client, run_id=kv.run_id)
            expected = {p[len(path) + 1 :]: f for p, f in run_files.items() if p.startswith(path + "/")}
            assert snapshot == expected and snapshot, where
            assert "MLmodel" in snapshot, where


def _diff(have: dict[str, Any], want: dict[str, Any]) -> str:
    keys = sorted(set(have) | set(want))
    return "; ".join(f"{k}: keel {have.get(k)} mlflow {want.get(k)}" for k in keys if have.get(k) != want.get(k))


def load_json(text: str) -> dict[str, Any]:
    return dict(json.loads(text))
