"""Search planning of the tracking service: filters (``common/filters.py`` ASTs) compiled into
Peewee expressions over the tracking tables, sort orders with keyset pagination, and the plans of
SearchExperiments and SearchRuns (including the index-driven plans for the most common searches,
runs ordered by one metric, param or tag). What the searches accept is declared in
``tracking/fields.py``.

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

from keel_server.auth import visibility
from keel_server.common import pagination
from keel_server.common.db import (
    VALUE_NAN,
    Experiment,
    ExperimentTag,
    LatestMetric,
    Param,
    Run,
    RunTag,
    db,
)
from keel_server.common.errors import InvalidArgument
from keel_server.common.filters import (
    INT64_MAX,
    And,
    Comparison,
    Node,
    OrderKey,
    parse_and_validate,
    parse_order_by,
)
from keel_server.common.querying import (
    SortColumn,
    check_cursor,
    compile_filter,
    keyset_after,
    number_op,
    order_clauses,
    search_guard,
    string_op,
    tag_exists,
)
from keel_server.tracking.fields import (
    EXPERIMENT_ATTRIBUTE_COLUMNS,
    EXPERIMENTS_SCHEMA,
    RUN_ATTRIBUTE_COLUMNS,
    RUNS_SCHEMA,
)
from keel_server.tracking.records import ACTIVE, DELETED, RunInfoRecord

_FALSE = pw.SQL("1 = 0")

# What a RunInfoRecord is read from (``run_info`` builds one from a row of these).
RUN_INFO_COLUMNS = (
    Run.run_id, Run.experiment, Run.run_name, Run.user_id, Run.status, Run.start_time, Run.end_time,
    Run.artifact_uri, Run.lifecycle_stage, Run.parent_run_id,
)  # fmt: skip


def run_info(row: Sequence[Any]) -> RunInfoRecord:
    """A RunInfoRecord from a tuple that starts with the RUN_INFO_COLUMNS."""
    return RunInfoRecord(
        run_id=row[0],
        experiment_id=str(row[1]),
        run_name=row[2],
        user_id=row[3],
        status=row[4],
        start_time=row[5],
        end_time=row[6],
        artifact_uri=row[7],
        lifecycle_stage=row[8],
        parent_run_id=row[9] or "",
    )


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------


@search_guard()
def search_experiments(
    filter_text: str, order_by: Sequence[str], view: str, size: int, page_token: str
) -> tuple[list[Experiment], str]:
    """One page (``size`` rows) of the experiments the caller may read, and the next page's token."""
    node = parse_and_validate(filter_text, EXPERIMENTS_SCHEMA)
    keys = parse_order_by(list(order_by), EXPERIMENTS_SCHEMA)
    for index, key in enumerate(keys):
        if key.entity != "attribute":
            raise InvalidArgument(
                f"invalid order_by item {order_by[index]!r}: experiments can be ordered by name, "
                "experiment_id, creation_time and last_update_time only",
                reason="INVALID_ORDER_BY",
                field="order_by",
            )
    columns = experiment_ordering(keys)
    fp = pagination.fingerprint("experiments", filter_text, list(order_by), view)
    cursor = pagination.decode_token(page_token, fp)
    query = Experiment.select(Experiment, *[c.expr.alias(f"_s{i}") for i, c in enumerate(columns)])
    conditions = [_lifecycle_condition(Experiment.lifecycle_stage, view)]
    conditions.append(compile_experiment_filter(node))
    conditions.append(visibility.readable_condition("experiment", Experiment.experiment_id))
    if cursor is not None:
        check_cursor(cursor, len(columns))
        conditions.append(keyset_after(columns, cursor))
    for condition in conditions:
        if condition is not None:
            query = query.where(condition)
    rows = list(query.order_by(*order_clauses(columns)).limit(size + 1))
    return pagination.trim(
        rows, size, lambda last: [getattr(last, f"_s{i}") for i in range(len(columns))], fp
    )


