"""Signature enforcement, applied whenever a model is used through pyfunc.

Rules (every violation is ``InvalidArgument`` with reason ``SIGNATURE_MISMATCH`` naming the
input, what was expected and what was received):

* columns are matched by name (by position when the schema has no names); a missing required
  column is an error, extra columns are dropped;
* column types are converted only where no value can change: int → long, int or long →
  double, float → double (numpy's "safe" casting within numbers); never double → int, and
  never bool ↔ number or number → string;
* tensors are checked strictly: same dtype, same rank, same size in every dimension that is
  not ``-1``; nothing is converted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.exceptions import InvalidArgument
from keel.models.schema import (
    SIGNATURE_MISMATCH,
    ColSpec,
    DataType,
    ParamSchema,
    Schema,
    TensorSpec,
    convert_param,
)
from keel.models.utils import ColumnBlock, is_dataframe, is_torch_tensor, object_kind, to_dataframe, to_numpy

if TYPE_CHECKING:
    import pandas as pd

    from keel.models.signature import ModelSignature

_log = logging.getLogger(__name__)

REASON = SIGNATURE_MISMATCH


def _mismatch(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason=REASON)


def enforce_signature(
    data: Any, params: dict[str, Any] | None, signature: ModelSignature | None
) -> tuple[Any, dict[str, Any] | None]:
    """Enforce inputs and params of one predict call; returns what the model should receive."""
    if signature is None:
        return data, params
    if signature.inputs is not None:
        data = enforce_schema(data, signature.inputs)
    return data, enforce_params(params, signature.params)


def enforce_schema(data: Any, schema: Schema) -> Any:
    if schema.is_tensor_spec():
        return _enforce_tensors(data, schema)
    return _enforce_columns(data, schema)


# -- columns -----------------------------------------------------------------------------


def _numeric_plan(schema: Schema) -> tuple[list[str], list[np.dtype]] | None:
    """(names, numpy dtypes) when every input is a named, required int/long/float/double
    column: such tables take the vectorised fast path below."""
    numeric = (DataType.integer, DataType.long, DataType.float, DataType.double)
    names, targets = [], []
    for s in schema.inputs:
        if not (isinstance(s, ColSpec) and s.required and isinstance(s.name, str) and s.type in numeric):
            return None
        names.append(s.name)
        targets.append(s.type.to_numpy())
    return names, targets


def _fast_numeric(df: pd.DataFrame, plan: tuple[list[str], list[np.dtype]]) -> pd.DataFrame | None:
    """The checked table without per-column pandas work, or None to take the general path
    (which also produces every error message). Same rules: safe widening only."""
    names, targets = plan
    columns = df.columns
    if len(columns) == len(names) and list(columns) == names:
        sub = df
    elif set(names).issubset(columns) and not columns.has_duplicates:
        sub = df[names]
    else:
        return None
    dtypes = sub.dtypes.tolist()
    same = True
    for src, target in zip(dtypes, targets, strict=True):
        if not isinstance(src, np.dtype) or src.kind not in ("iu" if target.kind == "i" else "iuf"):
            return None
        if not np.can_cast(src, target, casting="safe"):
            return None
        same = same and src == target
    if same:
        return sub.copy()  # the model gets its own table, as on the general path
    return sub.astype(dict(zip(names, targets, strict=True)))


def enforce_column_block(block: ColumnBlock, schema: Schema) -> np.ndarray | None:
    """The checked array of a numeric block whose columns are the schema's inputs in order and
    share one type, safely widened to it; None sends the block down the DataFrame path (other
    names or order, mixed column types, non-numeric data), which also writes every error."""
    plan = _numeric_plan(schema)
    if plan is None:
        return None
    names, targets = plan
    target = targets[0]
    arr = block.array
    if block.columns != names or arr.ndim != 2 or any(t != target for t in targets):
        return None
    if arr.dtype.kind not in ("iu" if target.kind == "i" else "iuf") or not np.can_cast(
        arr.dtype, target, "safe"
    ):
        return None
    return np.array(arr, dtype=target)  # the model gets its own copy, as on the DataFrame path


def _enforce_columns(data: Any, schema: Schema) -> pd.DataFrame:
    import pandas as pd

    df = to_dataframe(data)
    plan = _numeric_plan(schema)
    if plan is not None:
        fast = _fast_numeric(df, plan)
        if fast is not None:
            return fast
    specs = [s for s in schema.inputs if isinstance(s, ColSpec)]
    if schema.has_input_names():
        present = set(df.columns)
        missing = [s.name for s in specs if s.required and s.name not in present]
        if missing:
            expected = [s.name for s in specs]
            raise _mismatch(
                f"missing input column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(m) for m in missing)}: the model expects columns {expected}, "
                f"got {list(df.columns)}"
            )
        # schema order, extras dropped: models such as sklearn pipelines check column order
        out = {s.name: _convert_column(str(s.name), df[s.name], s.type) for s in specs if s.name in present}
        return pd.DataFrame(out, index=df.index)
    if len(df.columns) != len(specs):
        raise _mismatch(
            f"the model expects {len(specs)} input column{'s' if len(specs) != 1 else ''} "
            f"(matched by position), got {len(df.columns)}"
        )
    out_pos = {
        col: _convert_column(f"#{i}", df[col], spec.type)
        for i, (col, spec) in enumerate(zip(df.columns, specs, strict=True))
    }
    return pd.DataFrame(out_pos, index=df.index)


def _describe(values: pd.Series) -> str:
    if values.dtype.kind == "O":
        kind = object_kind(values)
        return {"str": "string", "bytes": "binary", None: "mixed objects"}.get(kind, str(kind))
    return str(values.dtype)


def _convert_column(name: str, values: pd.Series, expected: DataType) -> pd.Series:
    def fail(hint: str = "") -> InvalidArgument:
        return _mismatch(f"input column {name!r}: expected {expected.value}, got {_describe(values)}{hint}")

    dtype = values.dtype
    kind = getattr(dtype, "kind", "O")
    if expected in (DataType.string, DataType.binary):
        want = "str" if expected is DataType.string else "bytes"
        if kind == "O" and object_kind(values) in (want, "empty"):
            return values
        if expected is DataType.string and (kind == "U" or str(dtype) in ("string", "str")):
            return values
        if expected is DataType.binary and kind == "S":
            return values
        raise fail()
    if expected is DataType.datetime:
        if kind == "M":
            return values
        if kind == "O" and object_kind(values) in ("datetime", "empty"):
            import pandas as pd

            return pd.to_datetime(values)
        raise fail()

    if kind == "O":
        # object columns (e.g. from lists of dicts with None) take their element kind
        obj = object_kind(values)
        if obj == "bool" and expected is DataType.boolean:
            return values.astype(bool)
        if obj in ("int", "float"):
            try:
                src = np.asarray(values.tolist()).dtype
            except (TypeError, ValueError):
                raise fail() from None
        else:
            raise fail()
    else:
        # pandas nullable dtypes (Int64, Float64, boolean) expose their numpy dtype
        src = np.dtype(getattr(dtype, "numpy_dtype", dtype))
    target = expected.to_numpy()
    if expected is DataType.boolean:
        if src.kind == "b":
            return values.astype(bool) if kind != "O" else values
        raise fail()
    allowed_kinds = "iu" if target.kind == "i" else "iuf"
    if src.kind in allowed_kinds and np.can_cast(src, target, casting="safe"):
        if getattr(dtype, "numpy_dtype", None) is not None and values.isna().any():
            raise fail(" with missing values")
        return values.astype(target)
    hint = ""
    if target.kind == "i" and src.kind == "f" and values.isna().any():
        hint = " (the column has missing values, which pandas stores as floats; declare it double)"
    raise fail(hint)


# -- tensors -----------------------------------------------------------------------------


def _dtype_and_shape(value: Any) -> tuple[np.dtype | str, tuple[int, ...]]:
    if is_torch_tensor(value):
        name = str(value.dtype).removeprefix("torch.")
        try:
            return np.dtype(name), tuple(value.shape)
        except TypeError:
            return name, tuple(value.shape)
    return value.dtype, tuple(value.shape)


def _check_tensor(label: str, value: Any, spec: TensorSpec) -> Any:
    if not (isinstance(value, np.ndarray) or is_torch_tensor(value)):
        value = to_numpy(value)
    dtype, shape = _dtype_and_shape(value)
    if dtype != spec.dtype:
        raise _mismatch(
            f"input tensor {label}: expected dtype {spec.dtype}, got {dtype} (tensor dtypes are not converted)"
        )
    if len(shape) != len(spec.shape) or any(e not in (-1, g) for e, g in zip(spec.shape, shape, strict=True)):
        raise _mismatch(f"input tensor {label}: expected shape {spec.shape} (-1 = any size), got {shape}")
    return value


def _enforce_tensors(data: Any, schema: Schema) -> Any:
    specs = [s for s in schema.inputs if isinstance(s, TensorSpec)]
    if schema.has_input_names():
        if isinstance(data, dict) or is_dataframe(data):
            present = list(data.keys())
            missing = [s.name for s in specs if s.name not in present]
            if missing:
                raise _mismatch(
                    f"missing input tensor{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(repr(m) for m in missing)}: the model expects {[s.name for s in specs]}, got {present}"
                )
            return {s.name: _check_tensor(repr(s.name), data[s.name], s) for s in specs}
        if len(specs) == 1:
            return _check_tensor(repr(specs[0].name), data, specs[0])
        raise _mismatch(
            f"the model expects named tensors {[s.name for s in specs]}, got one {type(data).__name__}"
        )
    if len(specs) == 1:
        return _check_tensor("#0", data, specs[0])
    if not isinstance(data, list | tuple) or len(data) != len(specs):
        raise _mismatch(
            f"the model expects {len(specs)} tensors (matched by position), got {type(data).__name__}"
        )
    return [_check_tensor(f"#{i}", v, s) for i, (v, s) in enumerate(zip(data, specs, strict=True))]


# -- params ------------------------------------------------------------------------------


def enforce_params(params: dict[str, Any] | None, schema: ParamSchema | None) -> dict[str, Any] | None:
    """Params checked against the signature's params; unknown ones are dropped with a warning."""
    if schema is None:
        if params:
            _log.warning("the model signature declares no params; ignoring %s", sorted(params))
        return None
    params = dict(params or {})
    known = {p.name for p in schema}
    extra = sorted(set(params) - known)
    if extra:
        _log.warning("ignoring params not in the model signature: %s", extra)
    return {p.name: convert_param(p, params[p.name]) if p.name in params else p.default for p in schema}
