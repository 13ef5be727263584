"""Where a project comes from: a local folder, or a git repository cloned into a temp folder
(``https://…``, ``file://…``, ``ssh://…``, ``git@…``), each with an optional ``#subdirectory``."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from keel.projects.spec import ProjectError

_GIT_URI = re.compile(r"^(https?://|file://|ssh://|git://|git@)")


@dataclass(frozen=True)
class Source:
    root: Path  # the project folder (the subdirectory, when one was given)
    name: str  # what mlflow.source.name records: the folder or the repository URL
    commit: str | None  # the commit that ran, when the source is a git repository
    repo_url: str | None


def _split_subdirectory(uri: str) -> tuple[str, str]:
    base, _, subdirectory = uri.partition("#")
    if subdirectory and (os.path.isabs(subdirectory) or ".." in Path(subdirectory).parts):
        raise ProjectError(
            f"subdirectory {subdirectory!r} of {uri!r} must be a relative path inside the project",
            reason="BAD_PROJECT_URI",
        )
    return base, subdirectory


def _git(args: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
        )
    except FileNotFoundError:
        raise ProjectError("git is needed to run a project from a repository, and it is not installed",
                           reason="GIT_MISSING") from None  # fmt: skip
    if done.returncode != 0:
        raise ProjectError(f"git {' '.join(args)} failed: {done.stderr.strip()[-2000:]}", reason="GIT_FAILED")
    return done.stdout.strip()


def _local_commit(folder: Path) -> str | None:
    """The HEAD commit when a local folder lies in a git work tree (recorded, never required)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=30, check=False
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _subfolder(root: Path, subdirectory: str, uri: str) -> Path:
    folder = (root / subdirectory) if subdirectory else root
    if not folder.is_dir():
        raise ProjectError(
            f"{uri!r}: {subdirectory!r} is not a folder of the project", reason="BAD_PROJECT_URI"
        )
    return folder


def fetch(uri: str, version: str | None, workdir: Path) -> Source:
    """The project at ``uri``; a git repository is cloned under ``workdir`` at ``version``."""
    base, subdirectory = _split_subdirectory(uri)
    if _GIT_URI.match(base):
        clone = Path(tempfile.mkdtemp(prefix="project-", dir=workdir))
        _git(["clone", "--quiet", base, str(clone)])
        if version:
            _git(["checkout", "--quiet", version], cwd=clone)
        commit = _git(["rev-parse", "HEAD"], cwd=clone)
        return Source(_subfolder(clone, subdirectory, uri), base, commit, base)
    if version:
        raise ProjectError(f"--version {version!r} needs a git repository URI, and {base!r} is a local folder",
                           reason="BAD_PROJECT_URI")  # fmt: skip
    folder = Path(base).expanduser().resolve()
    if not folder.is_dir():
        raise ProjectError(
            f"project {base!r} is neither a local folder nor a git URI (https://, file://, ssh://, git@)",
            reason="BAD_PROJECT_URI",
        )
    project = _subfolder(folder, subdirectory, uri)
    return Source(project, str(project), _local_commit(project), None)