@search_guard()
def search_runs(
    experiment_ids: Sequence[int],
    filter_text: str,
    view: str,
    size: int,
    order_by: Sequence[str],
    page_token: str,
) -> tuple[list[RunInfoRecord], str]:
    """One page (``size`` runs) of the runs of ``experiment_ids`` (sorted, distinct) that the
    caller may read, and the next page's token."""
    eids = list(experiment_ids)
    node = parse_and_validate(filter_text, RUNS_SCHEMA)
    keys = parse_order_by(list(order_by), RUNS_SCHEMA)
    ordering = run_ordering(keys)
    fp = pagination.fingerprint("runs", eids, filter_text, view, list(order_by))
    cursor = pagination.decode_token(page_token, fp)
    readable = visibility.readable_ids("experiment")
    if readable is not None:  # the experiments the caller cannot read hold no runs for it
        allowed = set(readable)
        eids = [eid for eid in eids if eid in allowed]
        if not eids:
            return [], ""

    compiled = compile_run_filter(node)
    lifecycle = _lifecycle_condition(Run.lifecycle_stage, view)
    base = [Run.experiment.in_(eids)] + [c for c in (lifecycle, compiled) if c is not None]
    if len(keys) == 1 and keys[0].entity == "metric":
        bounds = _metric_bounds(node, keys[0].key)
        # First pages of the same search (dashboards poll them) reuse their SQL text.
        cache_key = None if cursor is not None else (tuple(eids), filter_text, view, tuple(order_by))
        infos, last = _search_by_one_metric(
            keys[0].key, keys[0].ascending, base, cursor, size, bounds, cache_key
        )
        return infos, pagination.encode_token(last, fp) if last is not None else ""
    if len(keys) == 1 and keys[0].entity in ("param", "tag"):
        model = Param if keys[0].entity == "param" else RunTag
        infos, last = _search_by_one_string(model, keys[0].key, keys[0].ascending, base, cursor, size)
        return infos, pagination.encode_token(last, fp) if last is not None else ""

    columns = ordering.columns
    query = Run.select(*RUN_INFO_COLUMNS, *[c.expr.alias(f"_s{i}") for i, c in enumerate(columns)])
    for alias, on in ordering.joins:
        query = query.join(alias, pw.JOIN.LEFT_OUTER, on=on)
    for condition in base:
        query = query.where(condition)
    if cursor is not None:
        check_cursor(cursor, len(columns))
        query = query.where(keyset_after(columns, cursor))
    rows: list[Any] = list(query.order_by(*order_clauses(columns)).limit(size + 1).tuples())
    sort_values = len(RUN_INFO_COLUMNS)
    rows, token = pagination.trim(rows, size, lambda last: list(last[sort_values:]), fp)
    return [run_info(row) for row in rows], token


def _lifecycle_condition(column: Any, view: str) -> pw.ColumnBase | None:
    if view == "ALL":
        return None
    return column == (DELETED if view == "DELETED_ONLY" else ACTIVE)


def _metric_bounds(node: Node | None, key: str) -> list[tuple[str, float]]:
    """Top-level AND comparisons on metric ``key`` (``metrics.rmse < 0.8``): they bound the index
    range the ordered scan walks (the EXISTS filter still applies them exactly, so only the
    tightest lower bound, the tightest upper bound and one ``=`` are kept: a filter may hold a
    thousand of them, and each would nest the SQL one level deeper)."""
    items = node.items if isinstance(node, And) else (node,) if node is not None else ()
    lower: tuple[str, float] | None = None
    upper: tuple[str, float] | None = None
    equal: tuple[str, float] | None = None
    for c in items:
        if not (isinstance(c, Comparison) and c.entity == "metric" and c.key == key):
            continue
        bound = (c.op, float(c.value))  # type: ignore[arg-type]
        if c.op in (">", ">="):
            if lower is None or (bound[1], bound[0] == ">") > (lower[1], lower[0] == ">"):
                lower = bound
        elif c.op in ("<", "<="):
            if upper is None or (-bound[1], bound[0] == "<") > (-upper[1], upper[0] == "<"):
                upper = bound
        elif c.op == "=" and equal is None:
            equal = bound
    return [b for b in (lower, upper, equal) if b is not None]


