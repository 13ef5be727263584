"""The allowlist of pyfunc loaders, keyed by flavor name.

An ``MLmodel`` names a ``loader_module`` (MLflow writes ``mlflow.sklearn``, keel writes
``keel.sklearn``).  That string is only looked up in the fixed table below; it is never
imported, so a model directory cannot make keel import arbitrary code by naming it.  (Loading
still unpickles the model: only load models from a trusted source.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from keel.exceptions import InvalidArgument

if TYPE_CHECKING:
    from keel.models.model import Model


class PyfuncImpl(Protocol):
    """What a flavor hands to ``PyFuncModel``: inputs arrive already signature-checked.

    A flavor may also take tables as plain arrays: ``array_columns`` (the column order it
    needs) and ``predict_array(array)``; ``PyFuncModel`` then passes a checked ``ColumnBlock``
    in those columns straight through, with no DataFrame.
    """

    raw_model: Any

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any: ...


PyfuncLoader = Callable[[str, "Model", dict[str, Any] | None], PyfuncImpl]


def _sklearn(model_dir: str, meta: Model, config: dict[str, Any] | None) -> PyfuncImpl:
    from keel.sklearn import _load_pyfunc

    return _load_pyfunc(model_dir, meta, config)


def _pytorch(model_dir: str, meta: Model, config: dict[str, Any] | None) -> PyfuncImpl:
    from keel.pytorch import _load_pyfunc

    return _load_pyfunc(model_dir, meta, config)


def _python_model(model_dir: str, meta: Model, config: dict[str, Any] | None) -> PyfuncImpl:
    from keel.pyfunc.model import _load_pyfunc

    return _load_pyfunc(model_dir, meta, config)


PYFUNC_LOADERS: dict[str, PyfuncLoader] = {
    "sklearn": _sklearn,
    "pytorch": _pytorch,
    "python_model": _python_model,
}

# loader_module values written by keel and by MLflow, mapped to a key of PYFUNC_LOADERS.
LOADER_MODULES: dict[str, str] = {
    "keel.sklearn": "sklearn",
    "mlflow.sklearn": "sklearn",
    "keel.pytorch": "pytorch",
    "mlflow.pytorch": "pytorch",
    "keel.pyfunc.model": "python_model",
    "mlflow.pyfunc.model": "python_model",
}


def pyfunc_loader(meta: Model, model_dir: str = "") -> PyfuncLoader:
    """The allowlisted loader for a model's python_function flavor."""
    from keel.models.model import PYFUNC_FLAVOR

    conf = meta.flavor_conf(PYFUNC_FLAVOR, model_dir)
    loader_module = conf.get("loader_module")
    key = LOADER_MODULES.get(str(loader_module))
    if key is None:
        raise InvalidArgument(
            f"loader_module {loader_module!r} is not one keel can load "
            f"(known: {', '.join(sorted(LOADER_MODULES))}); keel never imports modules named by a model",
            reason="UNSUPPORTED_FLAVOR",
        )
    return PYFUNC_LOADERS[key]


def load_pyfunc_impl(model_dir: str, meta: Model, model_config: dict[str, Any] | None = None) -> PyfuncImpl:
    return pyfunc_loader(meta, model_dir)(model_dir, meta, model_config)
