"""``keel.evaluate`` with SHAP explanations against ``mlflow.models.evaluate`` (issue #19's
performance part).

Run with ``make bench-evaluate`` (or ``.venv/bin/python bench/bench_evaluate.py [--quick]``).

One RandomForestClassifier(50) is trained on 10,000 synthetic rows (``make_classification``,
10 features, fixed seed) and evaluated on 10,000 others. The same fitted model is saved both
ways: ``keel.sklearn.log_model`` to a ``keel server`` process (SQLite, local artifacts) and
``mlflow.sklearn.save_model`` in bench/.venv-mlflow (MLflow 3 with shap, tracking to SQLite).
Each side evaluates it from its model URI as a classifier, with explainability on (the default
2,000 explained rows) and off, in the same run of this script; the rounds alternate keel and
MLflow so that a change in this shared machine's load falls on both.

Reported per side: the whole ``evaluate`` call with explainability on and off, the SHAP part as
their difference (values, the three plots and their upload), and for keel the SHAP values alone
(``keel.evaluation.explainability.explain``, the same work as inside ``evaluate``). The target:
keel's SHAP part and whole call no slower than MLflow's. Results are printed and written to this
script's section of bench/RESULTS.md (``--quick``: smaller sizes, RESULTS.md untouched).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracking import machine, process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Evaluation with SHAP (bench/bench_evaluate.py)"
MLFLOW_PYTHON = ROOT / "bench" / ".venv-mlflow" / "bin" / "python"


@dataclass(frozen=True)
class Sizes:
    rows: int = 10_000  # evaluation rows (as many again for training)
    trees: int = 50
    features: int = 10
    rounds: int = 2


QUICK = Sizes(rows=2_000, trees=10, rounds=1)

# Runs inside bench/.venv-mlflow: argv = work dir, round; prints one JSON line of timings.
MLFLOW_ROUND = r"""
import json, os, pickle, sys, time, warnings
warnings.filterwarnings("ignore")
import logging
logging.disable(logging.WARNING)
import numpy as np, pandas as pd
import mlflow
import mlflow.sklearn

work = sys.argv[1]
mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
mlflow.set_experiment("bench-evaluate")
model_dir = os.path.join(work, "mlflow-model")
if not os.path.exists(model_dir):
    with open(os.path.join(work, "model.pkl"), "rb") as f:
        # cloudpickle, as keel saves it (MLflow 3's default, skops, refuses sklearn's tree type)
        mlflow.sklearn.save_model(pickle.load(f), model_dir, serialization_format="cloudpickle")
data = np.load(os.path.join(work, "data.npz"))
frame = pd.DataFrame(data["X_test"], columns=[f"f{i}" for i in range(data["X_test"].shape[1])])
frame["label"] = data["y_test"]
with mlflow.start_run():  # warm-up (shap's compiled code), untimed, as keel's
    mlflow.models.evaluate(model_dir, frame.iloc[:200], targets="label", model_type="classifier",
                           evaluators="default", evaluator_config={"explainability_nsamples": 50})
out = {}
for label, explain in (("on", True), ("off", False)):
    with mlflow.start_run():
        started = time.perf_counter()
        result = mlflow.models.evaluate(
            model_dir, frame, targets="label", model_type="classifier", evaluators="default",
            evaluator_config={"log_model_explainability": explain},
        )
        out[label] = time.perf_counter() - started
    if explain:
        out["artifacts"] = sorted(result.artifacts)
