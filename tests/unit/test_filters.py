"""Unit tests for the shared search filter / order_by parser (keel_server.common.filters)."""

from __future__ import annotations

import random
import re
import sqlite3
import sys
import time

import peewee as pw
import pytest

from keel_server.common.errors import InvalidArgument
from keel_server.common.filters import (
    EXPERIMENTS_SCHEMA,
    INT64_MAX,
    INT64_MIN,
    MAX_COMPARISONS,
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_ORDER_KEYS,
    MAX_VALUES,
    MODEL_VERSIONS_SCHEMA,
    REGISTERED_MODELS_SCHEMA,
    RUNS_SCHEMA,
    And,
    Comparison,
    FilterSchema,
    Not,
    Or,
    OrderKey,
    _nesting,
    _tokenize,
    describe,
    parse_and_validate,
    parse_filter,
    parse_order_by,
    validate,
    walk,
)
from keel_server.common.querying import compile_filter, search_guard
from keel_server.tracking.search import compile_run_filter


def C(entity: str | None, key: str, op: str, value: object, position: int) -> Comparison:
    return Comparison(entity, key, op, value, position)  # type: ignore[arg-type]


def parse_error(text: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        parse_filter(text)
    err = info.value
    assert err.reason == "INVALID_FILTER"
    assert err.field == "filter"
    assert err.message.startswith(f"invalid filter at position {err.metadata['position']}: ")
    return err


def validate_error(text: str, schema: FilterSchema) -> InvalidArgument:
    node = parse_filter(text)
    with pytest.raises(InvalidArgument) as info:
        validate(node, schema)
    err = info.value
    assert err.reason == "INVALID_FILTER"
    assert err.field == "filter"
    return err


# ------------------------------------------------------------------------------ parsing


def test_empty_and_blank_filters_are_none() -> None:
    assert parse_filter("") is None
    assert parse_filter("   \n\t") is None
    assert parse_filter(None) is None
    assert validate(None, RUNS_SCHEMA) is None


def test_mlflow_example_conjunction() -> None:
    node = parse_filter("metrics.rmse < 0.8 and params.model = 'cnn' and tags.team LIKE 'vis%'")
    assert node == And(
        (
            C("metric", "rmse", "<", 0.8, 0),
            C("param", "model", "=", "cnn", 23),
            C("tag", "team", "LIKE", "vis%", 48),
        )
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("attributes.status = 'FINISHED'", C("attribute", "status", "=", "FINISHED", 0)),
        ("attributes.run_name = 'x'", C("attribute", "run_name", "=", "x", 0)),
        ("attributes.start_time > 1700000000000", C("attribute", "start_time", ">", 1700000000000, 0)),
        ("attributes.run_id IN ('a','b')", C("attribute", "run_id", "IN", ("a", "b"), 0)),
        ("tags.team ILIKE '%VIS%'", C("tag", "team", "ILIKE", "%VIS%", 0)),
        ("name = 'x'", C(None, "name", "=", "x", 0)),
        ("version_number >= 3", C(None, "version_number", ">=", 3, 0)),
        ('tags.x != "dq"', C("tag", "x", "!=", "dq", 0)),
        ("tags.x <> 'a'", C("tag", "x", "!=", "a", 0)),
        ("tags.x not like 'a%'", C("tag", "x", "NOT LIKE", "a%", 0)),
        ("tags.x NOT ILIKE 'a%'", C("tag", "x", "NOT ILIKE", "a%", 0)),
        ("attributes.run_id not in ('a')", C("attribute", "run_id", "NOT IN", ("a",), 0)),
        ("tags.x IS NULL", C("tag", "x", "IS NULL", None, 0)),
        ("tags.x is not null", C("tag", "x", "IS NOT NULL", None, 0)),
        ("tags.flag = true", C("tag", "flag", "=", True, 0)),
        ("tags.flag = FALSE", C("tag", "flag", "=", False, 0)),
    ],
)
def test_single_comparisons(text: str, expected: Comparison) -> None:
    assert parse_filter(text) == expected


def test_prefix_aliases() -> None:
    for prefix, entity in [
        ("metrics", "metric"),
        ("metric", "metric"),
        ("params", "param"),
        ("param", "param"),
        ("parameter", "param"),
        ("parameters", "param"),
        ("tags", "tag"),
        ("tag", "tag"),
        ("attributes", "attribute"),
        ("attribute", "attribute"),
        ("attr", "attribute"),
        ("run", "attribute"),
        ("datasets", "dataset"),
        ("dataset", "dataset"),
        ("METRICS", "metric"),
    ]:
        node = parse_filter(f"{prefix}.k = 1")
        assert isinstance(node, Comparison)
        assert (node.entity, node.key) == (entity, "k"), prefix


