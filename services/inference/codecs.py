"""Wire formats of the inference service, shared by every protocol (keel Predict, KServe v2,
MLflow HTTP scoring): no gRPC and no HTTP here, only bytes/text ⇄ model inputs and outputs.

* Tensors: KServe v2 datatypes ⇄ numpy, raw little-endian row-major bytes (BYTES elements are
  a 4-byte little-endian length then the bytes), typed ``contents`` fields: the codec shared
  with the SDK (``keel.shared.tensors``), re-exported here.
* MLflow scoring JSON: exactly one of ``dataframe_split``, ``dataframe_records``, ``instances``,
  ``inputs`` (plus ``params``); the legacy bare split orient ``{"columns": ..., "data": ...}``
  (what ``curl`` examples written for MLflow 1.x send) is read as ``dataframe_split``.
* CSV with a header row.
* Model outputs → JSON-compatible values (``{"predictions": ...}``) or named arrays.

Every malformed input raises ``InvalidArgument`` saying what was wrong and how to fix it (the
tensor codec raises the SDK's, which reaches the caller through the interceptor's ``translate()``).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.models.utils import ColumnBlock
from keel.shared.tensors import SCORING_JSON_KEYS as JSON_INPUT_KEYS
from keel.shared.tensors import array_from_contents as array_from_contents
from keel.shared.tensors import array_from_raw as array_from_raw
from keel.shared.tensors import array_to_raw as array_to_raw
from keel.shared.tensors import datatype_of as datatype_of
from keel_server.common.errors import InvalidArgument

if TYPE_CHECKING:
    import pandas as pd

    from keel.models.schema import Schema

# Column types of a signature (keel.models DataType values) → KServe datatype.
COLUMN_DATATYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}

MAX_TENSORS = 256


# -- turning decoded tensors into what the model takes ------------------------------------


def tensors_to_model_input(named: list[tuple[str, np.ndarray]], schema: Schema | None) -> Any:
    """Named arrays (KServe inputs, keel TensorSet) to the model's input.

    A column-based signature takes either one 2-D tensor (its columns in signature order, giving
    a ``ColumnBlock``) or one tensor per column (shape [N] or [N, 1], giving a DataFrame). A tensor-based signature takes
    its tensors by name (by position when unnamed). Without a signature a single tensor is
    passed as an array and several as a dict.
    """
    import pandas as pd

    if not named:
        raise InvalidArgument("the request has no input tensors", reason="MISSING_INPUT")
    if len(named) > MAX_TENSORS:
        raise InvalidArgument(
            f"at most {MAX_TENSORS} input tensors, got {len(named)}", reason="TOO_MANY_TENSORS"
        )
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"input tensor names must be distinct, got {names}", reason="DUPLICATE_INPUT")
    if schema is not None and not schema.is_tensor_spec():
        columns = [str(c) for c in schema.input_names()]
        if len(named) == 1 and named[0][1].ndim == 2 and named[0][0] not in columns:
            arr = named[0][1]
            if arr.shape[1] != len(columns):
                raise InvalidArgument(
                    f"input tensor {named[0][0]!r}: a 2-D tensor for a column-based model needs one column per "
                    f"signature input ({len(columns)}: {columns}), got shape {list(arr.shape)}",
                    reason="SIGNATURE_MISMATCH",
                )
            # one block, no per-column work: pyfunc checks it as an array (see ColumnBlock)
            return ColumnBlock(arr, columns)
        frame: dict[str, Any] = {}
        rows = None
        for name, arr in named:
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.ndim != 1:
                raise InvalidArgument(
                    f"input tensor {name!r}: a column of a column-based model must have shape [N] or [N, 1], "
                    f"got {list(arr.shape)}",
                    reason="SIGNATURE_MISMATCH",
                )
            if rows is not None and len(arr) != rows:
                raise InvalidArgument(
                    f"input tensor {name!r} has {len(arr)} rows but earlier inputs have {rows}: every column "
                    "needs the same number of rows",
                    reason="SIGNATURE_MISMATCH",
                )
            rows = len(arr)
            frame[name] = _bytes_to_str(arr)
        return pd.DataFrame(frame)
    if schema is not None and schema.is_tensor_spec() and not schema.has_input_names():
        return named[0][1] if len(named) == 1 else [a for _, a in named]
    if len(named) == 1 and (schema is None or len(schema.inputs) == 1):
        return named[0][1]
    return dict(named)


def _bytes_to_str(arr: np.ndarray) -> np.ndarray:
    """BYTES columns arrive as bytes; string columns of a signature want str (UTF-8)."""
    if arr.dtype == object and arr.size and isinstance(arr.flat[0], bytes):
        try:
            return np.array([b.decode() for b in arr], dtype=object)
        except UnicodeDecodeError:
            return arr  # genuinely binary: left as bytes for a binary column
    return arr


# -- MLflow scoring JSON and CSV -----------------------------------------------------------


def parse_json(body: str | bytes, schema: Schema | None) -> tuple[Any, dict[str, Any] | None]:
    """An MLflow scoring request body to (model input, params)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            f"the request body is not valid JSON ({exc}); send an object with one of {', '.join(JSON_INPUT_KEYS)}",
            reason="MALFORMED_JSON",
        ) from None
    if not isinstance(doc, dict):
        raise InvalidArgument(
            f"the JSON body must be an object with one of {', '.join(JSON_INPUT_KEYS)}, got a {type(doc).__name__}",
            reason="MALFORMED_JSON",
        )
    params = doc.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidArgument(
            f"'params' must be a JSON object, got {type(params).__name__}", reason="MALFORMED_JSON"
        )
    keys = [k for k in JSON_INPUT_KEYS if k in doc]
    if not keys and "columns" in doc and "data" in doc:
        keys, doc = ["dataframe_split"], {"dataframe_split": doc}  # MLflow 1.x bare split orient
    if len(keys) != 1:
        found = f"got {keys}" if keys else f"got keys {sorted(doc)}"
        raise InvalidArgument(
            f"the JSON body must hold exactly one of {', '.join(JSON_INPUT_KEYS)}; {found}",
            reason="MALFORMED_JSON",
        )
    key = keys[0]
    value = doc[key]
    if key == "dataframe_split":
        return _dataframe_split(value), params
    if key == "dataframe_records":
        return _dataframe_records(value), params
    return _tensor_json(key, value, schema), params


