"""MLflow's artifact routes over keel's ``ArtifactService``: the artifact proxy the ``mlflow``
client uses for a run whose ``artifact_uri`` is ``mlflow-artifacts:/<experiment>/<run>/artifacts``
(``/api/2.0/mlflow-artifacts/artifacts/<path>``: GET downloads, PUT uploads, DELETE deletes,
``GET ...artifacts?path=`` lists), the tracking API's listing (``/mlflow/artifacts/list``), and the
UI's file reads (``/get-artifact``, ``/model-versions/get-artifact``). A proxy path is a run's
(``core.parse_proxy_path``: ``<experiment>/<run>/artifacts/<path>``) or a registered model
version's (``core.parse_model_version_proxy_path``: ``model-versions/<name>/<version>/<path>``,
the registry's read-only snapshot, what ``get-download-uri`` answers).

Bytes stream straight through: an upload's HTTP body goes to ``UploadArtifact`` chunk by chunk as
it arrives, a download's ``DownloadArtifact`` chunks go out as the HTTP body (sized by the
download header), so memory stays flat whatever the file size. The experiment named in a run's
path must be the run's. Path checks, permissions and the audit log are the artifact service's own.

Multipart uploads (``/mlflow-artifacts/mpu/*``, tried only with
``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true``) answer 501 NOT_IMPLEMENTED with the message the
client falls back on: it then sends one streamed PUT, which already keeps memory flat here.
Presigned downloads (``/mlflow-artifacts/presigned/*``) likewise answer 501 and the client
downloads through the proxy.
"""

from __future__ import annotations

import mimetypes
import posixpath
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote as url_quote

import grpc

import keel.exceptions as sdk_errors
from keel.artifacts.v1 import artifacts_pb2 as apb
from keel.tracking.v1 import tracking_pb2 as tpb
from keel_server.artifacts.store import validate_path
from keel_server.common import errors
from keel_server.common.http import Request, Response
from keel_server.mlflow_port import core
from keel_server.mlflow_port.core import Port, args, endpoint, ok, optional, required

# MLflow serves the artifact API under /api and, for its UI, /ajax-api.
PROXY_PREFIXES = (core.ARTIFACTS_API, "/ajax-api/2.0/mlflow-artifacts")
# Bytes of the HTTP body read (and sent on as one upload chunk) at a time; the artifact service
# takes up to 4 MiB per chunk.
UPLOAD_CHUNK_BYTES = 1024 * 1024
# Entries per ListArtifacts page (the service's maximum): MLflow's listings are unpaged.
LIST_PAGE_SIZE = 10_000
# What the mlflow client's ``_try_multipart_upload`` matches to fall back to a plain PUT
# (``mlflow.exceptions._UnsupportedMultipartUploadException.MESSAGE``).
MULTIPART_UNSUPPORTED = "Multipart upload is not supported for the current artifact repository"
# Refusals of the caller (not of the request): a write is refused for them whatever it names.
_REFUSALS = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def _proxy_endpoint(method: str, tail: str) -> Any:
    """Registers a route under both artifact API prefixes."""

    def decorate(route: core.Route) -> core.Route:
        for prefix in PROXY_PREFIXES:
            endpoint(method, prefix + tail)(route)
        return route

    return decorate


# -- converters -----------------------------------------------------------------------------------
def file_info_json(info: apb.FileInfo, path: str) -> dict[str, Any]:
    """MLflow's ``FileInfo`` JSON: ``file_size`` only for files (MLflow leaves it unset on folders)."""
    entry: dict[str, Any] = {"path": path, "is_dir": info.is_dir}
    if not info.is_dir:
        entry["file_size"] = info.file_size
    return entry


def attachment_headers(path: str) -> tuple[str, dict[str, str]]:
    """(content type, headers) of a file sent as an attachment, never rendered inline, as MLflow
    sends artifacts (a stored HTML file must not run as a page of this origin). The name goes
    in RFC 6266 form: an ASCII fallback plus the exact UTF-8 name."""
    name = posixpath.basename(path) or "artifact"
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in name)
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{url_quote(name, safe='')}"
    return content_type, {"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"}


# -- shared steps ---------------------------------------------------------------------------------
def run_ref(port: Port, request: Request, raw_path: str, *, write: bool = False) -> apb.ArtifactRef:
    """The artifact reference a proxy path names. The experiment in the path must be the run's;
    the run is read with the caller's credentials, so a caller who may not read it gets the same
    refusal whether or not it exists.

    For a write (``write``), a caller refused that read is refused the write too (it needs more
    than READ), so the write is still made and refused by the artifact service: the audit log
    then records the attempted upload or delete, not only the read."""
    where = core.parse_proxy_path(raw_path)
    # The path is checked before anything is looked up, as mlflow server does: a traversal is
    # INVALID_PARAMETER_VALUE whatever else is wrong (the artifact service checks it again).
    ref = apb.ArtifactRef(run_id=where.run_id, path=validate_path(where.path))
    try:
        run = port.call(request, "tracking", "GetRun", tpb.GetRunRequest(run_id=where.run_id))
    except sdk_errors.KeelError as exc:
        if write and exc.code in _REFUSALS:
            return ref
        raise
    if run.info.experiment_id != where.experiment_id:
        raise errors.NotFound(
            f"run {where.run_id!r} is not in experiment {where.experiment_id!r}: its artifacts are under "
            f"{core.run_artifact_uri(run.info.experiment_id, where.run_id)}",
            reason="RUN_NOT_IN_EXPERIMENT",
        )
    return ref


