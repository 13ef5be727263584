"""MLflow's ``mlflow.pyfunc.spark_udf``, driven by ``bench/bench_batch.py`` (the anchor of its
Spark table). Runs in MLflow's own environment (``build/venv-mlflow3``, with pyspark and
pyarrow pinned as in requirements.txt), its Spark workers too (``PYSPARK_PYTHON`` is this
interpreter), and keeps its Spark session open so that the caller can alternate runs of keel's
and MLflow's UDFs on a shared machine.

    python spark_mlflow_udf.py MODELS.pkl ROWS.parquet WORKDIR CONF.json

``MODELS.pkl``: ``{"iris": X (DataFrame), "models": {name: fitted estimator}}``, pickled by
the caller after training once (the same scikit-learn version is required here); each model is
saved with ``mlflow.sklearn.save_model`` into ``WORKDIR/mlflow-model<i>``, its signature
inferred from iris, as cloudpickle like keel's copy (MLflow 3's default, skops, refuses to save
these two estimators without a list of trusted types, and loads more slowly, which would count
against MLflow's per-task loads). ``CONF.json``: the Spark settings, the same as keel's session.

Protocol, one JSON object per line: the script prints ``{"ready": true, "pid": ...}`` once the
session is up, the data cached and each UDF warmed up by one pass over the rows; then for each line ``run
NAME`` on stdin it scores every row of the parquet file with that model's UDF and prints
``{"seconds": ...}``; ``quit`` (or the end of stdin) stops the session. Errors are printed as
``{"error": "..."}`` and end the script.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    models_file, source, workdir, conf_file = sys.argv[1:5]
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers need MLflow's environment
    os.environ.setdefault("MLFLOW_TRACKING_URI", Path(workdir, "mlruns").as_uri())

    import mlflow.pyfunc
    import mlflow.sklearn
    import sklearn
    from mlflow.models import infer_signature
    from pyspark.sql import SparkSession

    with open(models_file, "rb") as f:
        payload = pickle.load(f)  # noqa: S301 - written by bench_batch.py a moment ago
    if payload["sklearn"] != sklearn.__version__:
        _say(error=f"scikit-learn {sklearn.__version__} here, {payload['sklearn']} in keel's venv")
        return
    X = payload["iris"]
    paths = {}
    for i, (name, model) in enumerate(payload["models"].items()):
        path = str(Path(workdir, f"mlflow-model{i}"))
        signature = infer_signature(X, model.predict(X))
        mlflow.sklearn.save_model(model, path, signature=signature, serialization_format="cloudpickle")
        paths[name] = path

    builder = SparkSession.builder
    for key, value in json.loads(Path(conf_file).read_text()).items():
        builder = builder.master(value) if key == "master" else builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        df = spark.read.parquet(source).cache()
        df.count()
        columns = [str(c) for c in df.columns]
        udfs = {}
        for name, path in paths.items():
            udfs[name] = mlflow.pyfunc.spark_udf(spark, path, env_manager="local")
            # warm-up: a whole pass (a partial one, with limit, ends the workers it leaves unfinished)
            df.select(udfs[name](*columns).alias("p")).agg({"p": "count"}).collect()
        _say(ready=True, pid=os.getpid(), columns=columns)
        for line in sys.stdin:
            command, _, name = line.strip().partition(" ")
            if command != "run":
                break
            started = time.perf_counter()
            df.select(udfs[name](*columns).alias("p")).agg({"p": "count"}).collect()
            _say(seconds=time.perf_counter() - started)
    except Exception as exc:  # the caller reports it in RESULTS.md
        lines = [line for line in str(exc).splitlines() if "Error" in line or "Exception" in line]
        _say(error=f"{type(exc).__name__}: {(lines[-1] if lines else str(exc))[:300]}")
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
