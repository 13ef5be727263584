"""Issue #21, defect 1 (and 5): the artifact service changes one run's artifacts only.

A ``DeleteArtifact`` of the store's root used to erase every run's files and the registry's
snapshots; one under ``_registry/`` erased a snapshot that the registry promises never changes.
Every form of naming such a target is refused before anything changes, on the local store and
on a real S3 server, and a registered model still loads afterwards. A version whose files were
removed behind keel's back answers DATA_LOSS instead of loading as READY.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pandas as pd
import pytest
from backends import make_database_url
from server_fixtures import ServerHandle, running_s3_server, running_server

import keel
import keel.pyfunc
from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.exceptions import DataLoss, InvalidArgument, PermissionDenied


class Doubler(keel.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return [2 * x for x in model_input["x"]]


@dataclass
class World:
    """A server with two runs' artifacts and one registered model version."""

    handle: ServerHandle
    client: keel.Client
    root: str  # the store's root URI
    run_a: str
    run_b: str
    model: str

    @property
    def stub(self) -> artifacts_pb2_grpc.ArtifactServiceStub:
        return artifacts_pb2_grpc.ArtifactServiceStub(grpc.insecure_channel(self.handle.uri[len("grpc://") :]))

    def run_root(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.artifact_uri

    def all_files(self) -> set[str]:
        """Every file in the store (through the store itself, not the API under test)."""
        assert self.handle.running is not None
        store = self.handle.running.app.artifact_store
        files: set[str] = set()
        cursor = ""
        while True:
            page, cursor = store.list_entries(self.root, recursive=True, cursor=cursor, limit=1000)
            files.update(e.path for e in page)
            if not cursor:
                return files

    def assert_model_loads(self) -> None:
        model = keel.pyfunc.load_model(f"models:/{self.model}/1")
        assert list(model.predict(pd.DataFrame({"x": [1, 2]}))) == [2, 4]


@contextlib.contextmanager
def _server(store_kind: str, folder: Path) -> Iterator[ServerHandle]:
    if store_kind == "s3":
        with running_s3_server(folder) as handle:
            yield handle
    else:
        with make_database_url("sqlite", folder) as db_url:
            with running_server(db_url, f"file://{folder}/artifacts") as handle:
                yield handle


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with _server(request.param, tmp_path) as handle:
        keel.set_tracking_uri(handle.uri)
        client = keel.Client(handle.uri)
        keel.set_experiment(f"safety-{uuid.uuid4().hex[:8]}")
        model = f"safe-{uuid.uuid4().hex[:8]}"
        with keel.start_run() as run_a:
            keel.pyfunc.log_model("model", python_model=Doubler(), registered_model_name=model)
            keel.log_text("a", "notes/a.txt")
        with keel.start_run() as run_b:
            keel.log_text("b", "notes/b.txt")
        assert handle.running is not None
        yield World(
            handle, client, handle.running.app.artifact_store.root_uri, run_a.info.run_id, run_b.info.run_id, model
        )


def _refs(w: World) -> dict[str, pb.ArtifactRef]:
    """Every way the issue and the probe named something outside one run's artifacts."""
    run_b_root = w.run_root(w.run_b)
    run_b_folder = run_b_root.rsplit("/", 1)[0]  # <experiment>/<run id>, above 'artifacts'
    experiment_folder = run_b_folder.rsplit("/", 1)[0]
    refs = {
        "store root": pb.ArtifactRef(artifact_uri=w.root),
        "store root with a trailing slash": pb.ArtifactRef(artifact_uri=w.root + "/"),
        "store root plus a path": pb.ArtifactRef(artifact_uri=w.root, path="_registry"),
        "registry folder": pb.ArtifactRef(artifact_uri=f"{w.root}/_registry"),
        "one snapshot": pb.ArtifactRef(artifact_uri=w.client.get_model_version_download_uri(w.model, 1)),
        "a file of a snapshot": pb.ArtifactRef(
            artifact_uri=w.client.get_model_version_download_uri(w.model, 1), path="MLmodel"
        ),
        "another run's folder": pb.ArtifactRef(artifact_uri=run_b_folder),
        "an experiment's folder": pb.ArtifactRef(artifact_uri=experiment_folder),
    }
    if w.root.startswith("file://"):
        refs["store root as file://localhost"] = pb.ArtifactRef(
            artifact_uri="file://localhost" + w.root[len("file://") :]
        )
    return refs


def _dotdot_refs(w: World) -> dict[str, pb.ArtifactRef]:
    run_a_root = w.run_root(w.run_a)
    return {
        "run id + ../ path": pb.ArtifactRef(run_id=w.run_a, path=f"../../{w.run_b}/artifacts"),
        "runs:/ with ..": pb.ArtifactRef(artifact_uri=f"runs:/{w.run_a}/../../{w.run_b}"),
        "store URI with ..": pb.ArtifactRef(artifact_uri=f"{run_a_root}/../../{w.run_b}/artifacts"),
    }


def test_defect1_delete_outside_one_run_is_refused_and_nothing_is_lost(world: World) -> None:
    before = world.all_files()
    for label, ref in _refs(world).items():
        with pytest.raises(grpc.RpcError) as err:
            world.stub.DeleteArtifact(pb.DeleteArtifactRequest(ref=ref))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, label
        assert world.all_files() == before, f"{label} deleted files"
    for label, ref in _dotdot_refs(world).items():
        with pytest.raises(grpc.RpcError) as err:
            world.stub.DeleteArtifact(pb.DeleteArtifactRequest(ref=ref))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, label
        assert world.all_files() == before, f"{label} deleted files"
    world.assert_model_loads()
    assert world.client.download_artifacts(world.run_b, "notes/b.txt")


def test_defect1_registry_snapshot_delete_names_the_registry_as_the_way(world: World) -> None:
    snapshot = world.client.get_model_version_download_uri(world.model, 1)
    with pytest.raises(PermissionDenied) as err:
        world.client.delete_artifacts(artifact_uri=snapshot)
    assert err.value.reason == "REGISTRY_SNAPSHOT_IMMUTABLE"
    assert "delete the model version" in err.value.message
    with pytest.raises(PermissionDenied) as err:
        world.client.delete_artifacts(artifact_uri=world.root)
    assert err.value.reason == "NOT_RUN_ARTIFACTS"
    world.assert_model_loads()


def test_defect1_upload_and_copy_targets_follow_the_same_rule(world: World, tmp_path: Path) -> None:
    before = world.all_files()
    snapshot = world.client.get_model_version_download_uri(world.model, 1)
    source = world.client.resolve_artifact_uri(f"runs:/{world.run_a}/notes")
    local = tmp_path / "MLmodel"
    local.write_text("flavors: {}\n")
    for label, ref in _refs(world).items():
        upload_ref = pb.ArtifactRef(artifact_uri=ref.artifact_uri, path=ref.path or "MLmodel")
        with pytest.raises(grpc.RpcError) as err:
            world.stub.UploadArtifact(
                iter([pb.UploadArtifactRequest(header=pb.UploadHeader(ref=upload_ref, size=3)),
                      pb.UploadArtifactRequest(chunk=b"bad")])
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, label
        with pytest.raises(grpc.RpcError) as err:
            world.stub.CopyArtifacts(pb.CopyArtifactsRequest(source=pb.ArtifactRef(artifact_uri=source), destination=ref))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, label
    with pytest.raises(PermissionDenied):
        world.client.copy_artifacts(source, snapshot)
    assert world.all_files() == before
    world.assert_model_loads()


def test_defect1_a_run_s_own_artifacts_can_still_be_changed_every_way(world: World) -> None:
    run_a_root = world.run_root(world.run_a)
    assert world.client.delete_artifacts("notes/a.txt", run_id=world.run_a) == 1
    world.client.log_text(world.run_a, "again", "notes/a.txt")
    assert world.client.delete_artifacts(artifact_uri=f"runs:/{world.run_a}/notes") == 1
    world.client.log_text(world.run_a, "again", "notes/a.txt")
    assert world.client.delete_artifacts(artifact_uri=f"{run_a_root}/notes") == 1
    copied = world.client.copy_artifacts(f"{run_a_root}/model", world.run_root(world.run_b) + "/model-copy")
    assert copied[0] >= 2
    # All of one run's artifacts: allowed, and the registered snapshot is untouched by it.
    assert world.client.delete_artifacts(run_id=world.run_a) >= 2
    world.assert_model_loads()


def test_defect1_version_whose_files_vanished_is_data_loss_not_ready(world: World) -> None:
    snapshot = world.client.get_model_version_download_uri(world.model, 1)
    assert world.handle.running is not None
    store = world.handle.running.app.artifact_store
    if snapshot.startswith("file://"):
        shutil.rmtree(snapshot[len("file://") :])
    else:
        store.delete(snapshot)  # someone removed the objects in the bucket
    with pytest.raises(DataLoss) as err:
        world.client.resolve_model_uri(f"models:/{world.model}/1")
    assert err.value.reason == "MODEL_VERSION_FILES_MISSING"
    assert "deleted outside keel" in err.value.message
    with pytest.raises(DataLoss):
        keel.pyfunc.load_model(f"models:/{world.model}/1")
    with pytest.raises(DataLoss):
        world.client.get_model_version_download_uri(world.model, 1)


@pytest.mark.parametrize("method", ["UploadArtifact", "ListArtifacts", "ResolveArtifactUri", "CopyArtifacts"])
def test_defect5_file_uri_without_folder_is_invalid_argument(tmp_path: Path, method: str) -> None:
    with make_database_url("sqlite", tmp_path) as db_url:
        with running_server(db_url, f"file://{tmp_path}/artifacts", services=("artifacts",)) as handle:
            stub = artifacts_pb2_grpc.ArtifactServiceStub(grpc.insecure_channel(f"127.0.0.1:{handle.port}"))
            bare = pb.ArtifactRef(artifact_uri="file://")
            calls = {
                "UploadArtifact": lambda: stub.UploadArtifact(
                    iter([pb.UploadArtifactRequest(header=pb.UploadHeader(ref=pb.ArtifactRef(artifact_uri="file://", path="x")))])
                ),
                "ListArtifacts": lambda: stub.ListArtifacts(pb.ListArtifactsRequest(ref=bare)),
                "ResolveArtifactUri": lambda: stub.ResolveArtifactUri(pb.ResolveArtifactUriRequest(uri="file://")),
                "CopyArtifacts": lambda: stub.CopyArtifacts(pb.CopyArtifactsRequest(source=bare, destination=bare)),
            }
            with pytest.raises(grpc.RpcError) as err:
                calls[method]()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "names no folder" in err.value.details()


def test_defect5_sdk_reports_the_bare_file_uri_as_invalid(world: World) -> None:
    with pytest.raises(InvalidArgument) as err:
        world.client.resolve_artifact_uri("file://")
    assert err.value.reason == "INVALID_ARTIFACT_URI"