def artifact_ref(port: Port, request: Request, raw_path: str, *, write: bool = False) -> apb.ArtifactRef:
    """The artifact reference of any proxy path: a run's (``run_ref``), or a registered model
    version's files (``model-versions/<name>/<version>[/<path>]``, the registry's snapshot: read
    only, keel refuses writes there)."""
    version_path = core.parse_model_version_proxy_path(raw_path)
    if version_path is None:
        return run_ref(port, request, raw_path, write=write)
    validate_path(version_path.path)
    # Imported here: the registry routes import this module.
    from keel_server.mlflow_port.registry import model_version_artifact_ref

    return model_version_artifact_ref(port, request, version_path)


def list_all(port: Port, request: Request, ref: apb.ArtifactRef) -> Iterator[apb.FileInfo]:
    """Every direct child of ``ref`` (all pages): MLflow's listings are unpaged."""
    token = ""
    while True:
        page = port.call(
            request,
            "artifacts",
            "ListArtifacts",
            apb.ListArtifactsRequest(ref=ref, page_size=LIST_PAGE_SIZE, page_token=token),
        )
        yield from page.files
        token = page.next_page_token
        if not token:
            return


class _DownloadBody:
    """The chunks of a ``DownloadArtifact`` stream after its header, as an HTTP body; ``close``
    (called by the HTTP layer for HEAD, or when the body is done) ends the gRPC call."""

    def __init__(self, messages: Iterator[apb.DownloadArtifactResponse]) -> None:
        self._messages = messages

    def __iter__(self) -> Iterator[bytes]:
        try:
            for message in self._messages:
                yield message.chunk
        finally:
            self.close()

    def close(self) -> None:
        close = getattr(self._messages, "close", None)
        if close is not None:
            close()


def download(port: Port, request: Request, ref: apb.ArtifactRef) -> Response:
    """One file as the response body, streamed, with its size as Content-Length. Errors (missing
    file, a folder, no permission) come before the header and so as MLflow's JSON error."""
    messages = port.stream(request, "artifacts", "DownloadArtifact", apb.DownloadArtifactRequest(ref=ref))
    first = next(messages, None)
    if first is None or first.WhichOneof("message") != "header":
        raise errors.KeelError("the artifact service sent no download header", reason="BAD_DOWNLOAD_STREAM")
    content_type, headers = attachment_headers(ref.path)
    return Response(200, _DownloadBody(messages), content_type, headers, length=first.header.file_size)


class _UploadFeed:
    """The upload stream fed from the HTTP body: header (with the body's length as the expected
    size, so a short body stores nothing), then the body's chunks.

    gRPC pulls the messages on its own thread and may still be inside a read of the body when
    the call ends early (a refusal at the header); ``close`` waits for that read, and no read
    starts after it, so the handler can then drain or drop the rest of the body safely."""

    def __init__(self, ref: apb.ArtifactRef, size: int, body: Iterator[bytes]) -> None:
        self._header = apb.UploadArtifactRequest(header=apb.UploadHeader(ref=ref, size=size))
        self._body = body
        self._lock = threading.Lock()
        self._closed = False
        # A failure reading the body (TRUNCATED_BODY), raised by the route instead of the
        # service's SIZE_MISMATCH that follows from it.
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[apb.UploadArtifactRequest]:
        yield self._header
        while True:
            with self._lock:
                if self._closed:
                    return
                try:
                    chunk = next(self._body, None)
                except Exception as exc:  # noqa: BLE001 - reported by the route
                    self.error = exc
                    return
            if chunk is None:
                return
            yield apb.UploadArtifactRequest(chunk=chunk)

    def close(self) -> None:
        with self._lock:
            self._closed = True


# -- the artifact proxy (/api/2.0/mlflow-artifacts) --------------------------------------------------
@_proxy_endpoint("GET", "/artifacts/{artifact_path:path}")
def download_artifact(port: Port, request: Request) -> Response:
    ref = artifact_ref(port, request, request.params["artifact_path"])
    return download(port, request, ref)


@_proxy_endpoint("PUT", "/artifacts/{artifact_path:path}")
def upload_artifact(port: Port, request: Request) -> Response:
    ref = artifact_ref(port, request, request.params["artifact_path"], write=True)
    size = request.content_length()
    feed = _UploadFeed(ref, size, request.stream(UPLOAD_CHUNK_BYTES))
    try:
        port.upload(request, "artifacts", "UploadArtifact", iter(feed))
    except Exception:
        feed.close()
        if feed.error is not None:
            raise feed.error from None
        raise
    feed.close()
    if feed.error is not None:
        raise feed.error
    return ok({})


