"""A deployment whose model lives on a real S3 server (SeaweedFS, auth on): the inference
service downloads the registered version from the store and serves it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_fixtures import ServerHandle, running_s3_server
from serving_helpers import iris_frame

import keel
import keel.sklearn

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    with running_s3_server(tmp_path_factory.mktemp("inference-s3")) as handle:
        yield handle


def test_registered_model_on_s3_is_served(s3_server: ServerHandle) -> None:
    from sklearn.ensemble import RandomForestClassifier

    keel.set_tracking_uri(s3_server.uri)
    client = keel.Client(s3_server.uri)
    X, y = iris_frame()
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    with keel.start_run():
        info = keel.sklearn.log_model(model, "model", input_example=X.head(2), registered_model_name="iris-s3")
    version = client.get_model_version("iris-s3", info.registered_model_version)
    assert version.storage_location.startswith("s3://")

    deployment = client.create_deployment("iris-s3", "models:/iris-s3/1")
    assert deployment.state == "READY", deployment.state_message
    prediction = client.predict("iris-s3", X.head(5))
    assert prediction.predictions == model.predict(X.head(5)).tolist()
    assert prediction.model_version == 1
    client.delete_deployment("iris-s3")
