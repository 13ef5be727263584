"""Batch scoring (issue #17's performance part): ``keel models predict`` against a plain pandas
loop on one machine, and ``keel.pyfunc.spark_udf`` against MLflow's ``mlflow.pyfunc.spark_udf``
in Spark ``local[2]``.

Run with ``make bench-batch`` (or ``.venv/bin/python bench/bench_batch.py [--quick]
[--mlflow-python build/venv-mlflow3/bin/python]``).

Two models are trained once on iris (150 rows, 4 features): a RandomForestClassifier(50) and a
small MLPClassifier(16, 16). Each is saved with ``keel.sklearn.save_model`` here and, pickled
over to MLflow's environment, with ``mlflow.sklearn.save_model`` there (both with the signature
inferred from iris). 1,000,000 rows are drawn from iris with a little noise (fixed seed) and
written as parquet; each model scores them:

* floor: the raw sklearn model's ``predict`` on the same 10,000-row chunks, in this process, on
  a DataFrame already in memory (no reading, no writing), with one BLAS thread (one core, as a
  Spark task has): what a plain pandas loop costs per core;
* ``keel models predict`` as a process, parquet in, parquet out, ``--batch-size 10000``: wall time
  from the start of the process (interpreter, imports and model load included) to its exit;
* ``keel.batch.predict_file`` in this process: the same work without the process start;
* Spark, two sessions with the same settings (``SPARK_CONF``: ``local[2]``, Arrow batches of
  10,000 rows), keel's in this process and MLflow's in ``spark_mlflow_udf.py`` under MLflow's
  interpreter (its workers too), both kept open: each UDF is warmed up by one pass, then
  every round times, per model, a ``count`` over the scored column of all rows for: a
  hand-written pandas UDF calling the raw model (what a user writes without either library),
  ``keel.pyfunc.spark_udf`` and ``mlflow.pyfunc.spark_udf`` (both called with the four columns,
  ``env_manager="local"``), plus once per round an identity pandas UDF that returns its first
  column (what Spark alone costs per row). The rounds alternate the contenders so that a busy
  shared machine slows all of them alike; the table gives the best round of each. The CPU
  time of each session's JVM and its Python workers (from /proc) is taken around each job too:
  core-microseconds per row, which a busy machine disturbs less than wall time.
* model loads per Python worker, both UDFs: ``bench/spark_loads/sitecustomize.py`` (on the
  workers' ``PYTHONPATH``) logs every call of keel's and MLflow's ``load_model`` with the
  worker's pid; the driver's own loads are left out.
* the Python worker's own CPU time per row (``time.process_time``, so a busy machine matters
  less): the raw model on numpy, what a pandas UDF's worker does around it (pyspark's Arrow to
  pandas conversion of the input struct and pandas to Arrow of the result), and keel's UDF
  function on the same Arrow batches.

Results are printed and written to this script's section of bench/RESULTS.md (``--quick``:
100,000 rows and two rounds, RESULTS.md untouched). Text in that section after the line
``<!-- hand-written -->`` is kept when the section is rewritten.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Tuple  # noqa: UP035 - pyspark reads typing.Tuple hints, not tuple[...]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracking import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Batch scoring (bench/bench_batch.py)"
KEPT = "<!-- hand-written -->"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BATCH = 10_000
CORES = 2
# both Spark sessions, keel's and MLflow's, are built from these settings
SPARK_CONF = {
    "master": f"local[{CORES}]",
    "spark.sql.execution.arrow.maxRecordsPerBatch": str(BATCH),
    "spark.ui.enabled": "false",
    "spark.driver.memory": "2g",
}
MLFLOW_HELPER = ROOT / "bench" / "spark_mlflow_udf.py"
LOAD_COUNTER = ROOT / "bench" / "spark_loads"
CONTENDERS = ("hand", "keel", "mlflow")


def _models():  # type: ignore[no-untyped-def]
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neural_network import MLPClassifier

    iris = load_iris()
    X = pd.DataFrame(iris.data, columns=FEATURES)
    forest = RandomForestClassifier(n_estimators=50, random_state=0, n_jobs=1).fit(X, iris.target)
    mlp = MLPClassifier(hidden_layer_sizes=(16, 16), max_iter=2000, random_state=0).fit(X, iris.target)
    return X, {"iris RandomForest(50)": forest, "MLP(16, 16)": mlp}


def _rows(X, n: int):  # type: ignore[no-untyped-def]
    import numpy as np

    rng = np.random.default_rng(0)
    picked = X.to_numpy()[rng.integers(0, len(X), n)]
    return X.__class__(picked + rng.normal(0, 0.05, picked.shape), columns=FEATURES)


def _floor(model, frame) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Seconds and CPU seconds of the pandas loop."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one core, as a Spark task has (Spark sets OMP_NUM_THREADS=1)
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(frame), BATCH):
            model.predict(frame.iloc[start : start + BATCH])
        return time.perf_counter() - started, time.process_time() - cpu


def _command(model_dir: Path, source: Path, out: Path) -> float:
    argv = [sys.executable, "-m", "keel.cli", "models", "predict", "-m", str(model_dir), "-i", str(source)]
    argv += ["-o", str(out), "--batch-size", str(BATCH), "--no-progress"]
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - started


def _in_process(model_dir: Path, source: Path, out: Path) -> float:
    from keel.batch import predict_file

    started = time.perf_counter()
    predict_file(str(model_dir), source, out, batch_size=BATCH, progress=False)
    return time.perf_counter() - started


# -- the Python worker's CPU per row ----------------------------------------------------------------


def _worker_cpu(
    models: dict[str, Any], model_dirs: dict[str, Path], frame: Any, work: Path
) -> dict[str, dict[str, float]]:
    """CPU microseconds per row, in this process, on the 10,000-row Arrow batches Spark sends:
    the raw model on numpy; what the worker of a hand-written pandas UDF does (pyspark's
    conversion of the input struct to a DataFrame, the raw model, the result back to Arrow,
    with a default session's settings); keel's UDF function. Also for a small torch MLP taking
    an ``array<float>`` column (keel's tensor path). {} when this pyspark lacks the conversion
    functions (they are internal)."""
    import warnings

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from threadpoolctl import threadpool_limits

    try:
        from pyspark.sql import conversion
        from pyspark.sql.types import ArrayType, FloatType, LongType
    except ImportError:
        return {}
    if not hasattr(conversion, "ArrowBatchTransformer") or not hasattr(conversion, "PandasToArrowConversion"):
        return {}
    import keel.pytorch
    from keel.models.signature import infer_signature

    rows = min(len(frame), 200_000)
    chunks = [frame.iloc[s : s + BATCH] for s in range(0, rows, BATCH)]
    tables = [
        pa.StructArray.from_arrays([pa.array(c[f].to_numpy()) for f in FEATURES], names=FEATURES)
        for c in chunks
    ]
    arrays = [c.to_numpy() for c in chunks]
    out: dict[str, dict[str, float]] = {}
    # one BLAS thread, as in a Spark worker (Spark sets OMP_NUM_THREADS to spark.task.cpus); the
    # raw model on numpy warns that the array has no column names
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for name, model in models.items():

            def hand(table: Any, model: Any = model) -> Any:
                return pd.Series(model.predict(table))

            out[name] = _worker_cpu_of(
                model.predict, hand, model_dirs[name], tables, arrays, LongType(), rows
            )
        try:
            import torch
        except ImportError:
            return out
        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
        floats = [a.astype(np.float32) for a in arrays]
        lists = [
            pa.StructArray.from_arrays(
                [
                    pa.ListArray.from_arrays(
                        pa.array(np.arange(0, 4 * len(a) + 1, 4, dtype=np.int32)), pa.array(a.ravel())
                    )
                ],
                names=["features"],
            )
            for a in floats
        ]

        def raw(a: Any) -> Any:
            with torch.no_grad():
                return module(torch.from_numpy(a)).numpy()

        def hand_torch(table: Any) -> Any:  # one numpy array per row, as pandas has an array column
            return pd.Series(list(raw(np.stack(table["features"].to_numpy()))))

        torch_dir = work / "torch-mlp"
        keel.pytorch.save_model(module, str(torch_dir), signature=infer_signature(floats[0], raw(floats[0])))
        out["torch MLP, array<float> column"] = _worker_cpu_of(
            raw, hand_torch, torch_dir, lists, floats, ArrayType(FloatType()), rows
        )
    return out


def _worker_cpu_of(
    raw: Callable[[Any], Any],
    hand: Callable[[Any], Any],
    model_dir: Path,
    structs: list[Any],
    arrays: list[Any],
    result_type: Any,
    rows: int,
) -> dict[str, float]:
    import pyarrow as pa
    from pyspark.sql.conversion import ArrowBatchTransformer, PandasToArrowConversion
    from pyspark.sql.types import StructField, StructType

    from keel.pyfunc import spark as keel_spark
    from keel.pyfunc.pyfunc_model import load_model

    batches = [pa.RecordBatch.from_arrays([s], ["_0"]) for s in structs]
    schema = StructType([StructField("_0", result_type)])

    def pandas_udf_worker() -> None:
        for batch in batches:
            table = ArrowBatchTransformer.to_pandas(
                batch,
                timezone="UTC",
                struct_in_pandas="dict",
                ndarray_as_list=False,
                prefer_int_ext_dtype=False,
                df_for_struct=True,
            )[0]
            PandasToArrowConversion.convert(
                [hand(table)],
                schema,
                timezone="UTC",
                safecheck=True,
                arrow_cast=True,
                prefers_large_types=False,
                assign_cols_by_name=True,
                int_to_decimal_coercion_enabled=False,
            )

    pyfunc = load_model(str(model_dir))
    archive = f"bench-{model_dir.name}"
    keel_spark._loaded[archive] = pyfunc  # what _worker_model would have loaded in a worker
    inputs = pyfunc.metadata.signature.inputs  # type: ignore[union-attr]
    # called with columns, keel's UDF takes a named signature's columns one by one, others as a struct
    names = [str(n) for n in inputs.input_names()] if inputs.has_input_names() else None
    keel_udf = keel_spark._make_predict(archive, inputs, True, result_type, "UTC", names)
    keel_batches = [tuple(s.flatten()) for s in structs] if names else structs

    def cpu(run: Callable[[], object]) -> float:
        run()  # warm
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            run()
            best = min(best, time.process_time() - started)
        return best / rows * 1e6

    return {
        "raw": cpu(lambda: [raw(a) for a in arrays]),
        "pandas_udf": cpu(pandas_udf_worker),
        "keel": cpu(lambda: list(keel_udf(iter(keel_batches)))),
    }


# -- Spark ---------------------------------------------------------------------------------------


class _MlflowSession:
    """``spark_mlflow_udf.py`` under MLflow's interpreter: one JSON line per answer."""

    def __init__(self, python: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.errors = cwd / "mlflow-helper.log"
        self._proc = subprocess.Popen(
            [python, str(MLFLOW_HELPER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors.open("w"),
            text=True,
            env=env,
            cwd=cwd,
        )
        self.pid = self._proc.pid

    def read(self, timeout: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._proc.stdout], [], [], left)[0]:
                raise TimeoutError(f"MLflow's session did not answer within {timeout:.0f} s")
            line = self._proc.stdout.readline()
            if not line:
                tail = self.errors.read_text()[-400:].strip()
                raise RuntimeError(
                    f"MLflow's session ended ({tail.splitlines()[-1] if tail else 'no output'})"
                )
            if line.startswith("{"):  # anything else is a library printing to stdout
                answer: dict[str, Any] = json.loads(line)
                if "error" in answer:
                    raise RuntimeError(answer["error"])
                return answer

    def run(self, name: str) -> tuple[float, float | None]:
        """Seconds of one scoring job, and the CPU seconds of MLflow's JVM and its Python
        workers meanwhile (None when a process of theirs ended during the job)."""
        assert self._proc.stdin is not None
        before = _tree_cpu(self.pid)
        self._proc.stdin.write(f"run {name}\n")
        self._proc.stdin.flush()
        seconds = float(self.read(timeout=900)["seconds"])
        return seconds, _cpu_spent(before, _tree_cpu(self.pid), skip=self.pid)

    def close(self) -> None:
        if self._proc.stdin is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()


def _tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user and system) of ``root`` and each live descendant, from /proc (Linux;
    {} elsewhere). Children are listed per thread: the JVM forks Python from other threads."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, float] = {}
    todo = [root]
    while todo and len(out) < 10_000:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return out


def _cpu_spent(before: dict[int, float], after: dict[int, float], skip: int | None = None) -> float | None:
    """CPU seconds between two snapshots, or None when a process ended in between (Spark's
    Python daemon ignores SIGCHLD, so a finished worker's time is lost with it)."""
    if not before or not set(before) <= set(after):
        return None
    return sum(after[p] - before.get(p, 0.0) for p in after if p != skip)


def _spark_session():  # type: ignore[no-untyped-def]
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in SPARK_CONF.items():
        builder = builder.master(value) if key == "master" else builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _series_iterator() -> dict[str, Any]:
    """The hints of an iterator-of-several-Series pandas UDF, as objects: pyspark picks the UDF
    kind from them, and cannot resolve them as strings (this module postpones annotations)."""
    import pandas as pd

    return {"batches": Iterator[Tuple[pd.Series, ...]], "return": Iterator[pd.Series]}  # noqa: UP006


def _identity_udf():  # type: ignore[no-untyped-def]
    """Spark alone: a pandas UDF that returns its first column."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    def first(batches: Iterator[Any]) -> Iterator[pd.Series]:
        for columns in batches:
            yield columns[0]

    first.__annotations__ = _series_iterator()
    return pandas_udf(first, returnType="double")  # type: ignore[call-overload]


def _hand_written_udf(model: Any):  # type: ignore[no-untyped-def]
    """What a user writes without either library: the raw model in a pandas UDF (shipped with
    the UDF's closure), no signature check."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    def predict(batches: Iterator[Any]) -> Iterator[pd.Series]:
        for columns in batches:
            yield pd.Series(model.predict(pd.DataFrame(dict(zip(FEATURES, columns, strict=True)))))

    predict.__annotations__ = _series_iterator()
    return pandas_udf(predict, returnType="long")  # type: ignore[call-overload]


def _spark(
    models: dict[str, Any],
    model_dirs: dict[str, Path],
    X: Any,
    source: Path,
    work: Path,
    mlflow_python: str | None,
    rounds: int,
) -> tuple[dict[str, Any], list[str]]:
    """Best seconds per model and contender (and "identity"), loads per worker, and notes on
    what could not be measured."""
    notes: list[str] = []
    try:
        import pyspark  # noqa: F401

        from keel.pyfunc import spark_udf
    except Exception as exc:  # not installed: the section says so
        return {}, [f"Spark not measured: {type(exc).__name__}: {exc}"]
    load_log = work / "loads.log"
    # set before either JVM starts: the Python workers inherit the environment
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(LOAD_COUNTER), os.environ.get("PYTHONPATH")) if p
    )
    os.environ["KEEL_BENCH_LOAD_LOG"] = str(load_log)

    mlflow: _MlflowSession | None = None
    if mlflow_python and Path(mlflow_python).exists():
        models_file, conf_file = work / "models.pkl", work / "spark-conf.json"
        import sklearn

        with models_file.open("wb") as f:
            pickle.dump({"sklearn": sklearn.__version__, "iris": X, "models": models}, f)
        conf_file.write_text(json.dumps(SPARK_CONF))
        env = {**os.environ, "PYSPARK_PYTHON": mlflow_python}
        mlflow = _MlflowSession(
            mlflow_python, [str(models_file), str(source), str(work), str(conf_file)], env, work
        )
    else:
        notes.append(f"MLflow's spark_udf not measured: no MLflow interpreter at {mlflow_python!r}")

    spark = _spark_session()
    jvm = getattr(getattr(spark.sparkContext, "_gateway", None), "proc", None)  # keel's JVM process
    times: dict[str, dict[str, list[float]]] = {name: {c: [] for c in CONTENDERS} for name in models}
    cpu: dict[str, dict[str, list[float]]] = {
        name: {c: [] for c in CONTENDERS} for name in [*models, "identity"]
    }
    identity: list[float] = []
    archives: dict[str, str] = {}
    try:
        df = spark.read.parquet(str(source)).cache()
        df.count()
        partitions = df.rdd.getNumPartitions()
        columns = {"identity": _identity_udf()(*FEATURES)}
        for name, model in models.items():
            predict = spark_udf(spark, str(model_dirs[name]))
            archives[name] = predict._archive_name
            columns[f"hand {name}"] = _hand_written_udf(model)(*FEATURES)
            columns[f"keel {name}"] = predict(*FEATURES)

        def timed(key: str, name: str, contender: str) -> float:
            """Seconds of one scoring job of every row; its CPU (keel's JVM and Python workers)
            goes to ``cpu`` when no process ended meanwhile."""
            before = _tree_cpu(jvm.pid) if jvm is not None else {}
            started = time.perf_counter()
            df.select(columns[key].alias("p")).agg({"p": "count"}).collect()
            seconds = time.perf_counter() - started
            spent = _cpu_spent(before, _tree_cpu(jvm.pid)) if jvm is not None else None
            if spent is not None:
                cpu[name][contender].append(spent)
            return seconds

        # warm-up: a whole pass each (workers started, models loaded); a partial one (limit)
        # would end the workers it leaves unfinished
        for column in columns.values():
            df.select(column.alias("p")).agg({"p": "count"}).collect()
        if mlflow is not None:
            try:
                mlflow.read(timeout=900)  # ready: its session is up and its UDFs are warm
            except Exception as exc:
                notes.append(f"MLflow's spark_udf not measured: {exc}")
                mlflow.close()
                mlflow = None
        for round_ in range(rounds):
            identity.append(timed("identity", "identity", "hand"))
            for name in models:
                times[name]["hand"].append(timed(f"hand {name}", name, "hand"))
                times[name]["keel"].append(timed(f"keel {name}", name, "keel"))
                if mlflow is not None:
                    seconds, spent = mlflow.run(name)
                    times[name]["mlflow"].append(seconds)
                    if spent is not None:
                        cpu[name]["mlflow"].append(spent)
            print(f"  round {round_ + 1}/{rounds}, load average {os.getloadavg()[0]:.1f}", flush=True)
    except Exception as exc:
        errors = re.findall(r"^\w*(?:Error|Exception): .*$", str(exc), re.M)  # the worker's own error line
        notes.append(f"Spark failed: {errors[-1] if errors else f'{type(exc).__name__}: {exc}'}")
        return {}, notes
    finally:
        spark.stop()
        if mlflow is not None:
            mlflow.close()
    driver_pids = {str(os.getpid())} | ({str(mlflow.pid)} if mlflow is not None else set())
    loads = _loads(load_log, driver_pids, archives, list(models))
    result: dict[str, Any] = {
        "identity": identity,
        "times": times,
        "cpu": cpu,
        "loads": loads,
        "partitions": partitions,
    }
    result["jobs"] = 1 + rounds  # warm-up and rounds, per UDF
    return result, notes


def _loads(
    log: Path, driver_pids: set[str], archives: dict[str, str], names: list[str]
) -> dict[str, dict[str, Counter[str]]]:
    """{model: {"keel"|"mlflow": Counter(worker pid -> loads)}} from the load log. keel's
    workers load from ``<archive>.d/model``; MLflow's from a copy of ``mlflow-model<i>``."""
    out: dict[str, dict[str, Counter[str]]] = {n: {"keel": Counter(), "mlflow": Counter()} for n in names}
    lines = log.read_text().splitlines() if log.exists() else []
    for line in lines:
        pid, loader, path = line.split(" ", 2)
        if pid in driver_pids:
            continue
        for i, name in enumerate(names):
            if (loader == "keel" and archives.get(name, "\0") in path) or (
                loader == "mlflow" and Path(path).name == f"mlflow-model{i}"
            ):
                out[name][loader][pid] += 1
    return out


# -- report ----------------------------------------------------------------------------------------


def _rate(rows: int, seconds: float | None) -> str:
    return f"{rows / seconds:,.0f}" if seconds else "–"


def _per_worker(counter: Counter[str]) -> str:
    if not counter:
        return "–"
    workers = len(counter)
    return f"{', '.join(str(n) for n in sorted(counter.values()))} ({workers} worker{'s' if workers > 1 else ''})"


def report(
    rows: int,
    results: dict[str, dict[str, Any]],
    spark: dict[str, Any],
    cpu: dict[str, dict[str, float]],
    notes: list[str],
    began: float,
    load: float,
    rounds: int,
) -> str:
    lines = [
        SECTION,
        "",
        f"{dt.date.today().isoformat()}, {machine()}; load average {load:.1f} before the run and "
        f"{os.getloadavg()[0]:.1f} after, {time.monotonic() - began:.0f} s in all. {rows:,} rows (iris "
        f"with noise) as parquet, chunks and Arrow batches of {BATCH:,} rows. Rows per second (higher is "
        "better).",
        "",
        "### One machine: `keel models predict` against a pandas loop",
        "",
        "| model | pandas loop (floor) | `keel models predict` (process) | `keel.batch.predict_file` (in process) "
        "| command / floor |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {_rate(rows, r['floor'])} | {_rate(rows, r['command'])} | {_rate(rows, r['in_process'])} "
            f"| {r['command'] / r['floor']:.2f}x the time |"
        )
    lines += [
        "",
        "- Floor: the raw sklearn `predict` on in-memory chunks (no reading, no writing, no signature check), "
        "one BLAS thread. "
        "The command adds the process start, imports and model load (about 1.5 s), parquet reading and "
        "writing, and pyfunc's signature enforcement per chunk.",
    ]
    if spark:
        best_identity = min(spark["identity"])
        lines += [
            "",
            f"### Spark `local[{CORES}]`: `keel.pyfunc.spark_udf` against `mlflow.pyfunc.spark_udf`",
            "",
            f"Both sessions: {', '.join(f'`{k}={v}`' for k, v in SPARK_CONF.items())}; the cached parquet "
            f"has {spark['partitions']} partition{'s' if spark['partitions'] > 1 else ''} (tasks per job). "
            f"Best of {rounds} "
            "alternating rounds; the identity UDF (Spark alone, no model) did "
            f"{_rate(rows, best_identity)} rows/s.",
            "",
            "| model | hand-written pandas UDF (raw model) | `keel.pyfunc.spark_udf` | MLflow `spark_udf` "
            "| keel / MLflow | keel per core / floor | loads per worker: keel | loads per worker: MLflow |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, r in results.items():
            t = spark["times"][name]
            best = {c: min(t[c]) if t[c] else None for c in CONTENDERS}
            ratio = (
                f"{best['mlflow'] / best['keel']:.2f}x the rows/s" if best["mlflow"] and best["keel"] else "–"
            )
            # core-seconds of the UDF (its time on CORES cores) over the floor's seconds on one core
            per_core = f"{best['keel'] * CORES / r['floor']:.2f}x the time" if best["keel"] else "–"
            loads = spark["loads"][name]
            lines.append(
                f"| {name} | {_rate(rows, best['hand'])} | {_rate(rows, best['keel'])} | {_rate(rows, best['mlflow'])} "
                f"| {ratio} | {per_core} | {_per_worker(loads['keel'])} | {_per_worker(loads['mlflow'])} |"
            )
        medians = "; ".join(
            f"{name}: keel {_rate(rows, statistics.median(spark['times'][name]['keel']))}, MLflow "
            f"{_rate(rows, statistics.median(spark['times'][name]['mlflow'])) if spark['times'][name]['mlflow'] else '–'}"
            for name in results
        )
        lines += [
            "",
            f"- Medians of the rounds: {medians}.",
            f"- keel per core / floor: the UDF's time on {CORES} cores times {CORES}, over the floor's time on "
            "one (the target is at most 1.5x).",
            f"- Model loads per Python worker over the {spark['jobs']} jobs per UDF (a whole warm-up pass and "
            f"{rounds} rounds), counted by `bench/spark_loads/sitecustomize.py` in every Spark Python process: "
            "keel loads once per worker and keeps the model; MLflow loads it at the start of every task "
            "(in local mode it reads the model from the driver's local copy).",
        ]
        spent = spark["cpu"]

        def per_row(values: list[float]) -> str:
            return f"{min(values) / rows * 1e6:.2f}" if values else "–"

        lines += [
            "",
            "CPU per row of each session's JVM and Python workers (core-microseconds, lower is better; the "
            "least of the rounds in which no Spark process ended). Spark alone, the identity UDF: "
            f"{per_row(spent['identity']['hand'])}.",
            "",
            "| model | floor (its CPU) | hand-written pandas UDF | `keel.pyfunc.spark_udf` | MLflow `spark_udf` "
            "| keel / floor |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, r in results.items():
            c = spent[name]
            floor_us = r["floor_cpu"] / rows * 1e6
            versus = f"{min(c['keel']) / rows * 1e6 / floor_us:.2f}x" if c["keel"] else "–"
            lines.append(
                f"| {name} | {floor_us:.2f} | {per_row(c['hand'])} | {per_row(c['keel'])} | "
                f"{per_row(c['mlflow'])} | {versus} |"
            )
    if cpu:
        lines += [
            "",
            "### The Python worker's own CPU per row (microseconds, lower is better)",
            "",
            "| model | raw model on numpy | hand-written pandas UDF (pyspark's conversions + raw model) "
            "| keel's Arrow UDF function |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, c in cpu.items():
            lines.append(f"| {name} | {c['raw']:.3f} | {c['pandas_udf']:.3f} | {c['keel']:.3f} |")
        lines += [
            "",
            "- One process, 200,000 rows as 10,000-row Arrow struct batches (what Spark sends), "
            "`time.process_time`, best of 5, one BLAS thread (as in a Spark worker). The middle column is what "
            "the worker of a hand-written pandas UDF does: pyspark's own conversions (as in a default session) "
            "around the raw model, for the array column `np.stack` of the rows pandas gives; keel's column is "
            "its UDF function (the columns to a checked array or tensor, pyfunc's enforcement, the prediction, "
            "the result as Arrow). keel's pandas-UDF version paid the middle column's conversions plus its own "
            "DataFrame path.",
        ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(existing)
    if found:
        old = found.group(0)
        kept = old[old.index(KEPT) :].rstrip("\n") + "\n" if KEPT in old else ""
        new = text + ("\n" + kept if kept else "") + "\n"
        RESULTS.write_text(existing[: found.start()] + new + existing[found.end() :])
    else:
        RESULTS.write_text(existing.rstrip("\n") + "\n\n" + text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="100,000 rows, two rounds (a smoke run; RESULTS.md untouched)"
    )
    parser.add_argument("--no-spark", action="store_true", help="leave Spark out")
    parser.add_argument("--rounds", type=int, default=None, help="Spark rounds (default 5, --quick 2)")
    parser.add_argument(
        "--mlflow-python",
        default=str(ROOT / "build" / "venv-mlflow3" / "bin" / "python"),
        help="the interpreter of an environment with mlflow, pyspark and pyarrow (make bench-batch prepares one)",
    )
    args = parser.parse_args()
    rows = 100_000 if args.quick else 1_000_000
    rounds = args.rounds or (2 if args.quick else 5)
    began, load = time.monotonic(), os.getloadavg()[0]

    import keel.sklearn
    from keel.models.signature import infer_signature

    X, models = _models()
    frame = _rows(X, rows)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="keel-bench-batch-") as tmp:
        work = Path(tmp)
        source = work / "rows.parquet"
        frame.to_parquet(source, index=False, row_group_size=100_000)
        model_dirs = {}
        for i, (name, model) in enumerate(models.items()):
            model_dir = work / f"model{i}"
            keel.sklearn.save_model(model, str(model_dir), signature=infer_signature(X, model.predict(X)))
            model_dirs[name] = model_dir
            print(f"{name}: floor, keel models predict", flush=True)
            floor, floor_cpu = _floor(model, frame)
            results[name] = {"floor": floor, "floor_cpu": floor_cpu}
            results[name]["command"] = _command(model_dir, source, work / "out.parquet")
            results[name]["in_process"] = _in_process(model_dir, source, work / "out.parquet")
        cpu: dict[str, dict[str, float]] = {}
        spark: dict[str, Any] = {}
        notes: list[str] = []
        if args.no_spark:
            notes.append("Spark not measured (--no-spark)")
        else:
            print("the Python worker's CPU per row", flush=True)
            cpu = _worker_cpu(models, model_dirs, frame, work)
            print(f"Spark local[{CORES}]: keel and MLflow, {rounds} rounds", flush=True)
            # absolute, not resolved: the venv's python is a link that must stay inside the venv
            mlflow_python = os.path.abspath(args.mlflow_python) if args.mlflow_python else None
            spark, notes = _spark(models, model_dirs, X, source, work, mlflow_python, rounds)
    text = report(rows, results, spark, cpu, notes, began, load, rounds)
    print(text)
    if not args.quick:
        write_section(text)


if __name__ == "__main__":
    main()