@_proxy_endpoint("DELETE", "/artifacts/{artifact_path:path}")
def delete_artifact(port: Port, request: Request) -> Response:
    ref = artifact_ref(port, request, request.params["artifact_path"], write=True)
    port.call(request, "artifacts", "DeleteArtifact", apb.DeleteArtifactRequest(ref=ref))
    return ok({})


@_proxy_endpoint("GET", "/artifacts")
def list_proxy_artifacts(port: Port, request: Request) -> Response:
    """``?path=<experiment>/<run>/artifacts[/<folder>]`` (or a model version's
    ``model-versions/<name>/<version>[/<folder>]``): the folder's direct children by name (MLflow's
    proxy answers base names; the client joins them to the path it asked for)."""
    raw = optional(args(request), "path")
    if raw is None:
        raise errors.InvalidArgument(
            "Missing value for required parameter 'path': keel's MLflow port lists the artifacts of one run, "
            "path=<experiment_id>/<run_id>/artifacts[/<folder>], or of one registered model version, "
            "path=model-versions/<name>/<version>[/<folder>]",
            reason="MISSING_PARAMETER",
            field="path",
        )
    ref = artifact_ref(port, request, raw)
    files = [file_info_json(info, posixpath.basename(info.path)) for info in list_all(port, request, ref)]
    return ok({"files": files} if files else {})


@_proxy_endpoint("POST", "/mpu/create/{artifact_path:path}")
@_proxy_endpoint("POST", "/mpu/complete/{artifact_path:path}")
@_proxy_endpoint("POST", "/mpu/abort/{artifact_path:path}")
def multipart_upload(port: Port, request: Request) -> Response:
    """Not offered: the client falls back to one streamed PUT on exactly this message (and, from
    mlflow 3.x, on the 501 status)."""
    raise errors.Unimplemented(
        f"{MULTIPART_UNSUPPORTED}: keel's MLflow port streams a plain PUT to the artifact service with flat "
        "memory; unset MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD",
        reason="MULTIPART_UPLOAD_UNSUPPORTED",
    )


@_proxy_endpoint("GET", "/presigned/{artifact_path:path}")
def presigned_download(port: Port, request: Request) -> Response:
    """Not offered: on 501 the client downloads through the proxy instead."""
    raise errors.Unimplemented(
        "Presigned download is not supported by keel's MLflow port: artifacts download through "
        "/api/2.0/mlflow-artifacts/artifacts; unset MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
        reason="PRESIGNED_DOWNLOAD_UNSUPPORTED",
    )


# -- the tracking API's artifact endpoints ----------------------------------------------------------
def _run_id(data: dict[str, Any]) -> str:
    """``run_id``, or the older ``run_uuid`` MLflow still accepts."""
    if not data.get("run_id") and data.get("run_uuid"):
        return str(required(data, "run_uuid"))
    return str(required(data, "run_id"))


def _relative_path(data: dict[str, Any]) -> str:
    """The ``path`` argument under a run's root ('' for the root), checked (``validate_path``) before
    anything is looked up. A trailing '/' is dropped: MLflow takes ``folder/``."""
    path = optional(data, "path", default="")
    return validate_path(path.rstrip("/") if path.strip("/") else path)


@endpoint("GET", "artifacts/list")
def list_run_artifacts(port: Port, request: Request) -> Response:
    """``run_id`` + ``path``: the folder's direct children with run-relative paths, and the run's
    artifact URI as ``root_uri``."""
    data = args(request)
    run_id = _run_id(data)
    run = port.call(request, "tracking", "GetRun", tpb.GetRunRequest(run_id=run_id))
    ref = apb.ArtifactRef(run_id=run_id, path=_relative_path(data))
    files = [file_info_json(info, info.path) for info in list_all(port, request, ref)]
    payload: dict[str, Any] = {"root_uri": core.run_artifact_uri(run.info.experiment_id, run_id)}
    if files:
        payload["files"] = files
    return ok(payload)


@endpoint("GET", "/get-artifact")
def get_artifact(port: Port, request: Request) -> Response:
    """The UI's file read: ``run_id`` + ``path``."""
    data = args(request)
    run_id = _run_id(data)
    return download(port, request, apb.ArtifactRef(run_id=run_id, path=_relative_path_required(data)))


@endpoint("GET", "/model-versions/get-artifact")
def get_model_version_artifact(port: Port, request: Request) -> Response:
    """A file of a registered model version: ``name`` + ``version`` + ``path``, read from the
    registry's snapshot of its files (as its ``model-versions/...`` proxy path is)."""
    data = args(request)
    where = core.ModelVersionPath(
        required(data, "name"), required(data, "version", int), _relative_path_required(data)
    )
    # Imported here: the registry routes import this module.
    from keel_server.mlflow_port.registry import model_version_artifact_ref

    return download(port, request, model_version_artifact_ref(port, request, where))


def _relative_path_required(data: dict[str, Any]) -> str:
    required(data, "path")
    return _relative_path(data)
