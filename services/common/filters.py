"""The one filter and ``order_by`` parser for every keel search.

Syntax is MLflow's search grammar plus ``OR``, parentheses and ``NOT``::

    expr       := or_expr
    or_expr    := and_expr (OR and_expr)*
    and_expr   := unary (AND unary)*
    unary      := NOT unary | '(' expr ')' | comparison
    comparison := identifier op value
                | identifier [NOT] IN '(' value (',' value)* ')'
                | identifier IS [NOT] NULL
    op         := = | != | <> | < | <= | > | >= | [NOT] LIKE | [NOT] ILIKE

Keywords are case-insensitive. An identifier is ``prefix.key`` (``metrics.rmse``,
``tags.mlflow.runName``, ``` metrics.`f1-score` ```, ``tags."my key"``) or a bare name
(``name``). Values are single- or double-quoted strings, numbers (int or float, kept as such)
and ``TRUE``/``FALSE``.

Two steps, so that every resource shares one parser:

1. :func:`parse_filter` turns text into an AST of frozen dataclasses (:class:`Comparison`,
   :class:`And`, :class:`Or`, :class:`Not`) or raises :class:`InvalidArgument` with the 0-based
   character position of the error.
2. :func:`validate` checks that AST against a :class:`FilterSchema` (which identifiers, which
   operators, which value types: each service declares its own, in its ``fields.py``, from the
   operator sets at the end of this module) and returns it normalised: attribute aliases become their
   canonical name and every attribute (bare or ``attributes.``-prefixed) has entity
   ``"attribute"``. Stores compile only validated nodes.

:func:`parse_order_by` does the same for ``order_by`` items (``metrics.rmse DESC``).

Limits (the same for every search; over one: INVALID_ARGUMENT, reason ``FILTER_TOO_COMPLEX``, field
``filter`` or ``order_by``, a message naming the limit and what was found, metadata ``limit``,
``max`` and ``found``). They are checked before any SQL is built, and every filter within them
compiles to SQL that SQLite, PostgreSQL and MariaDB accept (see ``querying.compile_filter``):

- :data:`MAX_FILTER_LENGTH` characters of filter text;
- :data:`MAX_DEPTH` levels of parentheses and ``NOT`` (SQLite's parser keeps a fixed stack of 100
  entries: nesting is what it runs out of, so this limit stays well below what it tolerates);
- :data:`MAX_COMPARISONS` comparisons (chains of ``AND``/``OR`` are parsed in loops and compiled
  n-ary, so their length costs no recursion);
- :data:`MAX_IN_VALUES` values in one ``IN`` list and :data:`MAX_VALUES` values in the whole filter
  (each is a bound SQL parameter; SQLite allows 32,766 per statement);
- :data:`MAX_ORDER_KEYS` ``order_by`` items.

Numbers: an integer literal must fit in 64 bits (:data:`INT64_MIN`..:data:`INT64_MAX`) and a
decimal one must be a finite double; anything else is INVALID_FILTER at the number's position
(never a value the database driver cannot bind). Metrics are compared as doubles; integer
columns (times, version numbers) compare exactly with integers and decimals alike.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeAlias

from keel_server.common.errors import InvalidArgument

__all__ = [
    "ALL_OPS",
    "And",
    "Comparison",
    "FieldSpec",
    "FilterSchema",
    "INT64_MAX",
    "INT64_MIN",
    "IN_OPS",
    "KEY_VALUE_OPS",
    "MAX_COMPARISONS",
    "MAX_DEPTH",
    "MAX_FILTER_LENGTH",
    "MAX_IN_VALUES",
    "MAX_ORDER_KEYS",
    "MAX_VALUES",
    "NULL_OPS",
    "NUMBER",
    "NUMBER_OPS",
    "ORDER_ONLY",
    "Node",
    "Not",
    "Or",
    "OrderKey",
    "STRING",
    "STRING_IN_OPS",
    "STRING_OPS",
    "STRING_OR_NUMBER",
    "Value",
    "describe",
    "describe_value",
    "parse_and_validate",
    "parse_filter",
    "parse_order_by",
    "too_complex",
    "validate",
    "walk",
]

MAX_FILTER_LENGTH = 64 * 1024
MAX_DEPTH = 32
MAX_COMPARISONS = 1_000
MAX_IN_VALUES = 1_000
MAX_VALUES = 10_000
MAX_ORDER_KEYS = 5
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Scalar: TypeAlias = str | int | float | bool
Value: TypeAlias = Scalar | tuple[Scalar, ...] | None

# --------------------------------------------------------------------------------------------
# AST
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """One ``identifier op value`` clause.

    ``entity`` is ``'metric'``, ``'param'``, ``'tag'``, ``'attribute'``, ``'dataset'`` or ``None``
    (a bare name; :func:`validate` turns allowed bare names into ``'attribute'``).
    ``op`` is canonical upper case: ``= != < <= > >= LIKE ILIKE NOT LIKE NOT ILIKE IN NOT IN
    IS NULL IS NOT NULL``. ``value`` is a str, int, float or bool, a tuple of those for
    ``IN``/``NOT IN``, and ``None`` for ``IS [NOT] NULL``. ``position`` is the 0-based offset of the
    identifier in the filter text; ``raw`` is the value as written (``'0.80'``, ``"'cnn'"``),
    ``op_position``/``value_position`` locate the operator and the value. The last three do not
    take part in equality.
    """

    entity: str | None
    key: str
    op: str
    value: Value
    position: int = 0
    raw: str | None = field(default=None, compare=False, repr=False)
    op_position: int = field(default=-1, compare=False, repr=False)
    value_position: int = field(default=-1, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


Node: TypeAlias = Comparison | And | Or | Not


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One parsed ``order_by`` item; ``entity`` as in :class:`Comparison` after validation."""

    entity: str | None
    key: str
    ascending: bool = True


