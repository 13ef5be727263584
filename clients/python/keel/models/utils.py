"""Data-shape helpers shared by signatures, enforcement, input examples and every flavor.

This is the one home for "turn user input into a DataFrame / a numpy array"; flavors call
these instead of growing their own conversions.  pandas and torch are imported lazily.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.exceptions import InvalidArgument

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ColumnBlock:
    """A table as one 2-D array plus its column names, in order: what tensor protocols (KServe
    v2, keel's tensors) carry for a column-based model. ``PyFuncModel.predict`` checks it
    without building a DataFrame and hands it as an array to flavors that take one; anything
    else sees ``to_frame()``."""

    array: np.ndarray
    columns: list[str]

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.array, columns=self.columns)


def is_dataframe(data: Any) -> bool:
    # checked by module name so that inputs that are not pandas never import pandas
    return type(data).__module__.startswith("pandas") and type(data).__name__ == "DataFrame"


def is_series(data: Any) -> bool:
    return type(data).__module__.startswith("pandas") and type(data).__name__ == "Series"


def is_torch_tensor(data: Any) -> bool:
    return type(data).__module__.startswith("torch") and hasattr(data, "detach") and hasattr(data, "numpy")


def tensor_to_numpy(data: Any) -> np.ndarray:
    """A torch tensor to numpy (CPU, detached); anything else through ``np.asarray``."""
    if is_torch_tensor(data):
        return data.detach().cpu().numpy()
    return np.asarray(data)


def is_dict_of_arrays(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and len(data) > 0
        and all(isinstance(v, np.ndarray) or is_torch_tensor(v) for v in data.values())
    )


def to_dataframe(data: Any) -> pd.DataFrame:
    """Column-shaped input to a DataFrame.

    Accepts a DataFrame, a Series, a dict of columns (or of scalars, for one row), a list of
    dicts (records), a list of scalars (one unnamed column) and 1-D or 2-D arrays.
    """
    import pandas as pd

    if is_dataframe(data):
        return data
    if isinstance(data, ColumnBlock):
        return data.to_frame()
    if is_series(data):
        return data.to_frame(name=data.name if data.name is not None else 0)
    if isinstance(data, dict):
        if not data:
            raise InvalidArgument("input is an empty dict", reason="SIGNATURE_MISMATCH")
        values = list(data.values())
        if all(np.ndim(v) == 0 for v in values):
            return pd.DataFrame([data])
        return pd.DataFrame({k: list(tensor_to_numpy(v)) if np.ndim(v) > 1 else v for k, v in data.items()})
    if isinstance(data, list | tuple):
        if data and all(isinstance(r, dict) for r in data):
            return pd.DataFrame.from_records(list(data))
        arr = np.asarray(data, dtype=object if any(isinstance(v, str | bytes) for v in data) else None)
        return pd.DataFrame(arr if arr.ndim == 2 else arr.reshape(-1, 1) if arr.ndim == 1 else arr)
    if isinstance(data, np.ndarray) or is_torch_tensor(data):
        arr = tensor_to_numpy(data)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2:
            raise InvalidArgument(
                f"a {arr.ndim}-D array cannot be used as columns; expected 1-D or 2-D",
                reason="SIGNATURE_MISMATCH",
            )
        return pd.DataFrame(arr)
    if isinstance(data, str | bytes | int | float | bool):
        return pd.DataFrame([data])
    raise InvalidArgument(
        f"cannot read input of type {type(data).__name__} as columns", reason="SIGNATURE_MISMATCH"
    )


def to_numpy(data: Any) -> np.ndarray:
    """Tensor-shaped input to one numpy array (DataFrame → its values, tensor → CPU array)."""
    if is_dataframe(data) or is_series(data):
        return data.to_numpy()
    if isinstance(data, np.ndarray):
        return data
    return tensor_to_numpy(data)


def object_kind(values: Any) -> str | None:
    """The single Python kind of an object column's non-null values, or None when mixed."""
    kinds = set()
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, bool | np.bool_):
            kinds.add("bool")
        elif isinstance(v, int | np.integer):
            kinds.add("int")
        elif isinstance(v, float | np.floating):
            kinds.add("float")
        elif isinstance(v, str):
            kinds.add("str")
        elif isinstance(v, bytes | bytearray):
            kinds.add("bytes")
        elif isinstance(v, _dt.datetime | _dt.date | np.datetime64):
            kinds.add("datetime")
        else:
            kinds.add(type(v).__name__)
    return kinds.pop() if len(kinds) == 1 else ("empty" if not kinds else None)