def test_numbers_keep_type_and_raw_text() -> None:
    cases = [
        ("1", 1, int),
        ("-3", -3, int),
        ("0.5", 0.5, float),
        ("-0.25", -0.25, float),
        ("1e-3", 1e-3, float),
        ("2E5", 2e5, float),
        (".5", 0.5, float),
        ("3.", 3.0, float),
    ]
    for raw, value, typ in cases:
        node = parse_filter(f"metrics.m > {raw}")
        assert isinstance(node, Comparison)
        assert node.value == value and type(node.value) is typ, raw
        assert node.raw == raw
        assert node.value_position == 12
    # no space needed between an operator and a negative number
    assert parse_filter("metrics.m>=-1") == C("metric", "m", ">=", -1, 0)


def test_string_escapes() -> None:
    assert parse_filter("tags.x = 'it''s'") == C("tag", "x", "=", "it's", 0)
    assert parse_filter("tags.x = 'it\\'s'") == C("tag", "x", "=", "it's", 0)
    assert parse_filter('tags.x = "say \\"hi\\""') == C("tag", "x", "=", 'say "hi"', 0)
    # backslashes other than before a quote or a backslash are kept (LIKE escapes)
    assert parse_filter("tags.x LIKE '50\\%'") == C("tag", "x", "LIKE", "50\\%", 0)
    assert parse_filter("tags.x = 'a\\\\b'") == C("tag", "x", "=", "a\\b", 0)
    assert parse_filter("tags.x = ''") == C("tag", "x", "=", "", 0)


def test_keywords_are_case_insensitive() -> None:
    a = parse_filter("metrics.a = 1 AnD NoT tags.b LiKe 'x' oR tags.c In ('y') AND tags.d iS nOt NuLl")
    b = parse_filter("metrics.a = 1 AND NOT tags.b LIKE 'x' OR tags.c IN ('y') AND tags.d IS NOT NULL")
    assert a == b


def test_and_binds_tighter_than_or() -> None:
    a = C("metric", "a", "=", 1, 0)
    b = C("metric", "b", "=", 2, 18)
    c = C("metric", "c", "=", 3, 35)
    assert parse_filter("metrics.a = 1 AND metrics.b = 2 OR metrics.c = 3") == Or((And((a, b)), c))
    node = parse_filter("metrics.a = 1 OR metrics.b = 2 AND metrics.c = 3")
    assert node == Or(
        (C("metric", "a", "=", 1, 0), And((C("metric", "b", "=", 2, 17), C("metric", "c", "=", 3, 35))))
    )


def test_parentheses_override_precedence() -> None:
    node = parse_filter("metrics.a = 1 AND (metrics.b = 2 OR metrics.c = 3)")
    assert node == And(
        (C("metric", "a", "=", 1, 0), Or((C("metric", "b", "=", 2, 19), C("metric", "c", "=", 3, 36))))
    )
    # redundant parentheses and same-operator nesting flatten
    assert parse_filter("((metrics.a = 1))") == C("metric", "a", "=", 1, 2)
    flat = parse_filter("(metrics.a = 1 AND metrics.b = 2) AND metrics.c = 3")
    assert isinstance(flat, And) and len(flat.items) == 3


def test_not() -> None:
    assert parse_filter("NOT tags.x = 'a'") == Not(C("tag", "x", "=", "a", 4))
    node = parse_filter("not (tags.x = 'a' or tags.y = 'b') and metrics.m < 1")
    assert isinstance(node, And)
    assert isinstance(node.items[0], Not)
    assert isinstance(node.items[0].item, Or)
    assert parse_filter("NOT NOT tags.x = 'a'") == Not(Not(C("tag", "x", "=", "a", 8)))


def test_quoted_and_dotted_keys() -> None:
    assert parse_filter("metrics.`f1-score` > 0.5") == C("metric", "f1-score", ">", 0.5, 0)
    assert parse_filter("tags.\"my key\" = 'v'") == C("tag", "my key", "=", "v", 0)
    assert parse_filter("tags.mlflow.runName = 'r'") == C("tag", "mlflow.runName", "=", "r", 0)
    assert parse_filter("tags.`a.b c` = 'v'") == C("tag", "a.b c", "=", "v", 0)
    assert parse_filter("tags.`we``ird` = 'v'") == C("tag", "we`ird", "=", "v", 0)
    assert parse_filter("params.`lr` = '0.1'") == C("param", "lr", "=", "0.1", 0)
    assert parse_filter("`run name` = 'x'") == C(None, "run name", "=", "x", 0)
    # keywords are fine as keys after a prefix
    assert parse_filter("tags.and = 'x'") == C("tag", "and", "=", "x", 0)


def test_positions_of_operator_and_value() -> None:
    node = parse_filter("  tags.team   LIKE   'vis%'")
    assert isinstance(node, Comparison)
    assert (node.position, node.op_position, node.value_position) == (2, 14, 21)
    assert node.raw == "'vis%'"


