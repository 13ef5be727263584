"""Bad input: every registry error with its code, reason and a message that says what to fix."""

from __future__ import annotations

import grpc
import pytest
from registry_helpers import make_source, unique

from keel import exceptions as kx
from keel.registry.v1 import registry_pb2 as pb
from keel.registry.v1 import registry_pb2_grpc


@pytest.fixture()
def stub(keel_server) -> registry_pb2_grpc.ModelRegistryServiceStub:  # type: ignore[no-untyped-def]
    """The raw gRPC stub, for requests the SDK would refuse before sending."""
    channel = grpc.insecure_channel(keel_server.uri.removeprefix("grpc://"))
    yield registry_pb2_grpc.ModelRegistryServiceStub(channel)
    channel.close()


def _status(call, request) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=30)
    return err.value.code(), err.value.details()


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("", "name is empty"),
        ("   ", "name is empty"),
        ("a" * 257, "limit is 256"),
        ("team/model", "contains '/'"),
        ("m@x", "contains '@'"),
    ],
)
def test_bad_model_names(client, name: str, needle: str) -> None:
    with pytest.raises(kx.InvalidArgument) as err:
        client.create_registered_model(name)
    assert (
        err.value.reason == "INVALID_MODEL_NAME" and needle in err.value.message and err.value.field == "name"
    )


def test_unknown_model_is_not_found_naming_it(client) -> None:
    name = unique("ghost")
    for call in (
        lambda: client.get_registered_model(name),
        lambda: client.update_registered_model(name, "d"),
        lambda: client.rename_registered_model(name, unique("x")),
        lambda: client.delete_registered_model(name),
        lambda: client.set_registered_model_tag(name, "k", "v"),
        lambda: client.create_model_version(name, "runs:/abc/model"),
        lambda: client.get_latest_versions(name),
        lambda: client.list_model_history(name),
        lambda: client.resolve_model_uri(f"models:/{name}/1"),
    ):
        with pytest.raises(kx.NotFound) as err:
            call()
        assert err.value.reason == "REGISTERED_MODEL_NOT_FOUND" and f"'{name}'" in err.value.message


def test_unknown_and_invalid_versions(client, stub, model_name, versions) -> None:
    versions(1)
    with pytest.raises(kx.NotFound) as err:
        client.get_model_version(model_name, 7)
    assert err.value.reason == "MODEL_VERSION_NOT_FOUND" and "version 7" in err.value.message
    code, details = _status(stub.GetModelVersion, pb.GetModelVersionRequest(name=model_name, version=0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and ">= 1" in details
    with pytest.raises(kx.InvalidArgument) as local:  # refused by the SDK before sending
        client.get_model_version(model_name, "v1")
    assert local.value.reason == "INVALID_VERSION"


def test_unknown_stage_lists_the_valid_ones(client, model_name, versions) -> None:
    versions(1)
    with pytest.raises(kx.InvalidArgument) as err:
        client.transition_model_version_stage(model_name, 1, "Prod")
    assert err.value.reason == "INVALID_STAGE" and err.value.field == "stage"
    assert "None, Staging, Production, Archived" in err.value.message
    with pytest.raises(kx.InvalidArgument) as latest:
        client.get_latest_versions(model_name, ["QA"])
    assert latest.value.reason == "INVALID_STAGE"


def test_archive_existing_only_with_staging_or_production(client, model_name, versions) -> None:
    versions(1)
    for stage in ("Archived", "None"):
        with pytest.raises(kx.InvalidArgument) as err:
            client.transition_model_version_stage(model_name, 1, stage, archive_existing_versions=True)
        assert err.value.reason == "INVALID_ARCHIVE_EXISTING" and "Staging or Production" in err.value.message


@pytest.mark.parametrize(
    ("alias", "reason"),
    [("latest", "RESERVED_ALIAS"), ("LATEST", "RESERVED_ALIAS"), ("v3", "RESERVED_ALIAS"), ("V12", "RESERVED_ALIAS"),
     ("has space", "INVALID_ALIAS"), ("a/b", "INVALID_ALIAS"), ("x" * 256, "INVALID_ALIAS")],
)  # fmt: skip
def test_bad_aliases(client, model_name, versions, alias: str, reason: str) -> None:
    versions(1)
    with pytest.raises(kx.InvalidArgument) as err:
        client.set_registered_model_alias(model_name, alias, 1)
    assert err.value.reason == reason and err.value.field == "alias"


def test_alias_errors(client, model_name, versions) -> None:
    versions(2)
    with pytest.raises(kx.NotFound) as missing:
        client.delete_registered_model_alias(model_name, "nope")
    assert missing.value.reason == "ALIAS_NOT_FOUND" and "'nope'" in missing.value.message
    with pytest.raises(kx.NotFound) as no_version:
        client.set_registered_model_alias(model_name, "champion", 9)
    assert no_version.value.reason == "MODEL_VERSION_NOT_FOUND"
    client.set_registered_model_alias(model_name, "champion", 1)
    with pytest.raises(kx.Aborted) as moved:
        client.set_registered_model_alias(model_name, "champion", 2, expected_version=2)
    assert "points at version 1" in moved.value.message and moved.value.field == "expected_version"


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("", "v", "tag key is empty"),
        ("k" * 251, "v", "limit is 250"),
        ("k", "v" * 100_001, "limit is 100000"),
    ],
)
def test_bad_tags(client, model_name, versions, key: str, value: str, needle: str) -> None:
    versions(1)
    for call in (
        lambda: client.set_registered_model_tag(model_name, key, value),
        lambda: client.set_model_version_tag(model_name, 1, key, value),
        lambda: client.create_registered_model(unique("t"), tags={key: value}),
    ):
        with pytest.raises(kx.InvalidArgument) as err:
            call()
        assert err.value.reason == "INVALID_TAG" and needle in err.value.message