# canonical order, used in messages
ALL_OPS: tuple[str, ...] = (
    "=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE",
    "IN", "NOT IN", "IS NULL", "IS NOT NULL",
)  # fmt: skip

_LIKE_OPS = frozenset({"LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"})
_IN_OPS = frozenset({"IN", "NOT IN"})
_NULL_OPS = frozenset({"IS NULL", "IS NOT NULL"})

# --------------------------------------------------------------------------------------------
# Tokenizer: one compiled regex; every character belongs to exactly one token.
# --------------------------------------------------------------------------------------------

_PREFIXES: dict[str, str] = {
    "metrics": "metric", "metric": "metric",
    "params": "param", "param": "param", "parameters": "param", "parameter": "param",
    "tags": "tag", "tag": "tag",
    "attributes": "attribute", "attribute": "attribute", "attr": "attribute", "run": "attribute",
    "datasets": "dataset", "dataset": "dataset",
}  # fmt: skip
_PLURAL = {
    "metric": "metrics",
    "param": "params",
    "tag": "tags",
    "attribute": "attributes",
    "dataset": "datasets",
}
_VALID_PREFIXES = "metrics, params, tags, attributes, datasets (or metric, param, parameter(s), tag, attribute, attr, run, dataset)"

_SEG = r"""(?:[A-Za-z0-9_]+|`(?:[^`]|``)*`|"(?:[^"\\]|\\.|"")*")"""
_TOKEN_RE = re.compile(
    rf"""
      (?P<ws>\s+)
    | (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.{_SEG}?)*)
    | (?P<sq>'(?:[^'\\]|\\.|'')*')
    | (?P<dq>"(?:[^"\\]|\\.|"")*")
    | (?P<bq>`(?:[^`]|``)*`)
    | (?P<op>[!<>=~]+)
    | (?P<lp>\()
    | (?P<rp>\))
    | (?P<comma>,)
    | (?P<unterminated>['"`])
    | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_SEG_RE = re.compile(r"""\.(?:([A-Za-z0-9_]+)|`((?:[^`]|``)*)`|"((?:[^"\\]|\\.|"")*)")?""")
_ESC_RE = re.compile(r"\\(.)|''|\"\"", re.DOTALL)
_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
_PLAIN_BARE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "IS", "NULL", "TRUE", "FALSE"})
_OPS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_OP_HINTS = {
    "==": "=",
    "===": "=",
    "=<": "<=",
    "=>": ">=",
    "!": "!=",
    "!==": "!=",
    "=!": "!=",
    "~=": "LIKE",
    "=~": "LIKE",
}
_OP_CHOICES = "=, !=, <>, <, <=, >, >=, LIKE, ILIKE, NOT LIKE, NOT ILIKE, IN, NOT IN, IS NULL, IS NOT NULL"

Token: TypeAlias = tuple[str, str, int]  # (kind, text, position)


def _tokenize(text: str) -> list[Token]:
    toks: list[Token] = []
    append = toks.append
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            continue
        s = m.group()
        if kind == "ident" and s.upper() in _KEYWORDS:
            append(("kw", s.upper(), m.start()))
        else:
            append((kind or "bad", s, m.start()))
    append(("end", "", len(text)))
    return toks


def _unescape(body: str) -> str:
    """Undo ``\\'``, ``\\"``, ``\\\\``, ``''`` and ``\"\"``; other backslashes (``\\%`` in LIKE) stay."""
    if "\\" not in body and "''" not in body and '""' not in body:
        return body

    def sub(m: re.Match[str]) -> str:
        c = m.group(1)
        if c is None:
            return m.group()[0]
        return c if c in "'\"\\" else m.group()

    return _ESC_RE.sub(sub, body)


def _fail(pos: int, message: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid filter at position {pos}: {message}",
        reason="INVALID_FILTER",
        field="filter",
        metadata={"position": pos},
    )


def too_complex(
    message: str, limit: str, maximum: int, found: int, field: str = "filter", **extra: object
) -> InvalidArgument:
    """INVALID_ARGUMENT ``FILTER_TOO_COMPLEX`` for a search over one of the limits above.

    ``message`` names the limit and the value found and says what to do ("the filter has 2,001
    comparisons; at most 1,000 are allowed: split the search"); ``limit`` names it in the
    metadata (``comparisons``, ``depth``, ``in_values``, ``values``, ``length``, ``order_by_keys``).
    """
    return InvalidArgument(
        message,
        reason="FILTER_TOO_COMPLEX",
        field=field,
        metadata={"limit": limit, "max": maximum, "found": found, **extra},
    )


def _found(tok: Token) -> str:
    kind, s, _ = tok
    if kind == "end":
        return "end of input"
    if kind in ("sq", "dq"):
        return f"string {s}"
    if kind == "num":
        return f"number {s}"
    if kind == "kw":
        return f"keyword {s}"
    return f"'{s}'"


def _unexpected(tok: Token, expected: str) -> InvalidArgument:
    kind, s, pos = tok
    if kind == "unterminated":
        what = "quoted identifier" if s == "`" else "string"
        return _fail(pos, f"unterminated {what}: no closing {s} before end of input")
    if kind == "bad":
        return _fail(pos, f"unexpected character '{s}'; expected {expected}")
    return _fail(pos, f"expected {expected}, found {_found(tok)}")