def test_walk_and_describe_round_trip() -> None:
    text = (
        "metrics.rmse < 0.8 AND (params.model = 'cnn' OR NOT tags.team LIKE 'vis%') "
        "AND tags.`my key` IN ('a', 'it''s') AND attributes.end_time IS NULL AND tags.mlflow.runName != 'x'"
    )
    node = parse_filter(text)
    keys = [c.key for c in walk(node)]
    assert keys == ["rmse", "model", "team", "my key", "end_time", "mlflow.runName"]
    rendered = describe(node)
    assert rendered == (
        "metrics.rmse < 0.8 AND (params.model = 'cnn' OR NOT tags.team LIKE 'vis%') "
        "AND tags.`my key` IN ('a', 'it''s') AND attributes.end_time IS NULL AND tags.mlflow.runName != 'x'"
    )
    assert describe(parse_filter(rendered)) == rendered
    assert describe(parse_filter("NOT (a = 1 AND b = 2)")) == "NOT (a = 1 AND b = 2)"
    assert describe(parse_filter("(a = 1 OR b = 2) AND c = TRUE")) == "(a = 1 OR b = 2) AND c = TRUE"
    assert list(walk(None)) == []
    assert describe(None) == ""


# ------------------------------------------------------------------------------ syntax errors


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("metrics.rmse < ", 15, "expected a value after '<', found end of input"),
        ("metrics.a == 1", 10, "unknown operator '=='; did you mean '='?"),
        ("metrics.a =< 1", 10, "did you mean '<='?"),
        ("metrics.a =! 1", 10, "did you mean '!='?"),
        ("metrics.a <<= 1", 10, "unknown operator '<<='; expected one of"),
        ("(metrics.a = 1", 14, "expected ')' to close '(' at position 0, found end of input"),
        ("metrics.a = 1 OR (tags.b = 'x'", 30, "expected ')' to close '(' at position 17"),
        (
            "(metrics.a = 1 tags.b = 'x')",
            15,
            "expected AND, OR or ')' to close '(' at position 0, found 'tags.b'",
        ),
        ("metrics.a = 1)", 13, "unexpected ')' with no matching '('"),
        ("metrics.a = 1 foo", 14, "expected AND, OR or end of input, found 'foo'"),
        ("metrics.a = 1 metrics.b = 2", 14, "expected AND, OR or end of input"),
        ("metrics.a = 1 $", 14, "unexpected character '$'"),
        ("tags.x = 'abc", 9, "unterminated string"),
        ('tags.x = "abc', 9, "unterminated string"),
        ("metrics.`f1 > 1", 8, "unterminated quoted identifier"),
        ("tags.x IN ()", 10, "empty IN list"),
        ("tags.x NOT IN ( )", 14, "empty IN list"),
        ("tags.x IN 'a'", 10, "expected '(' after IN, found string 'a'"),
        ("tags.x IN ('a',", 15, "expected a value after ',', found end of input"),
        ("tags.x IN ('a', )", 16, "expected a value after ',', found ')'"),
        ("tags.x IN ('a' 'b')", 15, "expected ',' or ')' in the IN list, found string 'b'"),
        ("tags.x IN ('a'", 14, "expected ',' or ')' in the IN list, found end of input"),
        (
            "foo.bar = 1",
            0,
            "unknown identifier prefix 'foo' in 'foo.bar'; valid prefixes are metrics, params, tags",
        ),
        ("metrics.a = 1 and foo.bar = 1", 18, "unknown identifier prefix 'foo'"),
        ("metrics. = 1", 8, "expected a key after 'metrics.'"),
        ("metrics.`` = 1", 0, "empty key"),
        (
            "metrics.a = 1 AND",
            17,
            "expected an identifier such as metrics.rmse or tags.team after 'AND', found end of input",
        ),
        (
            "AND metrics.a = 1",
            0,
            "expected an identifier such as metrics.rmse or tags.team, found keyword AND",
        ),
        ("'x' = tags.a", 0, "expected an identifier"),
        ("()", 1, "found ')'"),
        ("metrics.a", 9, "expected an operator after 'metrics.a'"),
        ("metrics.a 1", 10, "expected an operator after 'metrics.a'"),
        ("tags.x NOT = 'a'", 11, "expected LIKE, ILIKE or IN after NOT"),
        ("tags.x IS 'a'", 10, "expected NULL or NOT NULL after IS"),
        ("tags.x IS NOT 1", 14, "expected NULL after IS NOT"),
        ("tags.x = NULL", 9, "use IS NULL or IS NOT NULL"),
        ("tags.x = tags.y", 9, "expected a value after '=', found 'tags.y'"),
        ("metrics.a = 1e999", 12, "out of range"),
        ("NOT", 3, "expected an identifier"),
    ],
)
def test_syntax_errors(text: str, position: int, fragment: str) -> None:
    err = parse_error(text)
    assert err.metadata["position"] == str(position), err.message
    assert fragment in err.message, err.message
    assert f"invalid filter at position {position}: " in err.message


