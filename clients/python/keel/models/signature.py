"""Model signatures: what a model takes (inputs, params) and returns (outputs), and inference
of a signature from example data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.exceptions import InvalidArgument
from keel.models.schema import ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec
from keel.models.utils import (
    is_dataframe,
    is_dict_of_arrays,
    is_series,
    is_torch_tensor,
    object_kind,
    tensor_to_numpy,
    to_dataframe,
)


@dataclass
class ModelSignature:
    """Inputs, outputs and params of a model; stored in MLmodel as MLflow stores it."""

    inputs: Schema | None = None
    outputs: Schema | None = None
    params: ParamSchema | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "inputs": self.inputs.to_json() if self.inputs is not None else None,
            "outputs": self.outputs.to_json() if self.outputs is not None else None,
            "params": self.params.to_json() if self.params else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSignature:
        def load(key: str) -> Any:
            raw = d.get(key)
            return json.loads(raw) if isinstance(raw, str) else raw

        inputs, outputs, params = load("inputs"), load("outputs"), load("params")
        return cls(
            inputs=Schema.from_json(json.dumps(inputs)) if inputs else None,
            outputs=Schema.from_json(json.dumps(outputs)) if outputs else None,
            params=ParamSchema.from_json(json.dumps(params)) if params else None,
        )


def _column_type(values: Any, label: str) -> DataType:
    dtype = values.dtype
    kind = getattr(dtype, "kind", "O")
    if kind == "O":
        obj = object_kind(values)
        mapped = {
            "str": DataType.string,
            "bytes": DataType.binary,
            "bool": DataType.boolean,
            "int": DataType.long,
            "float": DataType.double,
            "datetime": DataType.datetime,
        }.get(obj or "")
        if mapped is None:
            what = (
                "only missing values"
                if obj == "empty"
                else "values of mixed types"
                if obj is None
                else f"{obj} values"
            )
            raise InvalidArgument(
                f"cannot infer a type for column {label}: it holds {what}", reason="INVALID_SCHEMA"
            )
        return mapped
    np_dtype = np.dtype(getattr(dtype, "numpy_dtype", dtype))
    if np_dtype.kind == "b":
        return DataType.boolean
    if np_dtype.kind in "iu":
        if np.can_cast(np_dtype, np.int32, casting="safe"):
            return DataType.integer
        if np.can_cast(np_dtype, np.int64, casting="safe"):
            return DataType.long
        return DataType.double
    if np_dtype.kind == "f":
        return DataType.float if np_dtype.itemsize <= 4 else DataType.double
    if np_dtype.kind == "M":
        return DataType.datetime
    if np_dtype.kind == "U":
        return DataType.string
    if np_dtype.kind == "S":
        return DataType.binary
    raise InvalidArgument(f"cannot infer a type for column {label} of dtype {dtype}", reason="INVALID_SCHEMA")


def _tensor_spec(value: Any, name: str | None = None) -> TensorSpec:
    arr = tensor_to_numpy(value)
    # the first dimension is the batch: any size is accepted
    shape = (-1, *arr.shape[1:]) if arr.ndim >= 1 else ()
    return TensorSpec(arr.dtype, shape, name)


def infer_schema(data: Any) -> Schema:
    """A Schema describing ``data``.

    Column-based for DataFrames, Series, dicts of columns, lists of dicts and lists of
    scalars; tensor-based for numpy arrays, torch tensors and dicts of arrays (as MLflow).
    """
    if is_dict_of_arrays(data):
        return Schema([_tensor_spec(v, str(k)) for k, v in data.items()])
    if (isinstance(data, np.ndarray) and data.dtype.kind != "O") or is_torch_tensor(data):
        return Schema([_tensor_spec(data)])
    if is_dataframe(data) or is_series(data) or isinstance(data, dict | list | tuple | np.ndarray):
        df = to_dataframe(data)
        named = all(isinstance(c, str) for c in df.columns)
        specs: list[ColSpec | TensorSpec] = []
        for i, col in enumerate(df.columns):
            label = repr(col) if named else f"#{i}"
            specs.append(
                ColSpec(
                    _column_type(df[col], label),
                    name=col if named else None,
                    # a column with missing values in the example is optional
                    required=not bool(df[col].isna().any()),
                )
            )
        return Schema(specs)
    if isinstance(data, str | bytes | bool | int | float):
        return infer_schema([data])
    raise InvalidArgument(f"cannot infer a schema from {type(data).__name__}", reason="INVALID_SCHEMA")


def _param_type(name: str, value: Any) -> DataType:
    import datetime as dt

    if isinstance(value, np.generic):
        value = value.item()
    for py, t in (
        (bool, DataType.boolean),
        (int, DataType.long),
        (float, DataType.double),
        (str, DataType.string),
        (bytes, DataType.binary),
        (dt.datetime, DataType.datetime),
    ):
        if isinstance(value, py):
            return t
    raise InvalidArgument(
        f"cannot infer a type for param {name!r} from {type(value).__name__}", reason="INVALID_SCHEMA"
    )


def infer_param_schema(params: dict[str, Any]) -> ParamSchema:
    specs = []
    for name, value in params.items():
        if isinstance(value, list | tuple | np.ndarray):
            items = list(value)
            if not items:
                raise InvalidArgument(
                    f"cannot infer a type for param {name!r} from an empty list", reason="INVALID_SCHEMA"
                )
            types = {_param_type(name, v) for v in items}
            if len(types) != 1:
                raise InvalidArgument(
                    f"param {name!r} mixes types {sorted(t.value for t in types)}", reason="INVALID_SCHEMA"
                )
            specs.append(ParamSpec(name, types.pop(), items, shape=(-1,)))
        else:
            specs.append(ParamSpec(name, _param_type(name, value), value))
    return ParamSchema(specs)


def infer_signature(
    model_input: Any = None, model_output: Any = None, params: dict[str, Any] | None = None
) -> ModelSignature:
    """Infer a signature from an example input, its output and the params the model takes.

    >>> infer_signature(df, model.predict(df))          # column-based inputs
    >>> infer_signature(np.zeros((1, 1, 28, 28), np.float32), logits)  # tensor-based
    """
    return ModelSignature(
        inputs=infer_schema(model_input) if model_input is not None else None,
        outputs=infer_schema(model_output) if model_output is not None else None,
        params=infer_param_schema(params) if params else None,
    )
