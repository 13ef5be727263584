"""Compiles validated filter ASTs (``common/filters.py``) and ``order_by`` keys into Peewee
expressions over the tracking tables, and builds keyset conditions for stable pagination.

Semantics (MLflow's): ``metrics.k op v`` matches runs whose latest value of ``k`` satisfies the
comparison (NaN satisfies only ``!=``); ``params``/``tags`` comparisons match runs that have the
key with a matching value; ``IS NULL`` matches runs without the key. LIKE is case-sensitive on
every backend, ILIKE is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw

from keel_server.common.db import (
    VALUE_NAN,
    Experiment,
    ExperimentTag,
    LatestMetric,
    Param,
    Run,
    RunTag,
)
from keel_server.common.filters import INT64_MAX, Comparison, Node, OrderKey
from keel_server.common.querying import SortColumn, compile_filter, number_op, string_op

RUN_ATTRIBUTE_COLUMNS: dict[str, pw.Field] = {
    "run_id": Run.run_id,
    "run_name": Run.run_name,
    "status": Run.status,
    "user_id": Run.user_id,
    "artifact_uri": Run.artifact_uri,
    "lifecycle_stage": Run.lifecycle_stage,
    "start_time": Run.start_time,
    "end_time": Run.end_time,
}

EXPERIMENT_ATTRIBUTE_COLUMNS: dict[str, pw.Field] = {
    "name": Experiment.name,
    "experiment_id": Experiment.experiment_id,
    "creation_time": Experiment.creation_time,
    "last_update_time": Experiment.last_update_time,
}

_FALSE = pw.SQL("1 = 0")


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def _key_value_exists(model: Any, owner: Any, c: Comparison) -> pw.ColumnBase:
    """EXISTS over a (run_id, key, value) table; IS NULL means the key is absent."""
    alias = model.alias()
    base = alias.select(pw.SQL("1")).where((alias.run == owner) & (alias.key == c.key))
    if c.op == "IS NULL":
        return ~pw.fn.EXISTS(base)
    if c.op == "IS NOT NULL":
        return pw.fn.EXISTS(base)
    return pw.fn.EXISTS(base.where(string_op(alias.value, c.op, c.value)))


def _metric_exists(c: Comparison) -> pw.ColumnBase:
    alias = LatestMetric.alias()
    value = float(c.value) if not isinstance(c.value, tuple) else c.value  # type: ignore[arg-type]
    # NaN compares unequal to everything: it matches only '!='.
    if c.op == "!=":
        cond = (alias.value_kind == VALUE_NAN) | (alias.value != value)
    else:
        cond = (alias.value_kind != VALUE_NAN) & number_op(alias.value, c.op, value)
    query = alias.select(pw.SQL("1")).where((alias.run == Run.run_id) & (alias.key == c.key) & cond)
    return pw.fn.EXISTS(query)


def compile_run_filter(node: Node | None) -> pw.ColumnBase | None:
    """A validated runs filter as one expression (nesting as shallow as the filter's own: see
    ``querying.compile_filter``)."""
    return compile_filter(node, _run_comparison)


def _run_comparison(c: Comparison) -> pw.ColumnBase:
    if c.entity == "metric":
        return _metric_exists(c)
    if c.entity == "param":
        return _key_value_exists(Param, Run.run_id, c)
    if c.entity == "tag":
        return _key_value_exists(RunTag, Run.run_id, c)
    column = RUN_ATTRIBUTE_COLUMNS[c.key]
    if c.key in ("start_time", "end_time"):
        return number_op(column, c.op, c.value)
    value = c.value
    if c.key == "status":  # users write 'finished' as often as 'FINISHED'
        value = tuple(v.upper() for v in value) if isinstance(value, tuple) else str(value).upper()  # type: ignore[union-attr]
    return string_op(column, c.op, value)


def compile_experiment_filter(node: Node | None) -> pw.ColumnBase | None:
    return compile_filter(node, _experiment_comparison)


def _experiment_id(value: object) -> int | None:
    """An experiment id compared in a filter as an integer; None for a value that no experiment
    can have (not decimal digits, or beyond 64 bits: it must not reach the driver)."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > len(str(INT64_MAX)):
        return None
    number = int(text)
    return number if number <= INT64_MAX else None