def _search_by_one_metric(
    key: str,
    ascending: bool,
    conditions: list[Any],
    cursor: list[Any] | None,
    size: int,
    bounds: Sequence[tuple[str, float]] = (),
    cache_key: tuple[Any, ...] | None = None,
) -> tuple[list[RunInfoRecord], list[Any] | None]:
    """``order_by=["metrics.<key> ASC|DESC"]``, the most common search, driven by the
    latest_metric (key, value, run_id) index so it reads a page's worth of rows, not every match.

    Three segments in order: runs with a value (by value, then run_id), runs whose value is NaN,
    runs without the metric. The cursor is [segment, value, run_id]."""
    segment, value, after_id = (cursor[0], cursor[1], cursor[2]) if cursor is not None else (0, 0.0, None)
    if cursor is not None:
        check_cursor(cursor, 3)
        # Tokens are not signed: a forged one must not steer the loop below (a huge float
        # segment would never reach 3) or reach the database with the wrong types.
        if not (
            type(segment) is int
            and 0 <= segment <= 2
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and isinstance(after_id, str)
        ):
            check_cursor([], 3)
    rows: list[tuple[Any, ...]] = []
    segments: list[int] = []  # the segment of each row, for the cursor
    last: list[Any] | None = None
    while segment <= 2 and len(rows) <= size:
        want = size + 1 - len(rows)
        sql_key = None if cache_key is None else (db.obj, cache_key, segment, want)
        cached = _SQL_CACHE.get(sql_key) if sql_key is not None else None
        if cached is not None:
            found = db.execute_sql(*cached).fetchall()
            rows.extend(found)
            segments.extend([segment] * len(found))
            if len(rows) > size:
                break
            segment, value, after_id = segment + 1, 0.0, None
            continue
        o = LatestMetric.alias("o0")
        if segment == 2:
            query: Any = Run.select(*RUN_INFO_COLUMNS, pw.Value(0.0).alias("_v")).where(
                ~pw.fn.EXISTS(o.select(pw.SQL("1")).where((o.run == Run.run_id) & (o.key == key)))
            )
            order = [Run.run_id.asc() if ascending else Run.run_id.desc()]
            if after_id is not None:
                query = query.where(Run.run_id > after_id if ascending else Run.run_id < after_id)
        else:
            query = (
                o.select(*RUN_INFO_COLUMNS, o.value.alias("_v"))
                .join(Run, pw.JOIN.CROSS)  # CROSS forces SQLite to walk the metric index first
                .where((Run.run_id == o.run) & (o.key == key))
            )
            if segment == 0:
                query = query.where(o.value_kind != VALUE_NAN)
                for op, bound_value in bounds:
                    query = query.where(number_op(o.value, op, bound_value))
                order = [o.value.asc(), o.run.asc()] if ascending else [o.value.desc(), o.run.desc()]
                if after_id is not None:
                    position = pw.Tuple(o.value, o.run)
                    bound = pw.Tuple(value, after_id)
                    query = query.where(position > bound if ascending else position < bound)
            else:
                query = query.where(o.value_kind == VALUE_NAN)
                order = [o.run.asc() if ascending else o.run.desc()]
                if after_id is not None:
                    query = query.where(o.run > after_id if ascending else o.run < after_id)
        for condition in conditions:
            query = query.where(condition)
        compiled_sql = query.order_by(*order).limit(want).sql()
        if sql_key is not None:
            if len(_SQL_CACHE) >= _SQL_CACHE_SIZE:
                _SQL_CACHE.clear()
            _SQL_CACHE[sql_key] = compiled_sql
        # Raw rows: Peewee's per-field conversion is not needed for these plain columns.
        found = db.execute_sql(*compiled_sql).fetchall()
        rows.extend(found)
        segments.extend([segment] * len(found))
        if len(rows) > size:
            break
        segment, value, after_id = segment + 1, 0.0, None
    if len(rows) > size:
        rows = rows[:size]
        tail = rows[-1]
        last = [segments[size - 1], float(tail[-1] or 0.0), tail[0]]
    return [run_info(row) for row in rows], last


