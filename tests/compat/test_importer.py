"""``keel import mlflow``: a real ``mlflow server`` (the newest 3.x, SQLite, proxied artifacts)
populated with the seed flows by the real ``mlflow`` client, imported into keel, then compared
field by field; imported again (nothing copied twice); interrupted by SIGKILL at chosen points
and resumed to the same end state; bad inputs refused with a clear error and a non-zero exit.

Runs once, on SQLite: the importer writes through keel's public API, whose backends the contract
suite covers.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from importer_helpers import (
    RUN_TAG,
    VERSION_TAG,
    MlflowServer,
    assert_keel_matches,
    counts,
    keel_runs,
    load_json,
    mlflow_server,
    run_in_mlflow_venv,
)
from server_fixtures import ServerHandle, free_port, running_server

import keel
from keel.exceptions import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from keel.importers.mlflow import COMPLETE_TAG, import_from

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

BULK_RUNS = 40
BIG_MIB = 24
IMPORT_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def mlflow_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MlflowServer, dict[str, Any], dict[str, Any]]]:
    """The populated MLflow server, what the populate script made, and the dump (the oracle)."""
    root = tmp_path_factory.mktemp("mlflow-source")
    with mlflow_server(root) as server:
        made = run_in_mlflow_venv("populate", server.url, "--bulk-runs", str(BULK_RUNS), "--big-mib", str(BIG_MIB))
        oracle = run_in_mlflow_venv("dump", server.url)
        yield server, made, oracle


@contextlib.contextmanager
def keel_target(root: Path) -> Iterator[ServerHandle]:
    """A fresh keel (all services in-process, SQLite, local artifacts)."""
    with running_server(f"sqlite:///{root}/keel.db", f"file://{root}/artifacts") as handle:
        yield handle


@pytest.fixture(scope="module")
def keel_cli_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with keel_target(tmp_path_factory.mktemp("keel-cli")) as handle:
        yield handle


def cli_import(keel_uri: str, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """``keel import mlflow ...`` as a process (the way a user runs it, and so it can be killed)."""
    env = {k: v for k, v in os.environ.items() if k != "KEEL_IMPORT_CRASH_AT"}
    if crash_at:
        env["KEEL_IMPORT_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "--tracking-uri", keel_uri, "import", "mlflow", *args],
        capture_output=True, text=True, env=env, timeout=IMPORT_TIMEOUT_S,
    )  # fmt: skip


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr[-4000:]
    return load_json(result.stdout)


def nothing_written(summary: dict[str, Any]) -> bool:
    kinds = ("experiments", "runs", "models", "versions", "aliases")
    return summary["nothing_copied"] and all(
        summary[k]["copied"] == summary[k]["resumed"] == summary[k]["updated"] == 0 for k in kinds
    )


# ---------------------------------------------------------------- pure helpers (no server)
def test_version_sources_map_into_the_run_and_listed_paths_stay_inside() -> None:
    from keel.importers._mlflow_rest import _safe_path
    from keel.importers.mlflow import _bits, _under

    root = "mlflow-artifacts:/3/abc/artifacts"
    assert _under(f"{root}/sk_model", root) == "sk_model"
    assert _under("mlflow-artifacts://mlflow-host:5000/3/abc/artifacts/a/b", root) == "a/b"
    assert _under(f"{root}x/model", root) is None
    assert _under("s3://other-bucket/3/abc/artifacts/m", "s3://bucket/3/abc/artifacts") is None
    assert _under("/srv/ml/3/abc/artifacts/m", "file:///srv/ml/3/abc/artifacts") == "m"
    assert _bits(float("nan")) == _bits(float("nan")) and _bits(-0.0) == _bits(0.0) != _bits(1e-300)
    for bad in ("../etc/passwd", "a/../../b", "/abs", "a//b", "a\\b", ""):
        with pytest.raises(FailedPrecondition):
            _safe_path(bad)
    assert _safe_path("a/b.txt") == "a/b.txt"


# ---------------------------------------------------------------- bad inputs
@contextlib.contextmanager
def not_mlflow() -> Iterator[str]:
    """An HTTP server that is not MLflow (404 text/html for everything)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_error(404, "nothing here")

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_bad_inputs_fail_clearly_and_write_nothing(mlflow_source: Any, keel_cli_target: ServerHandle) -> None:
    server, _, _ = mlflow_source
    uri = keel_cli_target.uri
    client = keel.Client(uri)
    before = counts(client)

    unreachable = f"http://127.0.0.1:{free_port()}"
    result = cli_import(uri, "--from", unreachable, "--no-progress")
    assert result.returncode != 0 and "cannot reach the MLflow server" in result.stderr, result.stderr
    with pytest.raises(Unavailable):
        import_from(unreachable, client=client)

    with not_mlflow() as other:
        result = cli_import(uri, "--from", other)
        assert result.returncode != 0 and "does not answer like an MLflow server" in result.stderr, result.stderr
        with pytest.raises(FailedPrecondition):
            import_from(other, client=client)

    result = cli_import(uri, "--from", server.url, "--experiments", "production-models", "no-such-experiment")
    assert result.returncode != 0 and "no experiment named or numbered 'no-such-experiment'" in result.stderr
    result = cli_import(uri, "--from", server.url, "--models", "no-such-model")
    assert result.returncode != 0 and "no registered model 'no-such-model'" in result.stderr
    with pytest.raises(NotFound):
        import_from(server.url, client=client, models=["fraud-model", "no-such-model"])
    with pytest.raises(InvalidArgument):
        import_from("ftp://mlflow-host", client=client)
    result = cli_import(uri, "import")  # --from missing: argparse's usage error
    assert result.returncode == 2

    assert counts(client) == before  # a named thing that does not exist fails before any write


