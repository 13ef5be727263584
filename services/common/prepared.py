"""Peewee queries compiled to SQL once per database, then run with new values as raw SQL.

Two forms of the one idea: ``Statement`` (named ``arg("...")`` placeholders, a fixed shape: the
registry's write path) and ``Prepared`` (positional ``slot(i)`` placeholders, compiled per size
for multi-row inserts and ``IN`` lists: the tracking store's metric path).

Building a query is most of what a small statement costs here: Peewee takes ~100-200 us to
turn a one-row SELECT into SQL, SQLite ~5-10 us to run it (profiled on the registry's write
path). A hot path that runs the same few statements on every call declares each once as a
``Statement`` over a Peewee query whose variable values are ``arg("name")`` placeholders; the
SQL is generated from the models (table and column names, quoting, the parameter style and
dialect of the database in use), compiled on first use per database, and reused.

Placeholders skip the fields' Python-to-database conversion, so pass values the driver takes
as they are (int, str, float, None, bool). Placeholders work where Peewee takes a value:
comparisons, ``insert``/``update`` values, ``RETURNING`` clauses are fine; an ``IN`` list or
a ``None`` that Peewee would spell ``IS NULL`` changes the SQL's shape, so those stay in
ordinary Peewee queries.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import peewee as pw

from keel_server.common.db import db


class _Arg:
    """The marker a placeholder leaves in a compiled statement's parameters."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"arg({self.name!r})"


def arg(name: str) -> Any:
    """A named placeholder for a value given at execution (``Statement.execute(name=...)``)."""
    return pw.Value(_Arg(name), converter=False)


class Statement:
    """One query, compiled per database on first use. ``build`` returns the Peewee query (called
    with the proxy pointing at the database in use, so dialect choices may depend on it)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        # Per database: (SQL, parameters with placeholders, whether it returns rows of RETURNING).
        self._compiled: weakref.WeakKeyDictionary[pw.Database, tuple[str, tuple[Any, ...], bool]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def _sql(self) -> tuple[str, tuple[Any, ...], bool]:
        database = db.obj
        found = self._compiled.get(database)
        if found is None:
            query = self._build()
            sql, params = query.sql()
            found = (sql, tuple(params), bool(getattr(query, "_returning", None)))
            with self._lock:
                self._compiled[database] = found
        return found

    def execute(self, **values: Any) -> Any:
        """Runs the statement with ``values`` for its placeholders; returns the DB-API cursor.
        Errors are Peewee's (``IntegrityError``, ``OperationalError``...), as for any query."""
        sql, template, _ = self._sql()
        try:
            params = [values[p.name] if isinstance(p, _Arg) else p for p in template]
        except KeyError as exc:
            raise TypeError(f"the statement needs a value for its placeholder {exc.args[0]!r}") from None
        return db.execute_sql(sql, params)

    def insert(self, **values: Any) -> int:
        """Runs an INSERT of one row; returns the new row's id (declare the query with
        ``.returning(<id field>)`` where the database has RETURNING, see ``returning_id``)."""
        cursor = self.execute(**values)
        if self._sql()[2]:
            return int(cursor.fetchone()[0])
        return int(cursor.lastrowid)

    def one(self, **values: Any) -> tuple[Any, ...] | None:
        """The first row, or None."""
        row: tuple[Any, ...] | None = self.execute(**values).fetchone()
        return row

    def all(self, **values: Any) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.execute(**values).fetchall()
        return rows

    def count(self, **values: Any) -> int:
        """Rows an INSERT, UPDATE or DELETE touched."""
        return int(self.execute(**values).rowcount)


def returning_id(query: Any, field: pw.Field) -> Any:
    """``query`` returning ``field`` (the new row's id) where Peewee reads ids that way
    (PostgreSQL); elsewhere ``Statement.insert`` reads the cursor's ``lastrowid``."""
    return query.returning(field) if db.obj.returning_clause else query


def update_returning() -> bool:
    """Whether the database in use returns the rows an UPDATE touched (``UPDATE ... RETURNING``:
    PostgreSQL, SQLite 3.35+; not MySQL/MariaDB)."""
    database = db.obj
    if isinstance(database, pw.MySQLDatabase):
        return False
    return not isinstance(database, pw.SqliteDatabase) or sqlite3.sqlite_version_info >= (3, 35, 0)


def columns(model: type[pw.Model]) -> list[pw.Field]:
    """A model's fields in table order: what ``select(*columns(model))`` returns, and what
    ``instance`` expects."""
    return list(model._meta.sorted_fields)


def instance(model: type[pw.Model], fields: Sequence[pw.Field], row: Sequence[Any]) -> Any:
    """A model instance of a raw row of ``fields`` (no defaults computed, nothing dirty)."""
    made = model(__no_default__=True)
    made.__data__ = {field.name: field.python_value(value) for field, value in zip(fields, row, strict=True)}
    return made


# Positional, sized statements


def slot(index: int) -> pw.Value:
    """The place of value ``index`` in a statement built for :class:`Prepared` (no converter:
    the values come later, already in the column's type)."""
    return pw.Value(index, converter=False)


def slot_rows(count: int, width: int) -> list[list[pw.Value]]:
    """``count`` rows of ``width`` slots, numbered row by row (the values of a multi-row insert)."""
    return [[slot(row * width + i) for i in range(width)] for row in range(count)]


class Prepared:
    """A statement's SQL text, rendered by Peewee once per database and size, then run with
    fresh values (``db.execute_sql(prepared.sql(n), values)``). For hot paths only, where building
    a tiny query costs more than running it (profiled: about 70% of a LogMetric call): the text
    still comes from the models, so no table or column name is spelled anywhere else.

    ``build(n)`` returns the query with ``slot(0)``, ``slot(1)``... where its values go (``n``: how
    many rows or values, for statements whose text depends on it). Values are then passed in slot
    order; rendering checks that Peewee asks for them in that order."""

    _MAX_TEXTS = 4096  # sizes times databases (tests open many); beyond it start afresh

    def __init__(self, build: Callable[[int], Any]) -> None:
        self._build = build
        # Keyed by the database object itself (not its id, which a later database could reuse).
        self._texts: dict[tuple[Any, int], str] = {}

    def sql(self, n: int = 1) -> str:
        key = (db.obj, n)
        text = self._texts.get(key)
        if text is None:
            text, params = self._build(n).sql()
            if params != list(range(len(params))):
                raise AssertionError(
                    f"the statement takes its values in the order {params}, not in slot order"
                )
            if len(self._texts) >= self._MAX_TEXTS:
                self._texts.clear()
            self._texts[key] = text
        return text
