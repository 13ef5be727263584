"""SearchRuns: MLflow's filter syntax plus OR/parentheses, ordering with missing keys last,
run views and keyset pagination, on every backend."""

from __future__ import annotations

import math

import pytest

import keel
from keel.entities import Metric, Param, RunTag, ViewType
from keel.exceptions import InvalidArgument


@pytest.fixture()
def runs(client: keel.Client, experiment_id: str) -> dict[str, str]:
    """Five runs with a known spread of metrics, params, tags and statuses."""
    spec = {
        "a": ({"rmse": 0.5, "acc": 0.9}, {"model": "cnn"}, {"team": "vision"}, "FINISHED", 1000),
        "b": ({"rmse": 0.7}, {"model": "rnn"}, {"team": "Vision-2"}, "FINISHED", 2000),
        "c": ({"rmse": 0.9, "acc": 0.1}, {"model": "cnn"}, {"team": "nlp"}, "FAILED", 3000),
        "d": ({"rmse": math.nan}, {"model": "CNN"}, {}, "RUNNING", 4000),
        "e": ({}, {}, {"team": "vision"}, "RUNNING", 5000),
    }
    ids: dict[str, str] = {}
    for name, (metrics, params, tags, status, start) in spec.items():
        run_id = client.create_run(experiment_id, run_name=f"run-{name}", start_time=start).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 1, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        if status != "RUNNING":
            client.set_terminated(run_id, status=status)
        ids[name] = run_id
    return ids


def _names(client: keel.Client, experiment_id: str, filter_string: str = "", order_by: list[str] | None = None,
           view: int = ViewType.ACTIVE_ONLY) -> list[str]:  # fmt: skip
    page = client.search_runs([experiment_id], filter_string, view, order_by=order_by)
    return [r.info.run_name.removeprefix("run-") for r in page]


def test_filters(client: keel.Client, experiment_id: str, runs: dict[str, str]) -> None:
    by_name = ["attributes.run_name ASC"]

    def q(f: str) -> list[str]:
        return _names(client, experiment_id, f, by_name)

    assert q("metrics.rmse < 0.8 and params.model = 'cnn' and tags.team LIKE 'vis%'") == ["a"]
    assert q("metrics.rmse < 0.8") == ["a", "b"]
    assert q("metrics.rmse != 0.5") == ["b", "c", "d"]  # NaN is != everything
    assert q("metrics.rmse >= 0.7") == ["b", "c"]
    assert q("params.model = 'cnn'") == ["a", "c"]
    assert q("params.model ILIKE 'cnn'") == ["a", "c", "d"]
    assert q("tags.team LIKE 'vis%'") == ["a", "e"]  # LIKE is case-sensitive everywhere
    assert q("tags.team ILIKE 'vis%'") == ["a", "b", "e"]
    assert q("tags.team IS NULL") == ["d"]
    assert q("params.model IN ('rnn', 'CNN')") == ["b", "d"]
    assert q("params.model NOT IN ('rnn', 'CNN')") == ["a", "c"]
    assert q("attributes.status = 'FINISHED'") == ["a", "b"]
    assert q("attributes.status IN ('FAILED', 'RUNNING')") == ["c", "d", "e"]
    assert q("attributes.run_name = 'run-c'") == ["c"]
    assert q("attributes.start_time >= 3000 AND attributes.start_time < 5000") == ["c", "d"]
    assert q(f"attributes.run_id = '{runs['b']}'") == ["b"]
    assert q("metrics.acc > 0.5 OR (params.model = 'rnn' AND tags.team ILIKE 'vision%')") == ["a", "b"]
    assert q("NOT params.model = 'cnn' AND params.model IS NOT NULL") == ["b", "d"]
    assert q("attributes.end_time IS NULL") == ["d", "e"]


