"""``keel run`` / ``keel.projects.run`` against a real in-process keel server: the seed's
salary_model with both env managers, a git project at a version, typed parameters, failures,
and SIGTERM."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from keel import projects
from keel.cli import main as cli_main
from keel.projects import ProjectError
from keel.projects.envs import PARENT_ENV_PTH, READY_MARKER

PROBE_MLPROJECT = """\
name: probe
entry_points:
  main:
    parameters:
      alpha: int
      ratio: {type: float, default: 0.5}
      data: {type: path, default: data.csv}
      source: {type: uri, default: "s3://bucket/key"}
    command: "python show_args.py {alpha} {ratio} {data} {source}"
  fail:
    command: "echo boom; exit 3"
"""
WAIT_SCRIPT = """\
import os, sys, time
from pathlib import Path
Path("child.pid").write_text(str(os.getpid()))
print("ready", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    time.sleep(0.1)
sys.exit(0)
"""


@pytest.fixture()
def probe_project(tmp_path: Path) -> Path:
    root = tmp_path / "probe"
    root.mkdir()
    (root / "MLproject").write_text(PROBE_MLPROJECT, encoding="utf-8")
    (root / "show_args.py").write_text("import json, sys\nprint('ARGS ' + json.dumps(sys.argv[1:]))\n")
    (root / "wait.py").write_text(WAIT_SCRIPT, encoding="utf-8")
    return root


def _output(client: Any, run_id: str, tmp_path: Path) -> str:
    local = client.download_artifacts(run_id, projects.OUTPUT_ARTIFACT, str(tmp_path / f"out-{run_id}"))
    return Path(local).read_text(encoding="utf-8")


def _runs(client: Any, experiment_name: str) -> list[Any]:
    experiment = client.get_experiment_by_name(experiment_name)
    return [] if experiment is None else list(client.search_runs([experiment.experiment_id]))


# ---------------------------------------------------------------------------------------------
# The salary_model example
# ---------------------------------------------------------------------------------------------


def test_the_salary_model_runs_in_the_local_environment(
    tracking: Any, salary_project: Path, experiment_name: str, tmp_path: Path
) -> None:
    run = projects.run(
        str(salary_project),
        parameters={"learning_rate": 0.05},
        experiment_name=experiment_name,
        run_name="salary",
    )
    assert run is not None
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "salary"
    assert run.data.params == {"learning_rate": "0.05"}
    assert run.data.metrics["rmse"] > 0
    tags = run.data.tags
    assert tags["mlflow.source.name"] == str(salary_project)
    assert tags["mlflow.project.entryPoint"] == "main"
    assert tags["mlflow.project.env"] == "local"
    # keel.start_run() in the train script continued this run instead of starting another.
    assert tags["trained_in"] == run.info.run_id
    assert [r.info.run_id for r in _runs(tracking, experiment_name)] == [run.info.run_id]
    assert "trained: lr=0.05" in _output(tracking, run.info.run_id, tmp_path)


def _probe_wheel(folder: Path) -> Path:
    """A tiny pure-Python wheel, so that the virtualenv test installs a real dependency offline."""
    files = {
        "keel_probe_dep/__init__.py": b"MARK = 'installed in the virtualenv'\n",
        "keel_probe_dep-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: keel-probe-dep\nVersion: 0.1\n",
        "keel_probe_dep-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: keel-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("keel_probe_dep-0.1.dist-info/RECORD,,")
    path = folder / "keel_probe_dep-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("keel_probe_dep-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_the_salary_model_runs_in_a_cached_virtualenv(
    tracking: Any, salary_project: Path, experiment_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "env-cache"
    monkeypatch.setenv("KEEL_ENV_CACHE", str(cache))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: what the env lists is local or already present
    wheel = _probe_wheel(salary_project)
    (salary_project / "requirements.txt").write_text(f"numpy\n./{wheel.name}\n", encoding="utf-8")
    (salary_project / "check_env.py").write_text(
        "import sys, keel, keel_probe_dep\nprint('PREFIX', sys.prefix)\nprint('DEP', keel_probe_dep.__file__)\n"
    )

    # A .py entry point without an MLproject entry runs as `python check_env.py`.
    checked = projects.run(
        str(salary_project), "check_env.py", env_manager="virtualenv", experiment_name=experiment_name
    )
    assert checked is not None and checked.info.status == "FINISHED"
    (venv,) = [p for p in cache.iterdir() if p.is_dir()]
    output = _output(tracking, checked.info.run_id, tmp_path)
    assert f"PREFIX {venv}" in output
    assert f"DEP {venv}" in output  # the dependency the file lists, installed in the env itself
    assert list(venv.glob(f"lib/python*/site-packages/{PARENT_ENV_PTH}"))
    built = (venv / READY_MARKER).stat().st_mtime_ns

    run = projects.run(str(salary_project), env_manager="virtualenv", experiment_name=experiment_name)
    assert run is not None and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.env"] == "virtualenv"
    assert run.data.params == {"learning_rate": "0.01"}  # the MLproject default
    assert [p for p in cache.iterdir() if p.is_dir()] == [venv]  # reused, not rebuilt
    assert (venv / READY_MARKER).stat().st_mtime_ns == built


def test_a_python_version_that_is_not_installed_fails_before_anything_runs(
    tracking: Any, salary_project: Path, experiment_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_ENV_CACHE", str(tmp_path / "env-cache"))
    (salary_project / "python_env.yaml").write_text('python: "3.99.1"\ndependencies: []\n', encoding="utf-8")
    with pytest.raises(ProjectError, match=r"Python 3\.99\.1") as caught:
        projects.run(str(salary_project), env_manager="virtualenv", experiment_name=experiment_name)
    assert caught.value.reason == "PYTHON_VERSION_UNAVAILABLE"
    assert _runs(tracking, experiment_name) == []


# ---------------------------------------------------------------------------------------------
# Git sources
# ---------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    command = [
        "git",
        "-c",
        "user.name=keel",
        "-c",
        "user.email=keel@example.com",
        "-c",
        "init.defaultBranch=main",
    ]
    done = subprocess.run([*command, *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def test_a_git_project_runs_at_the_version_asked(
    tracking: Any, salary_project: Path, experiment_name: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / "projects").mkdir(parents=True)
    salary_project.rename(repo / "projects" / "salary")
    _git(repo, "init", "--quiet")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "salary model")
    good = _git(repo, "rev-parse", "HEAD")
    (repo / "projects" / "salary" / "train_model.py").write_text(
        "print('boom', flush=True)\nraise SystemExit(3)\n"
    )
    _git(repo, "commit", "--quiet", "-am", "break it")
    uri = f"file://{repo}#projects/salary"

    run = projects.run(
        uri, version=good, parameters={"learning_rate": "0.1"}, experiment_name=experiment_name
    )
    assert run is not None and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.git.commit"] == good
    assert run.data.tags["mlflow.source.name"] == f"file://{repo}"
    assert "rmse" in run.data.metrics

    # HEAD exits 3: the run is FAILED, with the command's output kept.
    failed = projects.run(uri, experiment_name=experiment_name)
    assert failed is not None and failed.info.status == "FAILED"
    assert failed.data.tags["mlflow.source.git.commit"] == _git(repo, "rev-parse", "HEAD") != good
    assert "boom" in _output(tracking, failed.info.run_id, tmp_path)

    with pytest.raises(ProjectError, match="git checkout"):
        projects.run(uri, version="no-such-branch", experiment_name=experiment_name)
    with pytest.raises(ProjectError, match="not a folder"):
        projects.run(f"file://{repo}#projects/missing", experiment_name=experiment_name)


# ---------------------------------------------------------------------------------------------
# Parameters, failures, env managers
# ---------------------------------------------------------------------------------------------


def test_parameters_are_typed_quoted_and_extras_passed_as_options(
    tracking: Any, probe_project: Path, experiment_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = projects.run(
        str(probe_project),
        parameters={"alpha": 3, "extra": "a b; echo pwned"},
        experiment_name=experiment_name,
    )
    assert run is not None and run.info.status == "FINISHED"
    line = next(x for x in _output(tracking, run.info.run_id, tmp_path).splitlines() if x.startswith("ARGS "))
    args = json.loads(line[len("ARGS ") :])
    # path: made absolute against the caller's folder; uri with a scheme: as given.
    assert args == ["3", "0.5", str(tmp_path / "data.csv"), "s3://bucket/key", "--extra", "a b; echo pwned"]
    assert run.data.params == {
        "alpha": "3",
        "ratio": "0.5",
        "data": str(tmp_path / "data.csv"),
        "source": "s3://bucket/key",
        "extra": "a b; echo pwned",
    }


@pytest.mark.parametrize(
    ("parameters", "reason", "named"),
    [
        ({"alpha": "three"}, "BAD_PARAMETER_TYPE", "alpha"),
        ({"alpha": "1.5"}, "BAD_PARAMETER_TYPE", "alpha"),
        ({"alpha": "1", "ratio": "fast"}, "BAD_PARAMETER_TYPE", "ratio"),
        ({"ratio": "0.1"}, "MISSING_PARAMETER", "alpha"),
    ],
)
def test_a_bad_or_missing_parameter_fails_before_anything_runs(
    tracking: Any,
    probe_project: Path,
    experiment_name: str,
    parameters: dict[str, str],
    reason: str,
    named: str,
) -> None:
    with pytest.raises(ProjectError, match=f"'{named}'") as caught:
        projects.run(str(probe_project), parameters=parameters, experiment_name=experiment_name)
    assert caught.value.reason == reason
    assert tracking.get_experiment_by_name(experiment_name) is None  # no experiment, no run


def test_the_cli_reports_a_bad_parameter_and_creates_no_run(
    tracking: Any, probe_project: Path, experiment_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli_main(["run", str(probe_project), "-P", "alpha=x", "--experiment-name", experiment_name])
    assert rc == 1
    assert "'alpha'" in capsys.readouterr().err
    assert tracking.get_experiment_by_name(experiment_name) is None
    # --build-only checks and builds, and runs nothing.
    assert (
        cli_main(
            ["run", str(probe_project), "-P", "alpha=1", "--build-only", "--experiment-name", experiment_name]
        )
        == 0
    )
    assert tracking.get_experiment_by_name(experiment_name) is None


def test_a_failing_command_marks_the_run_failed(
    tracking: Any, probe_project: Path, experiment_name: str, tmp_path: Path
) -> None:
    run = projects.run(str(probe_project), "fail", experiment_name=experiment_name)
    assert run is not None and run.info.status == "FAILED"
    assert run.info.end_time
    assert _output(tracking, run.info.run_id, tmp_path) == "boom\n"


def test_unsupported_environments_and_entry_points_are_refused(
    tracking: Any, probe_project: Path, experiment_name: str
) -> None:
    with pytest.raises(ProjectError, match="conda") as caught:
        projects.run(
            str(probe_project), parameters={"alpha": 1}, env_manager="conda", experiment_name=experiment_name
        )
    assert caught.value.reason == "CONDA_UNSUPPORTED"
    (probe_project / "conda.yaml").write_text("name: probe\ndependencies: [python=3.11]\n")
    (probe_project / "MLproject").write_text("conda_env: conda.yaml\n" + PROBE_MLPROJECT)
    with pytest.raises(ProjectError, match="python_env") as caught:
        projects.run(str(probe_project), "fail", env_manager="virtualenv", experiment_name=experiment_name)
    assert caught.value.reason == "CONDA_UNSUPPORTED"
    with pytest.raises(ProjectError, match="entry point 'nope'") as caught:
        projects.run(str(probe_project), "nope", experiment_name=experiment_name)
    assert caught.value.reason == "UNKNOWN_ENTRY_POINT"
    assert tracking.get_experiment_by_name(experiment_name) is None


# ---------------------------------------------------------------------------------------------
# SIGTERM
# ---------------------------------------------------------------------------------------------


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """stdout of ``process`` until a line containing ``marker`` (bounded in time)."""
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            raise AssertionError(f"no {marker!r} from keel run (exit {process.poll()}): {seen[-2000:]!r}")
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            seen += chunk
    return seen


def test_sigterm_stops_the_command_and_marks_the_run_killed(
    tracking: Any, projects_server: Any, probe_project: Path, experiment_name: str, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "keel.cli", "--tracking-uri", projects_server.uri, "run", str(probe_project),
               "-e", "wait.py", "--experiment-name", experiment_name]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _read_until(process, b"ready", timeout=60)
        process.send_signal(signal.SIGTERM)
        rc = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert rc == 128 + signal.SIGTERM
    (run,) = _runs(tracking, experiment_name)
    assert run.info.status == "KILLED"
    assert run.data.tags["mlflow.project.entryPoint"] == "wait.py"
    assert "ready" in _output(tracking, run.info.run_id, tmp_path)
    child = int((probe_project / "child.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the command was stopped (and reaped), not left running
