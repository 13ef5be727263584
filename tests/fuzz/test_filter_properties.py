"""Property-based tests of the search filter grammar (services/common/filters.py, issue #20).

1. Random ASTs rendered with the module's own renderer (``describe``) parse back to the same AST.
2. Random token soups (identifiers, operators, quotes, parentheses, numbers, keywords, unicode,
   NUL) never raise anything but the parser's typed error: InvalidArgument with reason
   INVALID_FILTER or FILTER_TOO_COMPLEX. The same holds for ``validate`` against every schema and
   for ``parse_order_by``.

Bounded by the hypothesis profile (tests/fuzz/conftest.py): ``ci`` by default, ``fuzz`` with
KEEL_FUZZ_PROFILE=fuzz.
"""

from __future__ import annotations

import dataclasses
import math

from hypothesis import assume, given
from hypothesis import strategies as st

from keel_server.common import filters as F
from keel_server.common.errors import InvalidArgument

TYPED_REASONS = {"INVALID_FILTER", "FILTER_TOO_COMPLEX"}
SCHEMAS = (F.RUNS_SCHEMA, F.EXPERIMENTS_SCHEMA, F.REGISTERED_MODELS_SCHEMA, F.MODEL_VERSIONS_SCHEMA)


def _reason(err: InvalidArgument) -> str:
    return str(getattr(err, "reason", "") or "")


def _strip(node: F.Node | None) -> F.Node | None:
    """The AST without positions (which take part in Comparison equality)."""
    if node is None:
        return None
    if isinstance(node, F.Comparison):
        return dataclasses.replace(node, position=0, raw=None, op_position=-1, value_position=-1)
    if isinstance(node, F.Not):
        return F.Not(_strip(node.item))  # type: ignore[arg-type]
    if isinstance(node, F.And):
        return F.And(tuple(_strip(i) for i in node.items))  # type: ignore[misc]
    return F.Or(tuple(_strip(i) for i in node.items))  # type: ignore[misc]


# ------------------------------------------------------------------------------ AST strategies

# Keys: plain ones, and anything at all (the renderer quotes what needs quoting).
_plain_key = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_dotted_key = st.from_regex(r"[A-Za-z0-9_]{1,6}(\.[A-Za-z0-9_]{1,6}){0,2}", fullmatch=True)
_any_key = st.text(min_size=1, max_size=12)
_key = st.one_of(_plain_key, _dotted_key, _any_key, st.sampled_from(["and", "OR", "not", "in", "null", "true"]))

_int = st.integers(min_value=F.INT64_MIN, max_value=F.INT64_MAX)
_float = st.floats(allow_nan=False, allow_infinity=False)
_str = st.text(max_size=20) | st.sampled_from(["", "'", "''", "\\", "\\'", '"', "%", "\\%", "_", "\x00", "é🙂"])
_scalar = st.one_of(_int, _float, _str, st.booleans())

_ENTITIES = (None, "metric", "param", "tag", "attribute", "dataset")
_SCALAR_OPS = ("=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE")


@st.composite
def comparisons(draw: st.DrawFn) -> F.Comparison:
    entity = draw(st.sampled_from(_ENTITIES))
    key = draw(_key)
    if entity is not None and all(p == "" for p in key.split(".")):
        key = "k"  # an all-empty dotted key cannot be written
    kind = draw(st.sampled_from(["scalar", "in", "null"]))
    if kind == "null":
        return F.Comparison(entity, key, draw(st.sampled_from(["IS NULL", "IS NOT NULL"])), None)
    if kind == "in":
        values = tuple(draw(st.lists(_scalar, min_size=1, max_size=5)))
        return F.Comparison(entity, key, draw(st.sampled_from(["IN", "NOT IN"])), values)
    return F.Comparison(entity, key, draw(st.sampled_from(_SCALAR_OPS)), draw(_scalar))


@st.composite
def nodes(draw: st.DrawFn, budget: int = 6, parent: str = "") -> F.Node:
    """A canonical AST (what the parser produces): And never directly holds And, Or never Or
    (the parser flattens them), and both hold at least two items."""
    choices = ["cmp"]
    if budget > 0:
        choices += ["not", "and", "or"]
    kind = draw(st.sampled_from(choices))
    if kind == "cmp" or (kind == "and" and parent == "and") or (kind == "or" and parent == "or"):
        return draw(comparisons())
    if kind == "not":
        return F.Not(draw(nodes(budget - 1, "not")))
    items = tuple(draw(st.lists(nodes(budget - 1, kind), min_size=2, max_size=3)))
    return F.And(items) if kind == "and" else F.Or(items)


def _depth(node: F.Node, parent: str = "") -> int:
    """Levels of parentheses and NOT in ``describe(node)``, as the parser counts them."""
    if isinstance(node, F.Comparison):
        return 0
    if isinstance(node, F.Not):
        inner = _depth(node.item, "not")
        return 1 + inner + (1 if isinstance(node.item, (F.And, F.Or)) else 0)
    own = 1 if (parent == "and" and isinstance(node, (F.And, F.Or))) or (parent == "or" and isinstance(node, F.Or)) else 0
    kind = "and" if isinstance(node, F.And) else "or"
    return own + max(_depth(i, kind) for i in node.items)


