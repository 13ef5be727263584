"""The PyTorch flavor: a whole ``nn.Module``.

Layout (MLflow's): ``data/model.pth`` written by ``torch.save(model)`` and
``data/pickle_module_info.txt``; flavor ``pytorch`` with ``model_data: data`` and
``pytorch_version``.  Classes defined in the training script or in other local (not
installed) modules are pickled by value, so the model loads without that source; pass
``code_paths`` to ship the source instead.  MLflow's safe ``pt2`` export (``data/model.pt2``)
loads too.

Security: loading a ``model.pth`` unpickles it; only load models from a trusted source.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.exceptions import InvalidArgument, NotFound
from keel.extras import require
from keel.models.environment import pinned
from keel.models.model import (
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
from keel.models.serialization import pickle_local_code_by_value
from keel.models.signature import ModelSignature
from keel.models.uri import resolve_model_uri
from keel.models.utils import is_dataframe, to_numpy

if TYPE_CHECKING:
    import torch
else:  # without torch: MissingExtra "torch is not installed (...): pip install 'keel-ml[pytorch]'"
    torch = require("torch", "pytorch", purpose="needed by keel.pytorch and to load PyTorch models")

FLAVOR_NAME = "pytorch"
LOADER_MODULE = "keel.pytorch"
DATA_DIR = "data"
MODEL_FILE = "model.pth"
EXPORTED_FILE = "model.pt2"
PICKLE_INFO_FILE = "pickle_module_info.txt"
# Names a pickle_module_info.txt may hold.  All are read with the standard unpickler; the name
# is checked, never imported.
_KNOWN_PICKLE_MODULES = ("cloudpickle", "pickle", "mlflow.pytorch.pickle_module")


def save_model(
    pytorch_model: torch.nn.Module,
    path: str,
    code_paths: Sequence[str] | None = None,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    pip_requirements: Sequence[str] | str | None = None,
    extra_pip_requirements: Sequence[str] | str | None = None,
    conda_env: dict[str, Any] | str | None = None,
    metadata: dict[str, Any] | None = None,
    mlmodel: Model | None = None,
    serialization_format: str | None = None,
) -> Model:
    """Save a whole ``nn.Module`` to the directory ``path``.

    ``serialization_format`` (MLflow's keyword): ``"pickle"`` (keel's default) writes the module
    with ``torch.save`` and cloudpickle; ``"pt2"`` writes a ``torch.export`` graph
    (``data/model.pt2``, no pickle, batch dimension dynamic), traced with ``input_example`` (an
    array or tensor, or a list/tuple of them), which is then required.
    """
    import cloudpickle

    if not isinstance(pytorch_model, torch.nn.Module):
        raise InvalidArgument(
            f"pytorch_model must be a torch.nn.Module, got {type(pytorch_model).__name__}",
            reason="INVALID_ARGUMENT",
        )
    fmt = _checked_format(serialization_format)
    example_tensors = _export_inputs(input_example) if fmt == FORMAT_PT2 else None
    path = create_model_dir(path)
    model = mlmodel or Model()
    model.metadata = metadata if metadata is not None else model.metadata
    code = copy_code_paths(path, code_paths)
    data_dir = os.path.join(path, DATA_DIR)
    os.makedirs(data_dir)
    if example_tensors is not None:
        _export(pytorch_model, example_tensors, os.path.join(data_dir, EXPORTED_FILE))
    else:
        with pickle_local_code_by_value(list(pytorch_model.modules()), enabled=not code):
            torch.save(pytorch_model, os.path.join(data_dir, MODEL_FILE), pickle_module=cloudpickle)
        with open(os.path.join(data_dir, PICKLE_INFO_FILE), "w") as f:
            f.write("cloudpickle")
    model.add_flavor(FLAVOR_NAME, model_data=DATA_DIR, pytorch_version=str(torch.__version__), code=code)
    add_pyfunc_flavor(model, LOADER_MODULE, code, data=DATA_DIR, pickle_module_name="cloudpickle")
    return finish_model_dir(
        path,
        model,
        signature=signature,
        input_example=input_example,
        predict=TorchImpl(pytorch_model).predict,
        default_requirements=[pinned("torch"), pinned("cloudpickle"), pinned("numpy")],
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        conda_env=conda_env,
    )


FORMAT_PICKLE = "pickle"
FORMAT_PT2 = "pt2"
SERIALIZATION_FORMATS = (FORMAT_PICKLE, FORMAT_PT2)


def _checked_format(serialization_format: str | None) -> str:
    fmt = FORMAT_PICKLE if serialization_format is None else serialization_format
    if fmt not in SERIALIZATION_FORMATS:
        raise InvalidArgument(
            f"serialization_format {serialization_format!r} is not one keel.pytorch writes: use "
            "'pickle' (torch.save of the whole module, the default) or 'pt2' (a torch.export graph, "
            "traced with input_example)",
            reason="UNSUPPORTED_FORMAT",
            field="serialization_format",
        )
    return fmt


def _export_inputs(input_example: Any) -> tuple[torch.Tensor, ...]:
    """The example tensors ``torch.export`` traces the module with."""
    values = input_example if isinstance(input_example, list | tuple) else (input_example,)
    if input_example is None or not values or not all(isinstance(v, np.ndarray | torch.Tensor) for v in values):
        raise InvalidArgument(
            "serialization_format='pt2' traces the module with input_example: pass a numpy array or "
            "torch tensor (or a list/tuple of them), or use serialization_format='pickle'",
            reason="INVALID_ARGUMENT",
            field="input_example",
        )
    return tuple(torch.as_tensor(v) for v in values)


def _export(pytorch_model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], target: str) -> None:
    from torch.export import Dim

    # The batch dimension stays dynamic. torch.export fixes a dimension of size 1 as a constant,
    # so a one-row example is traced as two identical rows.
    inputs = tuple(torch.cat([t, t]) if t.dim() and t.shape[0] == 1 else t for t in inputs)
    dynamic = tuple({0: Dim.AUTO} if t.dim() else None for t in inputs)
    # traced in eval mode: the graph is what pyfunc and serving run (dropout off)
    was_training = pytorch_model.training
    pytorch_model.eval()
    try:
        program = torch.export.export(pytorch_model, inputs, dynamic_shapes=dynamic)
    except Exception as exc:  # torch raises many types for untraceable modules
        raise InvalidArgument(
            f"torch.export could not trace the module with input_example ({type(exc).__name__}: {exc}); "
            "use serialization_format='pickle'",
            reason="EXPORT_FAILED",
        ) from exc
    finally:
        pytorch_model.train(was_training)
    torch.export.save(program, target)


def log_model(
    pytorch_model: torch.nn.Module,
    artifact_path: str | None = None,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    registered_model_name: str | None = None,
    pip_requirements: Sequence[str] | str | None = None,
    extra_pip_requirements: Sequence[str] | str | None = None,
    conda_env: dict[str, Any] | str | None = None,
    code_paths: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    name: str | None = None,
    serialization_format: str | None = None,
) -> ModelInfo:
    """Save the module into the active run (starting one if needed) under ``name`` (MLflow 3's
    keyword; ``artifact_path`` is MLflow 2's, default "model") and, with
    ``registered_model_name``, register it in the same call. ``serialization_format``: see
    ``save_model``."""
    return _log_model(
        save_model,
        model_path_of(artifact_path, name),
        registered_model_name,
        pytorch_model=pytorch_model,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        conda_env=conda_env,
        code_paths=code_paths,
        metadata=metadata,
        serialization_format=serialization_format,
    )


def _load_from_dir(model_dir: str, meta: Model, device: str | torch.device | None) -> torch.nn.Module:
    conf = meta.flavor_conf(FLAVOR_NAME, model_dir)
    add_code_to_sys_path(model_dir, conf)
    data = os.path.join(model_dir, conf.get("model_data", DATA_DIR))
    map_location = torch.device(device) if device is not None else torch.device("cpu")
    if os.path.isdir(data):
        exported = os.path.join(data, EXPORTED_FILE)
        if os.path.isfile(exported):
            # torch.export archives hold a graph, not pickles
            return torch.export.load(exported).module().to(map_location)
        info_file = os.path.join(data, PICKLE_INFO_FILE)
        if os.path.isfile(info_file):
            with open(info_file) as f:
                name = f.read().strip()
            if name not in _KNOWN_PICKLE_MODULES:
                raise InvalidArgument(
                    f"the model at {model_dir!r} names pickle module {name!r}; keel reads {_KNOWN_PICKLE_MODULES}",
                    reason="UNSUPPORTED_FORMAT",
                )
        data = os.path.join(data, MODEL_FILE)
    if not os.path.isfile(data):
        raise NotFound(f"no PyTorch model file at {data!r}", reason="MODEL_NOT_FOUND")
    # weights_only=False: a whole module is a pickle (see the module docstring on trust)
    return torch.load(data, map_location=map_location, weights_only=False)


def load_model(model_uri: str, device: str | torch.device | None = None) -> torch.nn.Module:
    """The ``nn.Module`` saved at ``model_uri``, on CPU unless ``device`` is given.

    Security: this unpickles the model; only load models from a trusted source.
    """
    model_dir = resolve_model_uri(model_uri)
    return _load_from_dir(model_dir, Model.load(model_dir), device)


def _to_output(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, tuple | list):
        return [_to_output(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_output(v) for k, v in value.items()}
    return value


class TorchImpl:
    """pyfunc for a module: numpy / DataFrame in, ``torch.no_grad()``, numpy out."""

    def __init__(self, raw_model: torch.nn.Module) -> None:
        self.raw_model = raw_model

    def _device(self) -> torch.device:
        first = next(self.raw_model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def _tensor(self, value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.to(self._device())
        # DataFrames become float32, like MLflow's pytorch pyfunc: the usual weight dtype
        arr = value.to_numpy(dtype=np.float32) if is_dataframe(value) else to_numpy(value)
        if not arr.flags.writeable:  # pandas copy-on-write hands out read-only views
            arr = arr.copy()
        return torch.as_tensor(arr, device=self._device())

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        kwargs = params or {}
        with torch.no_grad():
            if isinstance(data, dict):
                out = self.raw_model(**{k: self._tensor(v) for k, v in data.items()}, **kwargs)
            elif (
                isinstance(data, list)
                and data
                and all(isinstance(v, np.ndarray | torch.Tensor) for v in data)
            ):
                out = self.raw_model(*[self._tensor(v) for v in data], **kwargs)
            else:
                out = self.raw_model(self._tensor(data), **kwargs)
        return _to_output(out)


def _load_pyfunc(
    model_dir: str, meta: Model | None = None, model_config: dict[str, Any] | None = None
) -> TorchImpl:
    model_dir, meta = locate_model(model_dir, meta)
    module = _load_from_dir(model_dir, meta, (model_config or {}).get("device"))
    try:
        module.eval()  # pyfunc is for inference: dropout off, batch-norm statistics frozen
    except NotImplementedError:
        pass  # a torch.export graph (pt2) keeps the mode it was traced in (eval, see _export)
    return TorchImpl(module)


def __getattr__(name: str) -> Any:
    """``keel.pytorch.autolog()``, as MLflow users call it, is ``keel.autologging.pytorch.autolog``.
    Autologging sits above the flavors (it logs models with this one), so it is imported on
    first use, never when this module is: an upward import of a flavor, listed in
    tests/unit/test_import_rules.py."""
    if name == "autolog":
        from keel.autologging.pytorch import autolog

        return autolog
    raise AttributeError(f"module 'keel.pytorch' has no attribute {name!r}")
