"""Model validation against thresholds and a baseline (MLflow's ``MetricThreshold`` semantics).

A metric passes when every bound set on it holds:

- ``threshold``: candidate >= threshold (<= when lower is better);
- ``min_absolute_change``: candidate >= baseline + change (<= baseline - change);
- ``min_relative_change``: candidate >= baseline * (1 + change) (<= baseline * (1 - change)).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.evaluation.metrics import LOWER_IS_BETTER, METRICS_BY_MODEL_TYPE, NO_DIRECTION
from keel.exceptions import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from keel.evaluation import EvaluationResult


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class MetricThreshold:
    """Bounds one metric must meet; ``greater_is_better`` defaults to the metric's known direction.

    ``min_absolute_change`` and ``min_relative_change`` compare against the baseline model, so
    they need ``baseline_model``.
    """

    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    greater_is_better: bool | None = None

    def __post_init__(self) -> None:
        if self.threshold is None and self.min_absolute_change is None and self.min_relative_change is None:
            raise InvalidArgument(
                "a MetricThreshold needs at least one of threshold, min_absolute_change, min_relative_change",
                reason="INVALID_THRESHOLD",
            )
        if self.threshold is not None and not _is_number(self.threshold):
            raise InvalidArgument(
                f"threshold must be a finite number, got {self.threshold!r}", reason="INVALID_THRESHOLD"
            )
        if self.min_absolute_change is not None and not (
            _is_number(self.min_absolute_change) and self.min_absolute_change > 0
        ):
            raise InvalidArgument(
                f"min_absolute_change must be a positive number, got {self.min_absolute_change!r}",
                reason="INVALID_THRESHOLD",
            )
        if self.min_relative_change is not None and not (
            _is_number(self.min_relative_change) and 0 < self.min_relative_change <= 1
        ):
            raise InvalidArgument(
                f"min_relative_change must be a number in (0, 1] (0.05 means 5%), got {self.min_relative_change!r}",
                reason="INVALID_THRESHOLD",
            )
        if self.greater_is_better is not None and not isinstance(self.greater_is_better, bool):
            raise InvalidArgument(
                f"greater_is_better must be True, False or None, got {self.greater_is_better!r}",
                reason="INVALID_THRESHOLD",
            )

    @property
    def needs_baseline(self) -> bool:
        return self.min_absolute_change is not None or self.min_relative_change is not None


@dataclass(frozen=True)
class MetricValidationFailure:
    """One bound a metric did not meet."""

    metric: str
    # "threshold", "min_absolute_change", "min_relative_change", "missing" (no candidate value)
    # or "missing_baseline" (no baseline value to compare with)
    check: str
    candidate: float | None
    baseline: float | None
    required: float | None
    greater_is_better: bool

    def __str__(self) -> str:
        if self.check == "missing":
            return f"{self.metric}: the candidate model has no value for it (not computed for this model or data)"
        if self.check == "missing_baseline":
            return f"{self.metric}: the baseline model has no value for it, so the required change cannot be checked"
        op = ">=" if self.greater_is_better else "<="
        text = f"{self.metric}: candidate={self.candidate:.6g} must be {op} {self.required:.6g} ({self.check}"
        if self.baseline is not None:
            text += f", baseline={self.baseline:.6g}"
        return text + ")"


class ModelValidationFailedException(FailedPrecondition):
    """The candidate failed ``validation_thresholds``; ``failures`` lists every failed bound and
    ``result`` holds the evaluation (its metrics are logged before this is raised)."""

    def __init__(
        self, failures: list[MetricValidationFailure], result: EvaluationResult | None = None
    ) -> None:
        lines = "\n".join(f"  - {failure}" for failure in failures)
        super().__init__(
            f"model validation failed for {len(failures)} check(s):\n{lines}",
            reason="MODEL_VALIDATION_FAILED",
            metadata={"metrics": ",".join(sorted({f.metric for f in failures}))},
        )
        self.failures = failures
        self.result = result


@dataclass
class ThresholdPlan:
    """Thresholds checked before any prediction runs: right types, known metric names, a baseline
    where a change is required."""

    thresholds: dict[str, MetricThreshold] = field(default_factory=dict)
    directions: dict[str, bool] = field(default_factory=dict)


def plan_thresholds(
    validation_thresholds: Mapping[str, MetricThreshold] | None,
    model_type: str,
    has_baseline: bool,
    metric_prefix: str = "",
) -> ThresholdPlan:
    """Check ``validation_thresholds`` up front so a typo fails before the model runs.

    Keys may be plain metric names (``accuracy_score``) or carry the metric prefix
    (``eval_accuracy_score``); both refer to the same metric.
    """
    plan = ThresholdPlan()
    if not validation_thresholds:
        return plan
    if not isinstance(validation_thresholds, Mapping):
        raise InvalidArgument(
            "validation_thresholds must be a dict of metric name -> MetricThreshold",
            reason="INVALID_THRESHOLD",
        )
    known = METRICS_BY_MODEL_TYPE[model_type]
    for key, threshold in validation_thresholds.items():
        if not isinstance(threshold, MetricThreshold):
            raise InvalidArgument(
                f"validation_thresholds[{key!r}] must be a keel.evaluation.MetricThreshold, got {type(threshold).__name__}",
                reason="INVALID_THRESHOLD",
                field=f"validation_thresholds.{key}",
            )
        name = (
            key[len(metric_prefix) :]
            if metric_prefix and isinstance(key, str) and key.startswith(metric_prefix)
            else key
        )
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f"; known {model_type} metrics: {', '.join(known)}"
            )
            raise InvalidArgument(
                f"validation_thresholds names the unknown {model_type} metric {key!r}{hint}",
                reason="UNKNOWN_METRIC",
                field=f"validation_thresholds.{key}",
            )
        if threshold.needs_baseline and not has_baseline:
            raise InvalidArgument(
                f"validation_thresholds[{key!r}] sets min_absolute_change/min_relative_change, which compare "
                "against a baseline: pass baseline_model=... or drop those fields",
                reason="BASELINE_REQUIRED",
                field=f"validation_thresholds.{key}",
            )
        greater = threshold.greater_is_better
        if greater is None:
            if name in NO_DIRECTION:
                raise InvalidArgument(
                    f"{name} has no natural direction: set greater_is_better on its MetricThreshold",
                    reason="INVALID_THRESHOLD",
                    field=f"validation_thresholds.{key}",
                )
            greater = name not in LOWER_IS_BETTER
        plan.thresholds[name] = threshold
        plan.directions[name] = greater
    return plan


def check_thresholds(
    plan: ThresholdPlan, candidate: Mapping[str, float], baseline: Mapping[str, float] | None
) -> list[MetricValidationFailure]:
    """Every failed bound of every metric (plain names, no prefix)."""
    failures: list[MetricValidationFailure] = []
    for name, threshold in plan.thresholds.items():
        greater = plan.directions[name]
        value = candidate.get(name)
        base = baseline.get(name) if baseline is not None else None
        if value is None or math.isnan(value):
            failures.append(MetricValidationFailure(name, "missing", None, base, None, greater))
            continue

        def better_or_equal(required: float, value: float = value, greater: bool = greater) -> bool:
            return value >= required if greater else value <= required

        checks: list[tuple[str, float]] = []
        if threshold.threshold is not None:
            checks.append(("threshold", float(threshold.threshold)))
        if threshold.needs_baseline and (base is None or math.isnan(base)):
            failures.append(MetricValidationFailure(name, "missing_baseline", value, None, None, greater))
        elif base is not None:
            sign = 1.0 if greater else -1.0
            if threshold.min_absolute_change is not None:
                checks.append(("min_absolute_change", base + sign * threshold.min_absolute_change))
            if threshold.min_relative_change is not None:
                checks.append(
                    ("min_relative_change", base + sign * abs(base) * threshold.min_relative_change)
                )
        for check, required in checks:
            # a relative change over a zero baseline is only met by a strict improvement
            strict = check == "min_relative_change" and base == 0
            if not better_or_equal(required) or (strict and value == required):
                failures.append(MetricValidationFailure(name, check, value, base, required, greater))
    return failures
