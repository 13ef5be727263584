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
  (Spark reuses its Python workers by default), then runs an iterator-of-batches pandas UDF.

Inputs go through ``PyFuncModel.predict``, so the signature is enforced exactly as in pyfunc:
called with no columns, the UDF passes the row's columns and the model takes those its signature
names (a missing one fails with the signature's message); called with columns, they are matched
to the signature's inputs by position. Tensor-signature models take array columns.
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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from keel.exceptions import InvalidArgument
from keel.extras import require
from keel.models.model import Model
from keel.models.schema import DataType, Schema, TensorSpec
from keel.models.uri import resolve_model_uri

if TYPE_CHECKING:
    import pandas as pd
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


# -- converting batches ----------------------------------------------------------------------


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


def _column_values(values: Any, spark_type: SparkDataType) -> pd.Series:
    """One output column as the pandas Series Arrow writes as ``spark_type``."""
    import pandas as pd

    T = _pyspark_types()
    if isinstance(values, pd.DataFrame):
        values = values.to_numpy() if values.shape[1] != 1 else values.iloc[:, 0]
    if isinstance(spark_type, T.ArrayType):
        arr = np.asarray(values)
        if arr.ndim < 2:  # already one list per row
            return pd.Series(list(values))
        return pd.Series(list(arr))
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InvalidArgument(
            f"the model returned an array of shape {arr.shape} for a {spark_type.simpleString()} result: "
            "pass result_type='array<...>' (or a struct) for several values per row",
            reason="INVALID_RESULT_TYPE",
        )
    target = _numpy_of_spark(spark_type)
    if target is not None and arr.dtype != target:
        # within a kind, or up a kind (bool -> int -> float); never float -> int or int -> bool
        if arr.dtype.kind in "iufb" and np.can_cast(arr.dtype, target, casting="same_kind"):
            arr = arr.astype(target)
        else:
            raise InvalidArgument(
                f"the model returned {arr.dtype} values, which would be cut to the result type "
                f"{spark_type.simpleString()}: pass a result_type that holds them",
                reason="INVALID_RESULT_TYPE",
            )
    if isinstance(spark_type, T.StringType) and arr.dtype.kind != "O":
        arr = arr.astype(str).astype(object)
    return pd.Series(arr)


def _to_result(prediction: Any, spark_type: SparkDataType, rows: int) -> pd.Series | pd.DataFrame:
    """A batch of predictions as what the pandas UDF returns: a Series, or a DataFrame for a
    struct result (fields taken by name when the model named them, by position otherwise)."""
    import pandas as pd

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
        out = {f.name: _column_values(p, f.dataType).to_numpy() for f, p in zip(fields, parts, strict=True)}
        frame = pd.DataFrame(out)
    else:
        if isinstance(prediction, dict) and len(prediction) == 1:
            prediction = next(iter(prediction.values()))
        frame = _column_values(prediction, spark_type)
    if len(frame) != rows:
        raise InvalidArgument(
            f"the model returned {len(frame)} predictions for a batch of {rows} rows",
            reason="INVALID_RESULT_TYPE",
        )
    return frame


def _tensor_input(values: pd.Series, spec: TensorSpec) -> np.ndarray:
    """An array column (one nested list per row) as the tensor ``spec`` describes."""
    if len(spec.shape) <= 1:
        return values.to_numpy().astype(spec.dtype, copy=False)
    rows = [np.asarray(v) for v in values]
    if any(r.dtype == object for r in rows):  # nested arrays arrive as arrays of arrays
        rows = [np.stack(list(r)) if r.size else r for r in rows]
    stacked = np.stack(rows) if rows else np.empty((0, *[max(d, 0) for d in spec.shape[1:]]))
    return stacked.astype(spec.dtype, copy=False)


def _model_input(batch: pd.DataFrame, inputs: Schema | None, by_position: bool) -> Any:
    """What ``PyFuncModel.predict`` receives for one batch of the UDF's struct column."""
    if inputs is None:
        return batch
    if by_position:
        if len(batch.columns) > len(inputs.inputs):
            raise InvalidArgument(
                f"spark_udf got {len(batch.columns)} columns, the model's signature has "
                f"{len(inputs.inputs)} inputs {inputs.input_names()}",
                reason="SIGNATURE_MISMATCH",
            )
        if inputs.has_input_names():
            batch = batch.set_axis([str(n) for n in inputs.input_names()[: len(batch.columns)]], axis=1)
    if not inputs.is_tensor_spec():
        return batch
    specs = [s for s in inputs.inputs if isinstance(s, TensorSpec)]
    if not inputs.has_input_names():
        if len(batch.columns) != 1 or len(specs) != 1:
            raise InvalidArgument(
                f"the model takes one tensor; pass it as one array column, got {len(batch.columns)} columns",
                reason="SIGNATURE_MISMATCH",
            )
        return _tensor_input(batch.iloc[:, 0], specs[0])
    missing = [s.name for s in specs if s.name not in batch.columns]
    if missing:
        raise InvalidArgument(
            f"missing input tensor{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}: "
            f"the model expects {[s.name for s in specs]}, got {list(batch.columns)}",
            reason="SIGNATURE_MISMATCH",
        )
    return {str(s.name): _tensor_input(batch[s.name], s) for s in specs}


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


def _make_predict(
    archive_name: str, inputs: Schema | None, by_position: bool, spark_type: SparkDataType
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.Series | pd.DataFrame]]:
    import pandas as pd

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.Series | pd.DataFrame]:
        model = _worker_model(archive_name)
        for batch in batches:
            prediction = model.predict(_model_input(batch, inputs, by_position))
            yield _to_result(prediction, spark_type, len(batch))

    # Spark picks the UDF kind from the hints: an iterator of batches in (a struct column arrives
    # as a DataFrame), an iterator of Series out, or of DataFrames for a struct result
    out = pd.DataFrame if isinstance(spark_type, _pyspark_types().StructType) else pd.Series
    predict.__annotations__ = {"batches": Iterator[pd.DataFrame], "return": Iterator[out]}  # type: ignore[valid-type]
    return predict