def too_complex_error(text: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        parse_filter(text)
    err = info.value
    assert err.reason == "FILTER_TOO_COMPLEX" and err.field == "filter", err.message
    assert set(err.metadata) >= {"limit", "max", "found"}
    return err


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    err = too_complex_error("(" * 500 + "metrics.a = 1" + ")" * 500)
    assert err.message.startswith(
        f"the filter nests parentheses and NOT 500 levels deep (level {MAX_DEPTH + 1} opens"
    )
    assert err.metadata["limit"] == "depth" and err.metadata["found"] == "500"
    err = too_complex_error("NOT " * 500 + "metrics.a = 1")
    assert "NOT 500 levels deep" in err.message
    err = too_complex_error("NOT (" * 20 + "metrics.a = 1" + ")" * 20)
    assert "NOT 40 levels deep" in err.message


def test_too_long_filter() -> None:
    err = too_complex_error("tags.x = '" + "a" * 70000 + "'")
    assert err.message.startswith("the filter is 70,011 characters long; at most 65,536 are allowed")
    assert err.metadata == {"limit": "length", "max": "65536", "found": "70011"}


# ------------------------------------------------------------------------------ limits


def test_nesting_is_measured_as_the_parser_counts_it() -> None:
    cases = {
        "metrics.a = 1": 0,
        "(metrics.a = 1)": 1,
        "NOT metrics.a = 1 AND NOT metrics.b = 2": 1,
        "NOT NOT (metrics.a = 1 OR NOT (tags.b IN ('x', 'y')))": 5,
        "tags.a NOT IN (1, 2) AND tags.b IS NOT NULL AND tags.c NOT LIKE 'x'": 0,
        "(a = 1) AND ((b = 2) OR (((c = 3))))": 4,
        "NOT (a = 1) AND NOT (b = 2)": 2,
    }
    for text, depth in cases.items():
        assert _nesting(_tokenize(text))[0] == depth, text


@pytest.mark.parametrize("glue", [" AND ", " OR ", " and ", " or "])
def test_chains_up_to_the_comparison_limit_parse_without_recursion(glue: str) -> None:
    text = glue.join(f"metrics.m{i} < {i}" for i in range(MAX_COMPARISONS))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100)  # parsing, validating and compiling a chain recurse once, not per term
    try:
        node = parse_and_validate(text, RUNS_SCHEMA)
        sql = compile_run_filter(node)
    finally:
        sys.setrecursionlimit(limit)
    assert isinstance(node, And | Or) and len(node.items) == MAX_COMPARISONS
    assert sql is not None


def test_too_many_comparisons_names_the_count() -> None:
    err = too_complex_error(" OR ".join(["metrics.rmse < 1"] * 2001))
    assert err.message == (
        "the filter has 2,001 comparisons; at most 1,000 are allowed: split the search "
        "(or turn chains of = joined with OR into IN lists)"
    )
    assert err.metadata == {"limit": "comparisons", "max": "1000", "found": "2001"}
    assert parse_filter(" OR ".join(["metrics.rmse < 1"] * MAX_COMPARISONS)) is not None


