"""Peewee building blocks every store's search shares: string and number comparisons that mean
the same on SQLite, PostgreSQL and MySQL (LIKE case-sensitive, ILIKE not), and sort columns with
keyset conditions for stable pagination (see ``pagination.py`` for the tokens)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw

from keel_server.common.db import is_mysql, is_sqlite


def _like_to_glob(pattern: str) -> str:
    """SQL LIKE pattern (``%``, ``_``, backslash escapes) → SQLite GLOB (case-sensitive)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(f"[{nxt}]" if nxt in "*?[" else nxt)
            i += 2
            continue
        if c == "%":
            out.append("*")
        elif c == "_":
            out.append("?")
        elif c in "*?[":
            out.append(f"[{c}]")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def like(column: Any, pattern: str, case_sensitive: bool) -> pw.ColumnBase:
    if not case_sensitive:
        column, pattern = pw.fn.LOWER(column), pattern.lower()
    if is_sqlite():
        return pw.Expression(column, "GLOB", _like_to_glob(pattern))
    if is_mysql():
        # Compare bytes so LIKE stays case-sensitive whatever the column collation.
        return pw.Expression(column, "LIKE BINARY", pattern)
    return pw.Expression(column, "LIKE", pattern)


def string_op(column: Any, op: str, value: Any) -> pw.ColumnBase:
    if op == "=":
        return column == value
    if op == "!=":
        return column != value
    if op in ("LIKE", "ILIKE"):
        return like(column, value, case_sensitive=op == "LIKE")
    if op in ("NOT LIKE", "NOT ILIKE"):
        return ~like(column, value, case_sensitive=op == "NOT LIKE")
    if op == "IN":
        return column.in_(list(value))
    if op == "NOT IN":
        return column.not_in(list(value))
    raise AssertionError(f"unexpected string operator {op}")  # validate() allows no other


def number_op(column: Any, op: str, value: Any) -> pw.ColumnBase:
    ops = {
        "=": column == value,
        "!=": column != value,
        "<": column < value,
        "<=": column <= value,
        ">": column > value,
        ">=": column >= value,
    }
    if op in ops:
        return ops[op]
    if op == "IN":
        return column.in_(list(value))
    if op == "NOT IN":
        return column.not_in(list(value))
    if op == "IS NULL":
        return column.is_null()
    if op == "IS NOT NULL":
        return column.is_null(False)
    raise AssertionError(f"unexpected numeric operator {op}")


# ---------------------------------------------------------------------------------------------
# Ordering and keyset pagination
# ---------------------------------------------------------------------------------------------


@dataclass
class SortColumn:
    """One non-null sort component; every component of a key shares the key's direction."""

    expr: Any
    ascending: bool


def order_clauses(columns: Sequence[SortColumn]) -> list[Any]:
    return [c.expr.asc() if c.ascending else c.expr.desc() for c in columns]


def keyset_after(columns: Sequence[SortColumn], cursor: Sequence[Any]) -> pw.ColumnBase:
    """Rows strictly after ``cursor`` in the order of ``columns`` (none of them NULL)."""
    if all(c.ascending == columns[0].ascending for c in columns):
        left = pw.Tuple(*[c.expr for c in columns])
        right = pw.Tuple(*cursor)
        return left > right if columns[0].ascending else left < right
    # Mixed directions: (a > x) OR (a = x AND b < y) OR ...
    condition: pw.ColumnBase | None = None
    equal: pw.ColumnBase | None = None
    for column, value in zip(columns, cursor, strict=True):
        step = column.expr > value if column.ascending else column.expr < value
        term = step if equal is None else (equal & step)
        condition = term if condition is None else (condition | term)
        same = column.expr == value
        equal = same if equal is None else (equal & same)
    assert condition is not None
    return condition
