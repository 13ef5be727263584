"""Unit tests for the shared search filter / order_by parser (keel_server.common.filters)."""

from __future__ import annotations

import time

import pytest

from keel_server.common.errors import InvalidArgument
from keel_server.common.filters import (
    EXPERIMENTS_SCHEMA,
    MODEL_VERSIONS_SCHEMA,
    REGISTERED_MODELS_SCHEMA,
    RUNS_SCHEMA,
    And,
    Comparison,
    FilterSchema,
    Not,
    Or,
    OrderKey,
    describe,
    parse_filter,
    parse_order_by,
    validate,
    walk,
)


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


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    err = parse_error("(" * 500 + "metrics.a = 1" + ")" * 500)
    assert "nested too deeply" in err.message
    err = parse_error("NOT " * 500 + "metrics.a = 1")
    assert "nested too deeply" in err.message


def test_too_long_filter() -> None:
    err = parse_error("tags.x = '" + "a" * 70000 + "'")
    assert "longer than" in err.message


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
        [
            "metrics.rmse",
            "metrics.rmse DESC",
            "attributes.start_time ASC",
            "attr.created desc",
            "params.`learning rate` DESC",
            "tags.mlflow.runName",
            "run_name",
        ],
        RUNS_SCHEMA,
    )
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
