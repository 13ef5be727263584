"""The ``MLmodel`` file and the steps every flavor shares when it saves or logs a model.

A model is a directory holding ``MLmodel`` (YAML: flavors, signature, input example info,
uuid, run id, artifact path, creation time, keel version), the serialized model, the
environment files and an optional input example.  File names and keys are MLflow's.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from keel.exceptions import AlreadyExists, InvalidArgument, NotFound
from keel.models.environment import keel_version, resolve_requirements, write_environment
from keel.models.input_example import load_input_example, save_input_example
from keel.models.schema import ParamSchema, Schema
from keel.models.signature import ModelSignature, infer_signature

MLMODEL_FILE = "MLmodel"
PYFUNC_FLAVOR = "python_function"
CODE_DIR = "code"

# MLflow keys that keel reads into attributes; anything else is kept verbatim in `extra`
# so that re-saving an MLflow model loses nothing.
_KNOWN_KEYS = (
    "artifact_path",
    "run_id",
    "utc_time_created",
    "flavors",
    "signature",
    "saved_input_example_info",
    "model_uuid",
    "keel_version",
    "metadata",
)


class Model:
    """The contents of an ``MLmodel`` file."""

    def __init__(
        self,
        artifact_path: str | None = None,
        run_id: str | None = None,
        utc_time_created: str | None = None,
        flavors: dict[str, dict[str, Any]] | None = None,
        signature: ModelSignature | None = None,
        saved_input_example_info: dict[str, Any] | None = None,
        model_uuid: str | None = None,
        keel_version: str | None = None,
        metadata: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        self.artifact_path = artifact_path
        self.run_id = run_id
        self.utc_time_created = utc_time_created or str(datetime.now(UTC).replace(tzinfo=None))
        self.flavors: dict[str, dict[str, Any]] = flavors or {}
        self.signature = signature
        self.saved_input_example_info = saved_input_example_info
        self.model_uuid = model_uuid or uuid.uuid4().hex
        self.keel_version = keel_version
        self.metadata = metadata
        self.extra = extra

    def add_flavor(self, name: str, **params: Any) -> Model:
        self.flavors[name] = params
        return self

    def get_input_schema(self) -> Schema | None:
        return self.signature.inputs if self.signature else None

    def get_output_schema(self) -> Schema | None:
        return self.signature.outputs if self.signature else None

    def get_params_schema(self) -> ParamSchema | None:
        return self.signature.params if self.signature else None

    def load_input_example(self, path: str) -> Any:
        """The stored input example of the model directory ``path`` (None when there is none)."""
        return load_input_example(path, self.saved_input_example_info, self.get_input_schema())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            artifact_path=self.artifact_path,
            run_id=self.run_id,
            utc_time_created=self.utc_time_created,
            flavors=self.flavors,
            model_uuid=self.model_uuid,
            keel_version=self.keel_version or keel_version(),
        )
        if self.signature is not None:
            out["signature"] = self.signature.to_dict()
        if self.saved_input_example_info is not None:
            out["saved_input_example_info"] = self.saved_input_example_info
        if self.metadata is not None:
            out["metadata"] = self.metadata
        # MLflow omits unset keys; so do we (its reader tolerates both)
        return {k: v for k, v in out.items() if v is not None}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), default_flow_style=False, sort_keys=True)

    def save(self, path: str) -> None:
        """Write to ``path`` (the MLmodel file itself)."""
        with open(path, "w") as f:
            f.write(self.to_yaml())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Model:
        d = dict(d)
        sig = d.pop("signature", None)
        known = {k: d.pop(k) for k in _KNOWN_KEYS if k in d}
        if isinstance(sig, dict):
            known["signature"] = ModelSignature.from_dict(sig)
        if known.get("utc_time_created") is not None:
            known["utc_time_created"] = str(known["utc_time_created"])
        return cls(**known, **d)

    @classmethod
    def load(cls, path: str) -> Model:
        """Read ``path``: a model directory or its MLmodel file."""
        file = os.path.join(path, MLMODEL_FILE) if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise NotFound(
                f"no {MLMODEL_FILE} file in {path!r}: not a model directory", reason="MODEL_NOT_FOUND"
            )
        with open(file) as f:
            data = yaml.safe_load(f)
        if not isinstance(data, dict):
            raise InvalidArgument(f"{file!r} is not a valid {MLMODEL_FILE} file", reason="INVALID_MODEL")
        return cls.from_dict(data)

    def flavor_conf(self, name: str, model_dir: str = "") -> dict[str, Any]:
        conf = self.flavors.get(name)
        if conf is None:
            where = f" at {model_dir!r}" if model_dir else ""
            raise InvalidArgument(
                f"the model{where} has no {name!r} flavor; it has {sorted(self.flavors)}",
                reason="FLAVOR_NOT_FOUND",
            )
        return conf

    def __repr__(self) -> str:
        return f"Model(flavors={sorted(self.flavors)}, run_id={self.run_id!r}, artifact_path={self.artifact_path!r})"


@dataclass
class ModelInfo:
    """What ``log_model`` returns."""

    artifact_path: str
    run_id: str
    model_uri: str
    signature: ModelSignature | None
    utc_time_created: str
    model_uuid: str
    flavors: dict[str, dict[str, Any]] = field(default_factory=dict)
    registered_model_version: int | None = None


# -- steps shared by every flavor's save_model --------------------------------------------


def create_model_dir(path: str | os.PathLike[str]) -> str:
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        # never overwrite: a half-replaced model directory is worse than an error
        raise AlreadyExists(
            f"cannot save a model to {path!r}: the path exists and is not empty", reason="PATH_EXISTS"
        )
    os.makedirs(path, exist_ok=True)
    return path


def copy_code_paths(path: str, code_paths: Sequence[str] | None) -> str | None:
    """Copy user source files/directories into ``<model>/code``; returns the flavor's ``code``."""
    if not code_paths:
        return None
    dest = os.path.join(path, CODE_DIR)
    os.makedirs(dest, exist_ok=True)
    for src in code_paths:
        src = os.path.abspath(src)
        target = os.path.join(dest, os.path.basename(src.rstrip(os.sep)))
        if os.path.isdir(src):
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif os.path.isfile(src):
            shutil.copy2(src, target)
        else:
            raise NotFound(f"code path {src!r} does not exist", reason="CODE_PATH_NOT_FOUND")
    return CODE_DIR