def test_dry_run_counts_and_writes_nothing(mlflow_source: Any, keel_cli_target: ServerHandle) -> None:
    server, _, oracle = mlflow_source
    client = keel.Client(keel_cli_target.uri)
    before = counts(client)
    summary = summary_of(cli_import(keel_cli_target.uri, "--from", server.url, "--dry-run", "--json"))
    active = [r for r in oracle["runs"] if r["lifecycle_stage"] == "active" and r["experiment_name"] != "old-experiments"]
    assert summary["dry_run"] and summary["runs"]["copied"] == len(active)
    assert summary["models"]["copied"] == len(oracle["models"])
    assert summary["versions"]["copied"] == sum(len(m["versions"]) for m in oracle["models"])
    assert counts(client) == before


# ---------------------------------------------------------------- interrupt, resume, compare, repeat
def test_interrupted_import_resumes_to_the_same_end_state(mlflow_source: Any, keel_cli_target: ServerHandle) -> None:
    server, _, oracle = mlflow_source
    uri = keel_cli_target.uri
    client = keel.Client(uri)

    # 1. Killed after the third run's metric points were written (its artifacts and completion
    #    mark not yet): a half-copied run (or a few: runs are copied four at a time).
    result = cli_import(uri, "--from", server.url, "--json", crash_at="run-metrics:3")
    assert result.returncode == -9, result.stderr[-3000:]
    half = [r for r in keel_runs(client).values() if not r.data.tags.get(COMPLETE_TAG)]
    assert any(r.data.metrics for r in half), "the crash left no half-copied run"

    # 2. Resumed, and killed again while registering: right after keel handed out version 2 of
    #    lab-model, the filler that keeps MLflow's gap (MLflow deleted its version 2).
    result = cli_import(uri, "--from", server.url, "--json", crash_at="version-created:6")
    assert result.returncode == -9, result.stderr[-3000:]
    filler = client.get_model_version("lab-model", 2)
    assert filler.tags[VERSION_TAG] == "3", "the crash did not land on lab-model's filler version"

    # 3. Resumed to the end: the half-copied run finished (no point twice), the filler gone.
    summary = summary_of(cli_import(uri, "--from", server.url, "--json"))
    assert summary["runs"]["resumed"] == summary["runs"]["copied"] == 0  # all runs were done by step 2
    assert summary["versions"]["copied"] > 0
    assert summary["deleted_not_imported"] == {"experiments": 1, "runs": 1}
    assert not summary["warnings"], summary["warnings"]
    assert_keel_matches(client, oracle, include_deleted=False)
    with pytest.raises(NotFound):
        client.get_model_version("lab-model", 2)

    # 4. Again: nothing copied, nothing duplicated.
    end_state = counts(client)
    again = summary_of(cli_import(uri, "--from", server.url, "--json"))
    assert nothing_written(again), again
    assert again["runs"]["skipped"] == end_state["runs"]
    assert counts(client) == end_state

    # 5. The deleted ones, on request: copied as deleted, and only they.
    summary = summary_of(cli_import(uri, "--from", server.url, "--include-deleted", "--json"))
    assert summary["runs"]["copied"] == 2  # the deleted run, and the run of the deleted experiment
    assert summary["experiments"]["copied"] == 1
    assert_keel_matches(client, oracle, include_deleted=True)
    again = summary_of(cli_import(uri, "--from", server.url, "--include-deleted", "--json"))
    assert nothing_written(again), again