def test_missing_tags_are_not_found(client, model_name, versions) -> None:
    versions(1)
    with pytest.raises(kx.NotFound, match="has no tag 'k'"):
        client.delete_registered_model_tag(model_name, "k")
    with pytest.raises(kx.NotFound, match="has no tag 'k'"):
        client.delete_model_version_tag(model_name, 1, "k")


def test_bad_sources_burn_no_number(client, keel_server, model_name, tmp_path) -> None:
    cases = [
        ("", kx.InvalidArgument, "INVALID_SOURCE"),
        ("runs:/0123456789abcdef0123456789abcdef/model", kx.NotFound, "RUN_NOT_FOUND"),
        ("s3://elsewhere/model", kx.InvalidArgument, "INVALID_ARTIFACT_URI"),
        (f"file://{tmp_path}/outside", kx.InvalidArgument, "SOURCE_OUTSIDE_STORE"),
        (make_source(client).uri.replace("/model", "/missing"), kx.NotFound, "SOURCE_NOT_FOUND"),
        (f"models:/{model_name}/1", kx.NotFound, "MODEL_VERSION_NOT_FOUND"),
        ("models:/", kx.InvalidArgument, "INVALID_MODEL_URI"),
    ]
    for source, error, reason in cases:
        with pytest.raises(error) as err:
            client.create_model_version(model_name, source)
        assert err.value.reason == reason, (source, err.value)
    # None of the failures consumed a version number.
    assert client.create_model_version(model_name, make_source(client).uri).version == "1"


def test_request_id_too_long(client, model_name, source) -> None:
    with pytest.raises(kx.InvalidArgument) as err:
        client.create_model_version(model_name, source.uri, request_id="r" * 65)
    assert err.value.reason == "INVALID_REQUEST_ID" and "limit is 64" in err.value.message


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("models:/", "nothing after"),
        ("models://host/m/1", "not a host part"),
        ("models:/m", "no version, stage or alias"),
        ("models:/m/1/2", "too many path parts"),
        ("models:/m/0", "not a positive number"),
        ("models:/m/QA", "neither a version number"),
        ("models:/m@", "alias after '@' is empty"),
        ("runs:/x/model", "scheme is not 'models:'"),
    ],
)
def test_malformed_models_uris(client, uri: str, needle: str) -> None:
    with pytest.raises(kx.InvalidArgument) as err:
        client.resolve_model_uri(uri)
    assert err.value.reason == "INVALID_MODEL_URI" and needle in err.value.message


