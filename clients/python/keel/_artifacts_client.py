"""Artifact methods of ``keel.Client`` (MLflow's ``MlflowClient`` names where they exist).

Bytes stream through ``ArtifactService`` (see ``keel.artifacts._transfer``): uploads are
checksummed and retried, downloads resume and are verified before they appear on disk.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from keel._transport import Transport
from keel.artifacts import _transfer
from keel.artifacts._transfer import FileInfo
from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.exceptions import InvalidArgument
from keel.extras import require

_PRESIGN = {"GET": pb.PRESIGN_METHOD_GET, "PUT": pb.PRESIGN_METHOD_PUT}


def _join(artifact_path: str | None, name: str) -> str:
    base = _transfer.clean_path(artifact_path)
    return posixpath.join(base, name) if base else name


class ArtifactsClientMixin:
    _service_transport: Callable[[str], Transport]

    @property
    def _artifact_transport(self) -> Transport:
        return self._service_transport("artifacts")

    # ---- MLflow-shaped ---------------------------------------------------------------------
    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> FileInfo:
        """Uploads one local file to ``<artifact_path>/<file name>`` of the run."""
        target = _transfer.ref(run_id=run_id, path=_join(artifact_path, os.path.basename(os.path.abspath(local_path))))
        return _transfer.upload_file(self._artifact_transport, target, local_path)

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> list[FileInfo]:
        """Uploads every file under ``local_dir`` (files in parallel) to ``<artifact_path>/...``."""
        return _transfer.upload_tree(self._artifact_transport, run_id, None, local_dir, artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> FileInfo:
        return self._log_bytes(run_id, text.encode("utf-8"), artifact_file)

    def log_dict(self, run_id: str, dictionary: Mapping[str, Any], artifact_file: str) -> FileInfo:
        """JSON, or YAML when ``artifact_file`` ends with .yaml/.yml."""
        if artifact_file.endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(dict(dictionary), sort_keys=False, default_flow_style=False)
        else:
            text = json.dumps(dictionary, indent=2, default=str)
        return self._log_bytes(run_id, text.encode("utf-8"), artifact_file)

    def log_figure(self, run_id: str, figure: Any, artifact_file: str, *, save_kwargs: Mapping[str, Any] | None = None) -> FileInfo:
        """A matplotlib figure (format from the extension: png, svg, pdf, ...) or a plotly figure (.html)."""
        buffer = io.BytesIO()
        ext = posixpath.splitext(artifact_file)[1].lstrip(".").lower() or "png"
        if hasattr(figure, "savefig"):
            figure.savefig(buffer, format=ext, **dict(save_kwargs or {}))
        elif hasattr(figure, "write_html") and ext == "html":
            buffer.write(figure.to_html(**dict(save_kwargs or {})).encode("utf-8"))
        else:
            raise InvalidArgument(
                f"cannot log {type(figure).__name__} as {artifact_file!r}: pass a matplotlib figure, or a plotly "
                "figure with a .html file name",
                reason="INVALID_FIGURE",
            )
        return self._log_bytes(run_id, buffer.getvalue(), artifact_file)

    def log_image(self, run_id: str, image: Any, artifact_file: str) -> FileInfo:
        """A PIL image or a numpy array (HxW, HxWx1, HxWx3 or HxWx4; ints in 0..255, floats in 0..1)."""
        pil = _to_pil(image)
        buffer = io.BytesIO()
        ext = posixpath.splitext(artifact_file)[1].lstrip(".").lower() or "png"
        pil.save(buffer, format={"jpg": "JPEG"}.get(ext, ext.upper()))
        return self._log_bytes(run_id, buffer.getvalue(), artifact_file)

    def _log_bytes(self, run_id: str, data: bytes, artifact_file: str) -> FileInfo:
        target = _transfer.ref(run_id=run_id, path=artifact_file)
        return _transfer.upload_stream(self._artifact_transport, target, lambda: io.BytesIO(data), len(data))

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        """Direct children of ``path`` (the run's root by default); paths are relative to the run's root."""
        return _transfer.list_all(self._artifact_transport, _transfer.ref(run_id=run_id, path=path), recursive=False)

    def download_artifacts(self, run_id: str, path: str = "", dst_path: str | None = None) -> str:
        """Downloads a file or folder of the run into ``dst_path`` (a new temp dir by default);
        returns the local path."""
        dst = dst_path or tempfile.mkdtemp(prefix="keel-artifacts-")
        return _transfer.download_tree(self._artifact_transport, _transfer.ref(run_id=run_id, path=path), dst)

    # ---- keel extras -----------------------------------------------------------------------
    def upload_artifact(
        self, local_path: str, path: str, *, run_id: str | None = None, artifact_uri: str | None = None
    ) -> FileInfo:
        """Uploads ``local_path`` to exactly ``path`` under a run or an artifact URI."""
        return _transfer.upload_file(self._artifact_transport, _transfer.ref(run_id, artifact_uri, path), local_path)

    def list_artifacts_under(
        self, *, run_id: str | None = None, artifact_uri: str | None = None, path: str | None = None, recursive: bool = False
    ) -> list[FileInfo]:
        """Like ``list_artifacts``, for a run or an artifact URI, optionally recursive."""
        return _transfer.list_all(self._artifact_transport, _transfer.ref(run_id, artifact_uri, path), recursive=recursive)

    def download_artifact_uri(self, artifact_uri: str, dst_path: str | None = None) -> str:
        """Downloads what ``runs:/...`` or a store URI names; returns the local path."""
        dst = dst_path or tempfile.mkdtemp(prefix="keel-artifacts-")
        return _transfer.download_tree(self._artifact_transport, _transfer.ref(artifact_uri=artifact_uri), dst)

    def stat_artifact(self, path: str = "", *, run_id: str | None = None, artifact_uri: str | None = None) -> FileInfo:
        return _transfer.stat(self._artifact_transport, _transfer.ref(run_id, artifact_uri, path))

    def delete_artifacts(self, path: str = "", *, run_id: str | None = None, artifact_uri: str | None = None) -> int:
        """Deletes a file or a folder (everything under it); returns the number of files deleted."""
        stub = self._artifact_transport.stub(artifacts_pb2_grpc.ArtifactServiceStub)
        request = pb.DeleteArtifactRequest(ref=_transfer.ref(run_id, artifact_uri, path))
        return int(self._artifact_transport.call(stub.DeleteArtifact, request, idempotent=True).deleted_count)

    def create_presigned_url(
        self, path: str, *, run_id: str | None = None, artifact_uri: str | None = None, method: str = "GET", expires_in: int = 0
    ) -> tuple[str, int]:
        """(URL, expiry in ms since epoch) for direct GET/PUT on the store (S3 only)."""
        if method.upper() not in _PRESIGN:
            raise InvalidArgument(f"method must be GET or PUT, got {method!r}", reason="INVALID_METHOD")
        stub = self._artifact_transport.stub(artifacts_pb2_grpc.ArtifactServiceStub)
        request = pb.CreatePresignedUrlRequest(
            ref=_transfer.ref(run_id, artifact_uri, path), method=_PRESIGN[method.upper()], expires_in_seconds=expires_in
        )
        response = self._artifact_transport.call(stub.CreatePresignedUrl, request, idempotent=True)
        return response.url, response.expiration_time

    def resolve_artifact_uri(self, uri: str) -> str:
        """The store URI that ``runs:/<run_id>/<path>`` (or a store URI) designates."""
        stub = self._artifact_transport.stub(artifacts_pb2_grpc.ArtifactServiceStub)
        request = pb.ResolveArtifactUriRequest(uri=uri)
        return self._artifact_transport.call(stub.ResolveArtifactUri, request, idempotent=True).artifact_uri

    def copy_artifacts(self, source_uri: str, destination_uri: str) -> tuple[int, int]:
        """Server-side copy of a file or folder; returns (file count, total bytes)."""
        stub = self._artifact_transport.stub(artifacts_pb2_grpc.ArtifactServiceStub)
        request = pb.CopyArtifactsRequest(
            source=_transfer.ref(artifact_uri=source_uri), destination=_transfer.ref(artifact_uri=destination_uri)
        )
        response = self._artifact_transport.call(stub.CopyArtifacts, request, idempotent=True)
        return int(response.file_count), int(response.total_bytes)


def _to_pil(image: Any) -> Any:
    Image = require("PIL.Image", "eval", purpose="keel.log_image encodes images with it")  # noqa: N806 - the module's usual name

    if isinstance(image, Image.Image):
        return image
    import numpy as np

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidArgument(
            f"image array has shape {array.shape}: use HxW, HxWx1, HxWx3 or HxWx4", reason="INVALID_IMAGE"
        )
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1):
            raise InvalidArgument("float image values must lie in [0, 1]", reason="INVALID_IMAGE")
        array = (array * 255).round()
    elif array.size and (array.min() < 0 or array.max() > 255):
        raise InvalidArgument("integer image values must lie in [0, 255]", reason="INVALID_IMAGE")
    return Image.fromarray(array.astype(np.uint8))