# --------------------------------------------------------------------------------------------
# Parser (recursive descent over the token list)
# --------------------------------------------------------------------------------------------


class _Parser:
    """Recursive descent that recurses only into parentheses and ``NOT`` (bounded by
    :data:`MAX_DEPTH`, checked before each step deeper); chains of AND/OR and IN lists are loops."""

    __slots__ = ("text", "toks", "i", "depth", "comparisons", "values")

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.comparisons = 0
        self.values = 0

    def _is_kw(self, word: str) -> bool:
        tok = self.toks[self.i]
        return tok[0] == "kw" and tok[1] == word

    def parse(self) -> Node:
        node = self.or_expr()
        tok = self.toks[self.i]
        if tok[0] != "end":
            if tok[0] == "rp":
                raise _fail(tok[2], "unexpected ')' with no matching '('")
            raise _unexpected(tok, "AND, OR or end of input")
        return node

    def or_expr(self) -> Node:
        first = self.and_expr()
        if not self._is_kw("OR"):
            return first
        items: list[Node] = list(first.items) if isinstance(first, Or) else [first]
        while self._is_kw("OR"):
            self.i += 1
            nxt = self.and_expr()
            items.extend(nxt.items if isinstance(nxt, Or) else (nxt,))
        return Or(tuple(items))

    def and_expr(self) -> Node:
        first = self.unary()
        if not self._is_kw("AND"):
            return first
        items: list[Node] = list(first.items) if isinstance(first, And) else [first]
        while self._is_kw("AND"):
            self.i += 1
            nxt = self.unary()
            items.extend(nxt.items if isinstance(nxt, And) else (nxt,))
        return And(tuple(items))

    def _enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:  # parse_filter checked the depth first: this is a backstop
            raise _too_deep(max(self.depth, _nesting(self.toks)[0]), pos)

    def unary(self) -> Node:
        kind, s, pos = self.toks[self.i]
        if kind == "kw" and s == "NOT":
            self.i += 1
            self._enter(pos)
            node: Node = Not(self.unary())
            self.depth -= 1
            return node
        if kind == "lp":
            self.i += 1
            self._enter(pos)
            node = self.or_expr()
            tok = self.toks[self.i]
            if tok[0] != "rp":
                if tok[0] in ("unterminated", "bad"):
                    raise _unexpected(tok, f"')' to close '(' at position {pos}")
                expected = "AND, OR or " if tok[0] != "end" else ""
                raise _fail(
                    tok[2], f"expected {expected}')' to close '(' at position {pos}, found {_found(tok)}"
                )
            self.i += 1
            self.depth -= 1
            return node
        return self.comparison()

    def _identifier(self, tok: Token) -> tuple[str | None, str]:
        _, s, pos = tok
        dot = s.find(".")
        if dot < 0:
            return None, s
        prefix = s[:dot]
        entity = _PREFIXES.get(prefix.lower())
        if entity is None:
            raise _fail(
                pos, f"unknown identifier prefix '{prefix}' in '{s}'; valid prefixes are {_VALID_PREFIXES}"
            )
        parts: list[str] = []
        for m in _SEG_RE.finditer(s, dot):
            plain, bq, dq = m.groups()
            if plain is not None:
                parts.append(plain)
            elif bq is not None:
                parts.append(bq.replace("``", "`"))
            elif dq is not None:
                parts.append(_unescape(dq))
            else:
                nxt = self.toks[self.i]
                if m.end() == len(s) and nxt[0] == "unterminated" and nxt[2] == pos + len(s):
                    raise _unexpected(nxt, "")
                found = _found(nxt) if m.end() == len(s) else f"'{s[m.end()]}'"
                raise _fail(pos + m.end(), f"expected a key after '{s[: m.end()]}', found {found}")
        key = ".".join(parts)
        if not key:
            raise _fail(pos, f"empty key in '{s}'")
        return entity, key

    def comparison(self) -> Comparison:
        tok = self.toks[self.i]
        kind, s, pos = tok
        if kind == "ident":
            self.i += 1
            entity, key = self._identifier(tok)
        elif kind == "bq":
            self.i += 1
            entity, key = None, s[1:-1].replace("``", "`")
            if not key:
                raise _fail(pos, "empty quoted identifier ``")
        else:
            prev = self.toks[self.i - 1] if self.i else None
            after = f" after '{prev[1]}'" if prev is not None and prev[0] in ("kw", "lp") else ""
            raise _unexpected(tok, f"an identifier such as metrics.rmse or tags.team{after}")
        ident = s
        value: Value
        raw: str | None
        optok = self.toks[self.i]
        okind, os_, opos = optok
        self.i += 1
        if okind == "op":
            op = _OPS.get(os_)
            if op is None:
                hint = _OP_HINTS.get(os_)
                if hint is not None:
                    raise _fail(opos, f"unknown operator '{os_}'; did you mean '{hint}'?")
                raise _fail(opos, f"unknown operator '{os_}'; expected one of {_OP_CHOICES}")
            value, raw, vpos = self._value(os_)
        elif okind == "kw" and os_ in ("LIKE", "ILIKE"):
            op = os_
            value, raw, vpos = self._value(os_)
        elif okind == "kw" and os_ == "IN":
            op = "IN"
            value, raw, vpos = self._in_list()
        elif okind == "kw" and os_ == "NOT":
            ntok = self.toks[self.i]
            self.i += 1
            if ntok[0] == "kw" and ntok[1] in ("LIKE", "ILIKE"):
                op = "NOT " + ntok[1]
                value, raw, vpos = self._value(op)
            elif ntok[0] == "kw" and ntok[1] == "IN":
                op = "NOT IN"
                value, raw, vpos = self._in_list()
            else:
                raise _unexpected(ntok, "LIKE, ILIKE or IN after NOT")
        elif okind == "kw" and os_ == "IS":
            ntok = self.toks[self.i]
            self.i += 1
            negate = ntok[0] == "kw" and ntok[1] == "NOT"
            if negate:
                ntok = self.toks[self.i]
                self.i += 1
            if not (ntok[0] == "kw" and ntok[1] == "NULL"):
                raise _unexpected(ntok, "NULL after IS NOT" if negate else "NULL or NOT NULL after IS")
            op = "IS NOT NULL" if negate else "IS NULL"
            value, raw, vpos = None, None, ntok[2]
        else:
            self.i -= 1
            raise _unexpected(
                optok, f"an operator after '{ident}' (one of =, !=, <, <=, >, >=, LIKE, ILIKE, IN, IS)"
            )
        self.comparisons += 1
        if value is not None:
            self.values += len(value) if isinstance(value, tuple) else 1
        return Comparison(entity, key, op, value, pos, raw, opos, vpos)

    def _value(self, after: str) -> tuple[Scalar, str, int]:
        tok = self.toks[self.i]
        kind, s, pos = tok
        self.i += 1
        if kind == "sq" or kind == "dq":
            return _unescape(s[1:-1]), s, pos
        if kind == "num":
            return _number(s, pos), s, pos
        if kind == "kw" and (s == "TRUE" or s == "FALSE"):
            return s == "TRUE", s, pos
        if kind == "kw" and s == "NULL":
            raise _fail(pos, "NULL cannot be compared with operators; use IS NULL or IS NOT NULL")
        raise _unexpected(tok, f"a value after '{after}'")

    def _in_list(self) -> tuple[tuple[Scalar, ...], str, int]:
        lp = self.toks[self.i]
        if lp[0] != "lp":
            raise _unexpected(lp, "'(' after IN")
        self.i += 1
        if self.toks[self.i][0] == "rp":
            raise _fail(lp[2], "empty IN list; IN needs at least one value")
        values: list[Scalar] = []
        while True:
            values.append(self._value("," if values else "(")[0])
            tok = self.toks[self.i]
            self.i += 1
            if tok[0] == "rp":
                break
            if tok[0] != "comma":
                raise _unexpected(tok, "',' or ')' in the IN list")
        if len(values) > MAX_IN_VALUES:
            raise too_complex(
                f"the IN list at position {lp[2]} of the filter has {len(values):,} values; at most "
                f"{MAX_IN_VALUES:,} are allowed in one list: split it into several IN lists joined with OR, "
                "or split the search",
                "in_values",
                MAX_IN_VALUES,
                len(values),
                position=lp[2],
            )
        return tuple(values), self.text[lp[2] : tok[2] + 1], lp[2]


