"""The registry contract through the real server and SDK, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import grpc
import pytest
from registry_helpers import make_source, unique

import keel
from keel import exceptions as kx
from keel.registry.v1 import registry_pb2 as pb
from keel.registry.v1 import registry_pb2_grpc

# ---------------------------------------------------------------------------------------------
# Registered models
# ---------------------------------------------------------------------------------------------


def test_create_get_update_registered_model(client) -> None:
    name = unique("rm")
    created = client.create_registered_model(name, tags={"team": "risk", "n": 3}, description="first")
    assert created.name == name and created.description == "first"
    assert created.tags == {"team": "risk", "n": "3"}
    assert created.latest_versions == [] and created.aliases == {}
    got = client.get_registered_model(name)
    assert got.creation_timestamp == created.creation_timestamp
    updated = client.update_registered_model(name, description="second")
    assert updated.description == "second"
    assert updated.last_updated_timestamp >= created.last_updated_timestamp


def test_second_create_is_already_exists_naming_the_model(client, model_name) -> None:
    with pytest.raises(kx.AlreadyExists) as err:
        client.create_registered_model(model_name)
    assert model_name in err.value.message and err.value.reason == "REGISTERED_MODEL_ALREADY_EXISTS"


def test_model_tags_set_overwrite_delete(client, model_name) -> None:
    client.set_registered_model_tag(model_name, "k", "v1")
    client.set_registered_model_tag(model_name, "k", "v2")
    client.set_registered_model_tag(model_name, "big", "x" * 100_000)
    tags = client.get_registered_model(model_name).tags
    assert tags["k"] == "v2" and len(tags["big"]) == 100_000
    client.delete_registered_model_tag(model_name, "k")
    assert "k" not in client.get_registered_model(model_name).tags
    with pytest.raises(kx.NotFound) as err:
        client.delete_registered_model_tag(model_name, "k")
    assert err.value.reason == "TAG_NOT_FOUND"


def test_rename_moves_versions_aliases_and_history(client, model_name, versions) -> None:
    versions(2)
    client.set_registered_model_alias(model_name, "champion", 2)
    client.transition_model_version_stage(model_name, 1, "Staging")
    location = client.get_model_version_download_uri(model_name, 1)
    new_name = unique("renamed")
    renamed = client.rename_registered_model(model_name, new_name)
    assert renamed.name == new_name and renamed.aliases == {"champion": "2"}
    assert client.get_model_version_by_alias(new_name, "champion").version == "2"
    assert client.get_model_version(new_name, 1).current_stage == "Staging"
    # Files are stored by model id: a rename does not move them.
    assert client.get_model_version_download_uri(new_name, 1) == location
    assert {e.name for e in client.list_model_history(new_name)} == {new_name}
    with pytest.raises(kx.NotFound):
        client.get_registered_model(model_name)
    assert client.resolve_model_uri(f"models:/{new_name}@champion") == client.get_model_version_download_uri(
        new_name, 2
    )


def test_rename_to_a_taken_name_is_already_exists(client, model_name) -> None:
    other = unique("other")
    client.create_registered_model(other)
    with pytest.raises(kx.AlreadyExists) as err:
        client.rename_registered_model(model_name, other)
    assert other in err.value.message
    assert client.get_registered_model(model_name).name == model_name


def test_delete_registered_model_deletes_versions_and_files(client, model_name, versions, tmp_path) -> None:
    versions(2)
    location = client.get_model_version_download_uri(model_name, 1)
    client.delete_registered_model(model_name)
    with pytest.raises(kx.NotFound):
        client.get_registered_model(model_name)
    assert list(client.search_model_versions(f"name = '{model_name}'")) == []
    with pytest.raises(kx.NotFound):
        keel.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp_path))
    # The name is free again; a new model starts at version 1.
    client.create_registered_model(model_name)
    assert client.create_model_version(model_name, make_source(client).uri).version == "1"


def test_search_registered_models_filters_order_and_pages(client) -> None:
    prefix = unique("srch")
    names = [f"{prefix}-{c}" for c in ("a", "B", "c", "d")]
    for i, n in enumerate(names):
        client.create_registered_model(n, tags={"team": "risk" if i % 2 else "vision", "idx": str(i)})
    like = client.search_registered_models(f"name LIKE '{prefix}-%'")
    assert [m.name for m in like] == sorted(names)
    assert [
        m.name for m in client.search_registered_models(f"name LIKE '{prefix}-b'")
    ] == []  # LIKE is case-sensitive
    assert [m.name for m in client.search_registered_models(f"name ILIKE '{prefix}-b'")] == [names[1]]
    assert [m.name for m in client.search_registered_models(f"name = '{names[2]}'")] == [names[2]]
    risk = client.search_registered_models(f"name LIKE '{prefix}%' AND tags.team = 'risk'")
    assert {m.name for m in risk} == {names[1], names[3]}
    either = client.search_registered_models(
        f"name = '{names[0]}' OR (name LIKE '{prefix}%' AND tags.idx = '3')"
    )
    assert {m.name for m in either} == {names[0], names[3]}
    desc = client.search_registered_models(f"name LIKE '{prefix}%'", order_by=["name DESC"])
    assert [m.name for m in desc] == sorted(names, reverse=True)
    client.update_registered_model(names[0], description="touched")
    recent = client.search_registered_models(
        f"name LIKE '{prefix}%'", order_by=["last_updated_timestamp DESC"]
    )
    assert recent[0].name == names[0]
    # Pages of 3 then 1, continuing from the token.
    first = client.search_registered_models(f"name LIKE '{prefix}%'", max_results=3)
    assert len(first) == 3 and first.token
    rest = client.search_registered_models(f"name LIKE '{prefix}%'", max_results=3, page_token=first.token)
    assert [m.name for m in [*first, *rest]] == sorted(names) and rest.token is None


def test_registered_model_carries_latest_versions_and_aliases(client, model_name, versions) -> None:
    versions(4)
    client.transition_model_version_stage(model_name, 1, "Production")
    client.transition_model_version_stage(model_name, 2, "Staging")
    client.set_registered_model_alias(model_name, "champion", 1)
    model = client.get_registered_model(model_name)
    assert {v.current_stage: v.version for v in model.latest_versions} == {
        "None": "4",
        "Staging": "2",
        "Production": "1",
    }
    assert model.aliases == {"champion": "1"}
    listed = client.search_registered_models(f"name = '{model_name}'")[0]
    assert listed.latest_versions == model.latest_versions


# ---------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------


def test_create_model_version_snapshot_ready(client, model_name, source, tmp_path) -> None:
    mv = client.create_model_version(
        model_name,
        source.uri,
        run_id=source.run_id,
        tags={"sem_ver": "1.0.0"},
        description="d",
        run_link="http://x",
    )
    assert mv.version == "1" and mv.status == "READY" and mv.status_message == ""
    assert mv.current_stage == "None" and mv.source == source.uri and mv.run_id == source.run_id
    assert mv.tags == {"sem_ver": "1.0.0"} and mv.description == "d" and mv.run_link == "http://x"
    location = client.get_model_version_download_uri(model_name, 1)
    assert location == mv.storage_location and "/_registry/" in location
    local = keel.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp_path))
    assert sorted(p.name for p in __import__("pathlib").Path(local).iterdir()) == ["MLmodel", "weights.bin"]


def test_run_id_is_taken_from_a_runs_source(client, model_name, source) -> None:
    assert client.create_model_version(model_name, source.uri).run_id == source.run_id


def test_numbers_increase_and_are_never_reused(client, model_name, versions) -> None:
    assert versions(3) == ["1", "2", "3"]
    client.delete_model_version(model_name, 3)
    with pytest.raises(kx.NotFound):
        client.get_model_version(model_name, 3)
    assert versions(1) == ["4"]


def test_request_id_returns_the_first_result(client, model_name, source) -> None:
    first = client.create_model_version(model_name, source.uri, request_id="req-1")
    again = client.create_model_version(model_name, source.uri, request_id="req-1", description="ignored")
    assert again.version == first.version == "1" and again.description == ""
    assert client.create_model_version(model_name, source.uri, request_id="req-2").version == "2"


def test_register_model_creates_the_model_when_missing(client, source) -> None:
    name = unique("fluent")
    v1 = keel.register_model(source.uri, name, tags={"k": "v"})
    v2 = keel.register_model(source.uri, name)
    assert (v1.version, v2.version) == ("1", "2") and v1.tags == {"k": "v"} and v1.status == "READY"
    assert v1.run_id == source.run_id


def test_register_from_models_uri_copies_that_version(client, model_name, versions) -> None:
    versions(1)
    client.set_registered_model_alias(model_name, "champion", 1)
    target = unique("copy")
    client.create_registered_model(target)
    mv = client.create_model_version(target, f"models:/{model_name}@champion")
    assert mv.status == "READY" and mv.source == f"models:/{model_name}@champion"
    assert mv.storage_location != client.get_model_version_download_uri(model_name, 1)


def test_update_and_tag_versions(client, model_name, versions) -> None:
    versions(1)
    assert (
        client.update_model_version(model_name, "1", description="SimpleCNN lr=0.001").description
        == "SimpleCNN lr=0.001"
    )
    client.set_model_version_tag(model_name, 1, "validated", True)
    client.set_model_version_tag(model_name, 1, "validated", "yes")
    assert client.get_model_version(model_name, 1).tags == {"validated": "yes"}
    client.delete_model_version_tag(model_name, 1, "validated")
    assert client.get_model_version(model_name, 1).tags == {}
    with pytest.raises(kx.NotFound) as err:
        client.delete_model_version_tag(model_name, 1, "validated")
    assert err.value.reason == "TAG_NOT_FOUND"


def test_search_model_versions(client, model_name, versions) -> None:
    versions(5)
    other = make_source(client)
    client.create_model_version(model_name, other.uri)  # version 6, another run
    client.set_model_version_tag(model_name, 2, "env", "gpu")
    got = client.search_model_versions(f"name = '{model_name}'")
    assert [v.version for v in got] == ["6", "5", "4", "3", "2", "1"]  # newest first by default
    assert [v.version for v in client.search_model_versions(f"run_id = '{other.run_id}'")] == ["6"]
    assert [
        v.version for v in client.search_model_versions(f"name = '{model_name}' AND tags.env = 'gpu'")
    ] == ["2"]
    assert [
        v.version for v in client.search_model_versions(f"name = '{model_name}' AND version_number > 3")
    ] == ["6", "5", "4"]
    in_list = client.search_model_versions(
        f"name = '{model_name}' AND version_number IN (1, 3)", order_by=["version_number ASC"]
    )
    assert [v.version for v in in_list] == ["1", "3"]
    either = client.search_model_versions(
        f"name = '{model_name}' AND (version_number = 1 OR tags.env = 'gpu')"
    )
    assert sorted(v.version for v in either) == ["1", "2"]
    assert [
        v.version
        for v in client.search_model_versions(
            f"name = '{model_name}' AND source_path LIKE 'runs:/{other.run_id}%'"
        )
    ] == ["6"]
    first = client.search_model_versions(
        f"name = '{model_name}'", max_results=4, order_by=["version_number ASC"]
    )
    assert [v.version for v in first] == ["1", "2", "3", "4"] and first.token
    rest = client.search_model_versions(
        f"name = '{model_name}'", max_results=4, order_by=["version_number ASC"], page_token=first.token
    )
    assert [v.version for v in rest] == ["5", "6"] and rest.token is None


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def test_transition_is_case_insensitive_and_canonical(client, model_name, versions) -> None:
    versions(1)
    for given, canonical in (
        ("staging", "Staging"),
        ("PRODUCTION", "Production"),
        ("archived", "Archived"),
        ("none", "None"),
    ):
        assert client.transition_model_version_stage(model_name, 1, given).current_stage == canonical


def test_archive_existing_versions(client, model_name, versions) -> None:
    versions(3)
    client.transition_model_version_stage(model_name, 1, "Production")
    client.transition_model_version_stage(model_name, 2, "Production")
    client.transition_model_version_stage(model_name, 3, "Production", archive_existing_versions=True)
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name = '{model_name}'")}
    assert stages == {"1": "Archived", "2": "Archived", "3": "Production"}
    assert [v.version for v in client.get_latest_versions(model_name, ["production"])] == ["3"]


def test_get_latest_versions(client, model_name, versions) -> None:
    versions(4)
    client.transition_model_version_stage(model_name, 1, "Staging")
    client.transition_model_version_stage(model_name, 2, "Staging")
    client.transition_model_version_stage(model_name, 3, "Archived")
    latest = client.get_latest_versions(model_name)
    assert [(v.current_stage, v.version) for v in latest] == [
        ("None", "4"),
        ("Staging", "2"),
        ("Archived", "3"),
    ]
    assert [v.version for v in client.get_latest_versions(model_name, ["Staging"])] == ["2"]
    assert client.get_latest_versions(model_name, ["Production"]) == []


# ---------------------------------------------------------------------------------------------
# Aliases and history
# ---------------------------------------------------------------------------------------------


def test_aliases_set_move_get_delete(client, model_name, versions) -> None:
    versions(2)
    assert client.set_registered_model_alias(model_name, "champion", 1).aliases == ["champion"]
    client.set_registered_model_alias(model_name, "champion", "2")  # moves it
    assert client.get_model_version_by_alias(model_name, "champion").version == "2"
    assert client.get_model_version(model_name, 1).aliases == []
    client.delete_registered_model_alias(model_name, "champion")
    with pytest.raises(kx.NotFound) as err:
        client.get_model_version_by_alias(model_name, "champion")
    assert err.value.reason == "ALIAS_NOT_FOUND" and "champion" in err.value.message


def test_alias_compare_and_set(client, model_name, versions) -> None:
    versions(3)
    client.set_registered_model_alias(model_name, "prod", 1, expected_version=0)  # create only if absent
    client.set_registered_model_alias(model_name, "prod", 2, expected_version=1)
    with pytest.raises(kx.Aborted) as err:  # a second deployer still believes it is at 1
        client.set_registered_model_alias(model_name, "prod", 3, expected_version=1)
    assert err.value.reason == "ALIAS_VERSION_MISMATCH" and err.value.metadata["current_version"] == "2"
    with pytest.raises(kx.Aborted):
        client.set_registered_model_alias(model_name, "prod", 3, expected_version=0)
    assert client.get_model_version_by_alias(model_name, "prod").version == "2"


def test_deleting_a_version_deletes_its_aliases(client, model_name, versions) -> None:
    versions(2)
    client.set_registered_model_alias(model_name, "champion", 2)
    client.delete_model_version(model_name, 2)
    assert client.get_registered_model(model_name).aliases == {}
    assert client.list_model_history(model_name)[0].event_type == "ALIAS_DELETED"


def test_history_records_who_when_from_to(client, model_name, versions, monkeypatch) -> None:
    versions(2)
    monkeypatch.setenv("KEEL_USER", "alice")
    client.transition_model_version_stage(model_name, 1, "Production")
    monkeypatch.setenv("KEEL_USER", "bob")
    client.set_registered_model_alias(model_name, "champion", 1)
    client.set_registered_model_alias(model_name, "champion", 2)
    client.transition_model_version_stage(model_name, 2, "Production", archive_existing_versions=True)
    client.delete_registered_model_alias(model_name, "champion")
    events = client.list_model_history(model_name)
    summary = [
        (e.event_type, e.version, e.from_stage, e.to_stage, e.alias, e.from_version, e.actor) for e in events
    ]
    assert summary == [
        ("ALIAS_DELETED", "", "", "", "champion", "2", "bob"),
        ("STAGE_TRANSITION", "1", "Production", "Archived", "", "", "bob"),
        ("STAGE_TRANSITION", "2", "None", "Production", "", "", "bob"),
        ("ALIAS_SET", "2", "", "", "champion", "1", "bob"),
        ("ALIAS_SET", "1", "", "", "champion", "", "bob"),
        ("STAGE_TRANSITION", "1", "None", "Production", "", "", "alice"),
    ]
    times = [e.timestamp for e in events]
    assert times == sorted(times, reverse=True) and all(t > 0 for t in times)


def test_history_pages(client, keel_server, model_name, versions) -> None:
    versions(1)
    for stage in ("Staging", "Production", "Archived", "None", "Staging"):
        client.transition_model_version_stage(model_name, 1, stage)
    stub = registry_pb2_grpc.ModelRegistryServiceStub(
        grpc.insecure_channel(keel_server.uri.removeprefix("grpc://"))
    )
    seen, token = [], ""
    while True:
        page = stub.ListModelHistory(
            pb.ListModelHistoryRequest(name=model_name, page_size=2, page_token=token)
        )
        seen.extend(e.to_stage for e in page.events)
        token = page.next_page_token
        if not token:
            break
    assert seen == ["Staging", "None", "Archived", "Production", "Staging"]


# ---------------------------------------------------------------------------------------------
# models:/ URIs
# ---------------------------------------------------------------------------------------------


def test_resolve_model_uri_every_form(client, model_name, versions) -> None:
    versions(3)
    client.transition_model_version_stage(model_name, 2, "Production")
    client.set_registered_model_alias(model_name, "champion", 1)
    where = {n: client.get_model_version_download_uri(model_name, n) for n in (1, 2, 3)}
    assert client.resolve_model_uri(f"models:/{model_name}/2") == where[2]
    assert client.resolve_model_uri(f"models:/{model_name}/latest") == where[3]
    assert client.resolve_model_uri(f"models:/{model_name}/LATEST") == where[3]
    assert client.resolve_model_uri(f"models:/{model_name}/production") == where[2]
    assert client.resolve_model_uri(f"models:/{model_name}@champion") == where[1]
    assert client.resolve_model_version(f"models:/{model_name}/Production").version == "2"
