"""Logged models (MLflow 3's LoggedModel) through the real server's gRPC API, on every backend:
create (from a run, or with a holder run), get, status updates, tags, params, delete, search with
paging, the one-model-per-folder rule under concurrency, and bad inputs."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from server_fixtures import running_server

import keel
from keel.auth.v1 import auth_pb2 as apb
from keel.auth.v1 import auth_pb2_grpc
from keel.exceptions import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    KeelError,
    NotFound,
    from_rpc_error,
)
from keel.tracking.v1 import tracking_pb2 as pb
from keel.tracking.v1 import tracking_pb2_grpc

UNKNOWN_MODEL = "m-" + "0" * 32


class Tracking:
    """TrackingService stubs that raise keel's typed errors, as the SDK does (with a token when
    given)."""

    def __init__(self, channel: grpc.Channel, token: str = "") -> None:
        self._stub = tracking_pb2_grpc.TrackingServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None

    def __getattr__(self, method: str) -> Callable[[Any], Any]:
        rpc = getattr(self._stub, method)

        def call(request: Any) -> Any:
            try:
                return rpc(request, metadata=self._metadata, timeout=30)
            except grpc.RpcError as exc:
                raise from_rpc_error(exc) from None

        return call


@pytest.fixture()
def t(keel_server: Any) -> Iterator[Tracking]:
    channel = grpc.insecure_channel(f"127.0.0.1:{keel_server.port}")
    yield Tracking(channel)
    channel.close()


def _tags(*pairs: tuple[str, str]) -> list[pb.LoggedModelTag]:
    return [pb.LoggedModelTag(key=k, value=v) for k, v in pairs]


def _params(*pairs: tuple[str, str]) -> list[pb.LoggedModelParam]:
    return [pb.LoggedModelParam(key=k, value=v) for k, v in pairs]


def _create(t: Tracking, experiment_id: str, **fields: Any) -> pb.LoggedModel:
    return t.CreateLoggedModel(pb.CreateLoggedModelRequest(experiment_id=experiment_id, **fields))


def _search(t: Tracking, experiment_id: str, **fields: Any) -> list[pb.LoggedModel]:
    """Every page of a search (bounded)."""
    models, token = [], ""
    for _ in range(100):
        page = t.SearchLoggedModels(
            pb.SearchLoggedModelsRequest(experiment_ids=[experiment_id], page_token=token, **fields)
        )
        models += list(page.models)
        token = page.next_page_token
        if not token:
            return models
    raise AssertionError("SearchLoggedModels paging did not end")


def test_create_from_a_run_and_get(t: Tracking, client: keel.Client, experiment_id: str) -> None:
    run = client.create_run(experiment_id).info
    model = _create(
        t,
        experiment_id,
        name="model",
        source_run_id=run.run_id,
        model_type="Classifier",
        tags=_tags(("team", "cv"), ("team", "nlp")),  # the last value of a repeated key wins
        params=_params(("alpha", "0.5")),
    )
    assert model.model_id.startswith("m-") and len(model.model_id) == 34
    assert (model.experiment_id, model.name, model.source_run_id, model.run_id) == (
        experiment_id, "model", run.run_id, run.run_id,
    )  # fmt: skip
    assert (model.artifact_path, model.artifact_uri) == ("model", f"{run.artifact_uri}/model")
    assert (model.status, model.model_type) == (pb.LOGGED_MODEL_STATUS_PENDING, "Classifier")
    assert model.lifecycle_stage == pb.LIFECYCLE_STAGE_ACTIVE
    assert {tag.key: tag.value for tag in model.tags} == {"team": "nlp"}
    assert {p.key: p.value for p in model.params} == {"alpha": "0.5"}
    assert model.creation_time > 0 and model.last_updated_time == model.creation_time
    assert t.GetLoggedModel(pb.GetLoggedModelRequest(model_id=model.model_id)) == model


def test_a_model_without_a_run_gets_a_holder_run(t: Tracking, client: keel.Client, experiment_id: str) -> None:
    model = _create(t, experiment_id, name="agent")
    assert model.source_run_id == "" and len(model.run_id) == 32
    holder = client.get_run(model.run_id)
    assert (holder.info.experiment_id, holder.info.run_name, holder.info.status) == (experiment_id, "agent", "FINISHED")
    assert holder.data.tags["mlflow.loggedModelHolder"] == "true"
    assert model.artifact_uri == f"{holder.info.artifact_uri}/agent"
    unnamed = _create(t, experiment_id)
    assert unnamed.name and unnamed.artifact_path == unnamed.name  # generated, as MLflow does
    assert unnamed.run_id != model.run_id


def test_status_updates(t: Tracking, client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    model = _create(t, experiment_id, name="m", source_run_id=run_id)
    ready = t.UpdateLoggedModel(pb.UpdateLoggedModelRequest(model_id=model.model_id, status=pb.LOGGED_MODEL_STATUS_READY))
    assert ready.status == pb.LOGGED_MODEL_STATUS_READY and ready.last_updated_time >= model.last_updated_time
    again = t.UpdateLoggedModel(pb.UpdateLoggedModelRequest(model_id=model.model_id, status=pb.LOGGED_MODEL_STATUS_READY))
    assert again.status == pb.LOGGED_MODEL_STATUS_READY  # a retry succeeds
    for status in (pb.LOGGED_MODEL_STATUS_PENDING, pb.LOGGED_MODEL_STATUS_UNSPECIFIED, 99):
        with pytest.raises(InvalidArgument) as bad:
            t.UpdateLoggedModel(pb.UpdateLoggedModelRequest(model_id=model.model_id, status=status))
        assert bad.value.reason == "INVALID_MODEL_STATUS"
    failed = t.UpdateLoggedModel(
        pb.UpdateLoggedModelRequest(model_id=model.model_id, status=pb.LOGGED_MODEL_STATUS_FAILED, status_message="disk full")
    )
    assert (failed.status, failed.status_message) == (pb.LOGGED_MODEL_STATUS_FAILED, "disk full")
    with pytest.raises(InvalidArgument):
        t.UpdateLoggedModel(
            pb.UpdateLoggedModelRequest(model_id=model.model_id, status=pb.LOGGED_MODEL_STATUS_READY, status_message="x" * 1001)
        )


def test_one_model_per_name_and_run(t: Tracking, client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    first = _create(t, experiment_id, name="model", source_run_id=run_id)
    with pytest.raises(AlreadyExists) as taken:
        _create(t, experiment_id, name="model", source_run_id=run_id)
    assert taken.value.reason == "LOGGED_MODEL_ALREADY_EXISTS" and first.model_id in taken.value.message
    other_run = client.create_run(experiment_id).info.run_id
    assert _create(t, experiment_id, name="model", source_run_id=other_run).run_id == other_run
    # A FAILED model frees its folder; making it READY again then finds the folder taken.
    t.UpdateLoggedModel(pb.UpdateLoggedModelRequest(model_id=first.model_id, status=pb.LOGGED_MODEL_STATUS_FAILED))
    second = _create(t, experiment_id, name="model", source_run_id=run_id)
    with pytest.raises(AlreadyExists):
        t.UpdateLoggedModel(pb.UpdateLoggedModelRequest(model_id=first.model_id, status=pb.LOGGED_MODEL_STATUS_READY))
    # Deleting frees it too.
    t.DeleteLoggedModel(pb.DeleteLoggedModelRequest(model_id=second.model_id))
    assert _create(t, experiment_id, name="model", source_run_id=run_id).artifact_path == "model"


def test_concurrent_creations_of_one_name_in_one_run_leave_one_model(
    t: Tracking, client: keel.Client, experiment_id: str
) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    outcomes: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        try:
            _create(t, experiment_id, name="race", source_run_id=run_id)
            outcome = "ok"
        except AlreadyExists:
            outcome = "taken"
        except KeelError as exc:
            outcome = f"{exc.code.name}: {exc.message}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["ok"] + ["taken"] * 5
    assert len(_search(t, experiment_id, filter=f"source_run_id = '{run_id}'")) == 1


def test_tags(t: Tracking, client: keel.Client, experiment_id: str) -> None:
    model = _create(t, experiment_id, name="tagged", tags=_tags(("a", "1")))
    updated = t.SetLoggedModelTags(pb.SetLoggedModelTagsRequest(model_id=model.model_id, tags=_tags(("a", "2"), ("b", "3"))))
    assert {tag.key: tag.value for tag in updated.tags} == {"a": "2", "b": "3"}
    assert t.SetLoggedModelTags(pb.SetLoggedModelTagsRequest(model_id=model.model_id)).model_id == model.model_id
    t.DeleteLoggedModelTag(pb.DeleteLoggedModelTagRequest(model_id=model.model_id, key="a"))
    got = t.GetLoggedModel(pb.GetLoggedModelRequest(model_id=model.model_id))
    assert {tag.key: tag.value for tag in got.tags} == {"b": "3"}
    with pytest.raises(NotFound) as missing:
        t.DeleteLoggedModelTag(pb.DeleteLoggedModelTagRequest(model_id=model.model_id, key="a"))
    assert missing.value.reason == "TAG_NOT_FOUND"
    for bad_tags, reason in (
        (_tags(("keel.x", "v")), "RESERVED_TAG_KEY"),
        (_tags(("", "v")), "INVALID_KEY"),
        (_tags(("k", "v" * 8001)), "VALUE_TOO_LONG"),
        (_tags(*[(f"k{i}", "v") for i in range(101)]), "BATCH_TOO_LARGE"),
    ):
        with pytest.raises(InvalidArgument) as bad:
            t.SetLoggedModelTags(pb.SetLoggedModelTagsRequest(model_id=model.model_id, tags=bad_tags))
        assert bad.value.reason == reason


def test_params_are_write_once(t: Tracking, client: keel.Client, experiment_id: str) -> None:
    model = _create(t, experiment_id, name="params", params=_params(("lr", "0.1")))
    t.LogLoggedModelParams(pb.LogLoggedModelParamsRequest(model_id=model.model_id, params=_params(("lr", "0.1"), ("depth", "3"))))
    got = t.GetLoggedModel(pb.GetLoggedModelRequest(model_id=model.model_id))
    assert {p.key: p.value for p in got.params} == {"depth": "3", "lr": "0.1"}
    with pytest.raises(InvalidArgument) as changed:
        t.LogLoggedModelParams(pb.LogLoggedModelParamsRequest(model_id=model.model_id, params=_params(("lr", "0.2"))))
    assert changed.value.reason == "PARAM_ALREADY_SET"
    with pytest.raises(InvalidArgument) as conflict:
        t.LogLoggedModelParams(
            pb.LogLoggedModelParamsRequest(model_id=model.model_id, params=_params(("x", "1"), ("x", "2")))
        )
    assert conflict.value.reason == "PARAM_CONFLICT"
    with pytest.raises(InvalidArgument) as too_many:
        _create(t, experiment_id, name="many", params=_params(*[(f"p{i}", "v") for i in range(101)]))
    assert too_many.value.reason == "BATCH_TOO_LARGE"


def test_delete_is_soft(t: Tracking, client: keel.Client, experiment_id: str) -> None:
    model = _create(t, experiment_id, name="gone")
    t.DeleteLoggedModel(pb.DeleteLoggedModelRequest(model_id=model.model_id))
    t.DeleteLoggedModel(pb.DeleteLoggedModelRequest(model_id=model.model_id))  # a no-op the second time
    with pytest.raises(NotFound) as err:
        t.GetLoggedModel(pb.GetLoggedModelRequest(model_id=model.model_id))
    assert err.value.reason == "LOGGED_MODEL_NOT_FOUND"
    deleted = t.GetLoggedModel(pb.GetLoggedModelRequest(model_id=model.model_id, allow_deleted=True))
    assert deleted.lifecycle_stage == pb.LIFECYCLE_STAGE_DELETED
    for call in (
        lambda: t.UpdateLoggedModel(pb.UpdateLoggedModelRequest(model_id=model.model_id, status=pb.LOGGED_MODEL_STATUS_READY)),
        lambda: t.SetLoggedModelTags(pb.SetLoggedModelTagsRequest(model_id=model.model_id, tags=_tags(("a", "1")))),
        lambda: t.DeleteLoggedModelTag(pb.DeleteLoggedModelTagRequest(model_id=model.model_id, key="a")),
        lambda: t.LogLoggedModelParams(pb.LogLoggedModelParamsRequest(model_id=model.model_id, params=_params(("a", "1")))),
    ):
        with pytest.raises(FailedPrecondition) as refused:
            call()
        assert refused.value.reason == "LOGGED_MODEL_DELETED"
    assert model.model_id not in {m.model_id for m in _search(t, experiment_id)}


def test_search_filters_orders_and_pages(t: Tracking, client: keel.Client) -> None:
    experiment_id = str(client.create_experiment(f"search-{uuid.uuid4().hex[:8]}"))
    run_id = client.create_run(experiment_id).info.run_id
    made = []
    for i, name in enumerate(["b-model", "a-model", "c-model", "d-agent", "e-agent"]):
        model = _create(
            t,
            experiment_id,
            name=name,
            source_run_id=run_id if i < 3 else "",
            model_type="agent" if "agent" in name else "classifier",
            tags=_tags(("rank", str(i))),
            params=_params(("size", "big" if i % 2 else "small")),
        )
        made.append(model)
    t.UpdateLoggedModel(pb.UpdateLoggedModelRequest(model_id=made[0].model_id, status=pb.LOGGED_MODEL_STATUS_READY))

    everything = _search(t, experiment_id)
    assert {m.model_id for m in everything} == {m.model_id for m in made}
    order = [(m.creation_time, m.model_id) for m in everything]
    assert order == sorted(order, reverse=True)  # newest first, ties by id

    def names(**fields: Any) -> list[str]:
        return [m.name for m in _search(t, experiment_id, **fields)]

    assert names(filter="name = 'a-model'") == ["a-model"]
    assert names(filter="name LIKE '%-agent'", order_by=["name ASC"]) == ["d-agent", "e-agent"]
    assert names(filter="status = 'READY'") == ["b-model"]
    assert names(filter="attributes.status = 'PENDING'", order_by=["name"]) == ["a-model", "c-model", "d-agent", "e-agent"]
    assert sorted(names(filter=f"source_run_id = '{run_id}'")) == ["a-model", "b-model", "c-model"]
    assert names(filter="model_type = 'agent' AND params.size = 'big'") == ["d-agent"]
    assert names(filter="tags.rank IN ('0', '4')", order_by=["name DESC"]) == ["e-agent", "b-model"]
    assert names(filter="creation_timestamp > 0 AND model_id != 'x'", order_by=["name"])[0] == "a-model"

    # Pages of 2 walk every model exactly once, in the same order as one page.
    paged, token, pages = [], "", 0
    while True:
        page = t.SearchLoggedModels(
            pb.SearchLoggedModelsRequest(experiment_ids=[experiment_id], order_by=["name ASC"], page_size=2, page_token=token)
        )
        paged += [m.name for m in page.models]
        token, pages = page.next_page_token, pages + 1
        assert pages <= 5
        if not token:
            break
    assert paged == sorted(m.name for m in made) and pages == 3

    first = t.SearchLoggedModels(pb.SearchLoggedModelsRequest(experiment_ids=[experiment_id], page_size=1))
    for bad, reason in (
        ({"filter": "metrics.acc > 0.9"}, "INVALID_FILTER"),
        ({"filter": "name = "}, "INVALID_FILTER"),
        ({"filter": "unknown = 'x'"}, "INVALID_FILTER"),
        ({"order_by": ["tags.rank"]}, "INVALID_ORDER_BY"),
        ({"page_size": -1}, "INVALID_PAGE_SIZE"),
        ({"page_token": "not-a-token"}, "INVALID_PAGE_TOKEN"),
        ({"page_token": first.next_page_token, "filter": "name = 'a-model'"}, "INVALID_PAGE_TOKEN"),
    ):
        with pytest.raises(InvalidArgument) as err:
            t.SearchLoggedModels(pb.SearchLoggedModelsRequest(experiment_ids=[experiment_id], **bad))
        assert err.value.reason == reason, bad
    for experiment_ids in ([], ["x"], [str(i) for i in range(101)]):
        with pytest.raises(InvalidArgument):
            t.SearchLoggedModels(pb.SearchLoggedModelsRequest(experiment_ids=experiment_ids))


def test_bad_inputs(t: Tracking, client: keel.Client, experiment_id: str) -> None:
    run_id = client.create_run(experiment_id).info.run_id
    for name in ("../up", "/abs", "a//b", "a/./b", "a/", "x" * 251, "a\\b", "%2e%2e/x", "bad\x00name"):
        with pytest.raises(InvalidArgument) as bad_name:
            _create(t, experiment_id, name=name, source_run_id=run_id)
        assert bad_name.value.reason in ("INVALID_MODEL_NAME", "UNSAFE_PATH"), name
    assert _create(t, experiment_id, name="nested/model", source_run_id=run_id).artifact_path == "nested/model"
    with pytest.raises(InvalidArgument):
        _create(t, experiment_id, name="m", model_type="x" * 251)
    with pytest.raises(InvalidArgument) as bad_experiment:
        _create(t, "not-an-id", name="m")
    assert bad_experiment.value.reason == "INVALID_EXPERIMENT_ID"
    with pytest.raises(NotFound):
        _create(t, "987654321", name="m")
    with pytest.raises(InvalidArgument) as bad_run:
        _create(t, experiment_id, name="m", source_run_id="nope")
    assert bad_run.value.reason == "INVALID_RUN_ID"
    with pytest.raises(NotFound) as missing_run:
        _create(t, experiment_id, name="m", source_run_id="0" * 32)
    assert missing_run.value.reason == "RUN_NOT_FOUND"
    elsewhere = client.create_run(str(client.create_experiment(f"other-{uuid.uuid4().hex[:8]}"))).info.run_id
    with pytest.raises(InvalidArgument) as other_experiment:
        _create(t, experiment_id, name="m", source_run_id=elsewhere)
    assert other_experiment.value.reason == "INVALID_SOURCE_RUN"
    deleted_run = client.create_run(experiment_id).info.run_id
    client.delete_run(deleted_run)
    with pytest.raises(FailedPrecondition):
        _create(t, experiment_id, name="m", source_run_id=deleted_run)
    deleted_experiment = str(client.create_experiment(f"deleted-{uuid.uuid4().hex[:8]}"))
    client.delete_experiment(deleted_experiment)
    with pytest.raises(FailedPrecondition):
        _create(t, deleted_experiment, name="m")

    for model_id in ("", "m-123", "M-" + "0" * 32, "m-" + "g" * 32, "../" + "0" * 32):
        with pytest.raises(InvalidArgument) as bad_id:
            t.GetLoggedModel(pb.GetLoggedModelRequest(model_id=model_id))
        assert bad_id.value.reason == "INVALID_MODEL_ID"
    for call in (
        lambda: t.GetLoggedModel(pb.GetLoggedModelRequest(model_id=UNKNOWN_MODEL)),
        lambda: t.UpdateLoggedModel(pb.UpdateLoggedModelRequest(model_id=UNKNOWN_MODEL, status=pb.LOGGED_MODEL_STATUS_READY)),
        lambda: t.DeleteLoggedModel(pb.DeleteLoggedModelRequest(model_id=UNKNOWN_MODEL)),
        lambda: t.SetLoggedModelTags(pb.SetLoggedModelTagsRequest(model_id=UNKNOWN_MODEL)),
        lambda: t.DeleteLoggedModelTag(pb.DeleteLoggedModelTagRequest(model_id=UNKNOWN_MODEL, key="k")),
        lambda: t.LogLoggedModelParams(pb.LogLoggedModelParamsRequest(model_id=UNKNOWN_MODEL)),
    ):
        with pytest.raises(NotFound) as err:
            call()
        assert err.value.reason == "LOGGED_MODEL_NOT_FOUND"


# -- permissions -----------------------------------------------------------------------------------
ADMIN_TOKEN = "admin-" + uuid.uuid4().hex


def test_permissions_follow_the_experiment(db_url: str, tmp_path: Any) -> None:
    """Reading a logged model needs READ on its experiment, changing it EDIT, deleting it MANAGE;
    searches show only readable experiments' models; an unknown id is refused like a hidden one."""
    with running_server(
        db_url, f"file://{tmp_path / 'artifacts'}", auth=True, admin_token=ADMIN_TOKEN, default_permission="NONE"
    ) as handle, grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
        admin_meta = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        auth.CreateUser(apb.CreateUserRequest(name="bob"), metadata=admin_meta, timeout=30)
        bob = Tracking(channel, auth.CreateToken(apb.CreateTokenRequest(user="bob"), metadata=admin_meta, timeout=30).secret)
        admin = Tracking(channel, ADMIN_TOKEN)
        experiment_id = admin.CreateExperiment(pb.CreateExperimentRequest(name="perm")).experiment_id
        run_id = admin.CreateRun(pb.CreateRunRequest(experiment_id=experiment_id)).info.run_id
        model_id = _create(admin, experiment_id, name="m", source_run_id=run_id).model_id

        def grant(level: str) -> None:
            auth.GrantPermission(
                apb.GrantPermissionRequest(
                    subject=apb.Subject(user="bob"),
                    resource=apb.Resource(experiment_id=experiment_id),
                    level=apb.PermissionLevel.Value(f"PERMISSION_LEVEL_{level}"),
                ),
                metadata=admin_meta,
                timeout=30,
            )

        def refused(call: Callable[[], Any]) -> bool:
            try:
                call()
            except KeelError as exc:
                return exc.code == grpc.StatusCode.PERMISSION_DENIED
            return False

        def get() -> Any:
            return bob.GetLoggedModel(pb.GetLoggedModelRequest(model_id=model_id))

        def update() -> Any:
            return bob.UpdateLoggedModel(pb.UpdateLoggedModelRequest(model_id=model_id, status=pb.LOGGED_MODEL_STATUS_READY))

        def tag() -> Any:
            return bob.SetLoggedModelTags(pb.SetLoggedModelTagsRequest(model_id=model_id, tags=_tags(("a", "1"))))

        def create() -> Any:
            return _create(bob, experiment_id, name=f"b-{uuid.uuid4().hex[:6]}", source_run_id=run_id)

        def delete() -> Any:
            return bob.DeleteLoggedModel(pb.DeleteLoggedModelRequest(model_id=model_id))

        assert all(refused(call) for call in (get, update, tag, create, delete))
        assert refused(lambda: bob.GetLoggedModel(pb.GetLoggedModelRequest(model_id=UNKNOWN_MODEL)))
        assert _search(bob, experiment_id) == []
        grant("READ")
        assert get().model_id == model_id and len(_search(bob, experiment_id)) == 1
        assert all(refused(call) for call in (update, tag, create, delete))
        grant("EDIT")
        assert update().status == pb.LOGGED_MODEL_STATUS_READY and tag() and create()
        assert refused(delete)
        grant("MANAGE")
        delete()
