"""A model loaded for serving: the pyfunc model plus who it is (registered name, version) and
what its signature says, with SDK errors turned into the server's domain errors.

Loading goes through ``keel.pyfunc`` and its allowlist of flavor loaders: nothing named by a
model directory is imported. Warming runs one predict on the stored input example so the first
real request does not pay for lazy initialisation (imports, thread pools, JIT).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel_server.common.errors import InvalidArgument, KeelError
from keel_server.common.interceptors import translate
from keel_server.inference import codecs

if TYPE_CHECKING:
    from keel.models.schema import ParamSchema, Schema
    from keel.pyfunc import PyFuncModel

log = logging.getLogger("keel.inference")


@dataclass(frozen=True)
class TensorInfo:
    """One input or output as KServe v2 metadata describes it (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass
class ServedModel:
    pyfunc: PyFuncModel
    model_dir: str
    model_name: str  # "" for runs:/ and paths
    version: int  # 0 for runs:/ and paths
    flavors: list[str] = field(default_factory=list)
    input_schema: Schema | None = None
    output_schema: Schema | None = None
    params_schema: ParamSchema | None = None

    @property
    def version_label(self) -> str:
        return str(self.version) if self.version else ""

    @property
    def platform(self) -> str:
        main = next((f for f in self.flavors if f != "python_function"), "python_function")
        return f"keel_{main}"

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """Signature-checked predict; signature violations and model failures are INVALID_ARGUMENT."""
        try:
            return self.pyfunc.predict(data, params=params)
        except KeelError:
            raise
        except Exception as exc:  # noqa: BLE001 - every model failure becomes a precise status
            raise translate_model_error(exc, self) from None

    def enforce(self, data: Any, params: dict[str, Any] | None) -> tuple[Any, dict[str, Any] | None]:
        """The signature check alone (micro-batching checks each request before merging)."""
        from keel.models.enforcement import enforce_signature

        try:
            return enforce_signature(data, params, self.pyfunc.metadata.signature)
        except Exception as exc:  # noqa: BLE001
            raise translate_model_error(exc, self) from None

    def inputs_metadata(self) -> list[TensorInfo]:
        return _schema_metadata(self.input_schema, "input")

    def outputs_metadata(self) -> list[TensorInfo]:
        return _schema_metadata(self.output_schema, "output")

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs_metadata()]


def _schema_metadata(schema: Schema | None, prefix: str) -> list[TensorInfo]:
    """Unnamed entries are ``input_<i>``; a single unnamed output is ``predictions``."""
    from keel.models.schema import ColSpec, TensorSpec

    if schema is None:
        return []
    out = []
    single_output = prefix == "output" and len(schema.inputs) == 1
    for i, spec in enumerate(schema.inputs):
        name = spec.name if spec.name is not None else ("predictions" if single_output else f"{prefix}_{i}")
        if isinstance(spec, TensorSpec):
            out.append(TensorInfo(name, codecs.datatype_of(spec.dtype), tuple(spec.shape)))
        elif isinstance(spec, ColSpec):
            out.append(TensorInfo(name, codecs.COLUMN_DATATYPES[spec.type.value], (-1,)))
    return out


def translate_model_error(exc: BaseException, model: ServedModel | None = None) -> KeelError:
    """keel's own errors (the SDK's signature mismatch, a missing extra) keep their code and
    reason (``translate()``); anything the model itself raises is INVALID_ARGUMENT, as MLflow's
    scoring server answers 400 for a model that fails on an input."""
    error = translate(exc)
    if error is not None:
        return error
    who = f"model {model.model_name or model.model_dir} version {model.version}" if model else "the model"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return InvalidArgument(
        f"{who} failed on this input: {type(exc).__name__}: {first}; check the input against the model signature",
        reason="MODEL_PREDICT_FAILED",
    )


def load_served_model(model_dir: str, model_name: str, version: int, warm: bool = True) -> ServedModel:
    """Loads a model directory and (optionally) warms it with its input example.

    Raises any exception of the loader; the caller records it as the deployment's FAILED reason.
    """
    from keel.pyfunc import load_model

    pyfunc = load_model(model_dir)
    meta = pyfunc.metadata
    signature = meta.signature
    served = ServedModel(
        pyfunc=pyfunc,
        model_dir=model_dir,
        model_name=model_name,
        version=version,
        flavors=sorted(meta.flavors),
        input_schema=signature.inputs if signature else None,
        output_schema=signature.outputs if signature else None,
        params_schema=signature.params if signature else None,
    )
    if warm:
        example = meta.load_input_example(model_dir)
        if example is not None:
            try:
                pyfunc.predict(example)
            except Exception as exc:  # noqa: BLE001 - reported as the load failure
                raise RuntimeError(
                    f"warm-up predict on the model's input example failed: {type(exc).__name__}: {exc}"
                ) from exc
    return served
