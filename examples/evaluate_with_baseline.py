"""Seed 004: evaluate a classifier against a baseline with validation thresholds.

python examples/evaluate_with_baseline.py
"""

from __future__ import annotations

import argparse
import os
import sys

from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

import keel
import keel.sklearn
from keel.evaluation import MetricThreshold, ModelValidationFailedException


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("KEEL_TRACKING_URI", "grpc://127.0.0.1:50051")
    )
    args = parser.parse_args(argv)
    keel.set_tracking_uri(args.tracking_uri)
    keel.set_experiment("evaluate-with-baseline")

    data = load_iris()
    X_train, X_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.2, random_state=42
    )
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(X_train, y_train)
    baseline = DummyClassifier(strategy="most_frequent").fit(X_train, y_train)

    thresholds = {
        "accuracy_score": MetricThreshold(
            threshold=0.8, min_absolute_change=0.05, min_relative_change=0.05, greater_is_better=True
        )
    }
    with keel.start_run():
        keel.sklearn.log_model(model, "model")
        keel.sklearn.log_model(baseline, "baseline_model")
        result = keel.evaluate(
            model=model,
            data=(X_test, y_test),
            targets="y_true",
            model_type="classifier",
            baseline_model=baseline,
            evaluator_config={"metric_prefix": "eval_"},
            validation_thresholds=thresholds,
        )
    print("candidate:", {k: round(v, 4) for k, v in sorted(result.metrics.items())})
    print("baseline: ", {k: round(v, 4) for k, v in sorted(result.baseline_model_metrics.items())})
    print("artifacts:", sorted(result.artifacts))

    # The baseline cannot beat itself by 5%: the same validation must fail and say why.
    try:
        keel.evaluate(
            model=baseline,
            data=(X_test, y_test),
            model_type="classifier",
            baseline_model=baseline,
            validation_thresholds=thresholds,
        )
    except ModelValidationFailedException as exc:
        print(f"baseline against itself fails validation, as it should:\n{exc}")
    else:
        raise SystemExit("expected the baseline to fail validation against itself")
    return 0


if __name__ == "__main__":
    sys.exit(main())