def add_code_to_sys_path(model_dir: str, flavor_conf: dict[str, Any]) -> None:
    """Make the shipped ``code`` directory importable before unpickling needs it."""
    code = flavor_conf.get("code")
    if code:
        code_dir = os.path.join(model_dir, code)
        if os.path.isdir(code_dir) and code_dir not in sys.path:
            sys.path.insert(0, code_dir)


def locate_model(path: str, meta: Model | None) -> tuple[str, Model]:
    """The model directory and its MLmodel for a flavor's ``_load_pyfunc``.

    keel passes both; MLflow's ``mlflow.pyfunc.load_model`` calls ``_load_pyfunc(data_path)``
    alone, with the model directory or its ``data`` subdirectory, when a keel model is loaded
    through MLflow.
    """
    if meta is not None:
        return path, meta
    for candidate in (path, os.path.dirname(os.path.normpath(path))):
        if os.path.isfile(os.path.join(candidate, MLMODEL_FILE)):
            return candidate, Model.load(candidate)
    raise NotFound(f"no {MLMODEL_FILE} file in or above {path!r}", reason="MODEL_NOT_FOUND")


def add_pyfunc_flavor(model: Model, loader_module: str, code: str | None, **conf: Any) -> None:
    model.add_flavor(
        PYFUNC_FLAVOR,
        loader_module=loader_module,
        code=code,
        python_version=platform.python_version(),
        **conf,
    )


