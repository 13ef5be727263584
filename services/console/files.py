"""A run's artifacts through the console: listings, previews (capped), downloads of a file as it
streams from keel's ArtifactService, and of a folder as a zip written while its files stream in.
Memory stays flat whatever the size: nothing is held whole.

Artifacts are user content served from the console's origin, so every answer forbids sniffing and
runs under a CSP sandbox (an SVG or an HTML file opened directly cannot run scripts), and HTML is
only ever served as text/plain.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from keel.artifacts.v1 import artifacts_pb2 as apb
from keel_server.common.errors import InvalidArgument
from keel_server.common.http import Response

PREVIEW_BYTES = 1024 * 1024
# Most entries a listing or a folder zip covers.
MAX_LISTED = 10_000
ZIP_FILES_MAX = 10_000
# Content types by extension (lower case); anything else is application/octet-stream.
TYPES = {
    ".txt": "text/plain",
    ".log": "text/plain",
    ".md": "text/plain",
    ".py": "text/plain",
    ".r": "text/plain",
    ".sh": "text/plain",
    ".ini": "text/plain",
    ".cfg": "text/plain",
    ".toml": "text/plain",
    ".html": "text/plain",
    ".htm": "text/plain",
    ".xml": "text/plain",
    ".json": "application/json",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}
# Files known by name (no extension).
NAMED_TYPES = {"MLmodel": "application/yaml", "MLproject": "application/yaml", "requirements": "text/plain"}
ARTIFACT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox",
    "Cache-Control": "private, no-store",
}

Streamer = Callable[[str, Any], Iterator[Any]]  # (method, request message) -> response messages
Caller = Callable[[str, Any], Any]  # (method, request message) -> response


def content_type(path: str) -> str:
    name = posixpath.basename(path)
    if name in NAMED_TYPES:
        return NAMED_TYPES[name]
    return TYPES.get(posixpath.splitext(name)[1].lower(), "application/octet-stream")


def clean_path(path: str) -> str:
    """An artifact path from the query string: ``/``-separated, relative, without ``.``/``..``
    segments (keel's ArtifactService refuses them too; refusing here keeps the message clear)."""
    path = path.strip().rstrip("/")
    if not path:
        return ""
    parts = path.split("/")
    if "\x00" in path or "\\" in path or any(part in ("", ".", "..") for part in parts):
        raise InvalidArgument(
            f"artifact path {path[:200]!r} is not valid: use a relative '/'-separated path without '.' or '..'",
            reason="INVALID_PATH",
            field="path",
        )
    return path


def listing(call: Caller, run_id: str, path: str) -> dict[str, Any]:
    """The direct children of ``path`` in a run's artifacts."""
    files: list[dict[str, Any]] = []
    token = ""
    while len(files) < MAX_LISTED:
        answer = call(
            "ListArtifacts",
            apb.ListArtifactsRequest(ref=apb.ArtifactRef(run_id=run_id, path=path), page_token=token),
        )
        files.extend({"path": f.path, "is_dir": f.is_dir, "file_size": int(f.file_size) if not f.is_dir else None} for f in answer.files)
        token = answer.next_page_token
        if not token:
            break
    return {"files": files[:MAX_LISTED], "truncated": bool(token) or len(files) > MAX_LISTED}


def file_response(stream: Streamer, ref: apb.ArtifactRef, *, preview: bool, attachment: bool) -> Response:
    """One file: its bytes as they stream (the first message, the header, is read before answering
    so a missing file is a 404, not a cut connection); a preview stops after PREVIEW_BYTES."""
    messages = stream("DownloadArtifact", apb.DownloadArtifactRequest(ref=ref))
    first = next(messages, None)
    if first is None or first.WhichOneof("message") != "header":
        raise InvalidArgument("the artifact service answered without a header", reason="BAD_STREAM")
    size = int(first.header.file_size)
    headers = dict(ARTIFACT_HEADERS)
    name = posixpath.basename(ref.path) or "artifact"
    if attachment:
        headers["Content-Disposition"] = _disposition(name)
        kind = "application/octet-stream"
    else:
        kind = content_type(ref.path)
    length = size
    if preview and size > PREVIEW_BYTES:
        headers["X-Keel-Truncated"] = "1"
        length = PREVIEW_BYTES
    headers["X-Keel-File-Size"] = str(size)
    return Response(200, _chunks(messages, length), kind, headers, length=length)


def _chunks(messages: Iterator[Any], limit: int) -> Iterator[bytes]:
    sent = 0
    try:
        for message in messages:
            chunk = message.chunk
            if not chunk:
                continue
            if sent + len(chunk) >= limit:
                yield chunk[: limit - sent]
                return
            sent += len(chunk)
            yield chunk
    finally:
        close = getattr(messages, "close", None)
        if close is not None:
            close()  # ends the gRPC stream when a preview stops early


def zip_response(call: Caller, stream: Streamer, run_id: str, folder: str) -> Response:
    """A folder as a zip, written while its files stream in (chunked; no size known ahead)."""
    paths: list[str] = []
    token = ""
    while True:
        answer = call(
            "ListArtifacts",
            apb.ListArtifactsRequest(
                ref=apb.ArtifactRef(run_id=run_id, path=folder), recursive=True, page_token=token
            ),
        )
        paths.extend(f.path for f in answer.files if not f.is_dir)
        if len(paths) > ZIP_FILES_MAX:
            raise InvalidArgument(
                f"the folder holds more than {ZIP_FILES_MAX:,} files: download it with `keel artifacts download`",
                reason="FOLDER_TOO_LARGE",
                field="path",
            )
        token = answer.next_page_token
        if not token:
            break
    name = (posixpath.basename(folder) or run_id) + ".zip"
    headers = dict(ARTIFACT_HEADERS)
    headers["Content-Disposition"] = _disposition(name)
    return Response(200, _zip_chunks(stream, run_id, folder, paths), "application/zip", headers)


class _Sink:
    """A write-only file for ZipFile that hands what was written to the response."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _zip_chunks(stream: Streamer, run_id: str, folder: str, paths: list[str]) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:  # type: ignore[call-overload]
        for path in paths:
            # Listed paths are relative to the run's root; the archive's to the folder.
            info = zipfile.ZipInfo(path[len(folder) + 1 :] if folder else path)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as entry:
                for message in stream(
                    "DownloadArtifact", apb.DownloadArtifactRequest(ref=apb.ArtifactRef(run_id=run_id, path=path))
                ):
                    if message.chunk:
                        entry.write(message.chunk)
                        data = sink.take()
                        if data:
                            yield data
            data = sink.take()
            if data:
                yield data
    data = sink.take()
    if data:
        yield data


def _disposition(name: str) -> str:
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
