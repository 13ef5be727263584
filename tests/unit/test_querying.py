"""Unit tests of the query building blocks every store shares: the one filter compiler
(``querying.compile_filter``), the one key/value EXISTS test (``querying.tag_exists``), prepared
statements (``prepared.Prepared``) and the one transaction retry loop (``db.retry_transaction``).

The compiled SQL runs on a real database of each selected backend, and what it selects is compared
with the same filter evaluated in Python, over random filters of every shape (AND, OR, NOT, nested).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import peewee as pw
import pytest

from keel_server.common.db import (
    Experiment,
    ExperimentTag,
    RegisteredModel,
    RegisteredModelTag,
    initialize,
    retry_transaction,
)
from keel_server.common.filters import MAX_DEPTH, And, Comparison, Node, Not, Or
from keel_server.common.migrations import ensure_current
from keel_server.common.prepared import Prepared, slot, slot_rows
from keel_server.common.querying import compile_filter, tag_exists

# Tags of the experiments and registered models the tests search (same tags for both owners).
TAGS: list[dict[str, str]] = [
    {},
    {"team": "vision"},
    {"team": "nlp", "stage": "prod"},
    {"team": "vision", "stage": "dev", "owner": "ann"},
    {"stage": "prod", "owner": "bob"},
    {"team": "Vision", "owner": "ann"},
    {"team": "audio", "stage": "prod", "owner": "cid"},
    {"owner": "bob"},
]

# Comparisons on tags, each with what it means in Python (the tags of one owner -> match).
LEAVES: list[tuple[Comparison, Callable[[dict[str, str]], bool]]] = [
    (Comparison("tag", "team", "=", "vision", 0), lambda t: t.get("team") == "vision"),
    (Comparison("tag", "team", "!=", "vision", 0), lambda t: "team" in t and t["team"] != "vision"),
    (Comparison("tag", "team", "LIKE", "v%", 0), lambda t: t.get("team", "").startswith("v")),
    (Comparison("tag", "team", "ILIKE", "v%", 0), lambda t: t.get("team", "x").lower().startswith("v")),
    (Comparison("tag", "team", "NOT LIKE", "%o", 0), lambda t: "team" in t and not t["team"].endswith("o")),
    (Comparison("tag", "stage", "IN", ("prod", "dev"), 0), lambda t: t.get("stage") in ("prod", "dev")),
    (Comparison("tag", "stage", "NOT IN", ("prod",), 0), lambda t: "stage" in t and t["stage"] != "prod"),
    (Comparison("tag", "owner", "IS NULL", None, 0), lambda t: "owner" not in t),
    (Comparison("tag", "owner", "IS NOT NULL", None, 0), lambda t: "owner" in t),
    (Comparison("tag", "owner", "=", "bob", 0), lambda t: t.get("owner") == "bob"),
]
MEANING = {id(c): meaning for c, meaning in LEAVES}


@dataclass
class Owners:
    """The ids of the experiments and registered models holding TAGS, in TAGS order."""

    experiments: list[int]
    models: list[int]


@pytest.fixture()
def database(db_url: str) -> Iterator[pw.Database]:
    """A fresh database of the selected backend."""
    database = initialize(db_url)
    ensure_current(database)
    with database.connection_context():
        yield database


@pytest.fixture()
def owners(database: pw.Database) -> Owners:
    made = Owners([], [])
    for index, tags in enumerate(TAGS):
        experiment = int(Experiment.insert(name=f"e{index}", artifact_location="file:///x").execute())
        model = int(RegisteredModel.insert(name=f"m{index}").execute())
        for key, value in tags.items():
            ExperimentTag.insert(experiment=experiment, key=key, value=value).execute()
            RegisteredModelTag.insert(model=model, key=key, value=value).execute()
        made.experiments.append(experiment)
        made.models.append(model)
    return made


def evaluate(node: Node, tags: dict[str, str]) -> bool:
    if isinstance(node, Comparison):
        return MEANING[id(node)](tags)
    if isinstance(node, Not):
        return not evaluate(node.item, tags)
    if isinstance(node, And):
        return all(evaluate(item, tags) for item in node.items)
    return any(evaluate(item, tags) for item in node.items)


def random_filter(rng: random.Random, depth: int) -> Node:
    """A random filter up to ``depth`` levels of groups, with NOTs anywhere."""
    if depth == 0 or rng.random() < 0.3:
        node: Node = rng.choice(LEAVES)[0]
    else:
        kind = rng.choice((And, Or))
        node = kind(tuple(random_filter(rng, depth - 1) for _ in range(rng.randint(2, 4))))
    return Not(node) if rng.random() < 0.25 else node


def experiments_matching(node: Node | None) -> set[int]:
    condition = compile_filter(
        node, lambda c: tag_exists(ExperimentTag.experiment, Experiment.experiment_id, c)
    )
    query = Experiment.select(Experiment.experiment_id)
    if condition is not None:
        query = query.where(condition)
    return {row[0] for row in query.tuples()}


def models_matching(node: Node | None) -> set[int]:
    condition = compile_filter(node, lambda c: tag_exists(RegisteredModelTag.model, RegisteredModel.id, c))
    query = RegisteredModel.select(RegisteredModel.id)
    if condition is not None:
        query = query.where(condition)
    return {row[0] for row in query.tuples()}


def expected(node: Node, ids: list[int]) -> set[int]:
    return {ids[index] for index, tags in enumerate(TAGS) if evaluate(node, tags)}


# ------------------------------------------------------------------------------ compile_filter


def test_no_filter_compiles_to_none_and_selects_everything(owners: Owners) -> None:
    assert compile_filter(None, lambda c: pytest.fail("no comparison to compile")) is None
    assert experiments_matching(None) == set(owners.experiments)


@pytest.mark.parametrize(("comparison", "meaning"), LEAVES, ids=[f"{c.key} {c.op}" for c, _ in LEAVES])
def test_each_tag_operator_and_its_negation(
    owners: Owners, comparison: Comparison, meaning: Callable[[dict[str, str]], bool]
) -> None:
    assert experiments_matching(comparison) == expected(comparison, owners.experiments)
    assert experiments_matching(Not(comparison)) == expected(Not(comparison), owners.experiments)
    # Registered models: the owner field is named ``model``, which a table alias's own attribute
    # shadows: the helper must reach the field, not the alias's model.
    assert models_matching(comparison) == expected(comparison, owners.models)
    assert models_matching(Not(comparison)) == expected(Not(comparison), owners.models)


def test_random_filters_select_what_they_mean(owners: Owners) -> None:
    rng = random.Random(18)
    for _ in range(60):
        node = random_filter(rng, depth=4)
        assert experiments_matching(node) == expected(node, owners.experiments), node
        assert models_matching(node) == expected(node, owners.models), node


def test_long_chains_and_de_morgan_keep_the_meaning(owners: Owners) -> None:
    rng = random.Random(7)
    for kind in (And, Or):
        items = tuple(rng.choice(LEAVES)[0] for _ in range(120))
        for node in (kind(items), Not(kind(items)), kind((Not(kind(items[:60])), *items[60:]))):
            assert experiments_matching(node) == expected(node, owners.experiments)


def test_each_comparison_is_compiled_once() -> None:
    leaves = [LEAVES[i % len(LEAVES)][0] for i in range(25)]
    node = Not(Or((And(tuple(leaves[:10])), Not(Or(tuple(leaves[10:]))))))
    seen: list[Comparison] = []

    def leaf(c: Comparison) -> Any:
        seen.append(c)
        return tag_exists(ExperimentTag.experiment, Experiment.experiment_id, c)

    compile_filter(node, leaf)
    assert len(seen) == len(leaves)


def test_a_hand_built_ast_deeper_than_the_parser_allows_is_refused() -> None:
    node: Node = LEAVES[0][0]
    for level in range(MAX_DEPTH + 3):
        node = (And if level % 2 else Or)((node, LEAVES[1][0]))
    with pytest.raises(AssertionError, match="nested deeper"):
        compile_filter(node, lambda c: pw.SQL("1 = 1"))


# ------------------------------------------------------------------------------ Prepared


def test_a_prepared_statement_is_rendered_once_per_database_and_size(database: pw.Database) -> None:
    built: list[int] = []

    def build(n: int) -> Any:
        built.append(n)
        return ExperimentTag.insert_many(
            slot_rows(n, 3), fields=[ExperimentTag.experiment, ExperimentTag.key, ExperimentTag.value]
        )

    insert = Prepared(build)
    a, b = (int(Experiment.insert(name=name, artifact_location="file:///x").execute()) for name in "ab")
    database.execute_sql(insert.sql(2), [a, "k1", "v1", b, "k1", "v2"])
    database.execute_sql(insert.sql(2), [a, "k2", "v3", b, "k2", "v4"])
    database.execute_sql(insert.sql(1), [a, "k3", "v5"])
    assert built == [2, 1]
    rows = ExperimentTag.select(ExperimentTag.experiment, ExperimentTag.key, ExperimentTag.value).tuples()
    assert sorted(rows) == sorted(
        [(a, "k1", "v1"), (b, "k1", "v2"), (a, "k2", "v3"), (b, "k2", "v4"), (a, "k3", "v5")]
    )


def test_a_statement_whose_values_come_out_of_slot_order_is_refused(database: pw.Database) -> None:
    swapped = Prepared(
        lambda _n: Experiment.select().where(
            (Experiment.name == slot(1)) & (Experiment.experiment_id == slot(0))
        )
    )
    with pytest.raises(AssertionError, match="slot order"):
        swapped.sql()


# ------------------------------------------------------------------------------ retry_transaction


class Flaky:
    """An operation that fails with ``errors`` (one per run, in order), then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.runs = 0

    def __call__(self) -> str:
        self.runs += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_a_lost_race_is_run_again() -> None:
    operation = Flaky(pw.OperationalError("database is locked"), pw.OperationalError("Deadlock found"))
    assert retry_transaction(operation) == "done"
    assert operation.runs == 3