def test_models_uri_names_the_part_that_failed(client, model_name, versions) -> None:
    versions(1)
    with pytest.raises(kx.NotFound) as stage:
        client.resolve_model_uri(f"models:/{model_name}/Production")
    assert stage.value.reason == "NO_VERSION_IN_STAGE" and "stage 'Production'" in stage.value.message
    with pytest.raises(kx.NotFound) as alias:
        client.resolve_model_uri(f"models:/{model_name}@champion")
    assert alias.value.reason == "ALIAS_NOT_FOUND" and "'champion'" in alias.value.message
    with pytest.raises(kx.NotFound) as version:
        client.resolve_model_uri(f"models:/{model_name}/5")
    assert version.value.reason == "MODEL_VERSION_NOT_FOUND"
    empty = unique("empty")
    client.create_registered_model(empty)
    with pytest.raises(kx.NotFound) as latest:
        client.resolve_model_uri(f"models:/{empty}/latest")
    assert latest.value.reason == "NO_READY_VERSION"


def test_bad_filters_order_and_paging(client, stub) -> None:
    with pytest.raises(kx.InvalidArgument) as bad_filter:
        client.search_model_versions("name = 'x' AND metrics.rmse < 1")
    assert bad_filter.value.reason == "INVALID_FILTER" and "position 15" in bad_filter.value.message
    with pytest.raises(kx.InvalidArgument) as bad_op:
        client.search_registered_models("version_number > 3")
    assert bad_op.value.reason == "INVALID_FILTER"
    with pytest.raises(kx.InvalidArgument) as bad_order:
        client.search_registered_models(order_by=["run_id ASC"])
    assert bad_order.value.reason == "INVALID_ORDER_BY"
    code, details = _status(stub.SearchModelVersions, pb.SearchModelVersionsRequest(page_size=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in details
    code, details = _status(
        stub.SearchRegisteredModels, pb.SearchRegisteredModelsRequest(page_token="garbage")
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in details
    token = stub.SearchRegisteredModels(pb.SearchRegisteredModelsRequest(page_size=1)).next_page_token
    if token:  # a token of one query cannot be replayed against another
        code, details = _status(
            stub.SearchRegisteredModels,
            pb.SearchRegisteredModelsRequest(filter="name = 'x'", page_token=token),
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "different query" in details


def test_failed_registration_is_recorded_and_refused_for_promotion(
    client, keel_server, model_name, source, monkeypatch
) -> None:
    """A copy that fails leaves a FAILED_REGISTRATION version with the reason, which cannot be
    promoted, aliased or loaded."""
    app = keel_server.running.app
    store = app.artifact_store

    def broken_copy(src: str, dst: str) -> tuple[int, int]:
        raise OSError("disk full")

    monkeypatch.setattr(store, "copy_tree", broken_copy)
    mv = client.create_model_version(model_name, source.uri)
    monkeypatch.undo()
    assert mv.status == "FAILED_REGISTRATION" and "disk full" in mv.status_message
    assert client.get_model_version(model_name, 1).status == "FAILED_REGISTRATION"
    with pytest.raises(kx.FailedPrecondition) as promote:
        client.transition_model_version_stage(model_name, 1, "Production")
    assert promote.value.reason == "MODEL_VERSION_NOT_READY"
    with pytest.raises(kx.FailedPrecondition):
        client.set_registered_model_alias(model_name, "champion", 1)
    with pytest.raises(kx.FailedPrecondition) as load:
        client.resolve_model_uri(f"models:/{model_name}/1")
    assert "disk full" in load.value.message
    # It still counts: the next version is 2, and latest skips the failed one.
    assert client.create_model_version(model_name, source.uri).version == "2"
    assert client.resolve_model_version(f"models:/{model_name}/latest").version == "2"
