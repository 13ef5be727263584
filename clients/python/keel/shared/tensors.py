"""The tensor codec of keel's inference wire formats, one copy for the SDK and the server.

* KServe v2 datatypes ⇄ numpy dtypes (little-endian; BYTES is an object array);
* raw tensor bytes: row-major, little-endian; a BYTES element is a 4-byte little-endian length
  then its bytes;
* typed ``InferTensorContents`` fields (KServe v2 ``contents``);
* the keys of MLflow's scoring JSON (``dataframe_split``, ...).

Every decode checks its bounds before it allocates or reshapes: a known datatype, no negative
dimension, exactly as many bytes (or BYTES elements, or typed values) as the shape needs, and no
BYTES length prefix running past the end. A violation is ``keel.exceptions.InvalidArgument``
saying which tensor, what it needed and what it got.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from keel.exceptions import InvalidArgument

# KServe v2 datatype → numpy dtype.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_KIND_SIZE = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items() if name != "BYTES"}

# Which typed ``InferTensorContents`` field carries each datatype (FP16 travels raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

# MLflow's scoring JSON holds exactly one of these (plus ``params``).
SCORING_JSON_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def datatype_or_none(dtype: np.dtype) -> str | None:
    """The KServe v2 datatype of a numpy dtype (strings, bytes and objects are BYTES); None if none."""
    if dtype.kind in "OUS":
        return "BYTES"
    return _BY_KIND_SIZE.get((dtype.kind, dtype.itemsize))


def datatype_of(dtype: np.dtype) -> str:
    """The KServe v2 datatype of a numpy dtype; INVALID_ARGUMENT when it has none."""
    found = datatype_or_none(dtype)
    if found is None:
        raise InvalidArgument(f"numpy dtype {dtype} has no KServe v2 datatype", reason="UNSUPPORTED_DATATYPE")
    return found


def _check_datatype(label: str, datatype: str, role: str) -> np.dtype:
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidArgument(
            f"{role} {label}: unknown datatype {datatype!r}; use one of {', '.join(DATATYPES)}",
            reason="INVALID_DATATYPE",
        )
    return dtype


def _check_shape(label: str, shape: Sequence[int], role: str) -> int:
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"{role} {label}: shape {list(shape)} has a negative dimension", reason="INVALID_SHAPE")
    return math.prod(shape)


def decode_bytes_elements(label: str, raw: bytes, role: str = "input") -> list[bytes]:
    """BYTES raw contents: each element is a 4-byte little-endian length then its bytes."""
    out: list[bytes] = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise InvalidArgument(
                f"{role} {label}: BYTES raw contents are truncated (a 4-byte length prefix is cut off at byte {pos})",
                reason="INVALID_TENSOR_DATA",
            )
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > end:
            raise InvalidArgument(
                f"{role} {label}: BYTES element of {size} bytes runs past the end of the raw contents",
                reason="INVALID_TENSOR_DATA",
            )
        out.append(raw[pos : pos + size])
        pos += size
    return out


def encode_bytes_elements(values: np.ndarray) -> bytes:
    """BYTES raw contents of an array of bytes or strings (strings are sent as UTF-8)."""
    parts: list[bytes] = []
    for v in values.reshape(-1):
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def array_from_raw(
    label: str, datatype: str, shape: Sequence[int], raw: bytes, role: str = "input"
) -> np.ndarray:
    """A numpy array from raw tensor bytes, checking that the size matches the shape.

    ``label`` names the tensor in messages (``input 'x'``: ``role`` then ``label``)."""
    dtype = _check_datatype(label, datatype, role)
    count = _check_shape(label, shape, role)
    if datatype == "BYTES":
        elements = decode_bytes_elements(label, raw, role)
        if len(elements) != count:
            raise InvalidArgument(
                f"{role} {label}: shape {list(shape)} needs {count} BYTES elements, got {len(elements)}",
                reason="INVALID_TENSOR_DATA",
            )
        arr = np.empty(count, dtype=object)
        arr[:] = elements
        return arr.reshape(tuple(shape))
    if len(raw) != count * dtype.itemsize:
        raise InvalidArgument(
            f"{role} {label}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes "
            f"({count} elements of {dtype.itemsize}), got {len(raw)}",
            reason="INVALID_TENSOR_DATA",
        )
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def array_from_contents(
    label: str, datatype: str, shape: Sequence[int], contents: Any, role: str = "input"
) -> np.ndarray:
    """A numpy array from the typed ``InferTensorContents`` fields of a KServe v2 tensor."""
    dtype = _check_datatype(label, datatype, role)
    count = _check_shape(label, shape, role)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidArgument(
            f"{role} {label}: {datatype} has no typed contents field; send it in raw_input_contents",
            reason="INVALID_TENSOR_DATA",
        )
    values = list(getattr(contents, field))
    if len(values) != count:
        raise InvalidArgument(
            f"{role} {label}: shape {list(shape)} needs {count} values in contents.{field}, got {len(values)}",
            reason="INVALID_TENSOR_DATA",
        )
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = values
        return arr.reshape(tuple(shape))
    return np.asarray(values, dtype=dtype).reshape(tuple(shape))


def array_to_raw(arr: np.ndarray) -> tuple[str, list[int], bytes]:
    """(datatype, shape, raw bytes) of an array (strings become BYTES)."""
    datatype = datatype_of(arr.dtype)
    if datatype == "BYTES":
        return datatype, list(arr.shape), encode_bytes_elements(arr)
    return datatype, list(arr.shape), np.ascontiguousarray(arr, dtype=DATATYPES[datatype]).tobytes()
