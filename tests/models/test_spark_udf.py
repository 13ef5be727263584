"""keel.pyfunc.spark_udf on PySpark 4 in local mode (``local[2]``), against a real in-process
keel server: results equal in-process pyfunc predictions row for row, each Python worker loads
the model once, and bad inputs fail with the signature's message.

Loads are counted by the models themselves: their classes append the unpickling process's pid
to a file named by ``KEEL_TEST_SPARK_LOADS`` (the Spark workers inherit the driver's environment).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")
pytest.importorskip("torch")

import torch  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from server_fixtures import ServerHandle, running_server  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import keel  # noqa: E402
import keel.pyfunc  # noqa: E402
import keel.pytorch  # noqa: E402
import keel.sklearn  # noqa: E402
from keel.exceptions import InvalidArgument, MissingExtra  # noqa: E402

pytestmark = [
    pytest.mark.server,
    pytest.mark.slow,
    # PySpark 4.3 warns about pandas 3 (which it runs here) and calls a deprecated pandas argument
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

PARALLELISM = 2
ROWS = 200_000
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LOADS_ENV = "KEEL_TEST_SPARK_LOADS"


def _record_load(kind: str) -> None:
    folder = os.environ.get(LOADS_ENV)
    if folder:
        with open(os.path.join(folder, f"{kind}.log"), "a") as log:
            log.write(f"{os.getpid()}\n")


class CountedScaler(StandardScaler):
    """A StandardScaler that records each unpickling (one per model load)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        _record_load("sklearn")
        super().__setstate__(state)


class CountedMLP(torch.nn.Module):
    """A small MLP that records each unpickling."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def forward(self, x: Any) -> Any:
        return self.layers(x)

    def __setstate__(self, state: dict[str, Any]) -> None:
        _record_load("torch")
        super().__setstate__(state)


def _worker_loads(folder: Path, kind: str) -> list[int]:
    """The pids that loaded the model, the driver's own (in-process reference) loads left out."""
    log = folder / f"{kind}.log"
    pids = [int(line) for line in log.read_text().split()] if log.exists() else []
    return [pid for pid in pids if pid != os.getpid()]


@pytest.fixture(scope="module")
def load_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spark-loads")