# More digits than this (leading zeros aside) cannot fit in 64 bits; such literals are refused
# before int() sees them (CPython refuses to convert more than 4,300 digits at all).
_INT64_DIGITS = len(str(INT64_MAX))


def _number(s: str, pos: int) -> int | float:
    if "." not in s and "e" not in s and "E" not in s:
        digits = s.lstrip("-").lstrip("0")
        if len(digits) <= _INT64_DIGITS:
            value = int(s)
            if INT64_MIN <= value <= INT64_MAX:
                return value
        shown = s if len(s) <= 40 else f"{s[:20]}...{s[-8:]} ({len(digits):,} digits)"
        raise _fail(
            pos,
            f"integer {shown} is out of range: integers in a filter must lie between {INT64_MIN} and "
            f"{INT64_MAX} (64-bit); times and version numbers never exceed that, and a metric can be "
            "compared with a decimal such as 1e30",
        )
    v = float(s)
    if not math.isfinite(v):
        shown = s if len(s) <= 40 else f"{s[:20]}...{s[-8:]}"
        raise _fail(
            pos,
            f"number {shown} is out of range: decimal numbers must be finite 64-bit floats "
            "(magnitude at most 1.7976931348623157e308)",
        )
    return v


def _too_deep(found: int, pos: int) -> InvalidArgument:
    return too_complex(
        f"the filter nests parentheses and NOT {found:,} levels deep (level {MAX_DEPTH + 1} opens at "
        f"position {pos}); at most {MAX_DEPTH} levels are allowed: flatten the expression (a chain of "
        "AND or OR needs no parentheses) or split the search",
        "depth",
        MAX_DEPTH,
        found,
        position=pos,
    )