class SparkUDF:
    """The callable ``spark_udf`` returns: ``udf()`` takes the columns the signature names,
    ``udf(col, ...)`` takes columns (names or ``Column`` objects) by position."""

    def __init__(self, archive_name: str, metadata: Model, result_type: SparkDataType) -> None:
        self.metadata = metadata
        self.result_type = result_type
        self._archive_name = archive_name
        signature = metadata.signature
        self._inputs = signature.inputs if signature is not None else None

    def __call__(self, *columns: str | Column) -> Column:
        from pyspark.sql import functions as F
        from pyspark.sql.functions import pandas_udf

        if not columns:
            if self._inputs is None or not self._inputs.has_input_names():
                raise InvalidArgument(
                    "the model's signature names no inputs: call the UDF with its input columns, in order",
                    reason="SIGNATURE_MISMATCH",
                )
            # every column travels; enforcement picks the signature's by name, so a missing one
            # fails with the signature's message (pass columns explicitly for wide tables)
            packed = F.struct(F.col("*"))
        else:
            packed = F.struct(*columns)
        predict = _make_predict(self._archive_name, self._inputs, bool(columns), self.result_type)
        udf = pandas_udf(predict, returnType=self.result_type)  # type: ignore[call-overload]
        return udf(packed)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"SparkUDF(result_type={self.result_type.simpleString()!r}, run_id={self.metadata.run_id!r})"


def spark_udf(
    spark: SparkSession,
    model_uri: str,
    result_type: SparkDataType | str | None = None,
    env_manager: str = "local",
) -> SparkUDF:
    """A pandas UDF scoring DataFrames with the pyfunc model at ``model_uri``.

    ``result_type``: a ``pyspark.sql.types.DataType`` or DDL string (``"double"``,
    ``"array<float>"``, ``"struct<label: long, score: double>"``); inferred from the model's
    output schema when omitted. ``env_manager``: only ``"local"`` (the workers use the driver's
    Python environment, which must have the model's dependencies).

    Security: the workers unpickle the model; only score with models from a trusted registry.
    """
    require("pyspark", "spark", purpose=_PURPOSE)
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
    return SparkUDF(os.path.basename(archive), metadata, spark_type)