def test_half_copied_run_is_finished_not_duplicated(mlflow_source: Any, tmp_path: Path) -> None:
    """A crash right after a run is created, then one between a run's files and its status and
    completion mark: each resume writes only what is missing."""
    server, made, oracle = mlflow_source
    habits = {r["run_name"]: r for r in oracle["runs"] if r["experiment_name"] == "tracking-habits"}
    with keel_target(tmp_path) as target:
        client = keel.Client(target.uri)
        # One run at a time, so that each crash lands in a known run: MLflow lists them by start
        # time and the importer takes the parents first (hyperparam-search, edge-values,
        # failed-run, killed-run, still-running, then the two nested runs).
        args = ("--from", server.url, "--experiments", "tracking-habits", "--json", "--workers", "1")
        assert cli_import(target.uri, *args, crash_at="run-created:1").returncode == -9
        (first,) = keel_runs(client).values()
        assert first.info.run_name == "hyperparam-search" and not first.data.params

        assert cli_import(target.uri, *args, crash_at="run-artifacts:3").returncode == -9
        runs = keel_runs(client)
        failed = runs[habits["failed-run"]["run_id"]]
        assert failed.info.status == "RUNNING" and COMPLETE_TAG not in failed.data.tags

        summary = summary_of(cli_import(target.uri, *args))
        assert (summary["runs"]["resumed"], summary["runs"]["copied"]) == (1, 4), summary["runs"]
        runs = keel_runs(client)
        assert len(runs) == len([r for r in habits.values() if r["lifecycle_stage"] == "active"])
        failed = runs[habits["failed-run"]["run_id"]]
        assert (failed.info.status, failed.info.end_time) == ("FAILED", habits["failed-run"]["end_time"])
        for name in ("hyperparam-search", "edge-values", "failed-run"):
            for key, points in habits[name]["metrics"].items():
                history = client.get_metric_history(runs[habits[name]["run_id"]].info.run_id, key)
                assert len(history) == len(points), f"{name} {key}"
        assert runs[made["edge_run"]].data.tags[COMPLETE_TAG]


# ---------------------------------------------------------------- the Python API, selections
def test_api_selections_then_everything(mlflow_source: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--models`` brings the runs its versions come from; ``--experiments`` takes names and
    ids; a later full import copies only the rest. Reports the throughput."""
    server, _, oracle = mlflow_source
    habits_id = next(e["id"] for e in oracle["experiments"] if e["name"] == "tracking-habits")
    with keel_target(tmp_path) as target:
        client = keel.Client(target.uri)
        first = import_from(server.url, client=client, models=["lab-model"])
        assert (first.models.copied, first.versions.copied, first.runs.copied) == (1, 3, 1)
        imported = {e.name for e in client.search_experiments() if e.tags.get("import.mlflow.experiment_id")}
        assert imported == {"registry-lab"}
        second = import_from(server.url, client=client, experiments=["bulk", habits_id])
        assert second.runs.copied == BULK_RUNS + 7 and second.models.copied == 0
        full = import_from(server.url, client=client)
        assert full.runs.skipped == 1 + BULK_RUNS + 7 and full.runs.copied == 5
        assert (full.models.skipped, full.models.copied) == (1, 3)
        assert_keel_matches(client, oracle, include_deleted=False)
        assert import_from(server.url, client=client).nothing_copied

        # Throughput of one whole import into a fresh keel (reported, not asserted).
        (tmp_path / "fresh").mkdir()
        with keel_target(tmp_path / "fresh") as fresh:
            whole = import_from(server.url, client=keel.Client(fresh.uri))
        with capsys.disabled():
            print(
                f"\nimport throughput: {whole.runs.copied} runs, {whole.artifact_files} files, "
                f"{whole.artifact_bytes / 1e6:.1f} MB, {whole.metric_points} points in {whole.seconds:.1f} s: "
                f"{whole.runs_per_second:.1f} runs/s, {whole.megabytes_per_second:.1f} MB/s"
            )
        assert json.loads(json.dumps(whole.to_dict()))["runs"]["copied"] == whole.runs.copied
        assert RUN_TAG == "import.mlflow.run_id"
