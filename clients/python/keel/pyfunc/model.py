"""Custom Python models: ``PythonModel`` subclasses saved with their artifacts and code.

Layout (MLflow's): ``python_model.pkl`` (cloudpickle), ``artifacts/<file>`` and, in the
python_function flavor, ``python_model``, ``artifacts: {name: {path, uri}}``, ``config``.
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.exceptions import InvalidArgument
from keel.models import serialization
from keel.models.environment import pinned
from keel.models.model import (
    PYFUNC_FLAVOR,
    Model,
    ModelInfo,
    add_code_to_sys_path,
    add_pyfunc_flavor,
    copy_code_paths,
    create_model_dir,
    finish_model_dir,
    locate_model,
    model_path_of,
)
from keel.models.model import log_model as _log_model
from keel.models.signature import ModelSignature
from keel.models.uri import resolve_model_uri

LOADER_MODULE = "keel.pyfunc.model"
PICKLE_FILE = "python_model.pkl"
ARTIFACTS_DIR = "artifacts"


@dataclass
class PythonModelContext:
    """Handed to ``load_context``: ``artifacts[name]`` is a local path inside the loaded model."""

    artifacts: dict[str, str] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)


class PythonModel:
    """Base class of custom models.  Override ``predict``; override ``load_context`` to read
    artifacts (weights, vocabularies) once at load time."""

    def load_context(self, context: PythonModelContext) -> None:  # noqa: B027 - optional hook
        """Called once after loading, before the first predict."""

    def predict(
        self, context: PythonModelContext, model_input: Any, params: dict[str, Any] | None = None
    ) -> Any:
        raise NotImplementedError(
            "PythonModel subclasses must implement predict(context, model_input, params=None)"
        )


class PythonModelImpl:
    """Calls the user's predict with the arguments it declares (context first, params if
    accepted), so MLflow-style and keel-style subclasses both work."""

    def __init__(self, python_model: Any, context: PythonModelContext) -> None:
        self.raw_model = python_model
        self.context = context
        names = list(inspect.signature(python_model.predict).parameters)
        self._wants_context = bool(names) and names[0] != "model_input"
        self._wants_params = "params" in names

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        args = [self.context, data] if self._wants_context else [data]
        if self._wants_params:
            return self.raw_model.predict(*args, params=params)
        return self.raw_model.predict(*args)


def _copy_artifacts(path: str, artifacts: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    if not artifacts:
        return out
    os.makedirs(os.path.join(path, ARTIFACTS_DIR), exist_ok=True)
    for name, uri in artifacts.items():
        src = resolve_model_uri(uri)  # the same resolver as models: any local or remote URI
        rel = os.path.join(ARTIFACTS_DIR, os.path.basename(os.path.normpath(src)))
        if any(a["path"] == rel for a in out.values()):
            rel = os.path.join(ARTIFACTS_DIR, name, os.path.basename(os.path.normpath(src)))
        dest = os.path.join(path, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, dest)
        else:
            shutil.copy2(src, dest)
        out[name] = {"path": rel, "uri": str(uri)}
    return out


def save_model(
    path: str,
    python_model: PythonModel | None = None,
    artifacts: dict[str, str] | None = None,
    code_paths: Sequence[str] | None = None,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    pip_requirements: Sequence[str] | str | None = None,
    extra_pip_requirements: Sequence[str] | str | None = None,
    conda_env: dict[str, Any] | str | None = None,
    metadata: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    mlmodel: Model | None = None,
) -> Model:
    """Save a ``PythonModel`` to the directory ``path``.

    ``artifacts={"name": uri}`` are copied into the model; at load time
    ``context.artifacts["name"]`` is their local path.  ``code_paths`` ships source files the
    model imports (otherwise local modules are pickled by value).
    """
    if python_model is None or not callable(getattr(python_model, "predict", None)):
        raise InvalidArgument(
            "python_model must be a PythonModel instance with a predict method", reason="INVALID_ARGUMENT"
        )
    path = create_model_dir(path)
    model = mlmodel or Model()
    model.metadata = metadata if metadata is not None else model.metadata
    code = copy_code_paths(path, code_paths)
    saved_artifacts = _copy_artifacts(path, artifacts or {})
    serialization.dump(
        python_model, os.path.join(path, PICKLE_FILE), by_value_for=[python_model], by_value=not code
    )
    conf: dict[str, Any] = {
        "python_model": PICKLE_FILE,
        "cloudpickle_version": (pinned("cloudpickle").split("==") + [""])[1],
    }
    if saved_artifacts:
        conf["artifacts"] = saved_artifacts
    if model_config:
        conf["config"] = model_config
    add_pyfunc_flavor(model, LOADER_MODULE, code, **conf)

    def predict(example: Any) -> Any:
        return _load_pyfunc(path, model, None).predict(example)

    return finish_model_dir(
        path,
        model,
        signature=signature,
        input_example=input_example,
        predict=predict,
        default_requirements=[pinned("cloudpickle")],
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        conda_env=conda_env,
    )


def log_model(
    artifact_path: str | None = None,
    python_model: PythonModel | None = None,
    artifacts: dict[str, str] | None = None,
    code_paths: Sequence[str] | None = None,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    registered_model_name: str | None = None,
    pip_requirements: Sequence[str] | str | None = None,
    extra_pip_requirements: Sequence[str] | str | None = None,
    conda_env: dict[str, Any] | str | None = None,
    metadata: dict[str, Any] | None = None,
    model_config: dict[str, Any] | None = None,
    name: str | None = None,
) -> ModelInfo:
    """Save a ``PythonModel`` into the active run (starting one if needed) under ``name``
    (MLflow 3's keyword; ``artifact_path`` is MLflow 2's, default "model") and optionally
    register it as ``registered_model_name``."""
    return _log_model(
        save_model,
        model_path_of(artifact_path, name),
        registered_model_name,
        python_model=python_model,
        artifacts=artifacts,
        code_paths=code_paths,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        conda_env=conda_env,
        metadata=metadata,
        model_config=model_config,
    )


def _load_pyfunc(
    model_dir: str, meta: Model | None = None, model_config: dict[str, Any] | None = None
) -> PythonModelImpl:
    model_dir, meta = locate_model(model_dir, meta)
    conf = meta.flavor_conf(PYFUNC_FLAVOR, model_dir)
    add_code_to_sys_path(model_dir, conf)
    python_model = serialization.load(os.path.join(model_dir, conf.get("python_model", PICKLE_FILE)))
    artifacts = {
        name: os.path.join(model_dir, spec["path"] if isinstance(spec, dict) else spec)
        for name, spec in (conf.get("artifacts") or {}).items()
    }
    context = PythonModelContext(
        artifacts=artifacts, model_config={**(conf.get("config") or {}), **(model_config or {})}
    )
    python_model.load_context(context)
    return PythonModelImpl(python_model, context)