@pytest.fixture(scope="module")
def spark(load_log: Path) -> Iterator[SparkSession]:
    # set before the JVM starts: Spark's Python workers inherit this environment
    saved = {
        k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONPATH", LOADS_ENV)
    }
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).parent), saved["PYTHONPATH"]) if p
    )
    os.environ[LOADS_ENV] = str(load_log)
    session = (
        SparkSession.builder.master(f"local[{PARALLELISM}]")
        .appName("keel-spark-udf-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", str(PARALLELISM))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    try:
        yield session
    finally:
        session.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def iris_like() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({name: rng.normal(4.0, 1.5, ROWS) for name in FEATURES})
    frame.insert(0, "id", np.arange(ROWS, dtype=np.int64))
    return frame


@pytest.fixture(scope="module")
def sdf(spark: SparkSession, iris_like: pd.DataFrame) -> DataFrame:
    return spark.createDataFrame(iris_like).repartition(PARALLELISM).cache()


@pytest.fixture(scope="module")
def keel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One SQLite server for the module: the registry only hands the model over, and what is
    tested here is Spark's side (the contract suites cover the three databases)."""
    root = tmp_path_factory.mktemp("spark-keel")
    with running_server(f"sqlite:///{root}/keel.db", f"file://{root}/artifacts") as handle:
        yield handle


@pytest.fixture(scope="module")
def sklearn_uri(keel_server: ServerHandle, iris_like: pd.DataFrame) -> str:
    keel.set_tracking_uri(keel_server.uri)
    client = keel.Client(keel_server.uri)
    X = iris_like[FEATURES]
    y = (X["sepal_length"] + X["petal_width"] > 8.0).astype(np.int64)
    model = make_pipeline(CountedScaler(), LogisticRegression()).fit(X.head(2000), y.head(2000))
    name = f"spark-iris-{uuid.uuid4().hex[:8]}"
    with keel.start_run():
        keel.sklearn.log_model(model, "model", input_example=X.head(3), registered_model_name=name)
    client.transition_model_version_stage(name, "1", "Production")
    return f"models:/{name}/Production"


def _ordered(result: DataFrame) -> pd.DataFrame:
    return cast(pd.DataFrame, result.toPandas()).sort_values("id").reset_index(drop=True)


def test_sklearn_model_from_the_registry_matches_pyfunc_and_loads_once_per_worker(
    spark: SparkSession, sdf: DataFrame, iris_like: pd.DataFrame, sklearn_uri: str, load_log: Path
) -> None:
    (load_log / "sklearn.log").unlink(missing_ok=True)  # count this test's loads only
    predict = keel.pyfunc.spark_udf(spark, sklearn_uri)
    assert predict.result_type.simpleString() == "bigint"  # the output schema: one long column
    expected = keel.pyfunc.load_model(sklearn_uri).predict(iris_like)

    got = _ordered(sdf.select("id", predict().alias("prediction")))  # by the signature's names
    assert len(got) == ROWS
    np.testing.assert_array_equal(got["prediction"].to_numpy(), np.asarray(expected))

    # by position: the columns' own names do not matter
    renamed = sdf.select("id", *[F.col(n).alias(f"c{i}") for i, n in enumerate(FEATURES)])
    by_position = _ordered(renamed.select("id", predict(*[f"c{i}" for i in range(4)]).alias("prediction")))
    np.testing.assert_array_equal(by_position["prediction"].to_numpy(), np.asarray(expected))

    workers = _worker_loads(load_log, "sklearn")
    assert workers, "no Spark worker loaded the model"
    assert len(workers) == len(set(workers)), f"a worker loaded the model more than once: {workers}"
    assert len(set(workers)) <= PARALLELISM


def test_pytorch_tensor_model_takes_an_array_column(
    spark: SparkSession, sdf: DataFrame, iris_like: pd.DataFrame, load_log: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    module = CountedMLP().eval()
    example = iris_like[FEATURES].head(5).to_numpy(np.float32)
    with torch.no_grad():
        example_out = module(torch.from_numpy(example.copy())).numpy()
    signature = keel.models.infer_signature(example, example_out)
    model_dir = str(tmp_path / "mlp")
    keel.pytorch.save_model(module, model_dir, signature=signature)

    predict = keel.pyfunc.spark_udf(spark, model_dir)
    assert predict.result_type.simpleString() == "array<float>"
    features = F.array(*FEATURES).cast("array<float>").alias("features")
    got = _ordered(sdf.select("id", predict(features).alias("scores")))
    expected = keel.pyfunc.load_model(model_dir).predict(iris_like[FEATURES].to_numpy(np.float32))
    assert len(got) == ROWS
    np.testing.assert_array_equal(np.stack(got["scores"].to_numpy()), expected)

    workers = _worker_loads(load_log, "torch")
    assert workers and len(workers) == len(set(workers)) and len(set(workers)) <= PARALLELISM, workers


def test_a_missing_column_fails_with_the_signature_message(
    spark: SparkSession, sdf: DataFrame, sklearn_uri: str
) -> None:
    predict = keel.pyfunc.spark_udf(spark, sklearn_uri)
    typo = sdf.limit(100).withColumnRenamed("petal_width", "petal_widht")
    with pytest.raises(Exception) as caught:
        typo.select(predict()).collect()
    assert "missing input column 'petal_width'" in str(caught.value)
    assert "SIGNATURE_MISMATCH" in str(caught.value) or "the model expects columns" in str(caught.value)

    with pytest.raises(Exception) as too_many:
        sdf.limit(10).select(predict("id", *FEATURES)).collect()
    assert "the model's signature has 4 inputs" in str(too_many.value)

    wrong_type = sdf.limit(10).withColumn("sepal_width", F.lit("wide"))
    with pytest.raises(Exception) as typed:
        wrong_type.select(predict()).collect()
    assert "sepal_width" in str(typed.value)


class TwoOutputs(keel.pyfunc.PythonModel):
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        total = model_input["a"] + model_input["b"]
        return pd.DataFrame({"label": (total > 0).astype(np.int64), "score": total.astype(np.float64)})


def test_several_output_columns_give_a_struct(spark: SparkSession, tmp_path: Path) -> None:
    example = pd.DataFrame({"a": [1.0, -3.0], "b": [0.5, 1.0]})
    model_dir = str(tmp_path / "two")
    signature = keel.models.infer_signature(example, TwoOutputs().predict(None, example))
    keel.pyfunc.save_model(model_dir, python_model=TwoOutputs(), signature=signature)

    predict = keel.pyfunc.spark_udf(spark, model_dir)
    assert predict.result_type.simpleString() == "struct<label:bigint,score:double>"
    frame = spark.createDataFrame(pd.DataFrame({"a": [2.0, -5.0, 0.25], "b": [1.0, 1.0, -1.0]}))
    rows = frame.select(predict().alias("out")).select("out.label", "out.score").collect()
    assert [(r.label, r.score) for r in rows] == [(1, 3.0), (0, -4.0), (0, -0.75)]

    # an explicit result type: a DDL string
    as_double = keel.pyfunc.spark_udf(spark, model_dir, result_type="struct<label: double, score: double>")
    assert frame.select(as_double().alias("o")).select("o.label").collect()[0].label == 1.0

    # a result type that would cut the predictions is refused, naming the types
    as_long = keel.pyfunc.spark_udf(spark, model_dir, result_type="struct<label: long, score: long>")
    with pytest.raises(Exception, match="float64 values, which would be cut to the result type bigint"):
        frame.select(as_long()).collect()


class Describe(keel.pyfunc.PythonModel):
    """Returns, per row, the dtypes and values it was given: what the model sees."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.Series:
        return _describe(model_input)


def _describe(frame: pd.DataFrame) -> pd.Series:
    kinds = ",".join(f"{name}:{frame[name].dtype}" for name in frame.columns)
    return pd.Series([f"{kinds}|{list(row)!r}" for row in frame.itertuples(index=False)])


class EchoTimestamp(keel.pyfunc.PythonModel):
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.Series:
        return model_input["ts"]


def test_the_model_sees_what_a_pandas_udf_sees(spark: SparkSession, tmp_path: Path) -> None:
    """The Arrow UDF converts nothing a pandas UDF would not: nulls, strings, binary, dates,
    timestamps (in the session's zone), maps and arrays reach the model as pyspark has them."""
    from pyspark import cloudpickle
    from pyspark.sql.functions import pandas_udf

    keel.pyfunc.save_model(str(tmp_path / "describe"), python_model=Describe())
    keel.pyfunc.save_model(str(tmp_path / "echo"), python_model=EchoTimestamp())

    @pandas_udf("string")  # type: ignore[call-overload]
    def reference(batch: pd.DataFrame) -> pd.Series:
        return _describe(batch)

    saved_zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")  # literals below are New York time
    # the workers cannot import this module (it needs the test tree): ship its code with the UDF
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    frame = spark.sql(
        "SELECT * FROM VALUES "
        "(1, 'a', 1.5, true, X'01', DATE'2024-02-29', TIMESTAMP'2024-03-10 01:30:00', map('k', 1), array(1.0, 2.0)), "
        "(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "
        "(3, 'c', -2.0, false, X'', DATE'1970-01-01', TIMESTAMP'1969-12-31 23:59:59.123456', map(), array()) "
        "AS t(n, s, x, b, bin, d, ts, m, arr)"
    ).coalesce(1)
    columns = frame.columns
    try:
        describe = keel.pyfunc.spark_udf(spark, str(tmp_path / "describe"), result_type="string")
        got = frame.select(
            describe(*columns).alias("keel"), reference(F.struct(*columns)).alias("pandas")
        ).collect()
        assert [r.keel for r in got] == [r.pandas for r in got]
        assert "n:Int32," in got[0].keel and "Timestamp('2024-03-10 01:30:00')" in got[0].keel

        # a naive datetime returned by the model is wall time in the session's zone, as pyspark has it
        echo = keel.pyfunc.spark_udf(spark, str(tmp_path / "echo"), result_type="timestamp")
        both = frame.select("ts", echo("ts").alias("back")).collect()
        assert [r.back for r in both] == [r.ts for r in both]
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        spark.conf.set("spark.sql.session.timeZone", saved_zone)


def test_nested_arrays_convert_as_whole_arrays_both_ways() -> None:
    """Rectangular list columns become one tensor from the list offsets (also for a slice of a
    column, whose offsets do not start at 0), and tensor results become list offsets."""
    import pyarrow as pa
    from pyspark.sql.types import ArrayType, DoubleType, LongType

    from keel.models.schema import TensorSpec
    from keel.pyfunc import spark as keel_spark

    values = np.arange(24, dtype=np.float64).reshape(4, 3, 2)
    column = pa.array(values.tolist(), type=pa.list_(pa.list_(pa.float64())))[1:]
    spec = TensorSpec(np.dtype("float32"), (-1, 3, 2))
    tensor = keel_spark._tensor_input(column, spec)
    assert tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor, values[1:].astype(np.float32))

    ragged = pa.array([[1.0, 2.0], [3.0]], type=pa.list_(pa.float64()))  # row by row, and numpy says why
    with pytest.raises(ValueError):
        keel_spark._tensor_input(ragged, TensorSpec(np.dtype("float64"), (-1, 2)))

    back = keel_spark._to_arrow(values, ArrayType(ArrayType(DoubleType())), 4, "UTC")
    assert back.type == pa.list_(pa.list_(pa.float64())) and back.to_pylist() == values.tolist()
    with pytest.raises(InvalidArgument, match="float64 values, which would be cut to the result type bigint"):
        keel_spark._to_arrow(values, ArrayType(ArrayType(LongType())), 4, "UTC")
    with pytest.raises(InvalidArgument, match="returned 4 predictions for a batch of 5 rows"):
        keel_spark._to_arrow(values[:, 0, 0], DoubleType(), 5, "UTC")


def test_bad_arguments_fail_before_anything_runs(
    spark: SparkSession, sklearn_uri: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgument, match="env_manager 'virtualenv' is not supported"):
        keel.pyfunc.spark_udf(spark, sklearn_uri, env_manager="virtualenv")
    with pytest.raises(InvalidArgument, match="is not a Spark type"):
        keel.pyfunc.spark_udf(spark, sklearn_uri, result_type="not a type<")
    with pytest.raises(InvalidArgument, match="DataType or a DDL string"):
        keel.pyfunc.spark_udf(spark, sklearn_uri, result_type=42)  # type: ignore[arg-type]
    with pytest.raises(keel.exceptions.NotFound):
        keel.pyfunc.spark_udf(spark, str(tmp_path / "absent"))


def test_a_pyspark_without_arrow_udfs_is_refused_naming_the_version(
    spark: SparkSession, sklearn_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyspark.sql.functions

    monkeypatch.delattr(pyspark.sql.functions, "arrow_udf")  # what pyspark 4.0 looks like
    with pytest.raises(MissingExtra, match=r"needs pyspark 4\.1 or later \(Arrow UDFs\), found 4\."):
        keel.pyfunc.spark_udf(spark, sklearn_uri)


def test_without_pyspark_the_error_names_the_extra(
    spark: SparkSession, sklearn_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # what an uninstalled package looks like
    with pytest.raises(MissingExtra, match=r"pyspark is not installed .*pip install 'keel-ml\[spark\]'"):
        keel.pyfunc.spark_udf(spark, sklearn_uri)
