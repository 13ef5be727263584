"""The MLflow port with ``--auth``: the unmodified mlflow client authenticates with
``MLFLOW_TRACKING_TOKEN`` (Bearer) or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (basic, the
password being a keel token); no or bad credentials are 401 with ``WWW-Authenticate``; keel's
permissions apply exactly as over gRPC (403 PERMISSION_DENIED); a caller without READ learns
nothing about what exists; and every write through the port lands in the audit log under the
caller's name."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from artifact_helpers import basic, bearer, proxy_path, raw_http

import keel
from keel.audit import AuditClient
from keel.auth import AuthClient

ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
# Stages are deprecated in MLflow (a FutureWarning per call); keel keeps them.
pytestmark = pytest.mark.filterwarnings("ignore:.*transition_model_version_stage.*:FutureWarning")
LIST = "/api/2.0/mlflow-artifacts/artifacts"


@contextlib.contextmanager
def keel_token(token: str) -> Iterator[None]:
    """keel's SDK calls (AuthClient, AuditClient, Client) made with ``token`` meanwhile."""
    keel.set_tracking_token(token)
    try:
        yield
    finally:
        keel.set_tracking_token(None)


@dataclass
class World:
    """One secured server with default permission NONE (what a locked-down team runs): alice owns
    an experiment with a run (a metric, an artifact) and a registered model with one version;
    bob has READ on both; carol has no grant at all.

    (One server for the module: keel's database handle is process-wide, so a second in-process
    server would take the first one's database over.)"""

    server: Any
    tokens: dict[str, str]
    experiment_id: str
    run_id: str
    model: str

    def events(self, **filters: Any) -> list[Any]:
        with keel_token(ADMIN_TOKEN):
            return AuditClient(self.server.grpc_uri).list_events(**filters)

    def grant(self, level: str, user: str, **resource: str) -> None:
        with keel_token(self.tokens["alice"]):
            AuthClient(self.server.grpc_uri).grant_permission(level, user=user, **resource)


def create_users(server: Any, names: tuple[str, ...]) -> dict[str, str]:
    with keel_token(ADMIN_TOKEN):
        auth = AuthClient(server.grpc_uri)
        tokens = {}
        for name in names:
            auth.create_user(name)
            tokens[name] = auth.create_token(name, name="mlflow-port-tests")[1]
    return tokens