def test_in_list_and_value_limits() -> None:
    values = ",".join(["'a'"] * MAX_IN_VALUES)
    assert parse_filter(f"tags.t IN ({values})") is not None
    err = too_complex_error(f"tags.t IN ({values},'b')")
    assert "the IN list at position 10 of the filter has 1,001 values" in err.message
    assert err.metadata["limit"] == "in_values" and err.metadata["position"] == "10"
    lists = " OR ".join([f"tags.t IN ({values})"] * (MAX_VALUES // MAX_IN_VALUES))
    assert parse_filter(lists) is not None
    err = too_complex_error(lists + " OR tags.t = 'c'")
    assert err.metadata == {"limit": "values", "max": "10000", "found": "10001"}


def test_order_by_key_limit() -> None:
    assert len(parse_order_by(["metrics.a"] * MAX_ORDER_KEYS, RUNS_SCHEMA)) == MAX_ORDER_KEYS
    with pytest.raises(InvalidArgument) as info:
        parse_order_by(["name"] * (MAX_ORDER_KEYS + 1), MODEL_VERSIONS_SCHEMA)
    err = info.value
    assert err.reason == "FILTER_TOO_COMPLEX" and err.field == "order_by"
    assert err.message.startswith("order_by has 6 keys; at most 5 are allowed")


@pytest.mark.parametrize(
    ("literal", "ok"),
    [
        (str(INT64_MAX), True),
        (str(INT64_MIN), True),
        ("-0", True),
        ("000000000000000000000000000001", True),  # leading zeros do not count
        (str(INT64_MAX + 1), False),
        (str(INT64_MIN - 1), False),
        ("99999999999999999999999999999", False),
        ("-99999999999999999999999999999", False),
        ("9" * 5000, False),  # more digits than CPython converts: refused before int()
        ("1.7976931348623157e308", True),
        ("-1.7976931348623157e308", True),
        ("5e-324", True),
        ("1e-400", True),  # underflows to 0.0, a finite double
        ("1e309", False),
        ("-1e400", False),
    ],
)
def test_number_range(literal: str, ok: bool) -> None:
    text = f"attributes.start_time > {literal}"
    if ok:
        node = parse_filter(text)
        assert isinstance(node, Comparison) and node.raw == literal
        return
    err = parse_error(text)
    assert err.metadata["position"] == "24" and "is out of range" in err.message
    assert len(err.message) < 400


def test_integer_range_applies_in_in_lists_with_the_position() -> None:
    err = parse_error("version_number IN (1, 2, 99999999999999999999999999999)")
    assert err.metadata["position"] == "25"


# ------------------------------------------------------------------------------ validation


def test_runs_schema_accepts_mlflow_examples() -> None:
    for text in [
        "metrics.rmse < 0.8 and params.model = 'cnn' and tags.team LIKE 'vis%'",
        "attributes.status = 'FINISHED'",
        "attributes.run_name = 'x'",
        "attributes.start_time > 1700000000000",
        "attributes.run_id IN ('a','b')",
        "attributes.run_id NOT IN ('a')",
        "tags.team ILIKE '%VIS%'",
        "params.model IS NULL OR tags.x IS NOT NULL",
        "attributes.end_time IS NULL",
        "attributes.user_id != 'bob' AND attributes.artifact_uri LIKE 's3://%'",
        "attributes.lifecycle_stage = 'active'",
        "metrics.`f1-score` >= 0.5",
    ]:
        node = parse_filter(text)
        # canonical, prefixed names come back unchanged
        assert validate(node, RUNS_SCHEMA) == node, text


def test_runs_attribute_aliases_normalise() -> None:
    assert validate(parse_filter("attributes.created > 5"), RUNS_SCHEMA) == C(
        "attribute", "start_time", ">", 5, 0
    )
    assert validate(parse_filter("attr.run_name = 'x'"), RUNS_SCHEMA) == C(
        "attribute", "run_name", "=", "x", 0
    )
    assert validate(parse_filter("run.status = 'FAILED'"), RUNS_SCHEMA) == C(
        "attribute", "status", "=", "FAILED", 0
    )
    assert validate(parse_filter("attributes.`run name` = 'x'"), RUNS_SCHEMA) == C(
        "attribute", "run_name", "=", "x", 0
    )
    assert validate(parse_filter("attributes.Created > 5"), RUNS_SCHEMA) == C(
        "attribute", "start_time", ">", 5, 0
    )
    # MLflow (2.x) treats a bare name in a run filter as an attribute
    assert validate(parse_filter("status = 'FINISHED'"), RUNS_SCHEMA) == C(
        "attribute", "status", "=", "FINISHED", 0
    )


def test_validate_normalises_inside_boolean_structure() -> None:
    node = validate(parse_filter("NOT (attr.created > 1 OR metrics.a < 2) AND tags.ok = TRUE"), RUNS_SCHEMA)
    assert node == And(
        (
            Not(Or((C("attribute", "start_time", ">", 1, 5), C("metric", "a", "<", 2, 25)))),
            C("tag", "ok", "=", "true", 44),
        )
    )


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        (
            "metrics.rmse < 1 AND metrics.a LIKE 'x%'",
            31,
            "operator 'LIKE' is not allowed on metrics (use one of =, !=, <, <=, >, >=)",
        ),
        ("metrics.a IN (1, 2)", 10, "operator 'IN' is not allowed on metrics"),
        ("metrics.a IS NULL", 10, "operator 'IS NULL' is not allowed on metrics"),
        ("attributes.start_time LIKE '1%'", 22, "operator 'LIKE' is not allowed on attribute 'start_time'"),
        ("params.p < '1'", 9, "operator '<' is not allowed on params"),
        (
            "metrics.a = '0.8'",
            12,
            "metrics must be compared with a number; found string '0.8' (remove the quotes)",
        ),
        ("metrics.a = 'abc'", 12, "metrics must be compared with a number; found string 'abc'"),
        ("metrics.a = TRUE", 12, "found boolean TRUE"),
        (
            "params.lr = 0.001",
            12,
            "params must be compared with a string; found number 0.001 (quote it: '0.001')",
        ),
        (
            "attributes.run_id IN ('a', 1)",
            21,
            "attribute 'run_id' must be compared with a string; found number 1",
        ),
        ("tags.x LIKE 5", 12, "LIKE needs a string pattern; found number 5"),
        ("attributes.foo = 'x'", 0, "unknown attribute 'foo' in a runs filter; valid identifiers are"),
        ("datasets.name = 'x'", 0, "dataset filters"),
        ("bogus = 1", 0, "unknown attribute 'bogus'"),
        ("attributes.start_time > '2024'", 24, "remove the quotes"),
    ],
)
def test_runs_schema_rejections(text: str, position: int, fragment: str) -> None:
    err = validate_error(text, RUNS_SCHEMA)
    assert err.metadata["position"] == str(position), err.message
    assert fragment in err.message, err.message
    assert err.message.startswith(f"invalid filter at position {position}: ")


