"""Artifacts in the SDK: the fluent ``keel.log_*`` functions (re-exported by ``keel``) and
MLflow's ``mlflow.artifacts`` module API (``download_artifacts``, ``list_artifacts``,
``load_text``, ``load_dict``).

    keel.log_artifact("best_model.pt")                       # to the active run
    keel.log_dict({"classes": 10}, "config/model.yaml")
    local = keel.artifacts.download_artifacts("runs:/<run_id>/checkpoints")

Heavy libraries (matplotlib, PIL, numpy, yaml) are imported only by the functions that need them.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from keel.artifacts._transfer import FileInfo

if TYPE_CHECKING:
    from keel.client import Client


def _client(tracking_uri: str | None = None) -> Client:
    from keel.client import Client

    return Client(tracking_uri)


def _run_id(run_id: str | None = None) -> str:
    """The given run, else the active run, else a new one (as MLflow starts one implicitly)."""
    if run_id:
        return run_id
    from keel import fluent

    require = getattr(fluent, "_require_run", None)
    if require is not None:
        return str(require())
    active = fluent.active_run()
    return active.info.run_id if active is not None else fluent.start_run().info.run_id


# ---------------------------------------------------------------- fluent logging
def log_artifact(local_path: str, artifact_path: str | None = None, run_id: str | None = None) -> None:
    """Uploads a local file to the active run, under ``artifact_path`` if given."""
    _client().log_artifact(_run_id(run_id), local_path, artifact_path)


def log_artifacts(local_dir: str, artifact_path: str | None = None, run_id: str | None = None) -> None:
    """Uploads every file under ``local_dir`` (in parallel) to the active run."""
    _client().log_artifacts(_run_id(run_id), local_dir, artifact_path)


def log_text(text: str, artifact_file: str, run_id: str | None = None) -> None:
    """Saves ``text`` as the artifact ``artifact_file`` (a relative path such as ``notes/readme.md``)."""
    _client().log_text(_run_id(run_id), text, artifact_file)


def log_dict(dictionary: Mapping[str, Any], artifact_file: str, run_id: str | None = None) -> None:
    """Saves a dict as JSON, or YAML when ``artifact_file`` ends with .yaml/.yml."""
    _client().log_dict(_run_id(run_id), dictionary, artifact_file)


def log_figure(
    figure: Any, artifact_file: str, *, save_kwargs: Mapping[str, Any] | None = None, run_id: str | None = None
) -> None:
    """Saves a matplotlib figure (format from the extension) or a plotly figure (.html)."""
    _client().log_figure(_run_id(run_id), figure, artifact_file, save_kwargs=save_kwargs)


def log_image(image: Any, artifact_file: str, run_id: str | None = None) -> None:
    """Saves a numpy array or PIL image (format from the extension, e.g. .png)."""
    _client().log_image(_run_id(run_id), image, artifact_file)


def get_artifact_uri(artifact_path: str | None = None) -> str:
    """The store URI of the active run's artifact root, or of ``artifact_path`` under it."""
    from keel import fluent

    active = fluent.active_run()
    run = active if active is not None else _client().get_run(_run_id())
    root = str(run.info.artifact_uri).rstrip("/")
    path = (artifact_path or "").strip("/")
    return posixpath.join(root, path) if path else root


# ---------------------------------------------------------------- mlflow.artifacts API
def _source(artifact_uri: str | None, run_id: str | None, artifact_path: str | None) -> tuple[str | None, str | None, str]:
    if artifact_uri and (run_id or artifact_path):
        from keel.exceptions import InvalidArgument

        raise InvalidArgument(
            "give either artifact_uri, or run_id (with an optional artifact_path), not both",
            reason="INVALID_ARTIFACT_REF",
        )
    if not artifact_uri and not run_id:
        from keel.exceptions import InvalidArgument

        raise InvalidArgument("give artifact_uri or run_id", reason="INVALID_ARTIFACT_REF")
    return artifact_uri, run_id, artifact_path or ""


def download_artifacts(
    artifact_uri: str | None = None,
    run_id: str | None = None,
    artifact_path: str | None = None,
    dst_path: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Downloads a file or folder (``runs:/<run_id>/<path>``, a ``file://``/``s3://`` URI under
    the server's artifact root, or ``run_id`` + ``artifact_path``) into ``dst_path`` (a new temp
    dir by default). Returns the local path of what was downloaded."""
    from keel.artifacts import _transfer

    uri, run, path = _source(artifact_uri, run_id, artifact_path)
    dst = os.path.abspath(dst_path) if dst_path else tempfile.mkdtemp(prefix="keel-artifacts-")
    client = _client(tracking_uri)
    return _transfer.download_tree(client._artifact_transport, _transfer.ref(run, uri, path), dst)


def list_artifacts(
    artifact_uri: str | None = None,
    run_id: str | None = None,
    artifact_path: str | None = None,
    tracking_uri: str | None = None,
) -> list[FileInfo]:
    """Direct children of a folder; paths are relative to the run's root (or to the URI)."""
    from keel.artifacts import _transfer

    uri, run, path = _source(artifact_uri, run_id, artifact_path)
    return _transfer.list_all(_client(tracking_uri)._artifact_transport, _transfer.ref(run, uri, path), recursive=False)


def load_text(artifact_uri: str, tracking_uri: str | None = None) -> str:
    """The content of a text artifact (``runs:/<run_id>/notes.txt``)."""
    from keel.artifacts import _transfer

    data = _transfer.read_bytes(_client(tracking_uri)._artifact_transport, _transfer.ref(artifact_uri=artifact_uri))
    return data.decode("utf-8")


def load_dict(artifact_uri: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """A JSON or YAML artifact (by extension) as a dict."""
    text = load_text(artifact_uri, tracking_uri)
    if artifact_uri.endswith((".yaml", ".yml")):
        import yaml

        loaded = yaml.safe_load(text)
    else:
        loaded = json.loads(text)
    if not isinstance(loaded, dict):
        from keel.exceptions import InvalidArgument

        raise InvalidArgument(f"{artifact_uri} does not hold a dict (found {type(loaded).__name__})", reason="NOT_A_DICT")
    return loaded


__all__ = [
    "FileInfo",
    "download_artifacts",
    "get_artifact_uri",
    "list_artifacts",
    "load_dict",
    "load_text",
    "log_artifact",
    "log_artifacts",
    "log_dict",
    "log_figure",
    "log_image",
    "log_text",
]