def _nesting(toks: Sequence[Token]) -> tuple[int, int]:
    """The deepest nesting of parentheses and NOT in a token list, as the parser counts it, and the
    position where nesting first exceeds :data:`MAX_DEPTH` (-1 if it never does). One loop, so
    that a filter too deep to parse is refused before the parser recurses at all."""
    depth = deepest = 0
    over = -1
    groups: list[int] = []  # the depth to return to at each open group's ')'
    nots = 0  # NOTs waiting for their operand (a comparison or a group)
    operand = True  # the next token starts an operand
    in_list = False
    for kind, s, pos in toks:
        if in_list:
            in_list = kind != "rp"
            continue
        if operand and kind == "kw" and s == "NOT":
            nots += 1
            depth += 1
        elif operand and kind == "lp":
            groups.append(depth - nots)
            nots = 0
            depth += 1
        else:
            if kind == "rp":
                if groups:
                    depth = groups.pop()
                operand = False
            elif kind == "kw" and s in ("AND", "OR"):
                operand = True
            elif kind == "lp":  # the list of an IN
                in_list = True
            elif operand:  # a comparison starts: the NOTs before it end with it
                depth -= nots
                nots = 0
                operand = False
            continue
        if depth > deepest:
            deepest = depth
            if depth > MAX_DEPTH and over < 0:
                over = pos
    return deepest, over


def parse_filter(text: str | None) -> Node | None:
    """Parse filter text into an AST; ``None`` for an empty or blank filter.

    Raises :class:`InvalidArgument` (reason ``INVALID_FILTER``, field ``filter``, metadata
    ``position``) with a message "invalid filter at position N: expected X, found Y", or reason
    ``FILTER_TOO_COMPLEX`` for a filter over one of the limits (module docstring).
    """
    if text is None or not text.strip():
        return None
    if len(text) > MAX_FILTER_LENGTH:
        raise too_complex(
            f"the filter is {len(text):,} characters long; at most {MAX_FILTER_LENGTH:,} are allowed: "
            "shorten it (IN lists are shorter than chains of OR) or split the search",
            "length",
            MAX_FILTER_LENGTH,
            len(text),
        )
    parser = _Parser(text)
    deepest, over = _nesting(parser.toks)
    if deepest > MAX_DEPTH:
        raise _too_deep(deepest, over)
    node = parser.parse()
    if parser.comparisons > MAX_COMPARISONS:
        raise too_complex(
            f"the filter has {parser.comparisons:,} comparisons; at most {MAX_COMPARISONS:,} are allowed: "
            "split the search (or turn chains of = joined with OR into IN lists)",
            "comparisons",
            MAX_COMPARISONS,
            parser.comparisons,
        )
    if parser.values > MAX_VALUES:
        raise too_complex(
            f"the filter holds {parser.values:,} values (IN-list values count one each); at most "
            f"{MAX_VALUES:,} are allowed: split the search",
            "values",
            MAX_VALUES,
            parser.values,
        )
    return node