def test_experiments_schema() -> None:
    ok = [
        "name = 'exp'",
        "attributes.name LIKE 'e%'",
        "experiment_id IN ('1', '2')",
        "experiment_id = 3",
        "creation_time > 1700000000000 AND last_update_time <= 1800000000000",
        "tags.owner = 'me' OR tags.team IS NULL",
    ]
    for text in ok:
        node = validate(parse_filter(text), EXPERIMENTS_SCHEMA)
        assert all(c.entity in ("attribute", "tag") for c in walk(node)), text
    assert (
        "operator '<' is not allowed on attribute 'experiment_id'"
        in validate_error("experiment_id < '3'", EXPERIMENTS_SCHEMA).message
    )
    assert (
        "metrics cannot be used in a experiments filter"
        in validate_error("metrics.a = 1", EXPERIMENTS_SCHEMA).message
    )
    assert (
        "must be compared with a number" in validate_error("creation_time > 'x'", EXPERIMENTS_SCHEMA).message
    )


def test_registered_models_schema() -> None:
    node = validate(parse_filter("name LIKE 'fraud%' AND tags.stage = 'prod'"), REGISTERED_MODELS_SCHEMA)
    assert node == And((C("attribute", "name", "LIKE", "fraud%", 0), C("tag", "stage", "=", "prod", 23)))
    assert validate(parse_filter("name IN ('a', 'b')"), REGISTERED_MODELS_SCHEMA) == C(
        "attribute", "name", "IN", ("a", "b"), 0
    )
    err = validate_error("params.x = 'a'", REGISTERED_MODELS_SCHEMA)
    assert (
        "params cannot be used in a registered models filter; valid identifiers are name, tags.<key>"
        in err.message
    )
    assert (
        "order_by but not in a registered models filter"
        in validate_error("creation_timestamp > 1", REGISTERED_MODELS_SCHEMA).message
    )
    assert "unknown attribute 'run_id'" in validate_error("run_id = 'r'", REGISTERED_MODELS_SCHEMA).message
    err = validate_error("name < 'x'", REGISTERED_MODELS_SCHEMA)
    assert "operator '<' is not allowed on attribute 'name' (use one of =, !=, LIKE, ILIKE" in err.message


def test_model_versions_schema() -> None:
    text = "name = 'm' AND version_number > 2 AND run_id IN ('r1','r2') AND source_path LIKE 's3://%' AND tags.t = 'x'"
    node = validate(parse_filter(text), MODEL_VERSIONS_SCHEMA)
    assert [(c.entity, c.key) for c in walk(node)] == [
        ("attribute", "name"),
        ("attribute", "version_number"),
        ("attribute", "run_id"),
        ("attribute", "source_path"),
        ("tag", "t"),
    ]
    assert validate(parse_filter("version_number IN (1, 2)"), MODEL_VERSIONS_SCHEMA) is not None
    assert "remove the quotes" in validate_error("version_number = '3'", MODEL_VERSIONS_SCHEMA).message
    assert (
        "operator 'IN' is not allowed on attribute 'source_path'"
        in validate_error("source_path IN ('a')", MODEL_VERSIONS_SCHEMA).message
    )
    assert "metrics cannot be used" in validate_error("metrics.x = 1", MODEL_VERSIONS_SCHEMA).message


# ------------------------------------------------------------------------------ order_by


def test_order_by_good() -> None:
    keys = parse_order_by(
        ["metrics.rmse", "metrics.rmse DESC", "attributes.start_time ASC", "attr.created desc"], RUNS_SCHEMA
    ) + parse_order_by(["params.`learning rate` DESC", "tags.mlflow.runName", "run_name"], RUNS_SCHEMA)
    assert keys == [
        OrderKey("metric", "rmse", True),
        OrderKey("metric", "rmse", False),
        OrderKey("attribute", "start_time", True),
        OrderKey("attribute", "start_time", False),
        OrderKey("param", "learning rate", False),
        OrderKey("tag", "mlflow.runName", True),
        OrderKey("attribute", "run_name", True),
    ]
    assert parse_order_by([], RUNS_SCHEMA) == []
    assert parse_order_by(["name", "version_number DESC"], MODEL_VERSIONS_SCHEMA) == [
        OrderKey("attribute", "name", True),
        OrderKey("attribute", "version_number", False),
    ]
    assert parse_order_by(
        ["last_updated_timestamp DESC", "creation_timestamp"], REGISTERED_MODELS_SCHEMA
    ) == [
        OrderKey("attribute", "last_updated_timestamp", False),
        OrderKey("attribute", "creation_timestamp", True),
    ]
    assert parse_order_by(["creation_time DESC", "name"], EXPERIMENTS_SCHEMA)[0] == OrderKey(
        "attribute", "creation_time", False
    )


