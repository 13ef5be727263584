"""The ``MLproject`` file as MLflow reads it: entry points, typed parameters, command templates.

Everything here is checked before anything runs: a missing required parameter, a value of the
wrong type or a command naming an undeclared parameter fails with a message that names it.
"""

from __future__ import annotations

import os
import shlex
import string
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keel.exceptions import InvalidArgument

MLPROJECT_FILE = "MLproject"
PARAMETER_TYPES = ("string", "float", "int", "path", "uri")


class ProjectError(InvalidArgument):
    """A project that cannot run as asked: bad MLproject, parameter, source or environment."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str = "string"
    default: str | None = None

    def resolve(self, value: str | None) -> str:
        """The value to substitute and log, checked against the declared type."""
        if value is None:
            if self.default is None:
                raise ProjectError(
                    f"parameter '{self.name}' is required (no default in MLproject): pass -P {self.name}=VALUE",
                    reason="MISSING_PARAMETER",
                    metadata={"parameter": self.name},
                )
            value = self.default
        if self.type == "float":
            try:
                float(value)
            except ValueError:
                raise _bad_type(self, value, "a number such as 0.01") from None
        elif self.type == "int":
            try:
                int(value)
            except ValueError:
                raise _bad_type(self, value, "a whole number such as 10") from None
        elif self.type == "path":
            # MLflow's rule: a local path is made absolute against the caller's directory.
            parsed = urllib.parse.urlparse(value)
            if parsed.scheme == "file":
                value = parsed.path
            elif parsed.scheme and len(parsed.scheme) > 1:  # "C:" style drive letters are paths
                raise _bad_type(self, value, "a local file path (keel does not download path parameters)")
            return os.path.abspath(value)
        elif self.type == "uri":
            if not urllib.parse.urlparse(value).scheme:
                return os.path.abspath(value)  # a relative local path becomes absolute, as in MLflow
        return value


def _bad_type(param: Parameter, value: str, expected: str) -> ProjectError:
    return ProjectError(
        f"parameter '{param.name}' is declared {param.type} but got {value!r}: pass {expected}",
        reason="BAD_PARAMETER_TYPE",
        metadata={"parameter": param.name, "type": param.type, "value": value},
    )


@dataclass(frozen=True)
class EntryPoint:
    name: str
    command: str
    parameters: dict[str, Parameter] = field(default_factory=dict)

    def resolve(self, given: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """(declared parameters with their final values, extra parameters passed as --name value)."""
        declared = {name: p.resolve(given.get(name)) for name, p in self.parameters.items()}
        extra = {k: v for k, v in given.items() if k not in self.parameters}
        return declared, extra

    def command_line(self, declared: dict[str, str], extra: dict[str, str]) -> str:
        """The command with ``{param}`` replaced by shell-quoted values, extras appended."""
        for _, name, _, _ in string.Formatter().parse(self.command):
            if name is not None and name not in declared:
                raise ProjectError(
                    f"the command of entry point '{self.name}' uses {{{name}}}, which is not one of its "
                    f"parameters ({', '.join(sorted(declared)) or 'none'}): declare it in MLproject",
                    reason="UNDECLARED_PARAMETER",
                    metadata={"parameter": name, "entry_point": self.name},
                )
        command = self.command.format(**{k: shlex.quote(v) for k, v in declared.items()})
        tail = " ".join(f"--{shlex.quote(k)} {shlex.quote(v)}" for k, v in extra.items())
        return f"{command} {tail}".rstrip()


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    entry_points: dict[str, EntryPoint]
    python_env: Path | None  # the python_env.yaml to build a virtualenv from, if any
    conda_env: Path | None
    has_docker_env: bool = False

    def entry_point(self, name: str) -> EntryPoint:
        found = self.entry_points.get(name)
        if found is not None:
            return found
        # MLflow: a .py or .sh file of the project runs directly, every parameter as --name value.
        script = self.root / name
        if name.endswith((".py", ".sh")) and script.is_file() and _inside(self.root, script):
            runner = "python" if name.endswith(".py") else os.environ.get("SHELL", "bash")
            return EntryPoint(name, f"{shlex.quote(runner)} {shlex.quote(name)}")
        known = ", ".join(sorted(self.entry_points)) or "none"
        raise ProjectError(
            f"entry point '{name}' is neither in MLproject (entry points: {known}) nor a .py or .sh file "
            f"of the project at {self.root}",
            reason="UNKNOWN_ENTRY_POINT",
            metadata={"entry_point": name},
        )


def _inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _parameter(entry: str, name: str, spec: Any) -> Parameter:
    if isinstance(spec, str):  # shorthand: "alpha: float"
        kind, default = spec, None
    elif isinstance(spec, dict):
        kind = str(spec.get("type", "string"))
        default = None if spec.get("default") is None else str(spec["default"])
    else:
        raise ProjectError(
            f"parameter '{name}' of entry point '{entry}' must be a type name or {{type: ..., default: ...}}",
            reason="BAD_MLPROJECT",
        )
    if kind not in PARAMETER_TYPES:
        raise ProjectError(
            f"parameter '{name}' of entry point '{entry}' has type '{kind}'; "
            f"the types are {', '.join(PARAMETER_TYPES)}",
            reason="BAD_MLPROJECT",
        )
    return Parameter(name, kind, default)


def _env_file(root: Path, value: Any, key: str) -> Path:
    path = root / str(value)
    if not _inside(root, path) or not path.is_file():
        raise ProjectError(
            f"MLproject's {key} names {str(value)!r}, which is not a file of the project",
            reason="BAD_MLPROJECT",
        )
    return path


def load_project(root: Path) -> Project:
    """The project in ``root``: its MLproject if present, else MLflow's defaults (entry points are
    the project's .py/.sh files; python_env.yaml or conda.yaml if present)."""
    mlproject = root / MLPROJECT_FILE
    if not mlproject.is_file():
        python_env = root / "python_env.yaml"
        conda = root / "conda.yaml"
        return Project(
            root,
            root.name,
            {},
            python_env if python_env.is_file() else None,
            conda if conda.is_file() else None,
        )
    try:
        data = yaml.safe_load(mlproject.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProjectError(f"{mlproject} is not valid YAML: {exc}", reason="BAD_MLPROJECT") from None
    if not isinstance(data, dict):
        raise ProjectError(
            f"{mlproject} must be a mapping (name, python_env, entry_points)", reason="BAD_MLPROJECT"
        )
    envs = [k for k in ("python_env", "conda_env", "docker_env") if k in data]
    if len(envs) > 1:
        raise ProjectError(f"MLproject declares {' and '.join(envs)}: keep one", reason="BAD_MLPROJECT")
    entry_points: dict[str, EntryPoint] = {}
    for name, spec in (data.get("entry_points") or {}).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("command"), str):
            raise ProjectError(f"entry point '{name}' of MLproject needs a command", reason="BAD_MLPROJECT")
        params = {str(p): _parameter(str(name), str(p), s) for p, s in (spec.get("parameters") or {}).items()}
        entry_points[str(name)] = EntryPoint(str(name), spec["command"], params)
    return Project(
        root=root,
        name=str(data.get("name") or root.name),
        entry_points=entry_points,
        python_env=_env_file(root, data["python_env"], "python_env") if "python_env" in data else None,
        conda_env=_env_file(root, data["conda_env"], "conda_env") if "conda_env" in data else None,
        has_docker_env="docker_env" in data,
    )