def _experiment_comparison(c: Comparison) -> pw.ColumnBase:
    if c.entity == "tag":
        alias = ExperimentTag.alias()
        base = alias.select(pw.SQL("1")).where(
            (alias.experiment == Experiment.experiment_id) & (alias.key == c.key)
        )
        if c.op == "IS NULL":
            return ~pw.fn.EXISTS(base)
        if c.op == "IS NOT NULL":
            return pw.fn.EXISTS(base)
        return pw.fn.EXISTS(base.where(string_op(alias.value, c.op, c.value)))
    column = EXPERIMENT_ATTRIBUTE_COLUMNS[c.key]
    if c.key == "experiment_id":
        values = c.value if isinstance(c.value, tuple) else (c.value,)
        ids = [i for i in map(_experiment_id, values) if i is not None]
        if c.op in ("=", "IN"):
            return column.in_(ids) if ids else _FALSE
        return column.not_in(ids) if ids else pw.SQL("1 = 1")
    if c.key in ("creation_time", "last_update_time"):
        return number_op(column, c.op, c.value)
    return string_op(column, c.op, c.value)


# ---------------------------------------------------------------------------------------------
# Ordering and keyset pagination
# ---------------------------------------------------------------------------------------------


@dataclass
class RunOrdering:
    columns: list[SortColumn]
    joins: list[tuple[Any, pw.ColumnBase]]  # (alias model, ON condition) LEFT OUTER joins


def run_ordering(keys: Sequence[OrderKey]) -> RunOrdering:
    """Sort components for ``keys`` (default: start_time DESC), always ending with run_id.

    Missing values sort last in both directions: each nullable key becomes (rank, value) where
    rank is 0 for present values, then NaN (metrics), then missing; for a DESC key the rank is
    negated so that both components share the direction (which lets uniform orders use row
    comparisons). Values of missing keys are coalesced to a constant so no component is NULL.
    """
    if not keys:
        keys = [OrderKey("attribute", "start_time", ascending=False)]
    columns: list[SortColumn] = []
    joins: list[tuple[Any, pw.ColumnBase]] = []
    for index, key in enumerate(keys):
        asc = key.ascending
        if key.entity == "attribute":
            column = RUN_ATTRIBUTE_COLUMNS[key.key]
            if key.key == "end_time":
                missing = pw.Case(None, [(column.is_null(), 1)], 0)
                columns.append(SortColumn(missing if asc else missing * -1, asc))
                columns.append(SortColumn(pw.fn.COALESCE(column, 0), asc))
            else:
                columns.append(SortColumn(column, asc))
            continue
        model = {"metric": LatestMetric, "param": Param, "tag": RunTag}[key.entity or ""]
        alias = model.alias(f"o{index}")
        joins.append((alias, (alias.run == Run.run_id) & (alias.key == key.key)))
        if key.entity == "metric":
            rank = pw.Case(None, [(alias.value.is_null(), 2), (alias.value_kind == VALUE_NAN, 1)], 0)
            value = pw.fn.COALESCE(alias.value, 0.0)  # NaN is stored as 0 as well
        else:
            rank = pw.Case(None, [(alias.value.is_null(), 1)], 0)
            value = pw.fn.COALESCE(alias.value, "")
        columns.append(SortColumn(rank if asc else rank * -1, asc))
        columns.append(SortColumn(value, asc))
    columns.append(SortColumn(Run.run_id, columns[-1].ascending))
    return RunOrdering(columns, joins)


EXPERIMENT_ORDER_COLUMNS: dict[str, pw.Field] = EXPERIMENT_ATTRIBUTE_COLUMNS


def experiment_ordering(keys: Sequence[OrderKey]) -> list[SortColumn]:
    if not keys:
        keys = [OrderKey("attribute", "creation_time", ascending=False)]
    columns = [SortColumn(EXPERIMENT_ORDER_COLUMNS[k.key], k.ascending) for k in keys]
    if not any(k.key == "experiment_id" for k in keys):
        columns.append(SortColumn(Experiment.experiment_id, columns[-1].ascending))
    return columns
