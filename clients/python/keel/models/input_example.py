"""Input examples stored next to a model, in MLflow's files and ``saved_input_example_info``.

Column-shaped examples are saved as ``{"columns": [...], "data": [[...]]}`` (pandas "split"
orient, type ``dataframe``); arrays as ``{"inputs": ...}`` (type ``ndarray``, format
``tf-serving``).  A ``serving_input_example.json`` holds the same example as a scoring request.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from keel.models.schema import ColSpec, Schema, TensorSpec
from keel.models.utils import is_dict_of_arrays, is_torch_tensor, tensor_to_numpy, to_dataframe

EXAMPLE_FILE = "input_example.json"
SERVING_EXAMPLE_FILE = "serving_input_example.json"


def _is_tensor_example(example: Any) -> bool:
    return (isinstance(example, np.ndarray) and example.dtype.kind != "O") or is_torch_tensor(example)


def _json_value(v: Any) -> Any:
    """A JSON-safe cell: exact floats (Python's repr round-trips), None for missing values."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    if isinstance(v, bytes):
        import base64

        return base64.b64encode(v).decode("ascii")  # MLflow's encoding for binary columns
    if v is not None and type(v).__name__ in ("NaTType", "NAType"):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def save_input_example(example: Any, path: str) -> dict[str, Any]:
    """Write ``example`` into the model directory ``path``; returns ``saved_input_example_info``."""
    info: dict[str, Any] = {"artifact_path": EXAMPLE_FILE, "serving_input_path": SERVING_EXAMPLE_FILE}
    if _is_tensor_example(example) or is_dict_of_arrays(example):
        if isinstance(example, dict):
            body: dict[str, Any] = {"inputs": {k: tensor_to_numpy(v).tolist() for k, v in example.items()}}
        else:
            body = {"inputs": tensor_to_numpy(example).tolist()}
        info.update(type="ndarray", format="tf-serving")
        serving = body
    else:
        df = to_dataframe(example)
        body = {
            "columns": [str(c) for c in df.columns],
            "data": [[_json_value(v) for v in row] for row in df.itertuples(index=False)],
        }
        info.update(type="dataframe", pandas_orient="split")
        serving = {"dataframe_split": body}
    with open(os.path.join(path, EXAMPLE_FILE), "w") as f:
        json.dump(body, f)
    with open(os.path.join(path, SERVING_EXAMPLE_FILE), "w") as f:
        json.dump(serving, f, indent=2)
    return info


def load_input_example(path: str, info: dict[str, Any] | None, schema: Schema | None = None) -> Any:
    """Read the example back; column and tensor dtypes follow ``schema`` when it is given."""
    if not info:
        return None
    with open(os.path.join(path, info.get("artifact_path", EXAMPLE_FILE))) as f:
        body = json.load(f)
    if info.get("type") == "ndarray":
        inputs = body["inputs"] if isinstance(body, dict) and "inputs" in body else body
        specs = (
            {s.name: s for s in schema.inputs if isinstance(s, TensorSpec)}
            if schema and schema.is_tensor_spec()
            else {}
        )
        if isinstance(inputs, dict):
            return {k: np.asarray(v, dtype=specs[k].dtype if k in specs else None) for k, v in inputs.items()}
        only = next(iter(specs.values()), None) if len(specs) == 1 else None
        return np.asarray(inputs, dtype=only.dtype if only else None)
    import pandas as pd

    df = pd.DataFrame(body["data"], columns=body.get("columns"))
    if schema is not None and not schema.is_tensor_spec():
        for i, spec in enumerate(schema.inputs):
            assert isinstance(spec, ColSpec)
            col = spec.name if spec.name is not None else df.columns[i]
            # JSON has one number type; the signature says which width the model expects
            if col in df.columns and spec.type.to_numpy().kind in "iufb" and not df[col].isna().any():
                df[col] = df[col].astype(spec.type.to_numpy())
    return df
