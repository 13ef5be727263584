"""Schema types of a model signature: column specs, tensor specs and parameter specs.

The JSON forms are MLflow's (``{"type": "double", "name": "x", "required": true}``,
``{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}``) so that an
``MLmodel`` written by either tool reads in the other.  Only numpy is imported here: pandas
and torch stay out of ``import keel``.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from keel.exceptions import InvalidArgument


class DataType(Enum):
    """Column and parameter types (MLflow's names, so signatures are interchangeable)."""

    boolean = "boolean"
    integer = "integer"  # 32-bit
    long = "long"  # 64-bit
    float = "float"  # 32-bit
    double = "double"  # 64-bit
    string = "string"
    binary = "binary"
    datetime = "datetime"

    def __str__(self) -> str:
        return self.value

    def to_numpy(self) -> np.dtype:
        return np.dtype(_NUMPY_OF[self])

    @classmethod
    def parse(cls, value: DataType | str) -> DataType:
        if isinstance(value, DataType):
            return value
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(t.value for t in cls)
            raise InvalidArgument(
                f"unsupported data type {value!r}: expected one of {known}", reason="INVALID_SCHEMA"
            ) from None


_NUMPY_OF: dict[DataType, Any] = {
    DataType.boolean: np.bool_,
    DataType.integer: np.int32,
    DataType.long: np.int64,
    DataType.float: np.float32,
    DataType.double: np.float64,
    DataType.string: np.object_,
    DataType.binary: np.object_,
    DataType.datetime: "datetime64[ns]",
}


@dataclass(frozen=True)
class ColSpec:
    """One named (or positional, when ``name`` is None) column of a given type."""

    type: DataType
    name: str | None = None
    required: bool = True

    def __init__(self, type: DataType | str, name: str | None = None, required: bool = True) -> None:
        object.__setattr__(self, "type", DataType.parse(type))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "required", required)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type.value}
        if self.name is not None:
            out["name"] = self.name
        out["required"] = self.required
        return out

    def __repr__(self) -> str:
        opt = "" if self.required else " (optional)"
        return (
            f"{self.name!r}: {self.type.value}{opt}" if self.name is not None else f"{self.type.value}{opt}"
        )


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of a numpy dtype and shape; ``-1`` marks a free dimension (usually the batch)."""

    dtype: np.dtype
    shape: tuple[int, ...]
    name: str | None = None

    def __init__(self, dtype: Any, shape: Sequence[int], name: str | None = None) -> None:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise InvalidArgument(f"unsupported tensor dtype {dtype!r}", reason="INVALID_SCHEMA") from None
        if dt.kind == "O":
            # object tensors cannot be checked for anything; MLflow refuses them too
            raise InvalidArgument(
                "tensor dtype 'object' is not supported; use a column schema", reason="INVALID_SCHEMA"
            )
        object.__setattr__(self, "dtype", dt)
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        object.__setattr__(self, "name", name)

    @property
    def type(self) -> np.dtype:  # MLflow's attribute name
        return self.dtype

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "tensor",
            "tensor-spec": {"dtype": str(self.dtype), "shape": list(self.shape)},
        }
        if self.name is not None:
            out["name"] = self.name
        return out

    def __repr__(self) -> str:
        prefix = f"{self.name!r}: " if self.name is not None else ""
        return f"{prefix}Tensor({self.dtype}, {self.shape})"


def _spec_from_dict(d: dict[str, Any]) -> ColSpec | TensorSpec:
    if d.get("type") == "tensor":
        ts = d.get("tensor-spec") or {}
        return TensorSpec(ts.get("dtype"), ts.get("shape") or (), d.get("name"))
    # MLflow before 2.9 wrote "optional" instead of "required"
    required = d.get("required", not d.get("optional", False))
    return ColSpec(d.get("type", ""), d.get("name"), bool(required))


@dataclass
class Schema:
    """An ordered list of specs: all ColSpec (column-based) or all TensorSpec (tensor-based)."""

    inputs: list[ColSpec | TensorSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.inputs = list(self.inputs)
        if not self.inputs:
            raise InvalidArgument("a schema needs at least one column or tensor", reason="INVALID_SCHEMA")
        kinds = {type(s) for s in self.inputs}
        if len(kinds) > 1:
            raise InvalidArgument("a schema cannot mix columns and tensors", reason="INVALID_SCHEMA")
        names = [s.name for s in self.inputs]
        if any(n is None for n in names) and not all(n is None for n in names):
            raise InvalidArgument(
                "either every input of a schema is named or none is", reason="INVALID_SCHEMA"
            )
        dup = {n for n in names if n is not None and names.count(n) > 1}
        if dup:
            raise InvalidArgument(f"duplicate names in schema: {sorted(dup)}", reason="INVALID_SCHEMA")

    def __iter__(self) -> Iterator[ColSpec | TensorSpec]:
        return iter(self.inputs)

    def __len__(self) -> int:
        return len(self.inputs)

    def is_tensor_spec(self) -> bool:
        return isinstance(self.inputs[0], TensorSpec)

    def has_input_names(self) -> bool:
        return self.inputs[0].name is not None

    def input_names(self) -> list[str | int]:
        return [s.name if s.name is not None else i for i, s in enumerate(self.inputs)]

    def required_input_names(self) -> list[str | int]:
        return [
            s.name if s.name is not None else i
            for i, s in enumerate(self.inputs)
            if not isinstance(s, ColSpec) or s.required
        ]

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.inputs]

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls([_spec_from_dict(d) for d in json.loads(text)])

    def __repr__(self) -> str:
        return "Schema([" + ", ".join(repr(s) for s in self.inputs) + "])"


@dataclass(frozen=True)
class ParamSpec:
    """An inference parameter with a type and a default; ``shape=(-1,)`` for a list value."""

    name: str
    dtype: DataType
    default: Any
    shape: tuple[int, ...] | None = None

    def __init__(
        self, name: str, dtype: DataType | str, default: Any, shape: Sequence[int] | None = None
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", DataType.parse(dtype))
        object.__setattr__(self, "shape", tuple(shape) if shape is not None else None)
        if self.shape not in (None, (-1,)):
            raise InvalidArgument(f"param {name!r}: shape must be None or (-1,)", reason="INVALID_SCHEMA")
        # the default must itself satisfy the spec, so it is validated once here
        object.__setattr__(self, "default", convert_param(self, default) if default is not None else None)

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:  # JSON-safe: numpy scalars to Python, datetimes to ISO text
            v = v.item() if isinstance(v, np.generic) else v
            return v.isoformat() if hasattr(v, "isoformat") else v

        default = [plain(v) for v in self.default] if isinstance(self.default, list) else plain(self.default)
        return {
            "name": self.name,
            "type": self.dtype.value,
            "default": default,
            "shape": list(self.shape) if self.shape is not None else None,
        }


@dataclass
class ParamSchema:
    params: list[ParamSpec] = field(default_factory=list)

    def __iter__(self) -> Iterator[ParamSpec]:
        return iter(self.params)

    def to_dict(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.params]

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ParamSchema:
        return cls(
            [ParamSpec(d["name"], d["type"], d.get("default"), d.get("shape")) for d in json.loads(text)]
        )


# -- param values ------------------------------------------------------------------------
# Here rather than in enforcement.py: a ParamSpec checks its own default with them, and the
# schema types come before enforcement (which imports them), so no import goes back up.
SIGNATURE_MISMATCH = "SIGNATURE_MISMATCH"


def _param_mismatch(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason=SIGNATURE_MISMATCH)


def convert_param(spec: ParamSpec, value: Any) -> Any:
    """One param value checked against its spec (lists for ``shape=(-1,)``)."""
    if spec.shape == (-1,):
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, list | tuple):
            raise _param_mismatch(
                f"param {spec.name!r}: expected a list of {spec.dtype.value}, got {type(value).__name__}"
            )
        return [_convert_scalar_param(spec, v) for v in value]
    return _convert_scalar_param(spec, value)


def _convert_scalar_param(spec: ParamSpec, value: Any) -> Any:
    t = spec.dtype
    ok: Any = None
    if isinstance(value, np.generic):
        value = value.item()
    if t is DataType.boolean and isinstance(value, bool):
        ok = value
    elif t in (DataType.integer, DataType.long) and isinstance(value, int) and not isinstance(value, bool):
        if t is DataType.integer and not -(2**31) <= value < 2**31:
            raise _param_mismatch(f"param {spec.name!r}: {value} does not fit a 32-bit integer")
        ok = value
    elif (
        t in (DataType.float, DataType.double)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        ok = float(value)  # int → double is the same safe widening as for columns
    elif t is DataType.string and isinstance(value, str):
        ok = value
    elif t is DataType.binary and isinstance(value, bytes):
        ok = value
    elif t is DataType.datetime and isinstance(value, _dt.datetime | _dt.date):
        ok = value
    elif t is DataType.datetime and isinstance(value, str):
        try:
            ok = _dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    if ok is None:
        raise _param_mismatch(f"param {spec.name!r}: expected {t.value}, got {type(value).__name__} {value!r}")
    return ok