@pytest.fixture(scope="module")
def world(mlflow_port_server: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> World:
    import mlflow

    server = mlflow_port_server(auth=True, admin_token=ADMIN_TOKEN, default_permission="NONE")
    tokens = create_users(server, ("alice", "bob", "carol"))
    artifact = tmp_path_factory.mktemp("alice") / "notes.txt"
    artifact.write_text("alice's notes")
    with server.use_mlflow(token=tokens["alice"]):
        client = mlflow.MlflowClient()
        experiment_id = client.create_experiment("alice-experiment")
        run_id = client.create_run(experiment_id).info.run_id
        client.log_metric(run_id, "auc", 0.91)
        client.log_artifact(run_id, str(artifact))
        client.create_registered_model("alice-model")
        client.create_model_version("alice-model", f"runs:/{run_id}/notes.txt", run_id=run_id)
    world = World(server, tokens, experiment_id, run_id, "alice-model")
    world.grant("READ", "bob", experiment_id=experiment_id)
    world.grant("READ", "bob", model_name="alice-model")
    return world


def assert_refused(call: Callable[[], Any], error_code: str, status: int) -> None:
    """``call`` fails with MLflow's ``error_code`` and HTTP ``status``: an MlflowException from the
    tracking and registry clients, a requests HTTPError carrying the JSON error from the
    artifact repository (the mlflow client raises those as they are)."""
    import requests
    from mlflow.exceptions import MlflowException

    with pytest.raises((MlflowException, requests.HTTPError)) as caught:
        call()
    if isinstance(caught.value, MlflowException):
        assert caught.value.error_code == error_code, caught.value
        assert caught.value.get_http_status_code() == status
    else:
        response = caught.value.response
        assert response is not None
        assert (response.status_code, response.json()["error_code"]) == (status, error_code)


# -- authentication ----------------------------------------------------------------------------------
def test_bearer_token(world: World, tmp_path: Path) -> None:
    import mlflow

    with world.server.use_mlflow(token=world.tokens["alice"]):
        client = mlflow.MlflowClient()
        assert client.get_experiment(world.experiment_id).name == "alice-experiment"
        assert client.get_run(world.run_id).data.metrics == {"auc": 0.91}
        assert [f.path for f in client.list_artifacts(world.run_id)] == ["notes.txt"]
        local = client.download_artifacts(world.run_id, "notes.txt", str(tmp_path))
        assert Path(local).read_text() == "alice's notes"


def test_basic_auth_with_a_keel_token_as_password(world: World, tmp_path: Path) -> None:
    """The user name is informational: the token decides who calls."""
    import mlflow

    with world.server.use_mlflow(username="anything", password=world.tokens["alice"]):
        client = mlflow.MlflowClient()
        assert client.get_experiment(world.experiment_id).name == "alice-experiment"
        run = client.create_run(world.experiment_id)
        notes = tmp_path / "basic.txt"
        notes.write_text("over basic auth")
        client.log_artifact(run.info.run_id, str(notes))
        assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["basic.txt"]
    created = world.events(method="CreateRun", resource_type="run", resource_id=run.info.run_id)
    assert [(e.actor, e.outcome) for e in created] == [("alice", "OK")]


@pytest.mark.parametrize(
    "method,path_of,body",
    [
        ("GET", lambda w: f"/api/2.0/mlflow/experiments/get?experiment_id={w.experiment_id}", None),
        (
            "POST",
            lambda w: "/api/2.0/mlflow/runs/log-metric",
            b'{"run_id":"x","key":"k","value":1,"timestamp":1}',
        ),
        ("GET", lambda w: proxy_path(w.experiment_id, w.run_id, "notes.txt"), None),
        ("PUT", lambda w: proxy_path(w.experiment_id, w.run_id, "new.txt"), b"data"),
        ("DELETE", lambda w: proxy_path(w.experiment_id, w.run_id, "notes.txt"), None),
        ("GET", lambda w: f"{LIST}?path={w.experiment_id}/{w.run_id}/artifacts", None),
        ("GET", lambda w: f"/api/2.0/mlflow/artifacts/list?run_id={w.run_id}", None),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("keel_0000_notatoken"),
        basic("alice", "wrong-password"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Digest username=alice"},
    ],
    ids=["none", "bad-bearer", "bad-basic", "malformed-basic", "other-scheme"],
)
def test_missing_or_bad_credentials_are_401(
    world: World, method: str, path_of: Callable[[World], str], body: bytes | None, headers: dict[str, str]
) -> None:
    reply = raw_http(world.server.http_url, method, path_of(world), body, headers)
    assert reply.status == 401, reply.body
    assert reply.json()["error_code"] == "UNAUTHENTICATED"
    assert "Bearer" in reply.headers["www-authenticate"] and "Basic" in reply.headers["www-authenticate"]
    # Nothing changed: the artifact is still there, nothing new was written.
    with keel_token(ADMIN_TOKEN):
        assert [f.path for f in keel.Client(world.server.grpc_uri).list_artifacts(world.run_id)] == [
            "notes.txt"
        ]


def test_the_mlflow_client_without_credentials(world: World) -> None:
    import mlflow

    with world.server.use_mlflow():
        assert_refused(
            lambda: mlflow.MlflowClient().get_experiment(world.experiment_id), "UNAUTHENTICATED", 401
        )
        assert_refused(lambda: mlflow.MlflowClient().list_artifacts(world.run_id), "UNAUTHENTICATED", 401)


# -- permissions -------------------------------------------------------------------------------------
def test_a_reader_reads_but_cannot_write(world: World, tmp_path: Path) -> None:
    import mlflow

    notes = tmp_path / "bob.txt"
    notes.write_text("bob was here")
    with world.server.use_mlflow(token=world.tokens["bob"]):
        client = mlflow.MlflowClient()
        assert client.get_experiment(world.experiment_id).name == "alice-experiment"
        assert [f.path for f in client.list_artifacts(world.run_id)] == ["notes.txt"]
        denied = [
            lambda: client.create_run(world.experiment_id),
            lambda: client.log_metric(world.run_id, "auc", 0.1),
            lambda: client.set_tag(world.run_id, "owner", "bob"),
            lambda: client.log_artifact(world.run_id, str(notes)),
            lambda: client.transition_model_version_stage(world.model, "1", "Production"),
            lambda: client.set_registered_model_alias(world.model, "champion", "1"),
        ]
        for call in denied:
            assert_refused(call, "PERMISSION_DENIED", 403)
    target = proxy_path(world.experiment_id, world.run_id, "notes.txt")
    reply = raw_http(world.server.http_url, "DELETE", target, None, bearer(world.tokens["bob"]))
    assert (reply.status, reply.json()["error_code"]) == (403, "PERMISSION_DENIED")
    with world.server.use_mlflow(token=world.tokens["alice"]):
        client = mlflow.MlflowClient()
        assert client.get_run(world.run_id).data.metrics == {"auc": 0.91}
        assert "owner" not in client.get_run(world.run_id).data.tags
        assert [f.path for f in client.list_artifacts(world.run_id)] == ["notes.txt"]
        assert client.get_model_version(world.model, "1").current_stage == "None"


def test_a_grant_takes_effect_through_the_port(world: World, tmp_path: Path) -> None:
    """bob with EDIT on an experiment of alice's may log to its runs through the port; deleting
    artifacts needs MANAGE, and stage transitions MANAGE on the model."""
    import mlflow

    with world.server.use_mlflow(token=world.tokens["alice"]):
        client = mlflow.MlflowClient()
        shared = client.create_experiment("alice-shared")
        run_id = client.create_run(shared).info.run_id
    world.grant("EDIT", "bob", experiment_id=shared)
    notes = tmp_path / "edit.txt"
    notes.write_text("bob may edit")
    with world.server.use_mlflow(token=world.tokens["bob"]):
        client = mlflow.MlflowClient()
        client.log_metric(run_id, "bob_metric", 1.0)
        client.log_artifact(run_id, str(notes), "bob")
        assert [f.path for f in client.list_artifacts(run_id, "bob")] == ["bob/edit.txt"]
        reply = raw_http(
            world.server.http_url,
            "DELETE",
            proxy_path(shared, run_id, "bob"),
            None,
            bearer(world.tokens["bob"]),
        )
        assert (reply.status, reply.json()["error_code"]) == (403, "PERMISSION_DENIED")
        assert [f.path for f in client.list_artifacts(run_id, "bob")] == ["bob/edit.txt"]
        assert_refused(
            lambda: client.transition_model_version_stage(world.model, "1", "Staging"),
            "PERMISSION_DENIED",
            403,
        )


def test_no_permission_learns_nothing(world: World) -> None:
    """carol (no grant, default NONE) gets the same answer for alice's experiment, run and
    artifacts as for ones that do not exist, on every route that names them."""
    import mlflow

    missing_experiment, missing_run = "987654", "f" * 32

    def shape(method: str, path: str, body: bytes | None = None) -> tuple[int, str, str]:
        reply = raw_http(world.server.http_url, method, path, body, bearer(world.tokens["carol"]))
        payload = reply.json()
        return reply.status, payload["error_code"], payload.get("reason", "")

    routes = [
        ("GET", "/api/2.0/mlflow/experiments/get?experiment_id={e}", None),
        ("GET", "/api/2.0/mlflow/runs/get?run_id={r}", None),
        ("GET", "/api/2.0/mlflow/metrics/get-history?run_id={r}&metric_key=auc", None),
        ("GET", "/api/2.0/mlflow/artifacts/list?run_id={r}", None),
        ("GET", LIST + "/{e}/{r}/artifacts/notes.txt", None),
        ("GET", LIST + "?path={e}/{r}/artifacts", None),
        ("PUT", LIST + "/{e}/{r}/artifacts/carol.txt", b"carol"),
        ("DELETE", LIST + "/{e}/{r}/artifacts/notes.txt", None),
        ("GET", "/get-artifact?run_id={r}&path=notes.txt", None),
    ]
    for method, template, body in routes:
        existing = shape(method, template.format(e=world.experiment_id, r=world.run_id), body)
        absent = shape(method, template.format(e=missing_experiment, r=missing_run), body)
        assert existing == absent, (method, template)
        assert existing[:2] == (403, "PERMISSION_DENIED"), (method, template, existing)
    with world.server.use_mlflow(token=world.tokens["carol"]):
        client = mlflow.MlflowClient()
        for ask in (world.experiment_id, missing_experiment):
            assert_refused(lambda ask=ask: client.get_experiment(ask), "PERMISSION_DENIED", 403)
        assert client.search_experiments(filter_string="name = 'alice-experiment'") == []
    with keel_token(world.tokens["alice"]):
        assert [f.path for f in keel.Client(world.server.grpc_uri).list_artifacts(world.run_id)] == [
            "notes.txt"
        ]


# -- the audit log -----------------------------------------------------------------------------------
def test_port_writes_are_audited_with_their_actor(world: World, tmp_path: Path) -> None:
    import mlflow

    notes = tmp_path / "audited.txt"
    notes.write_text("audited")
    with world.server.use_mlflow(token=world.tokens["alice"]):
        client = mlflow.MlflowClient()
        run_id = client.create_run(world.experiment_id).info.run_id
        client.log_param(run_id, "lr", "0.1")
        client.log_artifact(run_id, str(notes))
        client.transition_model_version_stage(world.model, "1", "Staging")
    with world.server.use_mlflow(token=world.tokens["bob"]):
        assert_refused(lambda: mlflow.MlflowClient().set_tag(run_id, "k", "v"), "PERMISSION_DENIED", 403)
    request_id = "port-audit-" + secrets.token_hex(4)
    reply = raw_http(
        world.server.http_url,
        "DELETE",
        proxy_path(world.experiment_id, run_id, "audited.txt"),
        None,
        {**bearer(world.tokens["alice"]), "X-Request-Id": request_id},
    )
    assert reply.status == 200

    def on_run(method: str) -> list[tuple[str, str, str]]:
        return [
            (e.actor, e.resource_id, e.outcome)
            for e in world.events(method=method, experiment_id=world.experiment_id)
            if run_id in e.resource_id
        ]

    assert on_run("CreateRun") == [("alice", run_id, "OK")]
    assert on_run("LogParam") == [("alice", run_id, "OK")]
    assert on_run("UploadArtifact") == [("alice", f"runs:/{run_id}/audited.txt", "OK")]
    assert on_run("SetTag") == [("bob", run_id, "DENIED")]
    deletes = [e for e in world.events(method="DeleteArtifact") if e.request_id == request_id]
    assert [(e.actor, e.resource_id, e.outcome) for e in deletes] == [
        ("alice", f"runs:/{run_id}/audited.txt", "OK")
    ]
    transitions = world.events(method="TransitionModelVersionStage", model_name=world.model)
    assert [(e.actor, e.outcome) for e in transitions][-1] == ("alice", "OK")
    # The reads the port makes on the way (GetRun before each artifact call) record nothing.
    assert [
        e for e in world.events(actor="alice") if e.method in ("GetRun", "DownloadArtifact", "ListArtifacts")
    ] == []


def test_refused_artifact_writes_are_audited_as_writes(world: World) -> None:
    """A write refused through the port is recorded as the write it attempted (the upload or the
    delete, with its target), as over gRPC, even though the port reads the run first."""
    path = proxy_path(world.experiment_id, world.run_id, "intruder.txt")
    assert raw_http(world.server.http_url, "PUT", path, b"x").status == 401
    reply = raw_http(
        world.server.http_url,
        "DELETE",
        proxy_path(world.experiment_id, world.run_id, "notes.txt"),
        None,
        {**bearer(world.tokens["bob"]), "X-Request-Id": "bob-deletes"},
    )
    assert reply.status == 403
    target = f"runs:/{world.run_id}/intruder.txt"
    uploads = world.events(method="UploadArtifact", resource_type="artifact", resource_id=target)
    assert [(e.actor, e.outcome) for e in uploads] == [("", "UNAUTHENTICATED")]
    deletes = [e for e in world.events(method="DeleteArtifact") if e.request_id == "bob-deletes"]
    assert [(e.actor, e.resource_id, e.outcome) for e in deletes] == [
        ("bob", f"runs:/{world.run_id}/notes.txt", "DENIED")
    ]