# --------------------------------------------------------------------------------------------
# Walking and rendering
# --------------------------------------------------------------------------------------------


def walk(node: Node | None) -> Iterator[Comparison]:
    """Every :class:`Comparison` in ``node``, left to right."""
    if node is None:
        return
    if isinstance(node, Comparison):
        yield node
    elif isinstance(node, Not):
        yield from walk(node.item)
    else:
        for item in node.items:
            yield from walk(item)


def _render_scalar(v: Scalar) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "''") + "'"
    return repr(v)


def _render_identifier(entity: str | None, key: str) -> str:
    if entity is None:
        return (
            key
            if _PLAIN_BARE_RE.fullmatch(key) and key.upper() not in _KEYWORDS
            else "`" + key.replace("`", "``") + "`"
        )
    k = key if _PLAIN_KEY_RE.fullmatch(key) else "`" + key.replace("`", "``") + "`"
    return f"{_PLURAL.get(entity, entity)}.{k}"


def describe(node: Node | None) -> str:
    """Render a node back to filter text that parses to the same AST (up to positions)."""
    if node is None:
        return ""
    if isinstance(node, Comparison):
        ident = _render_identifier(node.entity, node.key)
        if node.op in _NULL_OPS:
            return f"{ident} {node.op}"
        if isinstance(node.value, tuple):
            return f"{ident} {node.op} (" + ", ".join(_render_scalar(v) for v in node.value) + ")"
        assert node.value is not None
        return f"{ident} {node.op} {_render_scalar(node.value)}"
    if isinstance(node, Not):
        inner = describe(node.item)
        return f"NOT ({inner})" if isinstance(node.item, And | Or) else f"NOT {inner}"
    if isinstance(node, And):
        return " AND ".join(
            f"({describe(i)})" if isinstance(i, Or | And) else describe(i) for i in node.items
        )
    return " OR ".join(f"({describe(i)})" if isinstance(i, Or) else describe(i) for i in node.items)


# --------------------------------------------------------------------------------------------
# Schemas and validation
# --------------------------------------------------------------------------------------------

