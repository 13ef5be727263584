"""Experiments through the real gRPC server and the SDK, on every database backend."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import keel
from keel.entities import ViewType
from keel.exceptions import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound


def _name(prefix: str = "exp") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_create_get_and_default_artifact_location(client: keel.Client, keel_server) -> None:
    name = _name()
    eid = client.create_experiment(name, tags={"team": "vision"})
    exp = client.get_experiment(eid)
    assert (exp.name, exp.lifecycle_stage, exp.tags) == (name, "active", {"team": "vision"})
    assert exp.artifact_location.endswith(f"/artifacts/{eid}")
    assert exp.artifact_location.startswith("file:///")
    assert exp.creation_time > 0 and exp.last_update_time >= exp.creation_time
    assert client.get_experiment_by_name(name) == exp
    assert client.get_experiment_by_name(_name("missing")) is None


def test_explicit_artifact_location_is_kept(client: keel.Client) -> None:
    eid = client.create_experiment(_name(), artifact_location="s3://bucket/some/prefix/")
    assert client.get_experiment(eid).artifact_location == "s3://bucket/some/prefix"
    run = client.create_run(eid)
    assert run.info.artifact_uri == f"s3://bucket/some/prefix/{run.info.run_id}/artifacts"


def test_duplicate_name_is_already_exists(client: keel.Client) -> None:
    name = _name()
    eid = client.create_experiment(name)
    with pytest.raises(AlreadyExists) as err:
        client.create_experiment(name)
    assert err.value.reason == "EXPERIMENT_ALREADY_EXISTS" and eid in err.value.message


def test_bad_names_and_ids(client: keel.Client) -> None:
    with pytest.raises(InvalidArgument, match="must not be empty"):
        client.create_experiment("")
    with pytest.raises(InvalidArgument, match="limit is 500"):
        client.create_experiment("x" * 501)
    client.create_experiment(uuid.uuid4().hex[:12] + "y" * 488)  # exactly at the limit
    with pytest.raises(InvalidArgument) as err:
        client.get_experiment("abc")
    assert err.value.reason == "INVALID_EXPERIMENT_ID"
    with pytest.raises(NotFound) as nf:
        client.get_experiment("987654321")
    assert nf.value.reason == "EXPERIMENT_NOT_FOUND"
    with pytest.raises(InvalidArgument, match="limit is 20000"):
        client.create_experiment(_name(), tags={"k": "v" * 20001})


def test_rename(client: keel.Client) -> None:
    a, b = _name(), _name()
    eid = client.create_experiment(a)
    client.create_experiment(b)
    with pytest.raises(AlreadyExists):
        client.rename_experiment(eid, b)
    new = _name("renamed")
    client.rename_experiment(eid, new)
    assert client.get_experiment(eid).name == new
    assert client.get_experiment_by_name(a) is None
    with pytest.raises(NotFound):
        client.rename_experiment("98765432", _name())


def test_tags_set_overwrite_delete(client: keel.Client, experiment_id: str) -> None:
    client.set_experiment_tag(experiment_id, "owner", "ann")
    client.set_experiment_tag(experiment_id, "owner", "bob")
    assert client.get_experiment(experiment_id).tags == {"owner": "bob"}
    client.delete_experiment_tag(experiment_id, "owner")
    assert client.get_experiment(experiment_id).tags == {}
    with pytest.raises(NotFound):
        client.delete_experiment_tag(experiment_id, "owner")


def test_delete_and_restore_with_runs_and_reserved_name(client: keel.Client) -> None:
    name = _name()
    eid = client.create_experiment(name)
    kept = client.create_run(eid)
    deleted_before = client.create_run(eid)
    client.delete_run(deleted_before.info.run_id)
    client.delete_experiment(eid)
    assert client.get_experiment(eid).lifecycle_stage == "deleted"
    assert client.get_run(kept.info.run_id).info.lifecycle_stage == "deleted"
    # The name stays reserved while the experiment is deleted.
    with pytest.raises(AlreadyExists, match="deleted experiment"):
        client.create_experiment(name)
    with pytest.raises(FailedPrecondition):
        client.get_or_create_experiment(name)
    with pytest.raises(FailedPrecondition):
        client.create_run(eid)
    with pytest.raises(FailedPrecondition):
        client.delete_experiment(eid)
    with pytest.raises(FailedPrecondition):
        client.restore_run(kept.info.run_id)  # experiment first
    client.restore_experiment(eid)
    assert client.get_run(kept.info.run_id).info.lifecycle_stage == "active"
    # A run deleted on its own stays deleted.
    assert client.get_run(deleted_before.info.run_id).info.lifecycle_stage == "deleted"
    with pytest.raises(FailedPrecondition):
        client.restore_experiment(eid)


def test_get_or_create_is_race_free(client: keel.Client) -> None:
    name = _name("race")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: client.get_or_create_experiment(name), range(16)))
    assert len({e.experiment_id for e in results}) == 1
    page = client.search_experiments(filter_string=f"name = '{name}'", view_type=ViewType.ALL)
    assert len(page) == 1


def test_search_filter_order_and_pages(client: keel.Client) -> None:
    prefix = f"srch-{uuid.uuid4().hex[:8]}"
    ids = [client.create_experiment(f"{prefix}-{i}", tags={"team": "cv" if i % 2 else "nlp"}) for i in range(5)]
    got = client.search_experiments(filter_string=f"name LIKE '{prefix}-%' AND tags.team = 'cv'", order_by=["name ASC"])
    assert [e.experiment_id for e in got] == [ids[1], ids[3]]
    got = client.search_experiments(
        filter_string=f"name LIKE '{prefix}-%' AND (tags.team = 'cv' OR name = '{prefix}-0')", order_by=["name DESC"]
    )
    assert [e.experiment_id for e in got] == [ids[3], ids[1], ids[0]]
    # Pages of 2 cover everything exactly once, in order.
    seen: list[str] = []
    token = None
    while True:
        page = client.search_experiments(
            filter_string=f"name LIKE '{prefix}%'", order_by=["name ASC"], max_results=2, page_token=token
        )
        seen.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            break
    assert seen == ids
    client.delete_experiment(ids[0])
    active = client.search_experiments(filter_string=f"name LIKE '{prefix}%'")
    deleted = client.search_experiments(filter_string=f"name LIKE '{prefix}%'", view_type=ViewType.DELETED_ONLY)
    assert ids[0] not in [e.experiment_id for e in active]
    assert [e.experiment_id for e in deleted] == [ids[0]]
    with pytest.raises(InvalidArgument) as err:
        client.search_experiments(filter_string="name LIKE")
    assert err.value.reason == "INVALID_FILTER" and "position" in err.value.metadata
    with pytest.raises(InvalidArgument):
        client.search_experiments(max_results=-1)
