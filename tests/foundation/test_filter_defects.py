"""Issue #21, defects 2 and 3, and issue #20's bounded query complexity: search filters with
integers beyond 64 bits, ``models:/`` URIs with such versions, and long or deep filters.

Each defect test sends the fuzz probe's exact input to a real in-process server (on every selected
backend) and checks the documented status and reason; the limit tests run a filter exactly at each
documented limit, in every shape (all AND, all OR, alternating, nested to the maximum depth, NOT,
the longest IN list, the most values, the longest text), through SearchRuns, SearchExperiments,
SearchModelVersions and SearchRegisteredModels, and one step over each limit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from server_fixtures import ServerHandle

import keel
from keel import exceptions as kx
from keel.entities import Metric, Param, RunTag
from keel.models.uri import parse_models_uri as sdk_parse_models_uri
from keel.tracking.v1 import tracking_pb2, tracking_pb2_grpc
from keel_server.common.filters import (
    INT64_MAX,
    INT64_MIN,
    MAX_COMPARISONS,
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_IN_VALUES,
    MAX_ORDER_KEYS,
    MAX_VALUES,
)
from keel_server.registry.store import parse_models_uri as server_parse_models_uri

HUGE = "99999999999999999999999999999"
HUGE_VERSION = "99999999999999999999999"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def world(keel_server: ServerHandle) -> dict[str, str]:
    """Per server (backend): an experiment with two runs, a registered model with two versions."""
    client = keel.Client(keel_server.uri)
    experiment_id = client.create_experiment(_unique("limits"))
    runs = {}
    for name, rmse, model, start in (("a", 0.5, "cnn", 1000), ("b", 2.0, "rnn", 2000)):
        run_id = client.create_run(experiment_id, run_name=f"run-{name}", start_time=start).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("rmse", rmse, 1, 0), Metric("acc", 0.9, 1, 0)],
            params=[Param("model", model)],
            tags=[RunTag("team", "vision")],
        )
        runs[name] = run_id
    client.log_text(runs["a"], "flavors: {}\n", "model/MLmodel")
    model = _unique("limits-model")
    client.create_registered_model(model, tags={"team": "vision"})
    for _ in range(2):
        client.create_model_version(model, f"runs:/{runs['a']}/model", run_id=runs["a"], tags={"k": "v"})
    return {"experiment_id": str(experiment_id), "model": model, "run_a": runs["a"], "run_b": runs["b"]}


@pytest.fixture()
def tracking_stub(keel_server: ServerHandle) -> Iterator[tracking_pb2_grpc.TrackingServiceStub]:
    channel = grpc.insecure_channel(keel_server.uri.removeprefix("grpc://"))
    yield tracking_pb2_grpc.TrackingServiceStub(channel)
    channel.close()


def _refused(call: Callable[[], object]) -> kx.InvalidArgument:
    with pytest.raises(kx.InvalidArgument) as err:
        call()
    return err.value


def _too_complex(call: Callable[[], object], field: str = "filter") -> kx.InvalidArgument:
    err = _refused(call)
    assert err.reason == "FILTER_TOO_COMPLEX", err
    assert err.field == field, err
    return err


def _search_runs(client: keel.Client, world: dict[str, str], text: str, **kw: object) -> list[str]:
    page = client.search_runs([world["experiment_id"]], text, **kw)  # type: ignore[arg-type]
    return [r.info.run_name for r in page]


# ------------------------------------------------------------------------------------ defect 2
@pytest.mark.parametrize("value", [HUGE, "-" + HUGE])
def test_defect2_huge_integer_in_filter_is_invalid_argument(
    client: keel.Client,
    world: dict[str, str],
    tracking_stub: tracking_pb2_grpc.TrackingServiceStub,
    value: str,
) -> None:
    text = f"attributes.start_time > {value}"
    err = _refused(lambda: _search_runs(client, world, text))
    assert err.reason == "INVALID_FILTER" and err.field == "filter"
    assert err.metadata["position"] == "24" and "position 24" in err.message
    assert f"integer {value} is out of range" in err.message and str(INT64_MAX) in err.message
    # The raw request (no SDK in between) gets the same status, never INTERNAL.
    request = tracking_pb2.SearchRunsRequest(experiment_ids=[world["experiment_id"]], filter=text)
    with pytest.raises(grpc.RpcError) as raw:
        tracking_stub.SearchRuns(request, timeout=30)
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("text", "position"),
    [(f"version_number > {HUGE}", 17), (f"version_number IN (1, 2, {HUGE})", 25)],
)
def test_defect2_huge_version_number_in_filter_is_invalid_argument(
    client: keel.Client, world: dict[str, str], text: str, position: int
) -> None:
    err = _refused(lambda: list(client.search_model_versions(text)))
    assert err.reason == "INVALID_FILTER" and err.field == "filter"
    assert err.metadata["position"] == str(position) and "out of range" in err.message


@pytest.mark.parametrize(
    ("search", "text"),
    [
        ("runs", "attributes.end_time < {}"),
        ("runs", "attributes.start_time = {}"),
        ("runs", "metrics.rmse > {}"),
        ("experiments", "creation_time > {}"),
        ("experiments", "last_update_time < {}"),
        ("experiments", "experiment_id = {}"),
        ("experiments", "experiment_id IN (0, {})"),
        ("versions", "version_number = {}"),
        ("versions", "version_number NOT IN ({})"),
    ],
)
@pytest.mark.parametrize("value", [str(INT64_MAX + 1), str(INT64_MIN - 1), HUGE, "9" * 5000])
def test_defect2_every_integer_field_refuses_integers_beyond_64_bits(
    client: keel.Client, world: dict[str, str], search: str, text: str, value: str
) -> None:
    searches: dict[str, Callable[[str], object]] = {
        "runs": lambda f: _search_runs(client, world, f),
        "experiments": lambda f: list(client.search_experiments(filter_string=f)),
        "versions": lambda f: list(client.search_model_versions(f)),
    }
    err = _refused(lambda: searches[search](text.format(value)))
    assert err.reason == "INVALID_FILTER" and "out of range" in err.message
    assert err.metadata["position"] == str(text.index("{}"))
    assert len(err.message) < 600  # a 5,000-digit literal is not echoed whole


def test_defect2_integers_at_the_64_bit_bounds_are_searched(
    client: keel.Client, world: dict[str, str]
) -> None:
    both = ["run-a", "run-b"]
    order = {"order_by": ["attributes.run_name ASC"]}
    assert _search_runs(client, world, f"attributes.start_time > {INT64_MIN}", **order) == both
    assert _search_runs(client, world, f"attributes.start_time < {INT64_MAX}", **order) == both
    assert (
        _search_runs(
            client, world, f"attributes.end_time != {INT64_MAX} OR attributes.end_time IS NULL", **order
        )
        == both
    )
    assert (
        _search_runs(client, world, f"metrics.rmse < {INT64_MAX} AND metrics.rmse > {INT64_MIN}", **order)
        == both
    )
    versions = client.search_model_versions(
        f"name = '{world['model']}' AND version_number <= {INT64_MAX} AND version_number NOT IN ({INT64_MIN})"
    )
    assert sorted(int(v.version) for v in versions) == [1, 2]
    # Decimals against integer columns compare exactly (Peewee used to truncate them with int()).
    assert _search_runs(client, world, "attributes.start_time < 1000.5", **order) == ["run-a"]
    assert _search_runs(client, world, "attributes.start_time > 1000.5", **order) == ["run-b"]
    assert _search_runs(client, world, "attributes.start_time = 1000.0", **order) == ["run-a"]
    model = f"name = '{world['model']}'"
    assert [int(v.version) for v in client.search_model_versions(f"{model} AND version_number < 1.5")] == [1]
    assert [v.version for v in client.search_model_versions(f"{model} AND version_number IN (2.0, 2.5)")] == [
        "2"
    ]
    assert list(client.search_model_versions(f"{model} AND version_number = 1.5")) == []
    exp = client.search_experiments(
        filter_string=f"creation_time > {INT64_MIN} AND experiment_id = {INT64_MAX}"
    )
    assert list(exp) == []
    # A digit string no experiment id can be (beyond 64 bits, or not ASCII digits) matches nothing.
    assert list(client.search_experiments(filter_string=f"experiment_id = '{HUGE}'")) == []
    assert list(client.search_experiments(filter_string="experiment_id IN ('\u00b2', '\u0663')")) == []
    ids = [e.experiment_id for e in client.search_experiments(filter_string=f"experiment_id != '{HUGE}'")]
    assert world["experiment_id"] in ids


def test_defect2_huge_numbers_against_metrics_follow_one_rule(
    client: keel.Client, world: dict[str, str]
) -> None:
    # Rule: an integer literal must fit in 64 bits, a decimal must be a finite double; metrics are
    # compared as doubles. So the largest finite doubles and the smallest subnormal are searched on
    # every backend, and anything beyond is INVALID_FILTER at the number's position.
    order = {"order_by": ["attributes.run_name ASC"]}
    assert _search_runs(client, world, "metrics.rmse < 1.7976931348623157e308", **order) == ["run-a", "run-b"]
    assert _search_runs(
        client, world, "metrics.rmse > -1.7976931348623157e308 AND metrics.rmse < 1e300", **order
    ) == ["run-a", "run-b"]
    assert _search_runs(client, world, "metrics.rmse > 5e-324 AND metrics.rmse < 1", **order) == ["run-a"]
    assert _search_runs(client, world, "metrics.rmse != 1e308 AND metrics.rmse >= 2.0", **order) == ["run-b"]
    assert _search_runs(
        client, world, "attributes.start_time < 1e300 AND attributes.start_time > -1e300", **order
    ) == ["run-a", "run-b"]
    for text in (
        "metrics.rmse > 1e400",
        "metrics.rmse > -1e400",
        f"metrics.rmse > {HUGE}",
        "metrics.rmse < 1e309",
    ):
        err = _refused(lambda t=text: _search_runs(client, world, t))  # type: ignore[misc]
        assert err.reason == "INVALID_FILTER" and err.metadata["position"] == "15", err
        assert "out of range" in err.message


def test_defect2_huge_version_in_models_uri_is_invalid_model_uri(
    client: keel.Client, world: dict[str, str]
) -> None:
    uri = f"models:/{world['model']}/{HUGE_VERSION}"
    err = _refused(lambda: client.resolve_model_uri(uri))
    assert err.reason == "INVALID_MODEL_URI" and f"version {HUGE_VERSION} is out of range" in err.message
    err = _refused(lambda: client.create_model_version(world["model"], uri))
    assert err.reason == "INVALID_MODEL_URI" and f"version {HUGE_VERSION} is out of range" in err.message
    # The largest 64-bit version is a well-formed URI naming a version that does not exist.
    with pytest.raises(kx.NotFound) as missing:
        client.resolve_model_uri(f"models:/{world['model']}/{INT64_MAX}")
    assert missing.value.reason == "MODEL_VERSION_NOT_FOUND"
    assert client.resolve_model_uri(f"models:/{world['model']}/0001")  # leading zeros still name 1


@pytest.mark.parametrize(
    ("suffix", "phrase"),
    [
        (HUGE_VERSION, f"version {HUGE_VERSION} is out of range"),
        (str(INT64_MAX + 1), "is out of range: version numbers are 1..9223372036854775807"),
        ("9" * 5000, "(5,000 digits) is out of range"),
        ("0", "version 0 is not a positive number"),
        ("000", "version 000 is not a positive number"),
        ("\u00b2", "is neither a version number"),
    ],
)
def test_defect2_sdk_and_server_parse_models_uri_versions_the_same_way(suffix: str, phrase: str) -> None:
    uri = f"models:/m/{suffix}"
    with pytest.raises(kx.InvalidArgument) as sdk:
        sdk_parse_models_uri(uri)
    from keel_server.common.errors import InvalidArgument as ServerInvalidArgument

    with pytest.raises(ServerInvalidArgument) as server:
        server_parse_models_uri(uri)
    for err in (sdk.value, server.value):
        assert err.reason == "INVALID_MODEL_URI" and phrase in err.message, err.message
    for good, number in ((str(INT64_MAX), INT64_MAX), ("1", 1), ("007", 7)):
        assert sdk_parse_models_uri(f"models:/m/{good}").version == number
        assert server_parse_models_uri(f"models:/m/{good}").version == number


# ------------------------------------------------------------------------------------ defect 3
def test_defect3_long_and_chain_of_76_terms_is_answered(client: keel.Client, world: dict[str, str]) -> None:
    # 76 ANDed terms, 1,439 characters: SQLite answered "parser stack overflow", which became
    # UNAVAILABLE (and the SDK retried it as an outage).
    text = " AND ".join(["params.p = 'x'"] * 76)
    assert len(text) == 1439
    assert _search_runs(client, world, text) == []
    text = " AND ".join(["params.model = 'cnn'"] * 76)
    assert _search_runs(client, world, text) == ["run-a"]


@pytest.mark.parametrize("terms", [500, 1000])
@pytest.mark.parametrize("glue", [" AND ", " OR "])
def test_defect3_long_chains_up_to_the_limit_are_answered(
    client: keel.Client, world: dict[str, str], terms: int, glue: str
) -> None:
    # 500..3,000 terms gave INTERNAL (RecursionError in the parser or in Peewee's SQL generation).
    text = glue.join(["metrics.rmse < 1"] * terms)
    assert _search_runs(client, world, text) == ["run-a"]


@pytest.mark.parametrize("terms", [1001, 3000])
def test_defect3_long_chains_over_the_limit_are_filter_too_complex(
    client: keel.Client, world: dict[str, str], terms: int
) -> None:
    for glue in (" AND ", " OR "):
        text = glue.join(["metrics.rmse < 1"] * terms)
        err = _too_complex(lambda t=text: _search_runs(client, world, t))  # type: ignore[misc]
        assert f"the filter has {terms:,} comparisons; at most 1,000 are allowed" in err.message
        assert err.metadata["limit"] == "comparisons" and err.metadata["found"] == str(terms)


def test_defect3_2001_or_clauses_is_filter_too_complex(client: keel.Client, world: dict[str, str]) -> None:
    text = " OR ".join(["metrics.rmse < 1"] * 2001)
    assert 40_000 < len(text) < MAX_FILTER_LENGTH  # ~50 KB: the comparisons limit, not the length one
    err = _too_complex(lambda: _search_runs(client, world, text))
    assert err.message.startswith(
        "the filter has 2,001 comparisons; at most 1,000 are allowed: split the search"
    )
    assert err.metadata == {"limit": "comparisons", "max": "1000", "found": "2001"}


# ------------------------------------------------------------------- shapes exactly at the limits
Leaf = Callable[[int], str]

RUN_LEAVES: list[str] = [
    "metrics.rmse < 1",
    "params.model = 'cnn'",
    "tags.team LIKE 'vis%'",
    "attributes.start_time >= 0",
    "metrics.acc != 0.5",
    "params.model NOT IN ('a', 'b')",
    "tags.missing IS NULL",
    "attributes.status ILIKE 'running'",
]
VERSION_LEAVES: list[str] = [
    "version_number > 0",
    "tags.k = 'v'",
    "name LIKE 'limits-model%'",
    "run_id != 'x'",
    "source_path LIKE 'runs:/%'",
    "tags.other IS NULL",
]
MODEL_LEAVES: list[str] = [
    "name LIKE 'limits-model%'",
    "tags.team = 'vision'",
    "name != 'x'",
    "tags.x IS NULL",
]
EXPERIMENT_LEAVES: list[str] = [
    "name LIKE 'limits%'",
    "creation_time > 0",
    "tags.x IS NULL",
    "experiment_id != 5",
]


def _leaf(leaves: list[str]) -> Leaf:
    return lambda i: leaves[i % len(leaves)]


def _nested(leaf: Leaf, depth: int, per_level: int) -> str:
    """``per_level`` comparisons at each of ``depth`` levels of parentheses, AND and OR alternating,
    the innermost level one comparison deeper: depth levels, depth * per_level + 1 comparisons."""
    text = leaf(0)
    for level in range(depth):
        glue = " AND " if level % 2 else " OR "
        text = glue.join([leaf(level * per_level + j + 1) for j in range(per_level)] + [f"({text})"])
    return text


def _nested_not(leaf: Leaf, depth: int) -> str:
    """NOT ( ... ) nested: each level is a NOT and a parenthesis, 2 of the depth."""
    text = leaf(0)
    for level in range(depth // 2):
        glue = " AND " if level % 2 else " OR "
        text = f"NOT ({leaf(level + 1)}{glue}{text})"
    return text


def _balanced(leaf: Leaf, levels: int, index: int = 0) -> str:
    """A full binary tree of AND/OR (alternating by level), 2**levels comparisons."""
    if levels == 0:
        return leaf(index)
    glue = " AND " if levels % 2 else " OR "
    half = 2 ** (levels - 1)
    left, right = _balanced(leaf, levels - 1, index), _balanced(leaf, levels - 1, index + half)
    return f"({left}){glue}({right})"


def _caterpillar(leaf: Leaf, depth: int) -> str:
    """At each level a balanced subtree beside the deeper level: nesting and breadth together."""
    text = leaf(0)
    for level in range(depth - 4):  # the subtrees' own 4 levels reach the depth
        glue = " AND " if level % 2 else " OR "
        text = f"({_balanced(leaf, 4, level)}){glue}({text})"
    return text


def _in_list(key: str, count: int, value: str = "'a'") -> str:
    return f"{key} IN ({','.join([value] * count)})"


def _shapes(leaf: Leaf, in_key: str) -> dict[str, str]:
    n, d = MAX_COMPARISONS, MAX_DEPTH
    per_level = (n - 1) // d
    values_lists = MAX_VALUES // MAX_IN_VALUES
    shapes = {
        "and_chain": " AND ".join(leaf(i) for i in range(n)),
        "or_chain": " OR ".join(leaf(i) for i in range(n)),
        "alternating": "".join(leaf(i) + (" AND " if i % 2 == 0 else " OR ") for i in range(n - 1))
        + leaf(n - 1),
        "nested_max_depth": _nested(leaf, d, 1),
        "nested_max_depth_max_comparisons": _nested(leaf, d, per_level),
        "not_chain": "NOT " * d + leaf(0),
        "not_nested": _nested_not(leaf, d),
        "redundant_parentheses": "(" * d + leaf(0) + ")" * d,
        "balanced": _balanced(leaf, 9),
        "balanced_beside_depth": _caterpillar(leaf, d),
        "max_in_list": _in_list(in_key, MAX_IN_VALUES) + " OR " + leaf(0),
        "max_values": " OR ".join(_in_list(in_key, MAX_IN_VALUES) for _ in range(values_lists)),
    }
    pad = MAX_FILTER_LENGTH - len(f"{in_key} != ''") - len(" OR " + leaf(0))
    shapes["max_length"] = f"{in_key} != '{'x' * pad}' OR {leaf(0)}"
    return shapes


def test_shapes_are_exactly_at_the_limits() -> None:
    from keel_server.common.filters import _nesting, _tokenize, parse_filter, walk  # noqa: PLC2701 - the limit's own measure

    shapes = _shapes(_leaf(RUN_LEAVES), "tags.team")
    for name in ("and_chain", "or_chain", "alternating"):
        assert len(list(walk(parse_filter(shapes[name])))) == MAX_COMPARISONS
    assert len(list(walk(parse_filter(shapes["nested_max_depth_max_comparisons"])))) <= MAX_COMPARISONS
    for name in (
        "nested_max_depth",
        "nested_max_depth_max_comparisons",
        "not_chain",
        "not_nested",
        "redundant_parentheses",
        "balanced_beside_depth",
    ):
        assert _nesting(_tokenize(shapes[name]))[0] == MAX_DEPTH, name
    assert len(shapes["max_length"]) == MAX_FILTER_LENGTH
    assert (
        sum(len(c.value) for c in walk(parse_filter(shapes["max_values"])) if isinstance(c.value, tuple))
        == MAX_VALUES
    )
    for text in shapes.values():
        parse_filter(text)  # within every limit


RUN_SHAPES = _shapes(_leaf(RUN_LEAVES), "tags.team")


@pytest.mark.parametrize("shape", sorted(RUN_SHAPES))
def test_defect3_search_runs_at_each_limit_answers(
    client: keel.Client, world: dict[str, str], shape: str
) -> None:
    text = RUN_SHAPES[shape]
    five = [
        "metrics.rmse DESC",
        "params.model",
        "tags.team DESC",
        "attributes.start_time",
        "attributes.end_time",
    ]
    assert len(five) == MAX_ORDER_KEYS
    for order_by in ([], ["metrics.rmse ASC"], five):
        first = client.search_runs([world["experiment_id"]], text, max_results=1, order_by=order_by)
        if first.token:  # the keyset condition of the next page joins the filter
            client.search_runs(
                [world["experiment_id"]], text, max_results=1, order_by=order_by, page_token=first.token
            )


EXPERIMENT_SHAPES = _shapes(_leaf(EXPERIMENT_LEAVES), "name")


@pytest.mark.parametrize("shape", sorted(EXPERIMENT_SHAPES))
def test_defect3_search_experiments_at_each_limit_answers(client: keel.Client, shape: str) -> None:
    orders = ["name", "creation_time DESC", "last_update_time", "experiment_id DESC", "name DESC"]
    first = client.search_experiments(filter_string=EXPERIMENT_SHAPES[shape], order_by=orders, max_results=1)
    if first.token:
        client.search_experiments(
            filter_string=EXPERIMENT_SHAPES[shape], order_by=orders, max_results=1, page_token=first.token
        )


VERSION_SHAPES = _shapes(_leaf(VERSION_LEAVES), "run_id")
MODEL_SHAPES = _shapes(_leaf(MODEL_LEAVES), "name")


@pytest.mark.parametrize("shape", sorted(VERSION_SHAPES))
def test_defect3_search_model_versions_at_each_limit_answers(
    client: keel.Client, world: dict[str, str], shape: str
) -> None:
    orders = ["name", "version_number DESC", "creation_timestamp", "last_updated_timestamp DESC", "run_id"]
    first = client.search_model_versions(VERSION_SHAPES[shape], max_results=1, order_by=orders)
    if first.token:
        client.search_model_versions(
            VERSION_SHAPES[shape], max_results=1, order_by=orders, page_token=first.token
        )


@pytest.mark.parametrize("shape", sorted(MODEL_SHAPES))
def test_defect3_search_registered_models_at_each_limit_answers(
    client: keel.Client, world: dict[str, str], shape: str
) -> None:
    orders = ["name DESC", "creation_timestamp", "last_updated_timestamp", "name", "creation_timestamp DESC"]
    first = client.search_registered_models(MODEL_SHAPES[shape], max_results=1, order_by=orders)
    if first.token:
        client.search_registered_models(
            MODEL_SHAPES[shape], max_results=1, order_by=orders, page_token=first.token
        )


def test_defect3_results_at_the_limits_are_right(client: keel.Client, world: dict[str, str]) -> None:
    order = {"order_by": ["attributes.run_name ASC"]}
    true_a, false_a = "params.model = 'cnn'", "params.model = 'rnn'"  # run-a's truths; run-b the opposite
    assert _search_runs(client, world, " AND ".join([true_a] * MAX_COMPARISONS), **order) == ["run-a"]
    assert _search_runs(client, world, " OR ".join([false_a] * MAX_COMPARISONS), **order) == ["run-b"]
    # NOT at the maximum depth: an even number of NOTs cancel.
    assert _search_runs(client, world, "NOT " * MAX_DEPTH + true_a, **order) == ["run-a"]
    deep = _nested(lambda i: false_a if i else true_a, MAX_DEPTH, 1)
    expected = {"run-a"}  # the innermost comparison, then OR/AND with run-b's truth, level by level
    for level in range(MAX_DEPTH):
        expected = {"run-b"} & expected if level % 2 else {"run-b"} | expected
    assert _search_runs(client, world, deep, **order) == sorted(expected)
    negated = "NOT (" + _nested(lambda i: false_a if i else true_a, MAX_DEPTH - 2, 1) + ")"  # NOT and ( count
    expected = {"run-a"}
    for level in range(MAX_DEPTH - 2):
        expected = {"run-b"} & expected if level % 2 else {"run-b"} | expected
    assert _search_runs(client, world, negated, **order) == sorted({"run-a", "run-b"} - expected)
    versions = client.search_model_versions(" OR ".join(["version_number = 2"] * MAX_COMPARISONS))
    assert [int(v.version) for v in versions] == [2]


# ------------------------------------------------------------------------- one step over each limit
def test_defect3_one_step_over_each_limit_is_filter_too_complex(
    client: keel.Client, world: dict[str, str]
) -> None:
    def cases(leaf: Leaf, key: str) -> dict[str, str]:
        lists = MAX_VALUES // MAX_IN_VALUES
        return {
            "comparisons": " AND ".join(leaf(i) for i in range(MAX_COMPARISONS + 1)),
            "depth": _nested(leaf, MAX_DEPTH + 1, 1),
            "in_values": _in_list(key, MAX_IN_VALUES + 1),
            "values": " OR ".join([_in_list(key, MAX_IN_VALUES)] * lists + [f"{key} = 'b'"]),
            "length": f"{key} = '" + "x" * (MAX_FILTER_LENGTH - len(key) - 4) + "'",
        }

    messages = {
        "comparisons": "the filter has 1,001 comparisons; at most 1,000 are allowed: split the search",
        "depth": f"levels deep (level {MAX_DEPTH + 1} opens at position",
        "in_values": "has 1,001 values; at most 1,000 are allowed in one list",
        "values": "the filter holds 10,001 values (IN-list values count one each); at most 10,000 are allowed",
        "length": f"the filter is {MAX_FILTER_LENGTH + 1:,} characters long; at most {MAX_FILTER_LENGTH:,} are allowed",
    }
    searches: list[tuple[Callable[[str], object], Leaf, str]] = [
        (lambda t: _search_runs(client, world, t), _leaf(RUN_LEAVES), "tags.team"),
        (lambda t: list(client.search_experiments(filter_string=t)), _leaf(EXPERIMENT_LEAVES), "name"),
        (lambda t: list(client.search_model_versions(t)), _leaf(VERSION_LEAVES), "run_id"),
        (lambda t: list(client.search_registered_models(t)), _leaf(MODEL_LEAVES), "name"),
    ]
    for search, leaf, key in searches:
        for limit, text in cases(leaf, key).items():
            err = _too_complex(lambda s=search, t=text: s(t))  # type: ignore[misc]
            assert messages[limit] in err.message, (limit, err.message)
            assert err.metadata["limit"] == limit and err.metadata["max"] and err.metadata["found"]


def test_defect3_depth_over_the_limit_names_the_depth(client: keel.Client, world: dict[str, str]) -> None:
    text = "(" * 500 + "metrics.rmse < 1" + ")" * 500
    err = _too_complex(lambda: _search_runs(client, world, text))
    assert (
        "nests parentheses and NOT 500 levels deep" in err.message
        and f"at most {MAX_DEPTH} levels" in err.message
    )
    err = _too_complex(lambda: list(client.search_registered_models("NOT " * 40 + "name = 'x'")))
    assert "40 levels deep" in err.message


def test_defect3_more_order_by_keys_than_allowed_is_filter_too_complex(
    client: keel.Client, world: dict[str, str]
) -> None:
    six = [
        "metrics.rmse",
        "params.model",
        "tags.team",
        "attributes.start_time",
        "attributes.end_time",
        "metrics.acc",
    ]
    err = _too_complex(lambda: _search_runs(client, world, "", order_by=six), field="order_by")
    assert "order_by has 6 keys; at most 5 are allowed" in err.message
    err = _too_complex(
        lambda: list(client.search_model_versions("", order_by=["name"] * 6)), field="order_by"
    )
    assert err.metadata == {"limit": "order_by_keys", "max": "5", "found": "6"}