out["version"] = mlflow.__version__
print(json.dumps(out))
"""


def _data(sizes: Sizes) -> dict:
    import numpy as np
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=2 * sizes.rows, n_features=sizes.features, n_informative=5, random_state=0
    )
    return {"X_train": X[: sizes.rows], "y_train": y[: sizes.rows], "X_test": X[sizes.rows :],
            "y_test": y[sizes.rows :], "np": np}  # fmt: skip


def _frame(X, y):  # type: ignore[no-untyped-def]
    import pandas as pd

    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["label"] = y
    return frame


def keel_round(uri: str, frame) -> dict:  # type: ignore[no-untyped-def]
    import keel

    out: dict = {}
    for label, explain in (("on", True), ("off", False)):
        started = time.perf_counter()
        result = keel.evaluate(
            uri, frame, targets="label", model_type="classifier",
            evaluator_config={"log_model_explainability": explain},
        )  # fmt: skip
        out[label] = time.perf_counter() - started
        if explain:
            out["shap"] = sorted(name for name in result.artifacts if "shap" in name)
    return out


def keel_shap_values(uri: str, frame) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    """The SHAP values alone, as evaluate computes them (its sample, its explainer)."""
    from keel.evaluation.data import prepare_data
    from keel.evaluation.explainability import ExplainabilityConfig, explain
    from keel.evaluation.predictors import resolve_predictor

    data = prepare_data(frame, "label")
    predictor = resolve_predictor(uri)
    explanation = explain(predictor, data, "classifier", ExplainabilityConfig(mode="asked"), pos_label=1, labels=[0, 1])
    return explanation.seconds, explanation.explainer


def mlflow_round(work: Path) -> dict:
    done = subprocess.run(
        [str(MLFLOW_PYTHON), "-c", MLFLOW_ROUND, str(work)],
        cwd=work,  # MLflow puts its artifacts under ./mlruns
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mlflow round failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(sizes: Sizes, keel_runs: list[dict], mlflow_runs: list[dict], shap_values: list[float],
           explainer: str, took: float, load: tuple[float, float]) -> str:  # fmt: skip
    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    k_on, k_off = med(keel_runs, "on"), med(keel_runs, "off")
    m_on, m_off = med(mlflow_runs, "on"), med(mlflow_runs, "off")
    k_shap, m_shap = k_on - k_off, m_on - m_off
    values = statistics.median(shap_values)
    keel_shap = keel_runs[0].get("shap", [])
    mlflow_shap = [name for name in mlflow_runs[0].get("artifacts", []) if "shap" in name]
    verdict_shap = "met" if k_shap <= m_shap else "MISSED"
    verdict_whole = "met" if k_on <= m_on else "MISSED"
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        SECTION,
        "",
        f"Run {now} on {machine()}; load average {load[0]:.1f} before, {load[1]:.1f} after; {took:.0f} s in all.",
        f"RandomForestClassifier({sizes.trees}) trained on {sizes.rows:,} synthetic rows ({sizes.features} features), "
        f"evaluated on {sizes.rows:,} others from its model URI as a classifier; explainability with the default "
        "2,000 explained rows. keel: a `keel server` process (SQLite, local artifacts); MLflow "
        f"{mlflow_runs[0].get('version', '?')} (`mlflow.models.evaluate`, default evaluator, shap 0.51) in "
        "bench/.venv-mlflow tracking to SQLite. Median of "
        f"{len(keel_runs)} alternating round(s); SHAP part = on - off (values, three plots, their upload).",
        "",
        "| | keel | MLflow | keel / MLflow |",
        "| --- | ---: | ---: | ---: |",
        f"| evaluate, explainability on (s) | {k_on:.2f} | {m_on:.2f} | {k_on / m_on:.2f} |",
        f"| evaluate, explainability off (s) | {k_off:.2f} | {m_off:.2f} | {k_off / m_off:.2f} |",
        f"| SHAP part (s) | {k_shap:.2f} | {m_shap:.2f} | {k_shap / m_shap:.2f} |",
        f"| SHAP values alone (s) | {values:.2f} | | |",
        "",
        f"- keel's explainer: {explainer} (shap's path-dependent tree algorithm, chosen from the model); MLflow "
        "passes its 2,000 sampled rows as a masker, which makes shap use the interventional tree algorithm "
        "against 100 background rows.",
        f"- SHAP artifacts logged: keel {', '.join(keel_shap)}; MLflow {', '.join(mlflow_shap) or 'none'} "
        "(MLflow draws its plots from the raw two-output explanation of a binary forest, and the plots that "
        "cannot take it are skipped with a warning).",
        f"- Target (keel no slower): SHAP part {verdict_shap}, whole call {verdict_whole}.",
        f"- Rounds (s): keel {[(round(r['on'], 2), round(r['off'], 2)) for r in keel_runs]}, "
        f"MLflow {[(round(r['on'], 2), round(r['off'], 2)) for r in mlflow_runs]}.",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    RESULTS.write_text(pattern.sub(lambda _: text + "\n", existing) if pattern.search(existing)
                       else existing.rstrip("\n") + "\n\n" + text)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run; RESULTS.md untouched)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    if not MLFLOW_PYTHON.exists():
        sys.exit("bench/.venv-mlflow is missing: make bench-venv")
    began, load_before = time.monotonic(), os.getloadavg()[0]
    os.environ.pop("KEEL_TRACKING_URI", None)
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    import keel

    data = _data(sizes)
    model = RandomForestClassifier(n_estimators=sizes.trees, random_state=0, n_jobs=1)
    model.fit(_frame(data["X_train"], data["y_train"]).drop(columns=["label"]), data["y_train"])
    frame = _frame(data["X_test"], data["y_test"])
    with tempfile.TemporaryDirectory(prefix="keel-bench-evaluate-") as tmp:
        work = Path(tmp)
        (work / "model.pkl").write_bytes(pickle.dumps(model))
        np.savez(work / "data.npz", X_test=data["X_test"], y_test=data["y_test"])
        env = {"KEEL_DB_URL": f"sqlite:///{work / 'keel.db'}", "KEEL_ARTIFACT_URI": f"file://{work / 'artifacts'}",
               "KEEL_LOG_LEVEL": "WARNING"}  # fmt: skip
        command = [sys.executable, "-m", "keel.cli", "server", "--port", "0"]
        with process(command, r"keel server listening on [^:]+:(\d+)", env) as port:
            keel.set_tracking_uri(f"grpc://127.0.0.1:{port}")
            keel.set_experiment("bench-evaluate")
            with keel.start_run():
                uri = keel.sklearn.log_model(model, "model").model_uri
            print("warming up (imports, shap's compiled code)", flush=True)
            keel.evaluate(uri, frame.iloc[:200], targets="label", model_type="classifier",
                          evaluator_config={"explainability_nsamples": 50})  # fmt: skip
            keel_runs, mlflow_runs, values = [], [], []
            explainer = "?"
            for round_index in range(sizes.rounds):
                first_mlflow = round_index % 2 == 1
                if first_mlflow:
                    mlflow_runs.append(mlflow_round(work))
                keel_runs.append(keel_round(uri, frame))
                seconds, explainer = keel_shap_values(uri, frame)
                values.append(seconds)
                if not first_mlflow:
                    mlflow_runs.append(mlflow_round(work))
                print(f"round {round_index + 1}: keel {keel_runs[-1]}, shap values {values[-1]:.2f} s, "
                      f"mlflow {mlflow_runs[-1]}", flush=True)  # fmt: skip
    text = report(sizes, keel_runs, mlflow_runs, values, explainer, time.monotonic() - began,
                  (load_before, os.getloadavg()[0]))  # fmt: skip
    print(text)
    if not args.quick:
        write_section(text)


if __name__ == "__main__":
    main()