@pytest.mark.parametrize(
    ("items", "schema", "index", "fragment"),
    [
        (
            ["metrics.rmse DESCENDING"],
            RUNS_SCHEMA,
            0,
            "expected ASC or DESC after 'metrics.rmse', found 'DESCENDING'",
        ),
        (["metrics.a", "metrics.b ASC DESC"], RUNS_SCHEMA, 1, "unexpected 'DESC' after the sort direction"),
        (["foo.bar"], RUNS_SCHEMA, 0, "unknown identifier prefix 'foo'"),
        ([""], RUNS_SCHEMA, 0, "empty item"),
        (["bogus"], RUNS_SCHEMA, 0, "cannot order runs by 'bogus'"),
        (["datasets.name"], RUNS_SCHEMA, 0, "dataset filters"),
        (["metrics.rmse"], REGISTERED_MODELS_SCHEMA, 0, "cannot order registered models by metrics"),
        (["tags.x"], MODEL_VERSIONS_SCHEMA, 0, "cannot order model versions by tags"),
        (["source_path"], REGISTERED_MODELS_SCHEMA, 0, "cannot order registered models by 'source_path'"),
        (["'name'"], REGISTERED_MODELS_SCHEMA, 0, "expected an identifier"),
        (["metrics.`x"], RUNS_SCHEMA, 0, "unterminated"),
    ],
)
def test_order_by_bad(items: list[str], schema: FilterSchema, index: int, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_order_by(items, schema)
    err = info.value
    assert err.reason == "INVALID_ORDER_BY"
    assert err.field == "order_by"
    assert err.metadata["index"] == str(index)
    assert err.metadata["item"] == items[index]
    assert repr(items[index]) in err.message
    assert fragment in err.message, err.message


# ------------------------------------------------------------------------------ performance


def test_typical_filter_parses_well_under_100us() -> None:
    text = "metrics.rmse < 0.8 and params.model = 'cnn' and tags.team LIKE 'vis%'"
    for _ in range(200):
        parse_filter(text)
    n = 2000
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            parse_filter(text)
        best = min(best, (time.perf_counter() - t0) / n)
    # generous bound so loaded CI machines do not flake; typically ~15 us
    assert best < 100e-6, f"{best * 1e6:.1f} us per parse"


# ------------------------------------------------------------------------------ compiling


class _Row(pw.Model):
    a = pw.IntegerField(null=True)
    c = pw.TextField(null=True)

    class Meta:
        database = pw.SqliteDatabase(None)
        table_name = "row"


class _Tag(pw.Model):
    row = pw.IntegerField()
    key = pw.TextField()

    class Meta:
        database = _Row._meta.database
        table_name = "tag"


_ROWS = [(1, 0, "x"), (2, 1, "y"), (3, 2, None), (4, None, "x"), (5, -3, "z"), (6, None, None)]
_TAGS = [(1, "k1"), (2, "k1"), (2, "k2"), (3, "k3"), (5, "k2")]


def _leaf_sql(c: Comparison) -> object:
    from keel_server.common.querying import number_op, string_op

    if c.key == "a":
        return number_op(_Row.a, c.op, c.value)
    if c.key == "c":
        return string_op(_Row.c, c.op, c.value)
    query = _Tag.select(pw.SQL("1")).where((_Tag.row == _Row.id) & (_Tag.key == c.value))
    return pw.fn.EXISTS(query)


def _truth(node: object, row: tuple[int, int | None, str | None]) -> bool | None:
    """SQL's three-valued logic, in Python: the oracle the compiled SQL must agree with."""
    if isinstance(node, Not):
        inner = _truth(node.item, row)
        return None if inner is None else not inner
    if isinstance(node, And | Or):
        values = [_truth(i, row) for i in node.items]
        decisive = isinstance(node, Or)  # True decides an OR, False an AND
        if decisive in values:
            return decisive
        return None if None in values else not decisive
    assert isinstance(node, Comparison)
    if node.key == "tag":
        return (row[0], node.value) in _TAGS
    x = row[1] if node.key == "a" else row[2]
    if node.op == "IS NULL":
        return x is None
    if node.op == "IS NOT NULL":
        return x is not None
    if x is None:
        return None
    v = node.value
    ops = {
        "=": lambda: x == v, "!=": lambda: x != v, "<": lambda: x < v, "<=": lambda: x <= v,  # type: ignore[operator]
        ">": lambda: x > v, ">=": lambda: x >= v,  # type: ignore[operator]
        "IN": lambda: x in v, "NOT IN": lambda: x not in v,  # type: ignore[operator]
    }  # fmt: skip
    return bool(ops[node.op]())


def _random_comparison(rng: random.Random) -> Comparison:
    kind = rng.choice(["a", "a", "c", "tag"])
    if kind == "tag":
        return Comparison("tag", "tag", "=", rng.choice(["k1", "k2", "k3", "k9"]))
    if kind == "c":
        op = rng.choice(["=", "!=", "IN", "NOT IN"])
        values = tuple(rng.sample(["x", "y", "z", "w"], 2))
        return Comparison("attribute", "c", op, values if "IN" in op else values[0])
    op = rng.choice(["=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN", "IS NULL", "IS NOT NULL"])
    number = rng.choice([-3, 0, 1, 2, 1.5, -0.5, 2.0, 1e300, -1e300, INT64_MAX, INT64_MIN])
    if op in ("IS NULL", "IS NOT NULL"):
        return Comparison("attribute", "a", op, None)
    if "IN" in op:
        return Comparison("attribute", "a", op, (number, rng.choice([0, 1, 1.5, 7])))
    return Comparison("attribute", "a", op, number)


def _random_node(rng: random.Random, depth: int, wide: bool = True) -> object:
    """A random filter; one level at most is wide (past the chain and pulled-up-EXISTS sizes)."""
    if depth == 0 or rng.random() < 0.3:
        return _random_comparison(rng)
    if rng.random() < 0.2:
        return Not(_random_node(rng, depth - 1, wide))  # type: ignore[arg-type]
    width = rng.choice([2, 3, 5, 9, 20, 70] if wide else [2, 3, 4])
    items = [_random_node(rng, depth - 1, wide and width < 9) for _ in range(width)]
    return (And if rng.random() < 0.5 else Or)(tuple(items))  # type: ignore[arg-type]


def test_compiled_filters_agree_with_three_valued_logic() -> None:
    """NOT pushed down (De Morgan), groups merged, chains laid out flat, decimals compared exactly
    with an integer column, EXISTS beyond the 8th written "IS TRUE": the rows match an oracle."""
    database = _Row._meta.database
    database.init(":memory:")
    database.create_tables([_Row, _Tag])
    _Row.insert_many(_ROWS, fields=[_Row.id, _Row.a, _Row.c]).execute()
    _Tag.insert_many(_TAGS, fields=[_Tag.row, _Tag.key]).execute()
    rng = random.Random(20)
    try:
        for _ in range(400):
            node = _random_node(rng, rng.choice([1, 2, 3, 4]))
            if rng.random() < 0.3:
                node = And(tuple(_random_comparison(rng) for _ in range(30)) + (node,))  # type: ignore[arg-type]
            expr = compile_filter(node, _leaf_sql)  # type: ignore[arg-type]
            got = sorted(r.id for r in _Row.select(_Row.id).where(expr))
            want = sorted(row[0] for row in _ROWS if _truth(node, row) is True)
            assert got == want, describe(node)  # type: ignore[arg-type]
    finally:
        database.close()


def _paren_depth(sql: str) -> int:
    depth = deepest = 0
    for ch in re.sub(r"'(?:[^']|'')*'", "''", sql):
        depth += ch == "("
        depth -= ch == ")"
        deepest = max(deepest, depth)
    return deepest


def test_chains_compile_to_shallow_sql() -> None:
    database = _Row._meta.database
    database.init(":memory:")
    try:
        for glue in (" AND ", " OR "):
            text = glue.join(f"tags.k{i} = 'v'" for i in range(MAX_COMPARISONS))
            expr = compile_filter(parse_filter(text), _leaf_sql)
            sql, params = _Row.select(_Row.id).where(expr).sql()
            assert _paren_depth(sql) <= 12, sql[:300]  # log8(1000) groups, not 1,000 levels
            assert len(params) == MAX_COMPARISONS  # one value each: IS TRUE wrappers bind nothing
        nested = "tags.a = 'v'"
        for level in range(MAX_DEPTH):
            nested = f"tags.b = 'v' {'AND' if level % 2 else 'OR'} ({nested})"
        sql, _ = _Row.select(_Row.id).where(compile_filter(parse_filter(nested), _leaf_sql)).sql()
        assert _paren_depth(sql) <= MAX_DEPTH + 8
        # NOT is pushed down and merged: NOT (a OR NOT (b OR c)) is one chain "NOT a AND (b OR c)".
        node = parse_filter("NOT (attributes.a = 1 OR NOT (attributes.c = '2' OR tags.tag = 'k1'))")
        sql = _Row.select(_Row.id).where(compile_filter(node, _leaf_sql)).sql()[0]
        assert sql.endswith(
            'WHERE ((("t1"."c" = ?) OR EXISTS(SELECT 1 FROM "tag" AS "t2" WHERE '
            '(("t1"."id" = "t2"."row") AND ("t2"."key" = ?)))) AND NOT ("t1"."a" = ?))'
        ), sql
    finally:
        database.close()


@pytest.mark.parametrize(
    "message",
    [
        "parser stack overflow",
        "Expression tree is too large (maximum depth 1000)",
        "too many SQL variables",
        "stack depth limit exceeded",
        "Thread stack overrun:  7968 bytes used of a 131072 byte stack",
    ],
)
def test_database_refusals_of_complex_sql_are_filter_too_complex(message: str) -> None:
    with pytest.raises(InvalidArgument) as info, search_guard():
        raise pw.OperationalError(message)
    assert info.value.reason == "FILTER_TOO_COMPLEX" and info.value.field == "filter"
    with pytest.raises(InvalidArgument), search_guard():
        raise RecursionError("maximum recursion depth exceeded")
    with pytest.raises(pw.OperationalError), search_guard():  # a real outage stays an outage
        raise pw.OperationalError("server closed the connection unexpectedly")
    _ = sqlite3  # the backend the oracle test runs on
