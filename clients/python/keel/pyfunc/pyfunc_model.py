"""``PyFuncModel``: one predict interface over every flavor, with signature enforcement."""

from __future__ import annotations

from typing import Any

from keel.models.enforcement import enforce_column_block, enforce_signature
from keel.models.flavor_registry import PyfuncImpl, load_pyfunc_impl
from keel.models.model import PYFUNC_FLAVOR, Model
from keel.models.uri import resolve_model_uri
from keel.models.utils import ColumnBlock


class PyFuncModel:
    """A loaded model: ``predict(data, params=None)`` checks ``data`` and ``params`` against
    the model's signature (see ``keel.models.enforcement``) and calls the flavor."""

    def __init__(self, metadata: Model, impl: PyfuncImpl, model_dir: str | None = None) -> None:
        self._metadata = metadata
        self._impl = impl
        self.model_dir = model_dir

    @property
    def metadata(self) -> Model:
        """The MLmodel: ``.signature``, ``.run_id``, ``.flavors``, ``.model_uuid``..."""
        return self._metadata

    @property
    def loader_module(self) -> str:
        return str(self._metadata.flavors[PYFUNC_FLAVOR].get("loader_module"))

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        if isinstance(data, ColumnBlock) and not params:
            array = self._checked_array(data)
            if array is not None:
                return self._impl.predict_array(array)  # type: ignore[attr-defined]
        data, params = enforce_signature(data, params, self._metadata.signature)
        return self._impl.predict(data, params=params)

    def _checked_array(self, block: ColumnBlock) -> Any:
        """The block's checked array when the flavor takes arrays in exactly these columns
        (``array_columns``) and the signature has no params to fill; None otherwise."""
        signature = self._metadata.signature
        if (
            getattr(self._impl, "array_columns", None) != block.columns
            or signature is None
            or signature.inputs is None
            or signature.params is not None
        ):
            return None
        return enforce_column_block(block, signature.inputs)

    def get_raw_model(self) -> Any:
        """The flavor's own object (the estimator, the nn.Module, the PythonModel)."""
        return self._impl.raw_model

    def unwrap_python_model(self) -> Any:
        """The ``PythonModel`` instance of a custom pyfunc model."""
        from keel.exceptions import InvalidArgument
        from keel.pyfunc.model import PythonModelImpl

        if not isinstance(self._impl, PythonModelImpl):
            raise InvalidArgument(
                f"unwrap_python_model() needs a PythonModel-based model; this one is loaded by {self.loader_module}",
                reason="FLAVOR_MISMATCH",
            )
        return self._impl.raw_model

    def __repr__(self) -> str:
        return f"PyFuncModel(loader_module={self.loader_module!r}, run_id={self._metadata.run_id!r})"


def load_model(model_uri: str, model_config: dict[str, Any] | None = None) -> PyFuncModel:
    """Load any keel or MLflow model with a python_function flavor, from any model URI.

    Security: this unpickles the model; only load models from a trusted registry or path.
    """
    model_dir = resolve_model_uri(model_uri)
    meta = Model.load(model_dir)
    return PyFuncModel(meta, load_pyfunc_impl(model_dir, meta, model_config), model_dir)