def _dataframe_split(value: Any) -> pd.DataFrame:
    import pandas as pd

    if not isinstance(value, dict) or "data" not in value:
        raise InvalidArgument(
            'dataframe_split must be an object {"columns": [...], "data": [[...], ...]}',
            reason="MALFORMED_JSON",
        )
    data, columns = value["data"], value.get("columns")
    if not isinstance(data, list) or (columns is not None and not isinstance(columns, list)):
        raise InvalidArgument(
            "dataframe_split: 'data' must be a list of rows and 'columns' a list", reason="MALFORMED_JSON"
        )
    if columns is not None and any(not isinstance(r, list) or len(r) != len(columns) for r in data):
        bad = next(i for i, r in enumerate(data) if not isinstance(r, list) or len(r) != len(columns))
        raise InvalidArgument(
            f"dataframe_split: row {bad} does not have {len(columns)} values (one per column {columns})",
            reason="MALFORMED_JSON",
        )
    try:
        return pd.DataFrame(data, columns=columns, index=value.get("index"))
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(
            f"dataframe_split cannot be read as a table: {exc}", reason="MALFORMED_JSON"
        ) from None


def _dataframe_records(value: Any) -> pd.DataFrame:
    import pandas as pd

    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise InvalidArgument(
            'dataframe_records must be a list of objects, one per row: [{"col": value, ...}, ...]',
            reason="MALFORMED_JSON",
        )
    return pd.DataFrame.from_records(value)


def _tensor_json(key: str, value: Any, schema: Schema | None) -> Any:
    """``instances`` / ``inputs`` (TF-serving style): a tensor, a dict of tensors, or records.

    JSON has a single number type, so numbers are cast to the dtype a tensor signature declares
    (as MLflow does); typed tensors sent over gRPC are never converted.
    """
    import pandas as pd

    specs = {}
    if schema is not None and schema.is_tensor_spec():
        specs = {s.name: s for s in schema.inputs}
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        if schema is None or not schema.is_tensor_spec():
            return pd.DataFrame.from_records(value)
        value = {k: [r.get(k) for r in value] for k in value[0]}
    if isinstance(value, dict):
        if not value:
            raise InvalidArgument(f"'{key}' is an empty object", reason="MALFORMED_JSON")
        if schema is not None and not schema.is_tensor_spec():
            return pd.DataFrame({k: v if isinstance(v, list) else [v] for k, v in value.items()})
        return {k: _json_array(f"{key}.{k}", v, specs.get(k)) for k, v in value.items()}
    only = next(iter(specs.values())) if len(specs) == 1 else None
    arr = _json_array(key, value, only)
    if schema is not None and not schema.is_tensor_spec() and arr.ndim in (1, 2):
        table = arr.reshape(-1, 1) if arr.ndim == 1 else arr
        names = [str(n) for n in schema.input_names()]
        # rows of values for a column-based model: columns by position, as in the signature
        return pd.DataFrame(table, columns=names if table.shape[1] == len(names) else None)
    return arr


