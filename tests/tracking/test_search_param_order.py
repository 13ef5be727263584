"""SearchRuns ordered by one param or one tag: the plan that walks the (key, value, run_id) index
(migration 7, SQLite) must give the order of the general plan (runs with the key by value, ties
by run_id, then runs without it by run_id; both in the key's direction) and pages that join up,
on every backend."""

from __future__ import annotations

import base64
import json

import pytest

import keel
from keel.entities import Param, RunTag, ViewType
from keel.exceptions import InvalidArgument

# Lowercase letters only, so that every backend's collation orders them as Python does
# (MariaDB's default collation ignores case; PostgreSQL's may be linguistic).
VALUES = ["b", "b", "b", "a", "aa", "c", "", "z" * 6000, None, None, None, None]


@pytest.fixture()
def runs(client: keel.Client, experiment_id: str) -> dict[str, str | None]:
    """Run id -> the value of param ``p`` and tag ``t`` (None: the run has neither), with three
    ties, an empty value, a 6,000-character one and four runs without the key."""
    values: dict[str, str | None] = {}
    for i, value in enumerate(VALUES):
        run_id = client.create_run(experiment_id, run_name=f"run-{i}", start_time=1000 + i).info.run_id
        keyed = value is not None
        client.log_batch(
            run_id,
            params=[Param("p", value)] if keyed else [Param("other", "x")],
            tags=[RunTag("t", value), RunTag("even", str(i % 2 == 0))]
            if keyed
            else [RunTag("even", str(i % 2 == 0))],
        )
        if i % 3 == 0:
            client.set_terminated(run_id, status="FINISHED")
        values[run_id] = value
    return values


def _expected(values: dict[str, str | None], ascending: bool) -> list[str]:
    present = sorted(((v, r) for r, v in values.items() if v is not None), reverse=not ascending)
    missing = sorted((r for r, v in values.items() if v is None), reverse=not ascending)
    return [r for _, r in present] + missing


def _all(client: keel.Client, eids: list[str], order: list[str], filter_string: str = "", size: int = 1000,
         view: int = ViewType.ACTIVE_ONLY) -> list[str]:  # fmt: skip
    """Every run of the search, following page tokens (bounded)."""
    seen: list[str] = []
    token = None
    for _ in range(200):
        page = client.search_runs(
            eids, filter_string, view, max_results=size, order_by=order, page_token=token
        )
        seen.extend(r.info.run_id for r in page)
        token = page.token
        if not token:
            return seen
    raise AssertionError("more than 200 pages")


def _general(order: str) -> list[str]:
    """The same order through the general plan: run_id as a second key adds nothing to it."""
    return [order, f"attributes.run_id {order.split()[-1]}"]


@pytest.mark.parametrize("order", ["params.p ASC", "params.p DESC", "tags.t ASC", "tags.t DESC"])
def test_order_and_pages_match_the_general_plan(
    client: keel.Client, experiment_id: str, runs: dict[str, str | None], order: str
) -> None:
    expected = _expected(runs, order.endswith("ASC"))
    assert _all(client, [experiment_id], [order]) == expected
    assert _all(client, [experiment_id], _general(order)) == expected
    for size in (1, 2, 3, 5, 8, 9):  # 8 runs hold the key: pages end on and across the boundary
        assert _all(client, [experiment_id], [order], size=size) == expected, size


@pytest.mark.parametrize("order", ["params.p ASC", "tags.t DESC"])
@pytest.mark.parametrize(
    "filter_string",
    [
        "attributes.status = 'FINISHED'",
        "tags.even = 'True' OR params.p = 'b'",
        "params.p LIKE 'b%'",
        "params.p IS NULL",
        "params.p = 'nothing'",
    ],
)
def test_order_with_a_filter(client: keel.Client, experiment_id: str, runs: dict[str, str | None], order: str,
                             filter_string: str) -> None:  # fmt: skip
    general = _all(client, [experiment_id], _general(order), filter_string)
    assert _all(client, [experiment_id], [order], filter_string) == general
    assert _all(client, [experiment_id], [order], filter_string, size=2) == general


def test_views_and_several_experiments(
    client: keel.Client, experiment_id: str, runs: dict[str, str | None]
) -> None:
    deleted = next(r for r, v in runs.items() if v == "a")
    client.delete_run(deleted)
    active = {r: v for r, v in runs.items() if r != deleted}
    assert _all(client, [experiment_id], ["params.p ASC"], size=3) == _expected(active, True)
    assert _all(client, [experiment_id], ["params.p ASC"], view=ViewType.DELETED_ONLY) == [deleted]
    assert _all(client, [experiment_id], ["params.p DESC"], view=ViewType.ALL, size=4) == _expected(
        runs, False
    )

    other = str(client.create_experiment(f"other-{deleted[:8]}"))
    more: dict[str, str | None] = {}
    for value in ("ab", None, "b"):
        run_id = client.create_run(other).info.run_id
        if value is not None:
            client.log_param(run_id, "p", value)
        more[run_id] = value
    both = {**active, **more}
    assert _all(client, [experiment_id, other], ["params.p ASC"], size=4) == _expected(both, True)
    assert _all(client, [other], ["tags.t ASC"]) == _expected(dict.fromkeys(more), True)  # no run has the tag


def _forge(token: str, cursor: list[object]) -> str:
    raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw["c"] = cursor
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


def test_page_tokens(client: keel.Client, experiment_id: str, runs: dict[str, str | None]) -> None:
    first = client.search_runs([experiment_id], order_by=["params.p ASC"], max_results=2)
    assert first.token
    # The cursor is the general plan's: [rank, value, run_id], rank 1 (-1 descending) for runs without the key.
    missing = sorted(r for r, v in runs.items() if v is None)
    resumed = client.search_runs(
        [experiment_id], order_by=["params.p ASC"], page_token=_forge(first.token, [1, "", missing[0]])
    )
    assert [r.info.run_id for r in resumed] == missing[1:]
    for bad in ([5, "a", missing[0]], [-1, "a", missing[0]], [0, 3, missing[0]], [0, "a", 7], [True, "a", "x"],
                [0, "a"]):  # fmt: skip
        with pytest.raises(InvalidArgument) as err:
            client.search_runs(
                [experiment_id], order_by=["params.p ASC"], page_token=_forge(first.token, bad)
            )
        assert err.value.reason == "INVALID_PAGE_TOKEN", bad
