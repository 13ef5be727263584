"""Summaries of runs for tables: the range of each metric history (GetMetricRanges) and the keys
the runs of some experiments use (ListRunDataKeys). Both are bounded in cost whatever the size of
the experiment, so a runs table of 100,000 runs stays fast.

Keys are found by a loose index scan: ``MIN(key) WHERE key > previous`` walks the distinct keys of
a table through its key-leading index (one seek per distinct key, not one row per run), and each
key is kept when a bounded probe finds it on a run of the experiments: first among the key's rows
(cheap when experiments share keys), then among the experiments' runs (cheap when the key is
rare). A key that neither bounded probe can settle is kept: a column that turns out empty is
harmless, a missing one is not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw

from keel_server.auth import visibility
from keel_server.common.db import (
    VALUE_FINITE,
    VALUE_NEG_INF,
    VALUE_POS_INF,
    LatestMetric,
    Metric,
    Param,
    Run,
    RunTag,
)
from keel_server.common.errors import InvalidArgument
from keel_server.tracking.records import check_key, check_run_id, parse_experiment_id, run_not_found

MAX_RANGE_RUNS = 1000
MAX_RANGE_KEYS = 100
MAX_EXPERIMENTS = 100
DEFAULT_MAX_KEYS, CAP_MAX_KEYS = 500, 1000
# Distinct keys of a table looked at per call (past them the answer is marked truncated).
MAX_SCANNED_KEYS = 5000
# Rows each bounded probe reads.
PROBE_ROWS = 2000


@dataclass(frozen=True)
class MetricRange:
    run_id: str
    key: str
    min_value: float
    max_value: float
    count: int


def metric_ranges(run_ids: Sequence[str], keys: Sequence[str]) -> list[MetricRange]:
    """Min, max and count of each (run, key) history of ``run_ids`` (``keys`` only, when given)."""
    if not run_ids or len(run_ids) > MAX_RANGE_RUNS:
        raise InvalidArgument(
            f"run_ids must hold 1..{MAX_RANGE_RUNS} ids, got {len(run_ids)}", reason="INVALID_RUN_IDS", field="run_ids"
        )
    if len(keys) > MAX_RANGE_KEYS:
        raise InvalidArgument(
            f"metric_keys may hold at most {MAX_RANGE_KEYS} keys, got {len(keys)}",
            reason="INVALID_METRIC_KEYS",
            field="metric_keys",
        )
    for i, run_id in enumerate(run_ids):
        check_run_id(run_id, f"run_ids[{i}]")
    for i, key in enumerate(keys):
        check_key(key, "metric", f"metric_keys[{i}]")
    ids = list(dict.fromkeys(run_ids))
    known_rows: Any = Run.select(Run.run_id).where(Run.run_id.in_(ids)).tuples()
    known = {row[0] for row in known_rows}
    missing = [r for r in ids if r not in known]
    if missing:
        raise run_not_found(missing[0])
    finite = pw.Case(None, [(Metric.value_kind == VALUE_FINITE, Metric.value)], None)
    pos_inf = pw.Case(None, [(Metric.value_kind == VALUE_POS_INF, 1)], 0)
    neg_inf = pw.Case(None, [(Metric.value_kind == VALUE_NEG_INF, 1)], 0)
    query = Metric.select(
        Metric.run,
        Metric.key,
        pw.fn.MIN(finite),
        pw.fn.MAX(finite),
        pw.fn.MAX(pos_inf),
        pw.fn.MAX(neg_inf),
        pw.fn.COUNT(pw.SQL("*")),
    ).where(Metric.run.in_(ids))
    if keys:
        query = query.where(Metric.key.in_(list(keys)))
    found: dict[str, list[MetricRange]] = {run_id: [] for run_id in ids}
    grouped: Any = query.group_by(Metric.run, Metric.key).tuples()
    for run, key, low, high, has_pos_inf, has_neg_inf, count in grouped:
        low_value = -math.inf if has_neg_inf else (math.inf if low is None and has_pos_inf else low)
        high_value = math.inf if has_pos_inf else (-math.inf if high is None and has_neg_inf else high)
        found[run].append(
            MetricRange(
                run,
                key,
                math.nan if low_value is None else float(low_value),
                math.nan if high_value is None else float(high_value),
                int(count),
            )
        )
    return [r for run_id in ids for r in sorted(found[run_id], key=lambda r: r.key)]


@dataclass(frozen=True)
class RunDataKeys:
    params: list[str]
    metrics: list[str]
    tags: list[str]
    truncated: bool


def run_data_keys(experiment_ids: Sequence[str], max_keys: int) -> RunDataKeys:
    """The param, metric and tag keys used by runs of ``experiment_ids`` that the caller may read."""
    if not experiment_ids or len(experiment_ids) > MAX_EXPERIMENTS:
        raise InvalidArgument(
            f"experiment_ids must hold 1..{MAX_EXPERIMENTS} ids, got {len(experiment_ids)}",
            reason="INVALID_EXPERIMENT_IDS",
            field="experiment_ids",
        )
    if max_keys < 0:
        raise InvalidArgument(
            f"max_keys must be >= 0 (0 means {DEFAULT_MAX_KEYS}), got {max_keys}", reason="INVALID_MAX_KEYS", field="max_keys"
        )
    limit = min(max_keys or DEFAULT_MAX_KEYS, CAP_MAX_KEYS)
    eids = sorted({parse_experiment_id(e, "experiment_ids") for e in experiment_ids})
    readable = visibility.readable_ids("experiment")
    if readable is not None:
        allowed = set(readable)
        eids = [e for e in eids if e in allowed]
    if not eids:
        return RunDataKeys([], [], [], False)
    params, cut_params = _keys_of(Param, eids, limit)
    metrics, cut_metrics = _keys_of(LatestMetric, eids, limit)
    tags, cut_tags = _keys_of(RunTag, eids, limit)
    return RunDataKeys(params, metrics, tags, cut_params or cut_metrics or cut_tags)


def _keys_of(model: Any, eids: list[int], limit: int) -> tuple[list[str], bool]:
    """Up to ``limit`` keys of ``model`` (Param, LatestMetric or RunTag) used by runs of ``eids``,
    in key order, and whether there may be more."""
    found: list[str] = []
    previous: str | None = None
    for _ in range(MAX_SCANNED_KEYS):
        query = model.select(pw.fn.MIN(model.key))
        if previous is not None:
            query = query.where(model.key > previous)
        key = query.scalar()
        if key is None:
            return found, False
        if _used_in(model, key, eids):
            if len(found) == limit:
                return found, True
            found.append(key)
        previous = key
    return found, True


def _used_in(model: Any, key: str, eids: list[int]) -> bool:
    """Whether a run of ``eids`` has ``key`` in ``model``; True when the bounded probes cannot tell."""
    # 1. Among the key's rows (through the key-leading index), the first PROBE_ROWS.
    rows = model.select(model.run.alias("rid")).where(model.key == key).limit(PROBE_ROWS).alias("k")
    hit = (
        Run.select(pw.SQL("1"))
        .join(rows, on=(Run.run_id == rows.c.rid))
        .where(Run.experiment.in_(eids))
        .limit(1)
        .scalar()
    )
    if hit is not None:
        return True
    if model.select(pw.SQL("1")).where(model.key == key).limit(PROBE_ROWS + 1).count() <= PROBE_ROWS:
        return False  # every row of the key was looked at
    # 2. Among the experiments' runs (through the primary key (run, key)), the first PROBE_ROWS.
    runs = Run.select(Run.run_id.alias("rid")).where(Run.experiment.in_(eids)).limit(PROBE_ROWS).alias("r")
    inner = model.alias("m")
    hit = (
        inner.select(pw.SQL("1"))
        .join(runs, on=(inner.run == runs.c.rid))
        .where(inner.key == key)
        .limit(1)
        .scalar()
    )
    if hit is not None:
        return True
    covered = Run.select(pw.SQL("1")).where(Run.experiment.in_(eids)).limit(PROBE_ROWS + 1).count() <= PROBE_ROWS
    return not covered