def finish_model_dir(
    path: str,
    model: Model,
    *,
    signature: ModelSignature | None,
    input_example: Any,
    predict: Callable[[Any], Any] | None,
    default_requirements: Sequence[str],
    pip_requirements: Sequence[str] | str | None = None,
    extra_pip_requirements: Sequence[str] | str | None = None,
    conda_env: dict[str, Any] | str | None = None,
) -> Model:
    """Input example, signature, environment files and MLmodel: the tail of every save_model.

    Without a signature but with an input example, the signature is inferred from the
    example and, when ``predict`` works on it, from its output (as MLflow does).
    """
    requirements, conda = resolve_requirements(
        default_requirements, pip_requirements, extra_pip_requirements, conda_env
    )
    if input_example is not None:
        model.saved_input_example_info = save_input_example(input_example, path)
        if signature is None:
            signature = _infer_from_example(input_example, predict)
    model.signature = signature
    env = write_environment(path, requirements, conda)
    if PYFUNC_FLAVOR in model.flavors:
        model.flavors[PYFUNC_FLAVOR]["env"] = env
    model.save(os.path.join(path, MLMODEL_FILE))
    return model


def _infer_from_example(example: Any, predict: Callable[[Any], Any] | None) -> ModelSignature | None:
    import logging

    log = logging.getLogger(__name__)
    try:
        inputs = infer_signature(example).inputs
    except InvalidArgument as e:
        log.warning("no signature inferred from the input example: %s", e)
        return None
    output = None
    if predict is not None:
        try:
            output = infer_signature(predict(example)).inputs
        except Exception as e:  # a model that cannot run the example still saves, unsigned on output
            log.warning("could not infer the output schema from the input example: %s", e)
    return ModelSignature(inputs=inputs, outputs=output)


# -- log_model: save locally, upload to the run, optionally register ---------------------

DEFAULT_MODEL_PATH = "model"


def model_path_of(artifact_path: str | None, name: str | None) -> str:
    """The run-relative folder a flavor's ``log_model`` writes to: ``name`` (MLflow 3's keyword)
    or ``artifact_path`` (MLflow 2's), which must agree when both are given; neither: "model"."""
    if artifact_path is not None and name is not None and artifact_path != name:
        raise InvalidArgument(
            f"log_model got artifact_path={artifact_path!r} and name={name!r}: they name the same "
            "folder of the run, so pass one of them (name, as MLflow 3 does)",
            reason="INVALID_ARGUMENT",
        )
    return name if name is not None else artifact_path if artifact_path is not None else DEFAULT_MODEL_PATH


def log_model(
    save: Callable[..., Any],
    artifact_path: str,
    registered_model_name: str | None = None,
    **save_kwargs: Any,
) -> ModelInfo:
    """Save with ``save(path=..., mlmodel=..., **save_kwargs)``, log the directory to the active
    run (starting one if there is none, as MLflow does) and register it when asked."""
    import keel  # the fluent API; imported here so keel.models never imports the SDK at import time

    if not artifact_path or artifact_path.startswith("/") or ".." in artifact_path.split("/"):
        raise InvalidArgument(
            f"artifact_path {artifact_path!r} must be a relative path inside the run",
            reason="INVALID_ARGUMENT",
        )
    run = keel.active_run() or keel.start_run()
    run_id = run.info.run_id
    mlmodel = Model(artifact_path=artifact_path, run_id=run_id)
    with tempfile.TemporaryDirectory(prefix="keel-log-model-") as tmp:
        local = os.path.join(tmp, "model")
        save(path=local, mlmodel=mlmodel, **save_kwargs)
        keel.log_artifacts(local, artifact_path)
    model_uri = f"runs:/{run_id}/{artifact_path}"
    info = ModelInfo(
        artifact_path=artifact_path,
        run_id=run_id,
        model_uri=model_uri,
        signature=mlmodel.signature,
        utc_time_created=mlmodel.utc_time_created,
        model_uuid=mlmodel.model_uuid,
        flavors=mlmodel.flavors,
    )
    if registered_model_name:
        version = keel.register_model(model_uri, registered_model_name)
        info.registered_model_version = int(version.version)
    return info