NUMBER = "number"
STRING = "string"
STRING_OR_NUMBER = "string_or_number"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What one identifier (an attribute, or any key of an entity such as ``tags.*``) allows.

    ``ops``: allowed canonical operators (empty: usable in ``order_by`` only).
    ``kind``: value type, :data:`NUMBER`, :data:`STRING` or :data:`STRING_OR_NUMBER`.
    """

    ops: frozenset[str]
    kind: str = STRING
    orderable: bool = True


@dataclass(frozen=True, eq=False)
class FilterSchema:
    """Which identifiers a resource's filter and order_by accept.

    ``attributes``: canonical attribute name → spec (written ``attributes.x`` or, when
    ``bare_attributes``, plain ``x``). ``aliases``: lower-case alias → canonical name
    (canonical names are matched case-insensitively too). ``entities``: keyed entity
    (``'metric'``, ``'param'``, ``'tag'``, ``'dataset'``) → spec for all of its keys.
    ``unsupported``: entity → message explaining why it is rejected.
    """

    resource: str
    attributes: Mapping[str, FieldSpec]
    entities: Mapping[str, FieldSpec] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    bare_attributes: bool = True
    prefixed_attributes: bool = True
    unsupported: Mapping[str, str] = field(default_factory=dict)

    def resolve_attribute(self, name: str) -> str | None:
        if name in self.attributes:
            return name
        low = name.lower()
        if low in self.attributes:
            return low
        return self.aliases.get(low)

    def identifiers(self) -> str:
        """Human list of what this resource accepts (for messages)."""
        prefix = "attributes." if self.prefixed_attributes and not self.bare_attributes else ""
        names = [prefix + a for a, s in sorted(self.attributes.items()) if s.ops]
        names += [f"{_PLURAL[e]}.<key>" for e, s in self.entities.items() if s.ops]
        return ", ".join(names)


def _ops_text(ops: frozenset[str]) -> str:
    return ", ".join(o for o in ALL_OPS if o in ops)


def _kind_of(v: Scalar) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, str):
        return "string"
    return "number"


def _check_scalar(v: Scalar, raw: str, kind: str, what: str, pos: int) -> Scalar:
    if kind == NUMBER:
        if isinstance(v, bool) or not isinstance(v, int | float):
            hint = " (remove the quotes)" if isinstance(v, str) and _is_number(v) else ""
            raise _fail(pos, f"{what} must be compared with a number; found {_kind_of(v)} {raw}{hint}")
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if kind == STRING and not isinstance(v, str):
        raise _fail(pos, f"{what} must be compared with a string; found number {raw} (quote it: '{raw}')")
    return v


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _validate_comparison(c: Comparison, schema: FilterSchema) -> Comparison:
    entity, key = c.entity, c.key
    if entity is None or entity == "attribute":
        written = key if entity is None else f"{_PLURAL['attribute']}.{key}"
        canonical = schema.resolve_attribute(key)
        if entity is None and not schema.bare_attributes:
            hint = (
                f"; did you mean 'attributes.{key}'?"
                if canonical
                else f"; valid identifiers are {schema.identifiers()}"
            )
            raise _fail(c.position, f"unknown identifier '{key}' in a {schema.resource} filter{hint}")
        if entity == "attribute" and not schema.prefixed_attributes:
            hint = f"; write '{canonical}'" if canonical else ""
            raise _fail(c.position, f"'{written}' is not valid in a {schema.resource} filter{hint}")
        if canonical is None:
            raise _fail(
                c.position,
                f"unknown attribute '{key}' in a {schema.resource} filter; valid identifiers are {schema.identifiers()}",
            )
        spec = schema.attributes[canonical]
        what = f"attribute '{canonical}'"
        entity, key = "attribute", canonical
        if not spec.ops:
            raise _fail(c.position, f"{what} can be used in order_by but not in a {schema.resource} filter")
    else:
        if entity in schema.unsupported:
            raise _fail(c.position, schema.unsupported[entity])
        espec = schema.entities.get(entity)
        if espec is None or not espec.ops:
            raise _fail(
                c.position,
                f"{_PLURAL[entity]} cannot be used in a {schema.resource} filter; valid identifiers are {schema.identifiers()}",
            )
        spec = espec
        what = _PLURAL[entity]
    op = c.op
    op_pos = c.op_position if c.op_position >= 0 else c.position
    if op not in spec.ops:
        raise _fail(op_pos, f"operator '{op}' is not allowed on {what} (use one of {_ops_text(spec.ops)})")
    value = c.value
    vpos = c.value_position if c.value_position >= 0 else c.position
    raw = c.raw if c.raw is not None else describe_value(value)
    if op in _NULL_OPS:
        pass
    elif op in _LIKE_OPS:
        if not isinstance(value, str):
            assert value is not None and not isinstance(value, tuple)
            raise _fail(vpos, f"{op} needs a string pattern; found {_kind_of(value)} {raw}")
    elif op in _IN_OPS:
        assert isinstance(value, tuple)
        if not value:
            raise _fail(vpos, "empty IN list; IN needs at least one value")
        value = tuple(_check_scalar(v, _render_scalar(v), spec.kind, f"{what}", vpos) for v in value)
    else:
        assert value is not None and not isinstance(value, tuple)
        value = _check_scalar(value, raw, spec.kind, what, vpos)
    if entity == c.entity and key == c.key and value is c.value:
        return c
    return replace(c, entity=entity, key=key, value=value)


def describe_value(value: Value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, tuple):
        return "(" + ", ".join(_render_scalar(v) for v in value) + ")"
    return _render_scalar(value)


def validate(node: Node | None, schema: FilterSchema) -> Node | None:
    """Check a parsed filter against ``schema``; return it normalised (see module docstring).

    Raises :class:`InvalidArgument` (reason ``INVALID_FILTER``) naming the identifier, operator
    or value at fault and its position.
    """
    if node is None:
        return None
    if isinstance(node, Comparison):
        return _validate_comparison(node, schema)
    if isinstance(node, Not):
        inner = validate(node.item, schema)
        assert inner is not None
        return node if inner is node.item else Not(inner)
    items = tuple(validate(i, schema) for i in node.items)
    if all(a is b for a, b in zip(items, node.items, strict=True)):
        return node
    return type(node)(items)  # type: ignore[arg-type]


def parse_and_validate(text: str | None, schema: FilterSchema) -> Node | None:
    """:func:`parse_filter` then :func:`validate`: what a store calls with a request's filter."""
    return validate(parse_filter(text), schema)


# --------------------------------------------------------------------------------------------
# order_by
# --------------------------------------------------------------------------------------------


def _order_fail(index: int, item: str, pos: int, message: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid order_by item {item!r}: {message}",
        reason="INVALID_ORDER_BY",
        field="order_by",
        metadata={"item": item, "index": index, "position": pos},
    )


def _orderable_text(schema: FilterSchema) -> str:
    prefix = "" if schema.bare_attributes else "attributes."
    names = [prefix + a for a, s in sorted(schema.attributes.items()) if s.orderable]
    names += [f"{_PLURAL[e]}.<key>" for e, s in schema.entities.items() if s.orderable]
    return ", ".join(names)


