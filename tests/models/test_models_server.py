"""log_model / register / load through a real in-process keel server: every remote URI form.

Skipped until the SDK pieces these flows call exist (fluent runs, artifact download,
registry URI resolution); they then run against the `client` fixture's server.
"""

from __future__ import annotations

import importlib.util
import uuid

import numpy as np
import pytest


def _sdk_ready() -> bool:
    try:
        import keel.artifacts
        import keel.client

        return (
            importlib.util.find_spec("keel.fluent") is not None
            and hasattr(keel.artifacts, "download_artifacts")
            and hasattr(keel.client.Client, "resolve_model_uri")
        )
    except ImportError:
        return False


pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not _sdk_ready(), reason="keel SDK (fluent/artifacts/registry) not available yet"),
]


def test_sklearn_log_register_and_load_every_uri(client, classifier, tabular) -> None:
    import keel.pyfunc
    import keel.sklearn
    from keel.exceptions import NotFound

    X, _ = tabular
    name = f"churn-{uuid.uuid4().hex[:8]}"
    with keel.start_run():
        info = keel.sklearn.log_model(
            classifier, "model", input_example=X.head(2), registered_model_name=name
        )
    assert info.registered_model_version == 1
    expected = classifier.predict(X)
    client.set_registered_model_alias(name, "champion", "1")  # type: ignore[attr-defined]
    client.transition_model_version_stage(name, "1", "Production")  # type: ignore[attr-defined]
    for uri in (
        info.model_uri,
        f"models:/{name}/1",
        f"models:/{name}/latest",
        f"models:/{name}/Production",
        f"models:/{name}@champion",
    ):
        np.testing.assert_array_equal(keel.sklearn.load_model(uri).predict(X), expected)
        pf = keel.pyfunc.load_model(uri)
        np.testing.assert_array_equal(pf.predict(X), expected)
        assert pf.metadata.run_id == info.run_id
    with pytest.raises(NotFound):
        keel.pyfunc.load_model(f"models:/{name}/7")
    with pytest.raises(NotFound):
        keel.pyfunc.load_model(f"models:/{name}@nobody")


def test_pytorch_log_and_load(client) -> None:
    import torch

    import keel.pyfunc
    import keel.pytorch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()
    x = np.ones((3, 4), np.float32)
    with keel.start_run():
        info = keel.pytorch.log_model(net, "net", input_example=x)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(keel.pyfunc.load_model(info.model_uri).predict(x), expected)
