"""MLflow Projects for keel: ``keel.projects.run(uri, entry_point, parameters, ...)`` and
``keel run``. See docs/projects.md.

The run is created before the command starts (parameters and source tags logged); the command
runs in the project folder with ``KEEL_TRACKING_URI``, ``KEEL_RUN_ID`` and ``KEEL_EXPERIMENT_ID``
set, so ``keel.start_run()`` inside it continues that run; its output streams to this process's
stdout and is logged as the artifact ``output.log``; the run ends FINISHED or FAILED with the
command's exit status, KILLED on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from keel._transport import get_tracking_uri
from keel.client import Client
from keel.entities import Param, Run, RunStatus
from keel.projects.envs import ENV_MANAGERS, build_virtualenv, check_env_manager
from keel.projects.source import fetch
from keel.projects.spec import ProjectError, load_project

__all__ = ["ENV_MANAGERS", "OUTPUT_ARTIFACT", "ProjectError", "RunInterrupted", "run"]

OUTPUT_ARTIFACT = "output.log"
STOP_GRACE_SECONDS = 10.0

# MLflow's tag names (keel reserves only "keel.*" keys, so MLflow's own are kept for its tools).
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_REPO_URL = "mlflow.source.git.repoURL"
TAG_ENTRY_POINT = "mlflow.project.entryPoint"
TAG_ENV = "mlflow.project.env"
TAG_BACKEND = "mlflow.project.backend"


class RunInterrupted(BaseException):
    """Ctrl-C or SIGTERM stopped a project run; the run is marked KILLED. ``signum`` says which."""

    def __init__(self, signum: int, run: Run) -> None:
        super().__init__(f"project run {run.info.run_id} stopped by signal {signum}")
        self.signum = signum
        self.run = run


class _Signalled(BaseException):
    def __init__(self, signum: int) -> None:
        self.signum = signum


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM interrupts the wait like Ctrl-C does (main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:  # a second SIGTERM while the child is being stopped changes nothing
            raised = True
            raise _Signalled(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Ends the child's whole process group: SIGTERM, then SIGKILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, STOP_GRACE_SECONDS)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    uri: str,
    entry_point: str = "main",
    parameters: Mapping[str, Any] | None = None,
    experiment_name: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    env_manager: str = "local",
    build_only: bool = False,
    version: str | None = None,
    tracking_uri: str | None = None,
) -> Run | None:
    """Runs an MLflow project and returns the finished run (``None`` with ``build_only``, which
    fetches the project, checks the parameters and builds the environment, then stops).

    Raises ``ProjectError`` before anything runs when the project, a parameter or the env manager
    is wrong, and ``RunInterrupted`` (after marking the run KILLED) on Ctrl-C or SIGTERM.
    """
    given = {str(k): str(v) for k, v in (parameters or {}).items()}
    tracking_uri = tracking_uri or get_tracking_uri()
    workdir = Path(tempfile.mkdtemp(prefix="keel-project-"))
    try:
        source = fetch(uri, version, workdir)
        project = load_project(source.root)
        check_env_manager(env_manager, project)
        entry = project.entry_point(entry_point)
        declared, extra = entry.resolve(given)
        command = entry.command_line(declared, extra)
        env = dict(os.environ)
        # "local" is the environment running keel: its interpreter's folder first on PATH, so
        # that `python` in a command is this one (as in an activated virtualenv).
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if env_manager == "virtualenv":
            venv = build_virtualenv(project)
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
            env.pop("PYTHONHOME", None)
        if build_only:
            return None

        client = Client(tracking_uri)
        if experiment_id is None:
            name = experiment_name or os.environ.get("KEEL_EXPERIMENT_NAME") or "Default"
            experiment_id = client.get_or_create_experiment(name).experiment_id
        tags = {
            TAG_SOURCE_NAME: source.name,
            TAG_SOURCE_TYPE: "PROJECT",
            TAG_ENTRY_POINT: entry_point,
            TAG_ENV: env_manager,
            TAG_BACKEND: "local",
        }
        if source.commit:
            tags[TAG_GIT_COMMIT] = source.commit
        if source.repo_url:
            tags[TAG_GIT_REPO_URL] = source.repo_url
        created = client.create_run(experiment_id, tags=tags, run_name=run_name)
        run_id = created.info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in {**declared, **extra}.items()])
        env.update(KEEL_TRACKING_URI=tracking_uri, KEEL_RUN_ID=run_id, KEEL_EXPERIMENT_ID=str(experiment_id))
        try:
            status = _execute(command, project.root, env, workdir / OUTPUT_ARTIFACT, client, created)
        except Exception:
            client.set_terminated(run_id, status=RunStatus.FAILED)  # never left RUNNING
            raise
        client.set_terminated(run_id, status=status)
        return client.get_run(run_id)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _execute(
    command: str, cwd: Path, env: dict[str, str], log_path: Path, client: Client, created: Run
) -> str:
    """Runs the command, teeing its output to stdout and ``log_path``; the run's final status."""
    print(f"keel run {created.info.run_id}: {command}", file=sys.stderr, flush=True)
    signum = 0
    with open(log_path, "wb") as log, _sigterm_raises():
        # Its own process group, so that stopping it reaches whatever the command started.
        child = subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        assert child.stdout is not None
        out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
        try:
            for chunk in iter(child.stdout.readline, b""):
                log.write(chunk)
                if out is not None:
                    out.write(chunk)
                    out.flush()
                else:
                    print(chunk.decode(errors="replace"), end="", flush=True)
            child.wait()
        except KeyboardInterrupt:
            signum = signal.SIGINT
        except _Signalled as stop:
            signum = stop.signum
        except Exception:  # e.g. our stdout closed: the command must not outlive us
            _stop(child)
            raise
        if signum:
            _stop(child)
            log.write(child.stdout.read())
    client.log_artifact(created.info.run_id, str(log_path))
    if signum:
        client.set_terminated(created.info.run_id, status=RunStatus.KILLED)
        raise RunInterrupted(signum, client.get_run(created.info.run_id))
    return RunStatus.FINISHED if child.returncode == 0 else RunStatus.FAILED