@given(nodes())
def test_describe_then_parse_round_trips(node: F.Node) -> None:
    text = F.describe(node)
    if _depth(node) > F.MAX_DEPTH:
        try:
            F.parse_filter(text)
        except InvalidArgument as err:
            assert _reason(err) == "FILTER_TOO_COMPLEX"
        return
    parsed = F.parse_filter(text)
    assert _strip(parsed) == _strip(node), text
    # and the rendering is a fixed point
    assert F.describe(parsed) == text


@given(comparisons())
def test_a_single_comparison_round_trips_with_its_value_type(c: F.Comparison) -> None:
    parsed = F.parse_filter(F.describe(c))
    assert isinstance(parsed, F.Comparison)
    assert _strip(parsed) == _strip(c)
    # 1 and 1.0 are equal in Python: the kind of number must survive too
    values = parsed.value if isinstance(parsed.value, tuple) else (parsed.value,)
    originals = c.value if isinstance(c.value, tuple) else (c.value,)
    assert [type(v) for v in values] == [type(v) for v in originals]


@given(nodes(), st.sampled_from(SCHEMAS))
def test_validate_is_typed_and_idempotent(node: F.Node, schema: F.FilterSchema) -> None:
    assume(_depth(node) <= F.MAX_DEPTH)
    try:
        valid = F.validate(F.parse_filter(F.describe(node)), schema)
    except InvalidArgument as err:
        assert _reason(err) in TYPED_REASONS, (err, _reason(err))
        return
    again = F.validate(F.parse_filter(F.describe(valid)), schema)
    assert _strip(again) == _strip(valid)


# ------------------------------------------------------------------------------ token soup

_TOKENS = st.one_of(
    st.sampled_from(
        [
            "metrics.rmse", "params.model", "tags.team", "attributes.status", "name", "run_id",
            "metrics.`f1-score`", 'tags."my key"', "tags.", "metrics..x", "bogus.x", "datasets.name",
            "start_time", "version_number", "experiment_id", "`", "``", "`a``b`",
            "=", "!=", "<>", "<", "<=", ">", ">=", "==", "=>", "!", "~=", "===",
            "AND", "and", "OR", "or", "NOT", "not", "IN", "in", "LIKE", "ILIKE", "IS", "NULL", "TRUE",
            "FALSE", "(", ")", ",", "'", '"', "'x'", "'it''s'", "'a\\'b'", '"dq"', "'%'", "'\\%'",
            "0", "-1", "1.5", "1e308", "1e309", "-1e999", ".5", "1.", "9223372036854775807",
            "9223372036854775808", "-9223372036854775809", "1" * 30, "0" * 40 + "1", "- 1",
            "\x00", "é", "漢字", "🙂", "\u2028", "\t", "\n", ";", "*", "$", "\\", ".", "ASC", "DESC",
        ]
    ),
    st.text(max_size=6),
    st.integers().map(str),
    st.floats().map(repr),
)  # fmt: skip
_SEPARATORS = st.sampled_from(["", " ", "  ", "\n"])


@st.composite
def token_soup(draw: st.DrawFn) -> str:
    toks = draw(st.lists(_TOKENS, max_size=25))
    return "".join(t + draw(_SEPARATORS) for t in toks)


def _assert_typed(fn, *args, reasons=TYPED_REASONS) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except InvalidArgument as err:
        assert _reason(err) in reasons, (args, err, _reason(err))
        assert "Traceback" not in str(err)


@given(token_soup())
def test_token_soup_raises_only_typed_errors(text: str) -> None:
    _assert_typed(F.parse_filter, text)


@given(st.text(max_size=80))
def test_arbitrary_text_raises_only_typed_errors(text: str) -> None:
    _assert_typed(F.parse_filter, text)


@given(token_soup(), st.sampled_from(SCHEMAS))
def test_parse_and_validate_raise_only_typed_errors(text: str, schema: F.FilterSchema) -> None:
    _assert_typed(F.parse_and_validate, text, schema)


@given(st.lists(token_soup(), max_size=7), st.sampled_from(SCHEMAS))
def test_order_by_raises_only_typed_errors(items: list[str], schema: F.FilterSchema) -> None:
    # order_by has its own documented reason, INVALID_ORDER_BY (FILTER_TOO_COMPLEX over the limit)
    _assert_typed(F.parse_order_by, items, schema, reasons={"INVALID_ORDER_BY", "FILTER_TOO_COMPLEX"})


@given(st.integers(min_value=0, max_value=3 * F.MAX_DEPTH), st.sampled_from(["(", "NOT ", "NOT ("]))
def test_deep_nesting_is_too_complex_not_a_crash(n: int, opener: str) -> None:
    closer = ")" * opener.count("(")
    text = opener * n + "metrics.x = 1" + closer * n
    try:
        F.parse_filter(text)
    except InvalidArgument as err:
        assert _reason(err) == "FILTER_TOO_COMPLEX"
        assert n * max(1, len(opener.split())) > F.MAX_DEPTH
    else:
        assert n * max(1, len(opener.split())) <= F.MAX_DEPTH


@given(st.sampled_from(["metrics.x", "start_time"]), st.integers(), st.floats())
def test_numbers_in_or_out_of_range(ident: str, i: int, f: float) -> None:
    for literal, ok in ((str(i), F.INT64_MIN <= i <= F.INT64_MAX), (repr(f), math.isfinite(f))):
        if literal in ("nan", "inf", "-inf"):
            continue
        try:
            F.parse_filter(f"{ident} < {literal}")
        except InvalidArgument as err:
            assert not ok, (literal, err)
            assert _reason(err) == "INVALID_FILTER"
        else:
            assert ok, literal