def test_the_last_error_is_raised_after_the_attempts() -> None:
    operation = Flaky(*[pw.OperationalError(f"could not serialize access {i}") for i in range(3)])
    with pytest.raises(pw.OperationalError, match="access 2"):
        retry_transaction(operation, attempts=3)
    assert operation.runs == 3


@pytest.mark.parametrize(
    "error",
    [
        pw.OperationalError("no such table: run"),
        pw.IntegrityError("UNIQUE constraint failed"),
        ValueError("bug"),
    ],
)
def test_other_errors_are_raised_at_once(error: Exception) -> None:
    operation = Flaky(error)
    with pytest.raises(type(error)):
        retry_transaction(operation)
    assert operation.runs == 1


def test_unique_violations_are_retried_only_when_asked(database: pw.Database) -> None:
    """A real lost race: another writer inserts the name between a get-or-create's read and its
    insert. Retried, the rerun reads the winner back."""
    runs: list[str] = []

    def get_or_create(name: str) -> int:
        runs.append(name)
        found = Experiment.get_or_none(Experiment.name == name)
        if found is not None:
            return int(found.experiment_id)
        if len(runs) == 1:  # the other writer, just after the read
            Experiment.insert(name=name, artifact_location="file:///other").execute()
        return int(Experiment.insert(name=name, artifact_location="file:///mine").execute())

    with pytest.raises(pw.IntegrityError):
        retry_transaction(lambda: get_or_create("first"))
    assert len(runs) == 1
    runs.clear()
    winner = retry_transaction(lambda: get_or_create("second"), unique_violations=True)
    assert len(runs) == 2
    assert Experiment.get_by_id(winner).artifact_location == "file:///other"


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        retry_transaction(Flaky(), attempts=0)
