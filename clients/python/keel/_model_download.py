"""The SDK's model downloader; ``keel/__init__.py`` plugs it into ``keel.shared.remote``.

It is the one place where loading a model reaches a server: ``models:/`` is resolved by the
registry (``Client.resolve_model_uri``), then the files are downloaded through the artifact
service into a fresh temporary directory that the caller owns (it is not deleted: a loaded
model may keep reading files such as pyfunc artifacts from it). The client modules are imported
when a model is fetched, not when ``keel`` is, so ``import keel`` stays light.
"""

from __future__ import annotations


def download_model(uri: str) -> str:
    """A new local directory holding the model that remote URI ``uri`` names."""
    import tempfile

    from keel import artifacts, client

    artifact_uri = client.Client().resolve_model_uri(uri) if uri.startswith("models:") else uri
    dst = tempfile.mkdtemp(prefix="keel-model-")
    return str(artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst))

