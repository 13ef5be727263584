"""Fixtures of the MLproject tests: one in-process keel server (temp-file SQLite, local artifact
root) for the folder; projects are a client-side feature, so SQLite is the only backend needed."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_fixtures import ServerHandle, running_server

SALARY_MODEL = Path(__file__).parent / "salary_model"


@pytest.fixture(scope="session")
def projects_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    root: Path = tmp_path_factory.mktemp("keel-projects")
    with running_server(f"sqlite:///{root}/keel.db", f"file://{root}/artifacts") as handle:
        yield handle


@pytest.fixture()
def tracking(projects_server: ServerHandle, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A keel.Client of the shared server, also the default tracking URI of keel.projects.run."""
    import keel

    monkeypatch.setenv("KEEL_TRACKING_URI", projects_server.uri)
    keel.set_tracking_uri(projects_server.uri)
    yield keel.Client(projects_server.uri)


@pytest.fixture()
def experiment_name() -> str:
    return f"projects-{uuid.uuid4().hex[:12]}"


@pytest.fixture()
def salary_project(tmp_path: Path) -> Path:
    """A copy of the salary_model example whose python_env.yaml asks for this interpreter's
    Python (the checked-in file names one version; CI may run another)."""
    target = tmp_path / "salary_model"
    shutil.copytree(SALARY_MODEL, target)
    env_file = target / "python_env.yaml"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    env_file.write_text(
        "\n".join(
            f'python: "{version}"' if line.startswith("python:") else line
            for line in env_file.read_text(encoding="utf-8").splitlines()
        )
        + "\n",
        encoding="utf-8",
    )
    return target
