"""``spark_udf``: score a Spark DataFrame with any pyfunc model, in parallel on the executors.

>>> predict = keel.pyfunc.spark_udf(spark, "models:/churn/Production")
>>> df.withColumn("prediction", predict())                  # columns by the signature's names
>>> df.withColumn("prediction", predict("age", "income"))   # columns by position

How the model travels (the problems MLflow's UDF has are avoided on purpose):

* the driver fetches the model once (``models:/``, ``runs:/``, ``s3://``, local paths); the
  executors never talk to the keel server;
* the driver packs it into one archive and ships it with ``SparkContext.addFile``: the same path
  in local mode and on a cluster, no shared filesystem assumed;
* each executor unpacks the archive once, into a directory published by an atomic rename, so
  Python workers starting together never see a half-written model;
* each Python worker process loads the model once and keeps it across tasks and batches
  (Spark reuses its Python workers by default), then runs an iterator-of-batches Arrow UDF.

Inputs go through ``PyFuncModel.predict``, so the signature is enforced exactly as in pyfunc:
called with no columns, the UDF passes the row's columns and the model takes those its signature
names (a missing one fails with the signature's message); called with columns, they are matched
to the signature's inputs by position (under a named signature they travel one by one, which
spares Spark a struct per row). Tensor-signature models take array columns.

Why an Arrow UDF (pyspark >= 4.1) rather than a pandas one: the model sees the same data
(``_to_pandas`` follows pyspark's conversion rules), but null-free number columns of one type
reach ``PyFuncModel.predict`` as a ``ColumnBlock`` (the same checks, then an array for flavors
that take one, no DataFrame), rectangular array columns become tensors without a loop per row,
and predictions go back as Arrow arrays: the worker converts nothing to or from pandas per
batch (``bench/bench_batch.py`` measures what that saves).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Tuple  # noqa: UP035 - pyspark reads typing.Tuple
from urllib.parse import urlparse

import numpy as np

from keel.exceptions import InvalidArgument, MissingExtra
from keel.extras import install_command, require
from keel.models.model import Model
from keel.models.schema import DataType, Schema, TensorSpec
from keel.models.uri import resolve_model_uri
from keel.models.utils import ColumnBlock

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import Column, SparkSession
    from pyspark.sql.types import DataType as SparkDataType

    from keel.pyfunc.pyfunc_model import PyFuncModel

__all__ = ["SparkUDF", "spark_udf"]

_log = logging.getLogger(__name__)

ENV_MANAGERS = ("local",)
_FETCHED_SCHEMES = ("runs", "models", "s3")  # resolve_model_uri downloads these into a new directory
_PURPOSE = "needed by keel.pyfunc.spark_udf"


def _pyspark_types() -> Any:
    return require("pyspark.sql.types", "spark", purpose=_PURPOSE)


# -- result types --------------------------------------------------------------------------


def _spark_type_of_numpy(dtype: np.dtype) -> SparkDataType:
    T = _pyspark_types()
    kinds: dict[str, Any] = {
        "bool": T.BooleanType(),
        "int8": T.ByteType(),
        "int16": T.ShortType(),
        "int32": T.IntegerType(),
        "int64": T.LongType(),
        "float32": T.FloatType(),
        "float64": T.DoubleType(),
    }
    if dtype.name in kinds:
        return kinds[dtype.name]
    if dtype.kind in ("U", "S"):
        return T.StringType()
    raise InvalidArgument(
        f"cannot map the output tensor dtype {dtype} to a Spark type: pass result_type",
        reason="INVALID_RESULT_TYPE",
    )


def _spark_type_of_column(type_: DataType) -> SparkDataType:
    T = _pyspark_types()
    return {
        DataType.boolean: T.BooleanType(),
        DataType.integer: T.IntegerType(),
        DataType.long: T.LongType(),
        DataType.float: T.FloatType(),
        DataType.double: T.DoubleType(),
        DataType.string: T.StringType(),
        DataType.binary: T.BinaryType(),
        DataType.datetime: T.TimestampType(),
    }[type_]


def _spark_type_of_tensor(spec: TensorSpec) -> SparkDataType:
    T = _pyspark_types()
    element = _spark_type_of_numpy(spec.dtype)
    for _ in spec.shape[1:]:  # the first dimension is the batch: one row per entry
        element = T.ArrayType(element)
    return element


def infer_result_type(outputs: Schema | None) -> SparkDataType:
    """The Spark type of the model's output schema: one column or tensor gives its type (an
    array for tensors of rank 2 and more), several give a struct with a field each; no output
    schema gives ``double`` (MLflow's default)."""
    T = _pyspark_types()
    if outputs is None:
        _log.warning(
            "the model has no output schema: spark_udf returns double (pass result_type to change it)"
        )
        return T.DoubleType()
    specs = list(outputs.inputs)
    types = [
        _spark_type_of_tensor(s) if isinstance(s, TensorSpec) else _spark_type_of_column(s.type)
        for s in specs
    ]
    if len(specs) == 1:
        return types[0]
    names = outputs.input_names()
    return T.StructType(
        [
            T.StructField(str(n) if isinstance(n, str) else f"_{n}", t)
            for n, t in zip(names, types, strict=True)
        ]
    )


def _parse_result_type(result_type: SparkDataType | str) -> SparkDataType:
    T = _pyspark_types()
    if isinstance(result_type, T.DataType):
        return result_type
    if isinstance(result_type, str):
        try:
            return T.DataType.fromDDL(result_type)
        except Exception as exc:
            raise InvalidArgument(
                f"result_type {result_type!r} is not a Spark type: use a pyspark.sql.types.DataType or a "
                f"DDL string such as 'double', 'array<float>' or 'struct<label: long, score: double>' ({exc})",
                reason="INVALID_RESULT_TYPE",
            ) from None
    raise InvalidArgument(
        f"result_type must be a pyspark.sql.types.DataType or a DDL string, got {type(result_type).__name__}",
        reason="INVALID_RESULT_TYPE",
    )


# -- Arrow in: one batch as what PyFuncModel.predict takes ---------------------------------------


def _plain_numpy(arr: pa.Array) -> np.ndarray | None:
    """A null-free boolean or number column as numpy (numbers without a copy), the dtype a
    pandas UDF would have seen; None for anything else (nulls, strings, times, nested values)."""
    import pyarrow as pa

    kind = arr.type
    if arr.null_count or not (
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    ):
        return None
    return arr.to_numpy(zero_copy_only=False)


def _to_pandas(arr: pa.Array) -> pd.Series:
    """Any column as a pandas UDF receives it (pyspark's rules where they agree with each other):
    integers with nulls as pandas' nullable integers (``Int64``; pyspark gives those or float64
    depending on the other columns of the struct), booleans with nulls as objects, dates as
    ``datetime.date``, timestamps as naive wall time in the column's zone (Spark sends the
    session's), maps as dicts, arrays as numpy arrays, decimals as ``Decimal``."""
    import pandas as pd
    import pyarrow as pa

    kind = arr.type
    if pa.types.is_integer(kind) and arr.null_count:
        nullable = pd.api.types.pandas_dtype(str(kind).replace("int", "Int").replace("uInt", "UInt"))
        return arr.to_pandas(types_mapper={kind: nullable}.get)
    series = arr.to_pandas(date_as_object=True)
    if pa.types.is_timestamp(kind) and kind.tz is not None:
        series = series.dt.tz_localize(None)
    elif pa.types.is_map(kind):
        series = series.map(lambda pairs: None if pairs is None else dict(pairs))
    return series


def _frame(
    columns: list[pa.Array], names: list[str], rows: int, plain: list[np.ndarray | None] | None = None
) -> pd.DataFrame:
    """The columns as the DataFrame a pandas UDF would have received (duplicate names kept);
    ``plain``: their ``_plain_numpy`` when already known."""
    import pandas as pd

    data: dict[int, Any] = {}
    for i, arr in enumerate(columns):
        values = plain[i] if plain is not None else _plain_numpy(arr)
        data[i] = values if values is not None else _to_pandas(arr)
    frame = pd.DataFrame(data, index=pd.RangeIndex(rows))
    frame.columns = pd.Index(names, dtype=object)
    return frame


def _dense(arr: pa.Array, depth: int) -> np.ndarray | None:
    """A column of nested lists as one array of shape ``(rows, d1, ..., d<depth>)`` when every
    level is null-free and rectangular and the leaves are plain numbers; None otherwise."""
    import pyarrow as pa

    shape = [len(arr)]
    for _ in range(depth):
        if arr.null_count or not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
            return None
        lengths = np.diff(arr.offsets.to_numpy())
        if len(lengths) == 0 or (lengths != lengths[0]).any():
            return None
        shape.append(int(lengths[0]))
        arr = arr.flatten()  # this level's values, the slice's own (offsets taken into account)
    leaves = _plain_numpy(arr)
    return None if leaves is None else leaves.reshape(shape)


def _tensor_input(arr: pa.Array, spec: TensorSpec) -> np.ndarray:
    """An array column (one nested list per row) as the tensor ``spec`` describes."""
    depth = max(len(spec.shape) - 1, 0)  # the first dimension is the batch
    dense = _dense(arr, depth)
    if dense is not None:
        return dense.astype(spec.dtype, copy=False)
    values = _to_pandas(arr)  # ragged, with nulls, or not numbers: row by row, as pandas has it
    if depth == 0:
        return values.to_numpy().astype(spec.dtype, copy=False)
    rows = [np.asarray(v) for v in values]
    if any(r.dtype == object for r in rows):  # nested arrays arrive as arrays of arrays
        rows = [np.stack(list(r)) if r.size else r for r in rows]
    return np.stack(rows).astype(spec.dtype, copy=False)


def _model_input(columns: list[pa.Array], names: list[str], inputs: Schema | None, rows: int) -> Any:
    """What ``PyFuncModel.predict`` receives for one batch, the signature's enforcement still
    to come: the batch as the DataFrame a pandas UDF would have seen, except that null-free
    number columns of one dtype travel as a ``ColumnBlock`` (same checks, no DataFrame) and
    tensor inputs as arrays."""
    if inputs is None:
        return _frame(columns, names, rows)
    if inputs.is_tensor_spec():
        specs = [s for s in inputs.inputs if isinstance(s, TensorSpec)]
        if not inputs.has_input_names():
            if len(columns) != 1 or len(specs) != 1:
                raise InvalidArgument(
                    f"the model takes one tensor; pass it as one array column, got {len(columns)} columns",
                    reason="SIGNATURE_MISMATCH",
                )
            return _tensor_input(columns[0], specs[0])
        by_name = dict(zip(names, columns, strict=True))
        missing = [s.name for s in specs if s.name not in by_name]
        if missing:
            raise InvalidArgument(
                f"missing input tensor{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}: "
                f"the model expects {[s.name for s in specs]}, got {names}",
                reason="SIGNATURE_MISMATCH",
            )
        return {str(s.name): _tensor_input(by_name[str(s.name)], s) for s in specs}
    if inputs.has_input_names():
        wanted = [str(n) for n in inputs.input_names()]
        if names != wanted and set(wanted).issubset(names) and len(set(names)) == len(names):
            # the signature's columns in its order: enforcement drops the others anyway
            by_name = dict(zip(names, columns, strict=True))
            columns, names = [by_name[n] for n in wanted], wanted
    values = [_plain_numpy(arr) for arr in columns]
    plain = [v for v in values if v is not None]
    if plain and len(plain) == len(values) and plain[0].dtype.kind in "iuf":
        if all(v.dtype == plain[0].dtype for v in plain):
            return ColumnBlock(np.column_stack(plain), names)
    return _frame(columns, names, rows, values)


# -- Arrow out: predictions as the result type -----------------------------------------------------


def _arrow_type(spark_type: SparkDataType) -> pa.DataType | None:
    """The Arrow type Spark reads as ``spark_type``; None for types left to Spark's own cast
    (dates, decimals, maps...)."""
    import pyarrow as pa

    T = _pyspark_types()
    simple: list[tuple[Any, Any]] = [
        (T.BooleanType, pa.bool_()),
        (T.ByteType, pa.int8()),
        (T.ShortType, pa.int16()),
        (T.IntegerType, pa.int32()),
        (T.LongType, pa.int64()),
        (T.FloatType, pa.float32()),
        (T.DoubleType, pa.float64()),
        (T.StringType, pa.string()),
        (T.BinaryType, pa.binary()),
        (T.TimestampType, pa.timestamp("us", tz="UTC")),
    ]
    for cls, arrow in simple:
        if isinstance(spark_type, cls):
            return arrow
    if isinstance(spark_type, T.ArrayType):
        element = _arrow_type(spark_type.elementType)
        return None if element is None else pa.list_(element)
    if isinstance(spark_type, T.StructType):
        fields = [(f.name, _arrow_type(f.dataType)) for f in spark_type.fields]
        if any(t is None for _, t in fields):
            return None
        return pa.struct(fields)  # type: ignore[arg-type]
    return None


def _numpy_of_spark(spark_type: SparkDataType) -> np.dtype | None:
    T = _pyspark_types()
    table: list[tuple[Any, str]] = [
        (T.BooleanType, "bool"),
        (T.ByteType, "int8"),
        (T.ShortType, "int16"),
        (T.IntegerType, "int32"),
        (T.LongType, "int64"),
        (T.FloatType, "float32"),
        (T.DoubleType, "float64"),
    ]
    for cls, name in table:
        if isinstance(spark_type, cls):
            return np.dtype(name)
    return None


def _cast_numbers(arr: np.ndarray, spark_type: SparkDataType) -> np.ndarray:
    """``arr`` in the numpy type of ``spark_type``: within a kind or up a kind (bool -> int ->
    float), never float -> int or int -> bool, which would cut values."""
    target = _numpy_of_spark(spark_type)
    if target is None or arr.dtype == target:
        return arr
    if arr.dtype.kind in "iufb" and np.can_cast(arr.dtype, target, casting="same_kind"):
        return arr.astype(target)
    raise InvalidArgument(
        f"the model returned {arr.dtype} values, which would be cut to the result type "
        f"{spark_type.simpleString()}: pass a result_type that holds them",
        reason="INVALID_RESULT_TYPE",
    )


def _timestamps(values: Any, session_zone: str) -> pa.Array:
    """Datetimes as Spark's timestamps: naive values are wall time in the session's zone (as
    pyspark reads pandas results), aware ones are converted; microseconds, never rounded."""
    import pandas as pd
    import pyarrow as pa

    series = pd.Series(pd.to_datetime(values))
    if series.dt.tz is None:
        series = series.dt.tz_localize(session_zone)
    return pa.array(series.dt.tz_convert("UTC"), type=pa.timestamp("us", tz="UTC"), from_pandas=True)


def _column_values(values: Any, spark_type: SparkDataType, session_zone: str) -> pa.Array:
    """One output column as the Arrow array Spark reads as ``spark_type``."""
    import pandas as pd
    import pyarrow as pa

    T = _pyspark_types()
    if isinstance(values, pd.DataFrame):
        values = values.to_numpy() if values.shape[1] != 1 else values.iloc[:, 0]
    if isinstance(spark_type, T.ArrayType):
        return _lists(values, spark_type)
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InvalidArgument(
            f"the model returned an array of shape {arr.shape} for a {spark_type.simpleString()} result: "
            "pass result_type='array<...>' (or a struct) for several values per row",
            reason="INVALID_RESULT_TYPE",
        )
    if isinstance(spark_type, T.TimestampType):
        return _timestamps(arr, session_zone)
    arr = _cast_numbers(arr, spark_type)
    if isinstance(spark_type, T.StringType) and arr.dtype.kind != "O":
        arr = arr.astype(str).astype(object)
    return pa.array(arr, type=_arrow_type(spark_type), from_pandas=True)


def _lists(values: Any, spark_type: SparkDataType) -> pa.Array:
    """Rows of (nested) lists for an ``array<...>`` result: a rectangular numeric array becomes
    list offsets over its flat values (no Python loop per row); anything else goes row by row."""
    import pyarrow as pa

    T = _pyspark_types()
    depth, leaf = 0, spark_type
    while isinstance(leaf, T.ArrayType):
        depth, leaf = depth + 1, leaf.elementType
    target = _arrow_type(spark_type)
    arr = np.asarray(values) if not isinstance(values, list) else None
    if (
        arr is not None
        and arr.ndim == depth + 1
        and arr.dtype.kind in "iufb"
        and _numpy_of_spark(leaf) is not None
    ):
        flat = pa.array(_cast_numbers(arr.reshape(-1), leaf), type=_arrow_type(leaf))
        for level in range(arr.ndim - 1, 0, -1):  # innermost lists first
            count = int(np.prod(arr.shape[:level]))
            offsets = pa.array(np.arange(count + 1, dtype=np.int32) * arr.shape[level])
            flat = pa.ListArray.from_arrays(offsets, flat)
        return flat
    rows = list(values) if arr is None or arr.ndim < 2 else list(arr)
    return pa.array([None if r is None else np.asarray(r).tolist() for r in rows], type=target)


def _to_arrow(prediction: Any, spark_type: SparkDataType, rows: int, session_zone: str) -> pa.Array:
    """A batch of predictions as the Arrow array the UDF returns, a struct for a struct result
    type (fields taken by name when the model named them, by position otherwise)."""
    import pandas as pd
    import pyarrow as pa

    T = _pyspark_types()
    if isinstance(spark_type, T.StructType):
        fields = spark_type.fields
        if isinstance(prediction, dict):
            parts = [prediction[f.name] if f.name in prediction else None for f in fields]
            missing = [f.name for f, p in zip(fields, parts, strict=True) if p is None]
            if missing:
                raise InvalidArgument(
                    f"the model's output has no {missing} for the struct result type: it returned "
                    f"{sorted(prediction)}",
                    reason="INVALID_RESULT_TYPE",
                )
        elif isinstance(prediction, pd.DataFrame):
            by_name = all(f.name in prediction.columns for f in fields)
            if not by_name and prediction.shape[1] != len(fields):
                raise InvalidArgument(
                    f"the model returned columns {list(prediction.columns)} for a struct of "
                    f"{[f.name for f in fields]}",
                    reason="INVALID_RESULT_TYPE",
                )
            parts = [prediction[f.name] if by_name else prediction.iloc[:, i] for i, f in enumerate(fields)]
        else:
            arr = np.asarray(prediction)
            if arr.ndim != 2 or arr.shape[1] != len(fields):
                raise InvalidArgument(
                    f"the model returned an array of shape {arr.shape} for a struct of {len(fields)} fields",
                    reason="INVALID_RESULT_TYPE",
                )
            parts = [arr[:, i] for i in range(len(fields))]
        arrays = [_column_values(p, f.dataType, session_zone) for f, p in zip(fields, parts, strict=True)]
        lengths = {len(a) for a in arrays}
        if len(lengths) > 1:
            raise InvalidArgument(
                f"the model returned fields of different lengths {sorted(lengths)} for the struct result",
                reason="INVALID_RESULT_TYPE",
            )
        result: pa.Array = pa.StructArray.from_arrays(
            arrays, fields=[pa.field(f.name, a.type) for f, a in zip(fields, arrays, strict=True)]
        )
    else:
        if isinstance(prediction, dict) and len(prediction) == 1:
            prediction = next(iter(prediction.values()))
        result = _column_values(prediction, spark_type, session_zone)
    if len(result) != rows:
        raise InvalidArgument(
            f"the model returned {len(result)} predictions for a batch of {rows} rows",
            reason="INVALID_RESULT_TYPE",
        )
    return result


# -- shipping and loading ----------------------------------------------------------------------

# per Python worker process: archive name -> the loaded model (kept across tasks and batches)
_loaded: dict[str, PyFuncModel] = {}
_load_lock = threading.Lock()


def _pack(model_dir: str) -> str:
    """The model directory as a new ``.tar`` file (models are mostly compressed weights)."""
    folder = tempfile.mkdtemp(prefix="keel-spark-")
    # executors fetch it while the driver runs (also tasks retried late): removed when it exits
    atexit.register(shutil.rmtree, folder, True)
    archive = os.path.join(folder, f"keel-model-{uuid.uuid4().hex}.tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(model_dir, arcname="model")
    return archive


def _unpacked(archive_name: str) -> str:
    """The model directory of a shipped archive, unpacked once per executor: into a private
    directory first, then published by an atomic rename (a worker that loses the race uses the
    winner's copy)."""
    from pyspark import SparkFiles

    archive = SparkFiles.get(archive_name)
    target = archive + ".d"
    if not os.path.isdir(target):
        staging = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(archive))
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        try:
            os.rename(staging, target)
        except OSError:  # another worker published it first
            shutil.rmtree(staging, ignore_errors=True)
    return os.path.join(target, "model")


def _worker_model(archive_name: str) -> PyFuncModel:
    with _load_lock:
        model = _loaded.get(archive_name)
        if model is None:
            from keel.pyfunc.pyfunc_model import load_model

            model = load_model(_unpacked(archive_name))
            _loaded[archive_name] = model
        return model


def _input_names(names: list[str], inputs: Schema | None, by_position: bool) -> list[str]:
    """The batch's column names as the model sees them: the DataFrame's own (called with no
    columns), or the signature's input names by position (called with columns)."""
    if not by_position or inputs is None:
        return names
    if len(names) > len(inputs.inputs):
        raise InvalidArgument(
            f"spark_udf got {len(names)} columns, the model's signature has "
            f"{len(inputs.inputs)} inputs {inputs.input_names()}",
            reason="SIGNATURE_MISMATCH",
        )
    if not inputs.has_input_names():
        return names
    return [str(n) for n in inputs.input_names()[: len(names)]]


def _make_predict(
    archive_name: str,
    inputs: Schema | None,
    by_position: bool,
    spark_type: SparkDataType,
    session_zone: str,
    names: list[str] | None = None,
) -> Callable[[Iterator[Any]], Iterator[pa.Array]]:
    """The UDF's function. ``names``: the input names when the columns travel one by one
    (called with columns, the signature naming its inputs: Spark then builds no struct per
    row); None when they travel as the fields of one struct column."""
    import pyarrow as pa

    def predict(batches: Iterator[Any]) -> Iterator[pa.Array]:
        model = _worker_model(archive_name)
        for batch in batches:
            if names is None:  # one struct column: the UDF's input columns as its fields
                columns, rows = batch.flatten(), len(batch)
                batch_names = _input_names([str(n) for n in batch.type.names], inputs, by_position)
            else:  # Spark passes one array alone, several as a tuple
                columns = list(batch) if isinstance(batch, tuple) else [batch]
                rows, batch_names = len(columns[0]), names
            if rows == 0:
                yield pa.nulls(0)  # Spark casts it to the result type
                continue
            prediction = model.predict(_model_input(columns, batch_names, inputs, rows))
            yield _to_arrow(prediction, spark_type, rows, session_zone)

    # Spark picks the UDF kind from the hints: an iterator of Arrow arrays (or of tuples of
    # them) in, an iterator of Arrow arrays out
    given = Iterator[pa.Array] if names is None else Iterator[Tuple[pa.Array, ...]]  # noqa: UP006
    predict.__annotations__ = {"batches": given, "return": Iterator[pa.Array]}
    return predict


def _arrow_udf() -> Any:
    try:
        from pyspark.sql.functions import arrow_udf
    except ImportError:
        import pyspark

        raise MissingExtra(
            f"keel.pyfunc.spark_udf needs pyspark 4.1 or later (Arrow UDFs), found {pyspark.__version__}: "
            f"{install_command('spark')}",
            extra="spark",
            package="pyspark",
        ) from None
    return arrow_udf


class SparkUDF:
    """The callable ``spark_udf`` returns: ``udf()`` takes the columns the signature names,
    ``udf(col, ...)`` takes columns (names or ``Column`` objects) by position."""

    def __init__(
        self, archive_name: str, metadata: Model, result_type: SparkDataType, session_zone: str = "UTC"
    ) -> None:
        self.metadata = metadata
        self.result_type = result_type
        self._archive_name = archive_name
        self._session_zone = session_zone  # how pyspark reads naive datetimes the model returns
        signature = metadata.signature
        self._inputs = signature.inputs if signature is not None else None

    def __call__(self, *columns: str | Column) -> Column:
        from pyspark.sql import functions as F

        if not columns:
            if self._inputs is None or not self._inputs.has_input_names():
                raise InvalidArgument(
                    "the model's signature names no inputs: call the UDF with its input columns, in order",
                    reason="SIGNATURE_MISMATCH",
                )
            # every column travels; enforcement picks the signature's by name, so a missing one
            # fails with the signature's message (pass columns explicitly for wide tables)
            packed: list[Any] = [F.struct(F.col("*"))]
            names = None
        elif self._inputs is not None and self._inputs.has_input_names():
            # by position under the signature's names (too many columns fail here): the columns
            # travel one by one, which spares Spark a struct per row
            packed = list(columns)
            names = _input_names([str(i) for i in range(len(columns))], self._inputs, True)
        else:  # names for the model: the columns' own, as the struct's fields
            packed = [F.struct(*columns)]
            names = None
        predict = _make_predict(
            self._archive_name, self._inputs, bool(columns), self.result_type, self._session_zone, names
        )
        return _arrow_udf()(predict, returnType=self.result_type)(*packed)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"SparkUDF(result_type={self.result_type.simpleString()!r}, run_id={self.metadata.run_id!r})"


def spark_udf(
    spark: SparkSession,
    model_uri: str,
    result_type: SparkDataType | str | None = None,
    env_manager: str = "local",
) -> SparkUDF:
    """An Arrow UDF scoring DataFrames with the pyfunc model at ``model_uri`` (pyspark >= 4.1).

    ``result_type``: a ``pyspark.sql.types.DataType`` or DDL string (``"double"``,
    ``"array<float>"``, ``"struct<label: long, score: double>"``); inferred from the model's
    output schema when omitted. ``env_manager``: only ``"local"`` (the workers use the driver's
    Python environment, which must have the model's dependencies).

    Security: the workers unpickle the model; only score with models from a trusted registry.
    """
    require("pyspark", "spark", purpose=_PURPOSE)
    require("pyarrow", "spark", purpose=_PURPOSE)
    _arrow_udf()  # an older pyspark fails here, before the model is fetched
    if env_manager not in ENV_MANAGERS:
        raise InvalidArgument(
            f"env_manager {env_manager!r} is not supported by spark_udf: use 'local' (the executors' "
            "Python environment must have the model's dependencies installed)",
            reason="UNSUPPORTED_ENV_MANAGER",
        )
    spark_type = _parse_result_type(result_type) if result_type is not None else None
    model_dir = resolve_model_uri(model_uri)
    metadata = Model.load(model_dir)
    if spark_type is None:
        signature = metadata.signature
        spark_type = infer_result_type(signature.outputs if signature is not None else None)
    archive = _pack(model_dir)
    if urlparse(model_uri).scheme in _FETCHED_SCHEMES:  # a download of ours: the archive replaces it
        shutil.rmtree(model_dir, ignore_errors=True)
    spark.sparkContext.addFile(archive)
    zone = spark.conf.get("spark.sql.session.timeZone") or "UTC"
    return SparkUDF(os.path.basename(archive), metadata, spark_type, zone)
