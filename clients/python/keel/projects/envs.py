"""Environments a project runs in: ``local`` (this interpreter's environment) or ``virtualenv``
built from ``python_env.yaml`` and cached by a hash of what defines it.

A virtualenv gets the dependencies the file lists, installed with pip. The keel SDK the child
needs to log is not reinstalled: a ``.pth`` file in the virtualenv adds this environment's
site-packages *after* the virtualenv's own (see docs/projects.md), so keel and its dependencies
are importable while whatever the file lists takes precedence.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from keel.projects.spec import Project, ProjectError

ENV_MANAGERS = ("local", "virtualenv", "conda")
READY_MARKER = ".keel-env-ready"
PARENT_ENV_PTH = "zz_keel_parent_env.pth"


@dataclass(frozen=True)
class PythonEnv:
    python: str | None
    build_dependencies: list[str] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)


def env_cache_root() -> Path:
    return Path(os.environ.get("KEEL_ENV_CACHE") or Path.home() / ".cache" / "keel" / "envs")


def read_python_env(path: Path) -> PythonEnv:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path} is not valid YAML: {exc}", reason="BAD_PYTHON_ENV") from None
    if not isinstance(data, dict):
        raise ProjectError(
            f"{path} must be a mapping (python, build_dependencies, dependencies)", reason="BAD_PYTHON_ENV"
        )
    lists = {}
    for key in ("build_dependencies", "dependencies"):
        value = data.get(key) or []
        if not isinstance(value, list):
            raise ProjectError(f"{path}: {key} must be a list of pip requirements", reason="BAD_PYTHON_ENV")
        lists[key] = [str(v) for v in value]
    python = None if data.get("python") is None else str(data["python"])
    return PythonEnv(python, lists["build_dependencies"], lists["dependencies"])


def _working_interpreter(name: str, version: str) -> str | None:
    """``name`` on PATH if it runs and is ``version`` (a pyenv shim may name one not installed)."""
    found = shutil.which(name)
    if found is None:
        return None
    try:
        done = subprocess.run(
            [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found if done.returncode == 0 and done.stdout.strip() == version else None


def find_interpreter(wanted: str | None) -> str:
    """An interpreter of the ``major.minor`` that ``wanted`` names: this one, else
    ``pythonX.Y`` on PATH. keel installs no Python, so another patch level only warns."""
    if not wanted:
        return sys.executable
    parts = wanted.split(".")
    have = ".".join(map(str, sys.version_info[:3]))
    candidate: str | None = None
    if parts[:2] == have.split(".")[:2]:
        candidate = sys.executable
    elif len(parts) >= 2:
        candidate = _working_interpreter(f"python{parts[0]}.{parts[1]}", f"{parts[0]}.{parts[1]}")
    if candidate is None:
        raise ProjectError(
            f"python_env.yaml asks for Python {wanted}, and the interpreter available is {have} "
            f"({sys.executable}); keel does not install Python: put python{'.'.join(parts[:2])} on PATH, "
            "change the version in python_env.yaml, or use --env-manager local",
            reason="PYTHON_VERSION_UNAVAILABLE",
            metadata={"wanted": wanted, "available": have},
        )
    if len(parts) >= 3 and candidate == sys.executable and parts[:3] != have.split("."):
        warnings.warn(f"python_env.yaml asks for Python {wanted}; running on {have}", stacklevel=2)
    return candidate


def _requirement_files(env: PythonEnv, base: Path) -> list[Path]:
    """Files named by ``-r file`` lines: part of what defines the environment."""
    out = []
    for req in env.build_dependencies + env.dependencies:
        if req.startswith(("-r ", "--requirement ")):
            out.append(base / req.split(None, 1)[1].strip())
    return out


def _parent_site_dirs() -> list[str]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def _pip_args(requirements: list[str]) -> list[str]:
    """pip arguments for python_env.yaml entries: ``-r file`` is an option and its value."""
    return [arg for req in requirements for arg in (req.split(None, 1) if req.startswith("-") else [req])]


def _pip(python: Path, args: list[str], cwd: Path) -> None:
    done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *args],
                          cwd=cwd, capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise ProjectError(f"pip install {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}",
                           reason="ENV_BUILD_FAILED")  # fmt: skip


def build_virtualenv(project: Project) -> Path:
    """The cached virtualenv for the project's python_env.yaml (built on first use); its folder."""
    env_file = project.python_env
    env = read_python_env(env_file) if env_file else PythonEnv(None)
    base = env_file.parent if env_file else project.root
    interpreter = find_interpreter(env.python)
    digest = hashlib.sha256()
    digest.update(env_file.read_bytes() if env_file else b"")
    for req_file in _requirement_files(env, base):
        if not req_file.is_file():
            raise ProjectError(f"python_env.yaml names requirements file {req_file}, which does not exist",
                               reason="BAD_PYTHON_ENV")  # fmt: skip
        digest.update(req_file.read_bytes())
    digest.update(os.path.realpath(interpreter).encode())
    digest.update("\n".join(_parent_site_dirs()).encode())  # keel comes from this environment
    cache = env_cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    folder = cache / f"venv-{digest.hexdigest()[:24]}"
    with open(cache / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs building the same env wait for each other
        if (folder / READY_MARKER).is_file():
            return folder
        shutil.rmtree(folder, ignore_errors=True)  # a half-built env from a crashed run
        # No pip of its own: the parent environment's pip (importable through the .pth below)
        # installs into the virtualenv; ensurepip only when the parent has none.
        done = subprocess.run(
            [interpreter, "-m", "venv", "--without-pip", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ProjectError(
                f"creating the virtualenv failed: {done.stderr[-2000:]}", reason="ENV_BUILD_FAILED"
            )
        python = folder / "bin" / "python"
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        # Processed after the virtualenv's own site-packages, so what the env lists comes first.
        lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in _parent_site_dirs())
        Path(purelib, PARENT_ENV_PTH).write_text(lines, encoding="utf-8")
        if (
            subprocess.run([str(python), "-c", "import pip"], capture_output=True, check=False).returncode
            != 0
        ):
            subprocess.run([str(python), "-m", "ensurepip", "--default-pip"], capture_output=True, check=True)
        if env.build_dependencies:
            _pip(python, _pip_args(env.build_dependencies), base)
        if env.dependencies:
            _pip(python, _pip_args(env.dependencies), base)
        (folder / READY_MARKER).write_text(str(env_file or ""), encoding="utf-8")
    return folder


def check_env_manager(name: str, project: Project) -> None:
    """Fails, before anything runs, on an env manager keel cannot provide for this project."""
    if name not in ENV_MANAGERS:
        raise ProjectError(
            f"env manager {name!r} is unknown: use local or virtualenv", reason="BAD_ENV_MANAGER"
        )
    if name == "conda":
        found = shutil.which("conda")
        raise ProjectError(
            "the conda env manager is not supported by keel"
            + ("" if found else " (and conda is not installed here)")
            + ": use --env-manager virtualenv with a python_env.yaml, or --env-manager local",
            reason="CONDA_UNSUPPORTED",
        )
    if name == "virtualenv" and project.python_env is None and project.conda_env is not None:
        raise ProjectError(
            f"the project declares conda_env ({project.conda_env.name}); keel's virtualenv manager builds from "
            "a python_env.yaml (MLflow's format: python, build_dependencies, dependencies): declare python_env "
            "in MLproject, or use --env-manager local",
            reason="CONDA_UNSUPPORTED",
        )
    if project.has_docker_env:
        raise ProjectError("docker_env projects are not supported by keel", reason="DOCKER_UNSUPPORTED")
