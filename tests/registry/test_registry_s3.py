"""Registration snapshots on a real S3 server (SeaweedFS with auth, from
scripts/with_services.sh): the copy is server-side into the registry's prefix and survives the
deletion of the run's artifacts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_helpers import make_source, unique
from server_fixtures import ServerHandle, running_s3_server

import keel
from keel import exceptions as kx


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with running_s3_server(tmp_path_factory.mktemp("registry-s3")) as handle:
        yield handle


def test_s3_snapshot_survives_deleting_the_run_artifacts(s3_server, tmp_path: Path) -> None:
    client = keel.Client(s3_server.uri)
    keel.set_tracking_uri(s3_server.uri)
    source = make_source(client, {"MLmodel": "flavors: {}\n", "data/weights.bin": "w" * 5000})
    name = unique("s3snap")
    mv = keel.register_model(source.uri, name)
    assert mv.status == "READY", mv.status_message
    assert mv.storage_location.startswith(s3_server.settings.artifact_uri + "/_registry/")

    assert client.delete_artifacts("model", run_id=source.run_id) == 2
    with pytest.raises(kx.NotFound):
        client.download_artifacts(source.run_id, "model", dst_path=str(tmp_path / "gone"))

    local = Path(
        keel.artifacts.download_artifacts(
            artifact_uri=client.resolve_model_uri(f"models:/{name}/1"), dst_path=str(tmp_path)
        )
    )
    assert (local / "MLmodel").read_text() == "flavors: {}\n"
    assert (local / "data" / "weights.bin").read_text() == "w" * 5000

    # Deleting the version removes its snapshot from the bucket.
    location = mv.storage_location
    client.delete_model_version(name, 1)
    with pytest.raises(kx.NotFound):
        keel.artifacts.download_artifacts(artifact_uri=location, dst_path=str(tmp_path / "deleted"))