def _json_array(label: str, value: Any, spec: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError:
        raise InvalidArgument(
            f"'{label}' is not a rectangular array (rows of different lengths)", reason="MALFORMED_JSON"
        ) from None
    if arr.dtype == object and arr.ndim > 0 and any(isinstance(v, list) for v in arr.reshape(-1)):
        raise InvalidArgument(
            f"'{label}' is not a rectangular array (rows of different lengths)", reason="MALFORMED_JSON"
        )
    if spec is not None and arr.dtype.kind in "iufb" and spec.dtype.kind in "iuf":
        if arr.dtype.kind == "f" and spec.dtype.kind in "iu":
            return arr  # a float sent for an integer tensor: enforcement reports it
        return arr.astype(spec.dtype)
    return arr


def parse_csv(text: str | bytes) -> pd.DataFrame:
    """CSV with a header row (MLflow's ``text/csv``)."""
    import pandas as pd

    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise InvalidArgument("the CSV body is not UTF-8 text", reason="MALFORMED_CSV") from None
    if not text.strip():
        raise InvalidArgument(
            "the CSV body is empty; send a header row and at least one data row", reason="MALFORMED_CSV"
        )
    try:
        return pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidArgument(f"the CSV body cannot be parsed: {first}", reason="MALFORMED_CSV") from None


def parse_params_json(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        params = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(
            f"params_json is not valid JSON: {exc}", reason="MALFORMED_JSON", field="params_json"
        ) from None
    if not isinstance(params, dict):
        raise InvalidArgument(
            "params_json must be a JSON object", reason="MALFORMED_JSON", field="params_json"
        )
    return params


# -- outputs ------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Model output as MLflow's scoring server writes it: arrays as lists, a DataFrame as
    records, a dict of arrays as a dict of lists; NaN becomes null."""
    from keel.models.utils import is_dataframe, is_series, is_torch_tensor

    if is_dataframe(value):
        return [{str(k): _scalar(v) for k, v in row.items()} for row in value.to_dict(orient="records")]
    if is_series(value):
        return [_scalar(v) for v in value.tolist()]
    if is_torch_tensor(value):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return _nan_to_none(value.tolist()) if value.dtype.kind == "f" else _decode(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return _scalar(value)


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return v


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _decode(v: Any) -> Any:
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return _scalar(v)


def predictions_json(value: Any) -> str:
    return json.dumps({"predictions": to_jsonable(value)}, separators=(",", ":"))


def output_arrays(value: Any, output_names: Sequence[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """Model output as named arrays: a DataFrame gives one per column, a dict one per key, and
    anything else a single array named by the output signature (or ``predictions``)."""
    from keel.models.utils import is_dataframe, is_series, tensor_to_numpy

    if is_dataframe(value):
        return [(str(c), _array(value[c].to_numpy())) for c in value.columns]
    if isinstance(value, dict):
        return [(str(k), _array(tensor_to_numpy(v))) for k, v in value.items()]
    if is_series(value):
        value = value.to_numpy()
    if isinstance(value, list | tuple) and value and all(hasattr(v, "shape") for v in value):
        names = list(output_names or [])
        return [
            (names[i] if i < len(names) else f"output_{i}", _array(tensor_to_numpy(v)))
            for i, v in enumerate(value)
        ]
    name = output_names[0] if output_names and len(output_names) == 1 else "predictions"
    return [(name, _array(tensor_to_numpy(value)))]


def _array(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "U":
        return arr.astype(object)
    if arr.dtype.kind == "O":
        # an object column of str/bytes stays BYTES; of numbers becomes numeric
        sample = next((v for v in arr.reshape(-1) if v is not None), None)
        if sample is not None and not isinstance(sample, str | bytes):
            try:
                return np.asarray(arr.tolist())
            except (ValueError, TypeError):
                pass
    return arr