def parse_order_by(items: Sequence[str], schema: FilterSchema) -> list[OrderKey]:
    """Parse ``order_by`` items such as ``metrics.rmse DESC``, ``attributes.start_time``, ``name``.

    Entities and attribute names are normalised as by :func:`validate`. Default direction is
    ascending. Raises :class:`InvalidArgument` (reason ``INVALID_ORDER_BY``, field ``order_by``;
    ``FILTER_TOO_COMPLEX`` for more than :data:`MAX_ORDER_KEYS` items).
    """
    if len(items) > MAX_ORDER_KEYS:
        raise too_complex(
            f"order_by has {len(items):,} keys; at most {MAX_ORDER_KEYS} are allowed: keep the keys that "
            "decide the order (ties are always broken by a unique id)",
            "order_by_keys",
            MAX_ORDER_KEYS,
            len(items),
            field="order_by",
        )
    out: list[OrderKey] = []
    for index, item in enumerate(items):
        if not item or not item.strip():
            raise _order_fail(index, item, 0, "empty item; expected an identifier such as metrics.rmse DESC")
        if len(item) > 1024:
            raise _order_fail(index, item[:40] + "...", 0, "item is too long")
        p = _Parser(item)
        toks = p.toks
        tok = toks[0]
        try:
            if tok[0] == "ident":
                p.i = 1
                entity, key = p._identifier(tok)
            elif tok[0] == "bq" and len(tok[1]) > 2:
                entity, key = None, tok[1][1:-1].replace("``", "`")
            else:
                raise _order_fail(
                    index, item, tok[2], f"expected an identifier such as metrics.rmse, found {_found(tok)}"
                )
        except InvalidArgument as e:
            if e.reason == "INVALID_ORDER_BY":
                raise
            msg = e.message.split(": ", 1)[-1]
            raise _order_fail(index, item, int(e.metadata.get("position", 0)), msg) from None
        ascending = True
        nxt = toks[1]
        if nxt[0] == "ident" and nxt[1].upper() in ("ASC", "DESC"):
            ascending = nxt[1].upper() == "ASC"
            nxt = toks[2]
        elif nxt[0] != "end":
            raise _order_fail(
                index, item, nxt[2], f"expected ASC or DESC after '{tok[1]}', found {_found(nxt)}"
            )
        if nxt[0] != "end":
            raise _order_fail(index, item, nxt[2], f"unexpected {_found(nxt)} after the sort direction")
        out.append(_resolve_order(index, item, entity, key, schema))
        out[-1] = replace(out[-1], ascending=ascending)
    return out


def _resolve_order(index: int, item: str, entity: str | None, key: str, schema: FilterSchema) -> OrderKey:
    if entity is None or entity == "attribute":
        canonical = schema.resolve_attribute(key)
        if entity is None and not schema.bare_attributes:
            hint = f"; did you mean 'attributes.{key}'?" if canonical else ""
            raise _order_fail(index, item, 0, f"unknown identifier '{key}'{hint}")
        if canonical is None or not schema.attributes[canonical].orderable:
            raise _order_fail(
                index,
                item,
                0,
                f"cannot order {schema.resource} by '{key}'; valid keys are {_orderable_text(schema)}",
            )
        return OrderKey("attribute", canonical)
    if entity in schema.unsupported:
        raise _order_fail(index, item, 0, schema.unsupported[entity])
    spec = schema.entities.get(entity)
    if spec is None or not spec.orderable:
        raise _order_fail(
            index,
            item,
            0,
            f"cannot order {schema.resource} by {_PLURAL[entity]}; valid keys are {_orderable_text(schema)}",
        )
    return OrderKey(entity, key)


# --------------------------------------------------------------------------------------------
# Building blocks of the services' schemas
# --------------------------------------------------------------------------------------------
#
# Each service declares what its searches accept next to its own code (tracking/fields.py,
# registry/fields.py), from these operator sets.

NUMBER_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})
STRING_OPS = frozenset({"=", "!=", "LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"})
IN_OPS = _IN_OPS
NULL_OPS = _NULL_OPS
STRING_IN_OPS = STRING_OPS | IN_OPS
KEY_VALUE_OPS = STRING_OPS | IN_OPS | NULL_OPS  # params and tags
ORDER_ONLY = FieldSpec(frozenset(), NUMBER)  # an attribute searches may sort by, not filter on

# Where each service's schema lives. Their former names here still resolve (imported on first use:
# the services import this module, so it cannot import them up front).
_SCHEMA_HOMES = {
    "RUNS_SCHEMA": "keel_server.tracking.fields",
    "EXPERIMENTS_SCHEMA": "keel_server.tracking.fields",
    "REGISTERED_MODELS_SCHEMA": "keel_server.registry.fields",
    "MODEL_VERSIONS_SCHEMA": "keel_server.registry.fields",
}


def __getattr__(name: str) -> FilterSchema:
    home = _SCHEMA_HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    schema: FilterSchema = getattr(importlib.import_module(home), name)
    return schema