def _search_by_one_string(
    model: type[Param] | type[RunTag],
    key: str,
    ascending: bool,
    conditions: list[Any],
    cursor: list[Any] | None,
    size: int,
) -> tuple[list[RunInfoRecord], list[Any] | None]:
    """``order_by=["params.<key> ASC|DESC"]`` (or one tag), driven on SQLite by the (key, value,
    run_id) index of migration 7 so it reads a page's worth of rows, not every run joined and
    sorted. The order and the cursor are ``run_ordering``'s for the same key, so page tokens pass
    between the two plans: [rank, value, run_id], rank 0 for runs with the key (by value, then
    run_id), then 1 (-1 for DESC) for runs without it (by run_id, value '')."""
    missing_rank = 1 if ascending else -1
    segment, value, after_id = 0, "", None
    if cursor is not None:
        check_cursor(cursor, 3)
        rank, value, after_id = cursor
        # Tokens are not signed: a forged one must not reach the database with the wrong types.
        if not (
            type(rank) is int
            and rank in (0, missing_rank)
            and isinstance(value, str)
            and isinstance(after_id, str)
        ):
            check_cursor([], 3)
        segment = 0 if rank == 0 else 1
    rows: list[tuple[Any, ...]] = []
    segments: list[int] = []  # the segment of each row, for the cursor
    while segment <= 1 and len(rows) <= size:
        o = model.alias("o0")
        if segment == 0:
            query: Any = (
                o.select(*RUN_INFO_COLUMNS, o.value)
                .join(Run, pw.JOIN.CROSS)  # CROSS keeps SQLite walking the value index first
                .where((Run.run_id == o.run) & (o.key == key))
            )
            order = [o.value.asc(), o.run.asc()] if ascending else [o.value.desc(), o.run.desc()]
            if after_id is not None:
                position, bound = pw.Tuple(o.value, o.run), pw.Tuple(value, after_id)
                query = query.where(position > bound if ascending else position < bound)
        else:
            query = Run.select(*RUN_INFO_COLUMNS, pw.Value("").alias("_v")).where(
                ~pw.fn.EXISTS(o.select(pw.SQL("1")).where((o.run == Run.run_id) & (o.key == key)))
            )
            order = [Run.run_id.asc() if ascending else Run.run_id.desc()]
            if after_id is not None:
                query = query.where(Run.run_id > after_id if ascending else Run.run_id < after_id)
        for condition in conditions:
            query = query.where(condition)
        # Raw rows: Peewee's per-field conversion is not needed for these plain columns.
        found = db.execute_sql(*query.order_by(*order).limit(size + 1 - len(rows)).sql()).fetchall()
        rows.extend(found)
        segments.extend([segment] * len(found))
        segment, value, after_id = segment + 1, "", None
    last: list[Any] | None = None
    if len(rows) > size:
        rows = rows[:size]
        tail, tail_segment = rows[-1], segments[size - 1]
        last = [0, tail[-1], tail[0]] if tail_segment == 0 else [missing_rank, "", tail[0]]
    return [run_info(row) for row in rows], last


_SQL_CACHE: dict[tuple[Any, ...], tuple[str, list[Any]]] = {}
_SQL_CACHE_SIZE = 512


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


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
        return tag_exists(Param.run, Run.run_id, c)
    if c.entity == "tag":
        return tag_exists(RunTag.run, Run.run_id, c)
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
        return tag_exists(ExperimentTag.experiment, Experiment.experiment_id, c)
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
# Ordering
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


def experiment_ordering(keys: Sequence[OrderKey]) -> list[SortColumn]:
    if not keys:
        keys = [OrderKey("attribute", "creation_time", ascending=False)]
    columns = [SortColumn(EXPERIMENT_ATTRIBUTE_COLUMNS[k.key], k.ascending) for k in keys]
    if not any(k.key == "experiment_id" for k in keys):
        columns.append(SortColumn(Experiment.experiment_id, columns[-1].ascending))
    return columns