def test_order_by_with_missing_last(client: keel.Client, experiment_id: str, runs: dict[str, str]) -> None:
    # finite values, then NaN, then missing - in both directions
    assert _names(client, experiment_id, order_by=["metrics.rmse ASC"]) == ["a", "b", "c", "d", "e"]
    assert _names(client, experiment_id, order_by=["metrics.rmse DESC"]) == ["c", "b", "a", "d", "e"]
    assert _names(client, experiment_id, order_by=["metrics.acc DESC", "attributes.run_name DESC"]) == [
        "a", "c", "e", "d", "b",
    ]  # fmt: skip
    assert _names(client, experiment_id, order_by=["params.model ASC", "attributes.start_time DESC"]) == [
        "d", "c", "a", "b", "e",
    ]  # fmt: skip
    by_team = _names(client, experiment_id, order_by=["tags.team DESC"])
    assert set(by_team[:2]) == {"a", "e"} and by_team[-1] == "d"  # the rest depends on the collation
    assert _names(client, experiment_id)[0] == "e"  # default: newest first


@pytest.mark.parametrize("order", ["metrics.rmse ASC", "metrics.rmse DESC", "params.model DESC"])
def test_pages_of_one_match_the_full_order(client: keel.Client, experiment_id: str, runs: dict[str, str],
                                           order: str) -> None:  # fmt: skip
    full = [r.info.run_id for r in client.search_runs([experiment_id], order_by=[order])]
    paged: list[str] = []
    token = None
    for _ in range(10):
        page = client.search_runs([experiment_id], order_by=[order], max_results=1, page_token=token)
        paged.extend(r.info.run_id for r in page)
        token = page.token
        if not token:
            break
    assert paged == full and len(full) == 5


def test_views_and_multiple_experiments(client: keel.Client, experiment_id: str, runs: dict[str, str]) -> None:
    client.delete_run(runs["a"])
    assert "a" not in _names(client, experiment_id)
    assert _names(client, experiment_id, view=ViewType.DELETED_ONLY) == ["a"]
    assert len(_names(client, experiment_id, view=ViewType.ALL)) == 5
    other = client.create_experiment(f"other-{runs['a'][:8]}")
    client.create_run(other, run_name="run-z")
    both = client.search_runs([experiment_id, other], order_by=["attributes.run_name ASC"])
    assert [r.info.run_name for r in both][-1] == "run-z" and len(both) == 5


def test_pagination_is_stable_while_runs_are_added(client: keel.Client, experiment_id: str) -> None:
    created = []
    for i in range(25):
        run_id = client.create_run(experiment_id, start_time=10_000 + i).info.run_id
        client.log_metric(run_id, "score", float(i % 7), timestamp=1)
        created.append(run_id)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = client.search_runs([experiment_id], order_by=["metrics.score DESC"], max_results=4, page_token=token)
        seen.extend(r.info.run_id for r in page)
        pages += 1
        # Runs added meanwhile (with a score sorting before the cursor) must not shift pages.
        newcomer = client.create_run(experiment_id, start_time=1).info.run_id
        client.log_metric(newcomer, "score", 100.0)
        token = page.token
        if not token:
            break
    original = [r for r in seen if r in set(created)]
    assert sorted(original) == sorted(created) and len(original) == len(set(original)) == 25
    scores = [client.get_run(r).data.metrics["score"] for r in original]
    assert scores == sorted(scores, reverse=True)
    assert pages >= 7


def test_bad_search_requests(client: keel.Client, experiment_id: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        client.search_runs([experiment_id], "metrics.rmse < 0.8 and params.model == 'cnn'")
    assert err.value.reason == "INVALID_FILTER" and err.value.metadata["position"] == "36"
    assert "position 36" in err.value.message
    with pytest.raises(InvalidArgument, match="position"):
        client.search_runs([experiment_id], "metrics.rmse < 'abc'")
    with pytest.raises(InvalidArgument, match="position"):
        client.search_runs([experiment_id], "(params.a = 'x'")
    with pytest.raises(InvalidArgument) as order_err:
        client.search_runs([experiment_id], order_by=["metrics.rmse SIDEWAYS"])
    assert order_err.value.reason == "INVALID_ORDER_BY"
    with pytest.raises(InvalidArgument):
        client.search_runs([], "")
    with pytest.raises(InvalidArgument):
        client.search_runs([experiment_id], max_results=-5)
    with pytest.raises(InvalidArgument) as token_err:
        client.search_runs([experiment_id], page_token="garbage!")
    assert token_err.value.reason == "INVALID_PAGE_TOKEN"
