"""Peewee building blocks every store's search shares: string and number comparisons that mean
the same on SQLite, PostgreSQL and MySQL (LIKE case-sensitive, ILIKE not), the one compiler of
filter ASTs into shallow SQL (:func:`compile_filter`) and the one key/value EXISTS test
(:func:`tag_exists`), sort columns with keyset conditions for stable pagination (see
``pagination.py`` for the tokens), and :class:`Prepared` statements for hot paths."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw

from keel_server.common import pagination
from keel_server.common.db import is_mysql, is_sqlite
from keel_server.common.errors import InvalidArgument
from keel_server.common.filters import MAX_DEPTH, And, Comparison, Node, Not, Or


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


def _exact(value: Any) -> Any:
    """A float bound as itself: Peewee would pass it through the column's converter, which for an
    integer column is ``int()`` (``start_time < 1.5`` would become ``< 1``, and ``< 1e300`` a
    number too large for the driver). Integers are within 64 bits (the parser refuses others)."""
    return pw.Value(value, converter=False) if isinstance(value, float) else value


def number_op(column: Any, op: str, value: Any) -> pw.ColumnBase:
    """A numeric comparison, exact on integer and float columns alike (floats are compared as
    floats by the database, never truncated)."""
    if isinstance(value, tuple):
        value = tuple(_exact(v) for v in value)
    else:
        value = _exact(value)
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


def tag_exists(owner_field: pw.ForeignKeyField, owner: Any, c: Comparison) -> pw.ColumnBase:
    """A ``tags.<key>`` comparison (or ``params.<key>``: any table of (owner, key, value) rows)
    as an EXISTS subquery over ``owner_field``'s table, correlated by ``owner_field = owner``.
    ``IS NULL`` matches the owners without the key, ``IS NOT NULL`` those with it; any other
    operator those with the key and a matching value."""
    model = owner_field.model
    table = model.alias()

    def column(name: str) -> Any:
        # By field, not getattr: a ModelAlias's own attributes (``.model``) shadow fields of that name.
        return pw.FieldAlias.create(table, model._meta.fields[name])

    base = table.select(pw.SQL("1")).where((column(owner_field.name) == owner) & (column("key") == c.key))
    if c.op == "IS NULL":
        return ~pw.fn.EXISTS(base)
    if c.op == "IS NOT NULL":
        return pw.fn.EXISTS(base)
    return pw.fn.EXISTS(base.where(string_op(column("value"), c.op, c.value)))


# ---------------------------------------------------------------------------------------------
# Filters: AST -> shallow SQL
# ---------------------------------------------------------------------------------------------
#
# SQLite parses SQL with a fixed stack of 100 entries ("parser stack overflow" beyond) and refuses
# expression trees more than 1,000 deep ("Expression tree is too large"); Peewee renders nested
# expressions recursively. A chain of 76 ANDs compiled as ((((a AND b) AND c) AND d) ...) hit the
# first, 3,000 hit Python's recursion limit. So a filter compiles to SQL whose nesting follows the
# filter's own nesting, never the length of its chains:
#
# - NOT is pushed down to the comparisons (De Morgan, valid in SQL's three-valued logic), and
#   groups of the same kind merge: NOT (a OR NOT (b OR c)) is one chain NOT a AND (b OR c);
# - a chain is one flat, parenthesised list "(x1 AND x2 AND ...)": SQLite's parser reduces it as it
#   goes, so its length costs no parser stack, only tree height (a flat chain is a left-deep tree,
#   its first item n - 1 deep);
# - the item that needs the most parser stack goes first (an operand right after "(" costs one
#   entry; one after "AND" three), and a chain holds at most _CHAIN items: longer ones keep that
#   item first and group the others into sub-chains of _CHAIN, so height grows by at most
#   _CHAIN - 1 per level of the filter and a log_CHAIN(n) tree of groups.
#
# With the limits of filters.py (depth 32, 1,000 comparisons) the worst SQL stays well inside
# every backend (tests/foundation/test_filter_defects.py runs filters at each limit, of each shape,
# on SQLite, PostgreSQL and MariaDB).

_CHAIN = 8


@dataclass(frozen=True, slots=True)
class _Part:
    """A compiled (sub)filter with what its SQL costs SQLite: parser stack entries it needs beyond
    where it starts, and the expression-tree height it adds (both on top of a comparison's own)."""

    expr: Any
    stack: int = 0
    height: int = 0


def _chain(glue: str, parts: Sequence[_Part]) -> _Part:
    n = len(parts)
    return _Part(
        pw.NodeList([p.expr for p in parts], glue=glue, parens=True),
        max(1 + parts[0].stack, max(3 + p.stack for p in parts[1:])),
        max([n - 1 + parts[0].height] + [n - i + p.height for i, p in enumerate(parts[1:], 1)]),
    )


def _cost(part: _Part) -> tuple[int, int]:
    return (part.stack, part.height)


def _layout(glue: str, parts: list[_Part]) -> _Part:
    """One AND or OR over ``parts`` (at least one) as flat chains, the most demanding part first."""
    if len(parts) == 1:
        return parts[0]
    parts.sort(key=_cost, reverse=True)
    head, rest = parts[0], parts[1:]
    while len(rest) > _CHAIN - 1:  # loops log_CHAIN(n) times
        groups = [rest[i : i + _CHAIN] for i in range(0, len(rest), _CHAIN)]
        rest = sorted((_chain(glue, g) if len(g) > 1 else g[0] for g in groups), key=_cost, reverse=True)
    return _chain(glue, [head, *rest])


# PostgreSQL turns every EXISTS / NOT EXISTS ANDed at the top of a WHERE clause into a semi- or
# anti-join, and planning a join of n of them grows steeply (76: 2 s, 150: 15 s, 1,000: minutes).
# Beyond the first _PULLED_UP of them, each is written "(EXISTS (...)) IS TRUE": the same rows at
# the top of WHERE (where NULL and false both reject), but a per-row subplan the planner leaves be.
_PULLED_UP = 8


def _is_subquery_test(expr: Any) -> bool:
    inner = expr.node if isinstance(expr, pw.Negated) else expr
    return isinstance(inner, pw.Function) and str(inner.name).upper() == "EXISTS"


class _TopLevel:
    """Counts the EXISTS tests ANDed at the top of the WHERE clause (PostgreSQL only)."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, expr: Any) -> Any:
        if not _is_subquery_test(expr):
            return expr
        self.seen += 1
        return expr if self.seen <= _PULLED_UP else pw.NodeList((expr, pw.SQL("IS TRUE")))


def compile_filter(node: Node | None, leaf: Callable[[Comparison], Any]) -> Any:
    """A validated filter AST as one Peewee expression, ``leaf`` compiling each comparison. The
    expression must be ANDed at the top of a WHERE clause (not negated, not inside an OR).

    The SQL's nesting depth follows the filter's nesting (bounded by ``filters.MAX_DEPTH``), not
    its length: see the comment above. Python recursion is one call per level of nesting too.
    """
    if node is None:
        return None
    top = None if is_sqlite() or is_mysql() else _TopLevel()
    return _compile(node, False, leaf, 0, top).expr


def _compile(
    node: Node, negate: bool, leaf: Callable[[Comparison], Any], depth: int, top: _TopLevel | None
) -> _Part:
    """``top``: set while ``node`` is ANDed at the top of the WHERE clause."""
    if depth > MAX_DEPTH + 1:  # parse_filter refused deeper filters; a hand-built AST is a bug
        raise AssertionError(f"filter AST nested deeper than {MAX_DEPTH} levels")
    while isinstance(node, Not):
        node, negate = node.item, not negate
    if isinstance(node, Comparison):
        expr = leaf(node)
        expr = ~expr if negate else expr
        return _Part(top(expr) if top is not None else expr)
    conjunction = isinstance(node, And) != negate  # De Morgan: NOT (a OR b) = NOT a AND NOT b
    # The items of this chain: nested groups that (after negation) are of the same kind merge.
    items: list[tuple[Node, bool]] = []
    pending: list[tuple[Node, bool]] = [(child, negate) for child in reversed(node.items)]
    while pending:
        child, neg = pending.pop()
        while isinstance(child, Not):
            child, neg = child.item, not neg
        if isinstance(child, And | Or) and (isinstance(child, And) != neg) == conjunction:
            pending.extend((c, neg) for c in reversed(child.items))
        else:
            items.append((child, neg))
    inner = top if conjunction else None
    parts = [_compile(child, neg, leaf, depth + 1, inner) for child, neg in items]
    return _layout(" AND " if conjunction else " OR ", parts)


_TOO_COMPLEX_SQL = (
    "parser stack overflow",  # SQLite
    "expression tree is too large",  # SQLite
    "too many sql variables",  # SQLite
    "too many terms in compound select",  # SQLite
    "stack depth limit exceeded",  # PostgreSQL
    "statement too complex",  # PostgreSQL
    "thread stack overrun",  # MySQL/MariaDB
    "memory exhausted near",  # MySQL/MariaDB parser
)


@contextlib.contextmanager
def search_guard() -> Iterator[None]:
    """Around a search: a database that refuses its SQL as too complex, or Python running out of
    recursion while building it, is INVALID_ARGUMENT ``FILTER_TOO_COMPLEX`` rather than the
    UNAVAILABLE (outage, retried by clients) or INTERNAL it would become. A backstop only: the
    limits of ``filters.py`` keep every accepted filter well inside all backends."""
    try:
        yield
    except pw.DatabaseError as exc:
        text = str(exc).lower()
        if not any(marker in text for marker in _TOO_COMPLEX_SQL):
            raise
        raise InvalidArgument(
            f"the database refused the search as too complex ({str(exc)[:200]}): use fewer comparisons "
            "or less nesting, or split the search",
            reason="FILTER_TOO_COMPLEX",
            field="filter",
        ) from None
    except RecursionError:
        raise InvalidArgument(
            "the search is too complex to build: use fewer comparisons or less nesting, or split the search",
            reason="FILTER_TOO_COMPLEX",
            field="filter",
        ) from None


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


def check_cursor(cursor: Sequence[Any], expected: int) -> None:
    """A decoded page token holds one value per sort component; anything else was not written by
    this search (tokens are not signed)."""
    if len(cursor) != expected:
        raise InvalidArgument(
            "page_token is malformed: pass the next_page_token of a previous response unchanged",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
        )


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


def upsert(model: Any, rows: list[dict[str, Any]], target: list[Any], preserve: list[Any]) -> None:
    """INSERT, or on a key conflict update the ``preserve`` columns (MySQL's ON DUPLICATE KEY
    takes no conflict target; the others need it)."""
    query = model.insert_many(rows)
    if is_mysql():
        query.on_conflict(preserve=preserve).execute()
    else:
        query.on_conflict(conflict_target=target, preserve=preserve).execute()


def id_page(
    query: Any, id_field: pw.Field, page_token: str, request_fingerprint: str, size: int, *, newest_first: bool = False
) -> Any:
    """``query`` in ``id_field`` order (``newest_first``: descending), resumed after the page
    token's id and limited to one page plus one row (for ``pagination.trim``, with the cursor
    ``[row id]``): keyset paging of the lists ordered by their id alone."""
    cursor = pagination.decode_token(page_token, request_fingerprint)
    if cursor is not None:
        if len(cursor) != 1 or type(cursor[0]) is not int:
            raise pagination.malformed()
        query = query.where(id_field < cursor[0] if newest_first else id_field > cursor[0])
    return query.order_by(id_field.desc() if newest_first else id_field).limit(size + 1)
