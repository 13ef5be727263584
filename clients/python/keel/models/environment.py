"""The environment files of a model directory: ``requirements.txt``, ``conda.yaml`` and
``python_env.yaml``, in MLflow's layout so ``mlflow models`` tooling and habits carry over."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Sequence
from typing import Any

import yaml

from keel.exceptions import InvalidArgument

REQUIREMENTS_FILE = "requirements.txt"
CONDA_FILE = "conda.yaml"
PYTHON_ENV_FILE = "python_env.yaml"

# The MLflow-compatible pointer stored in the python_function flavor.
ENV_CONF = {"conda": CONDA_FILE, "virtualenv": PYTHON_ENV_FILE}


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def keel_version() -> str:
    return installed_version("keel-ml") or "0.0.0"


def pinned(package: str) -> str:
    """``package==<installed version>``; a local label such as ``+cpu`` is dropped because
    pip cannot find it on an index (the same choice MLflow makes)."""
    version = installed_version(package)
    if version is None:
        return package
    return f"{package}=={version.split('+', 1)[0]}"


def _read_requirements_file(path: str) -> list[str]:
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


def _as_list(reqs: Sequence[str] | str) -> list[str]:
    # a string is a path to a requirements file, as in MLflow
    return _read_requirements_file(reqs) if isinstance(reqs, str) else [str(r) for r in reqs]


def _pip_of_conda(conda_env: dict[str, Any]) -> list[str]:
    for dep in conda_env.get("dependencies", []):
        if isinstance(dep, dict) and "pip" in dep:
            return [str(r) for r in dep["pip"]]
    return []


def resolve_requirements(
    default: Sequence[str],
    pip_requirements: Sequence[str] | str | None = None,
    extra_pip_requirements: Sequence[str] | str | None = None,
    conda_env: dict[str, Any] | str | None = None,
) -> tuple[list[str], dict[str, Any] | None]:
    """The model's pip requirements and, when given, the user's conda env.

    ``pip_requirements`` replaces the flavor's defaults, ``extra_pip_requirements`` adds to
    them, ``conda_env`` supplies both; at most one of the three may be given.
    """
    given = [
        n
        for n, v in (
            ("pip_requirements", pip_requirements),
            ("extra_pip_requirements", extra_pip_requirements),
            ("conda_env", conda_env),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise InvalidArgument(f"only one of {', '.join(given)} may be given", reason="INVALID_ARGUMENT")
    base = [f"keel-ml=={keel_version()}", *default]
    if conda_env is not None:
        env = conda_env
        if isinstance(env, str):
            with open(env) as f:
                env = yaml.safe_load(f)
        if not isinstance(env, dict):
            raise InvalidArgument(
                "conda_env must be a dict or a path to a YAML file", reason="INVALID_ARGUMENT"
            )
        return _pip_of_conda(env) or base, env
    if pip_requirements is not None:
        return _as_list(pip_requirements), None
    extra = _as_list(extra_pip_requirements) if extra_pip_requirements is not None else []
    out: list[str] = []
    for r in [*base, *extra]:
        if r not in out:
            out.append(r)
    return out, None


def write_environment(
    path: str, requirements: list[str], conda_env: dict[str, Any] | None = None
) -> dict[str, str]:
    """Write the three environment files into ``path``; returns the ``env`` flavor entry."""
    python_version = platform.python_version()
    with open(os.path.join(path, REQUIREMENTS_FILE), "w") as f:
        f.write("\n".join(requirements) + "\n")
    if conda_env is None:
        conda_env = {
            "name": "keel-env",
            "channels": ["conda-forge"],
            "dependencies": [f"python={python_version}", "pip", {"pip": requirements}],
        }
    with open(os.path.join(path, CONDA_FILE), "w") as f:
        yaml.safe_dump(conda_env, f, sort_keys=False)
    python_env = {
        "python": python_version,
        "build_dependencies": [pinned("pip"), pinned("setuptools"), pinned("wheel")],
        "dependencies": [f"-r {REQUIREMENTS_FILE}"],
    }
    with open(os.path.join(path, PYTHON_ENV_FILE), "w") as f:
        yaml.safe_dump(python_env, f, sort_keys=False)
    return dict(ENV_CONF)
