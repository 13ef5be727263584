"""The SDK's artifact transfers over ``ArtifactService``: streamed, checksummed, retried, resumed.

- Upload: one pass over the file (header, chunks, then a trailer with the sha256 computed while
  sending). UNAVAILABLE retries the whole upload (safe: an upload replaces, and a failed one
  leaves nothing).
- Download: written to ``<dst>.keel-part`` and moved into place only when size and sha256
  match; UNAVAILABLE resumes from the last byte received.
- Trees: files go in parallel on a small thread pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import grpc

from keel._transport import RetryBudget, Transport
from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.exceptions import InvalidArgument, KeelError, from_rpc_error
from keel.shared import pages
from keel.shared.chunks import (
    DOWNLOAD_METHOD,
    UPLOAD_METHOD,
    frame_chunk,
    make_private_dirs,
    open_private_file,
    parse_message_or_chunk,
    reserve_space,
    serialize_message,
)
from keel.shared.chunks import fallocate as _fallocate  # noqa: F401 - re-exported (tests read it here)
from keel.shared.chunks import parse_chunk as parse_chunk
from keel.shared.uris import parse_runs_uri

# Bytes per upload message (the server accepts up to 4 MiB). 1 MiB measured fastest through
# Python gRPC on loopback (bigger messages fall out of the CPU caches while they are copied).
UPLOAD_CHUNK_BYTES = 1024 * 1024
# Chunks a transfer's helper thread may be ahead of (upload: read and hashed) or behind (download:
# still to write and hash) the gRPC stream. Bounds memory at a few chunks per transfer.
PIPELINE_CHUNKS = 4
PARALLEL_FILES = 4
# Progress bars only for transfers over this size, and only on a terminal.
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
LIST_PAGE_SIZE = pages.LIST_ARTIFACTS.default
# Deadline of one transfer: a floor plus the time at a (very slow) 1 MB/s.
MIN_DEADLINE_S = 120.0
PART_SUFFIX = ".keel-part"


@dataclass(frozen=True)
class FileInfo:
    """An artifact: ``path`` relative to the run's (or URI's) root, as MLflow reports it."""

    path: str
    is_dir: bool
    file_size: int | None
    sha256: str = ""


def file_info(info: pb.FileInfo) -> FileInfo:
    return FileInfo(path=info.path, is_dir=info.is_dir, file_size=None if info.is_dir else info.file_size, sha256=info.sha256)


def ref(run_id: str | None = None, artifact_uri: str | None = None, path: str | None = None) -> pb.ArtifactRef:
    """An ``ArtifactRef``; a path given as ``a/b/`` or with Windows separators is tidied."""
    if bool(run_id) == bool(artifact_uri):
        raise InvalidArgument("give exactly one of run_id and artifact_uri", reason="INVALID_ARTIFACT_REF")
    return pb.ArtifactRef(run_id=run_id or "", artifact_uri=artifact_uri or "", path=clean_path(path))


def clean_path(path: str | None) -> str:
    return (path or "").replace(os.sep, "/").strip("/") if path else ""


def _deadline(size: int) -> float:
    return MIN_DEADLINE_S + size / 1e6


def _retryable(exc: grpc.RpcError) -> bool:
    return exc.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined, no-any-return]


class _Progress:
    """A tqdm bar on a terminal for big transfers; otherwise does nothing."""

    def __init__(self, total: int, desc: str) -> None:
        self._bar: Any = None
        if total >= PROGRESS_MIN_BYTES and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def reset(self, done: int) -> None:
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _stub(transport: Transport) -> artifacts_pb2_grpc.ArtifactServiceStub:
    return transport.stub(artifacts_pb2_grpc.ArtifactServiceStub)


# ---------------------------------------------------------------- chunk messages
# Chunk framing and disk reservation are shared with the server: ``keel.shared.chunks``.
def parse_upload_request(data: bytes) -> pb.UploadArtifactRequest | memoryview:
    return parse_message_or_chunk(pb.UploadArtifactRequest.FromString, data)


def parse_download_response(data: bytes) -> pb.DownloadArtifactResponse | memoryview:
    return parse_message_or_chunk(pb.DownloadArtifactResponse.FromString, data)


def _upload_call(transport: Transport) -> grpc.StreamUnaryMultiCallable:
    return transport.channel.stream_unary(
        UPLOAD_METHOD, request_serializer=serialize_message, response_deserializer=pb.FileInfo.FromString
    )


def _download_call(transport: Transport) -> grpc.UnaryStreamMultiCallable:
    return transport.channel.unary_stream(
        DOWNLOAD_METHOD,
        request_serializer=pb.DownloadArtifactRequest.SerializeToString,
        response_deserializer=parse_download_response,
    )


# ---------------------------------------------------------------- upload
def upload_stream(
    transport: Transport, target: pb.ArtifactRef, open_source: Callable[[], IO[bytes]], size: int, desc: str = ""
) -> FileInfo:
    """Uploads what ``open_source()`` reads (``size`` bytes) to ``target``; retried whole on
    UNAVAILABLE. ``open_source`` is called once per attempt."""
    upload = _upload_call(transport)
    retries = RetryBudget()
    while True:
        progress = _Progress(size, desc or target.path)
        try:
            with open_source() as source:
                response = upload(_upload_messages(target, source, size, progress), timeout=_deadline(size))
            return file_info(response)
        except grpc.RpcError as exc:
            if _retryable(exc) and retries.wait():
                continue
            raise from_rpc_error(exc) from None
        finally:
            progress.close()


def _upload_messages(
    target: pb.ArtifactRef, source: IO[bytes], size: int, progress: _Progress
) -> Iterator[pb.UploadArtifactRequest | bytes]:
    """Header, pre-framed chunks, trailer with the sha256 of what was sent."""
    yield pb.UploadArtifactRequest(header=pb.UploadHeader(ref=target, size=size))
    digest = hashlib.sha256()
    if size <= UPLOAD_CHUNK_BYTES:  # one chunk: no helper thread
        while block := source.read(UPLOAD_CHUNK_BYTES):
            digest.update(block)
            yield frame_chunk(block)
            progress.update(len(block))
    else:
        for framed, n in _read_ahead(source, digest):
            yield framed
            progress.update(n)
    yield pb.UploadArtifactRequest(trailer=pb.UploadTrailer(sha256=digest.hexdigest()))


def _read_ahead(source: IO[bytes], digest: Any) -> Iterator[tuple[bytes, int]]:
    """The framed chunks of ``source`` (and their sizes), read, hashed and framed on a helper
    thread (file reads and ``hashlib`` release the GIL) up to ``PIPELINE_CHUNKS`` ahead, so they
    overlap gRPC's sending of the previous chunks. ``digest`` is complete once the iterator is
    exhausted."""
    slots: queue.Queue[tuple[bytes, int] | BaseException | None] = queue.Queue(maxsize=PIPELINE_CHUNKS)
    stop = threading.Event()

    def offer(item: tuple[bytes, int] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            while block := source.read(UPLOAD_CHUNK_BYTES):
                digest.update(block)
                if not offer((frame_chunk(block), len(block))):
                    return
            offer(None)
        except BaseException as exc:  # noqa: BLE001 - raised on the consumer's thread
            offer(exc)

    thread = threading.Thread(target=produce, name="keel-upload-read", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the RPC failed or finished: the reader stops within one put timeout
        thread.join()


def upload_file(transport: Transport, target: pb.ArtifactRef, local_path: str) -> FileInfo:
    if not os.path.isfile(local_path):
        raise InvalidArgument(f"{local_path!r} is not a file", reason="INVALID_LOCAL_PATH")
    return upload_stream(
        transport, target, lambda: open(local_path, "rb"), os.path.getsize(local_path), os.path.basename(local_path)
    )


def upload_tree(
    transport: Transport, run_id: str | None, artifact_uri: str | None, local_dir: str, artifact_path: str | None
) -> list[FileInfo]:
    """Uploads every file under ``local_dir`` to ``<artifact_path>/<relative path>``, in parallel."""
    if not os.path.isdir(local_dir):
        raise InvalidArgument(f"{local_dir!r} is not a directory", reason="INVALID_LOCAL_PATH")
    base = clean_path(artifact_path)
    jobs: list[tuple[pb.ArtifactRef, str]] = []
    for folder, _, names in os.walk(local_dir):
        for name in sorted(names):
            local = os.path.join(folder, name)
            rel = os.path.relpath(local, local_dir).replace(os.sep, "/")
            jobs.append((ref(run_id, artifact_uri, f"{base}/{rel}" if base else rel), local))
    with ThreadPoolExecutor(max_workers=PARALLEL_FILES, thread_name_prefix="keel-upload") as pool:
        return list(pool.map(lambda job: upload_file(transport, *job), jobs))


# ---------------------------------------------------------------- download
def download_file(transport: Transport, source: pb.ArtifactRef, dst: str) -> FileInfo:
    """Downloads one file to ``dst`` (via ``dst.keel-part``), resuming after UNAVAILABLE and
    verifying size and sha256 before the file appears."""
    download = _download_call(transport)
    make_private_dirs(os.path.dirname(os.path.abspath(dst)))
    part = dst + PART_SUFFIX
    offset, size, sha = 0, -1, ""
    digest = hashlib.sha256()
    retries = RetryBudget()
    progress: _Progress | None = None
    try:
        with open_private_file(part) as out, _Sink(out, digest) as sink:
            while True:
                try:
                    stream = download(pb.DownloadArtifactRequest(ref=source, offset=offset), timeout=_deadline(max(size, 0)))
                    for message in stream:
                        if isinstance(message, memoryview):
                            chunk: bytes | memoryview = message
                        elif message.WhichOneof("message") == "header":
                            header = message.header
                            if size >= 0 and (header.file_size != size or header.sha256 != sha):
                                # The file was replaced between attempts: start over.
                                sink.close()
                                return _restart(transport, source, dst, out)
                            if size < 0:  # the first header: the file is about to be written from 0
                                reserve_space(out.fileno(), header.file_size, part)
                            size, sha = header.file_size, header.sha256
                            if progress is None:
                                progress = _Progress(size, os.path.basename(dst))
                            progress.reset(offset)
                            continue
                        else:
                            chunk = message.chunk
                        sink.put(chunk)
                        offset += len(chunk)
                        if progress is not None:
                            progress.update(len(chunk))
                    break
                except grpc.RpcError as exc:
                    if _retryable(exc) and retries.wait():
                        continue
                    raise from_rpc_error(exc) from None
            sink.close()  # every chunk written and hashed (or the sink's error raised)
        if offset != size or (sha and digest.hexdigest() != sha):
            raise KeelError(
                f"download of {_describe(source)} is corrupt: got {offset} bytes with sha256 {digest.hexdigest()}, "
                f"expected {size} bytes with sha256 {sha}",
                reason="CHECKSUM_MISMATCH",
            )
        os.replace(part, dst)
        return FileInfo(path=source.path, is_dir=False, file_size=size, sha256=sha)
    finally:
        if progress is not None:
            progress.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)


class _Sink:
    """Writes and hashes downloaded chunks on a helper thread, in order, so gRPC receives the
    next message meanwhile; at most ``PIPELINE_CHUNKS`` wait. ``close`` waits for the last one
    and raises what the helper hit (a full disk, say)."""

    def __init__(self, out: IO[bytes], digest: Any) -> None:
        self._out = out
        self._digest = digest
        self._slots: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=PIPELINE_CHUNKS)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def put(self, chunk: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="keel-download-write", daemon=True)
            self._thread.start()
        self._slots.put(chunk)

    def _drain(self) -> None:
        while (chunk := self._slots.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(chunk)
                    self._digest.update(chunk)
                except BaseException as exc:  # noqa: BLE001 - raised by put/close
                    self._error = exc

    def close(self) -> None:
        if self._thread is not None:
            self._slots.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:  # leaving on an error: stop the helper, keep that error
            self._slots.put(None)
            self._thread.join()
            self._thread = None


def _restart(transport: Transport, source: pb.ArtifactRef, dst: str, out: IO[bytes]) -> FileInfo:
    out.close()
    return download_file(transport, source, dst)


def _describe(source: pb.ArtifactRef) -> str:
    root = f"run {source.run_id}" if source.run_id else source.artifact_uri
    return f"{root}:{source.path}" if source.path else root


def read_bytes(transport: Transport, source: pb.ArtifactRef, max_bytes: int = 64 * 1024 * 1024) -> bytes:
    """A small artifact's content, in memory (load_text / load_dict)."""
    download = _download_call(transport)
    retries = RetryBudget()
    while True:
        try:
            data = bytearray()
            sha = ""
            for message in download(pb.DownloadArtifactRequest(ref=source), timeout=MIN_DEADLINE_S):
                if isinstance(message, memoryview):
                    data += message
                elif message.WhichOneof("message") == "header":
                    if message.header.file_size > max_bytes:
                        raise InvalidArgument(
                            f"{_describe(source)} has {message.header.file_size} bytes, too many to load in memory: "
                            "use download_artifacts",
                            reason="ARTIFACT_TOO_LARGE",
                        )
                    sha = message.header.sha256
                else:
                    data += message.chunk
            if sha and hashlib.sha256(data).hexdigest() != sha:
                raise KeelError(f"download of {_describe(source)} is corrupt (sha256 mismatch)", reason="CHECKSUM_MISMATCH")
            return bytes(data)
        except grpc.RpcError as exc:
            if _retryable(exc) and retries.wait():
                continue
            raise from_rpc_error(exc) from None


def list_all(transport: Transport, target: pb.ArtifactRef, recursive: bool) -> list[FileInfo]:
    """Every entry under ``target`` (all pages)."""
    stub = _stub(transport)
    out: list[FileInfo] = []
    token = ""
    while True:
        response = transport.call(
            stub.ListArtifacts,
            pb.ListArtifactsRequest(ref=target, recursive=recursive, page_size=LIST_PAGE_SIZE, page_token=token),
            idempotent=True,
        )
        out.extend(file_info(f) for f in response.files)
        token = response.next_page_token
        if not token:
            return out


def stat(transport: Transport, target: pb.ArtifactRef) -> FileInfo:
    return file_info(transport.call(_stub(transport).StatArtifact, pb.StatArtifactRequest(ref=target), idempotent=True))


def _local_name(source: pb.ArtifactRef) -> str:
    """The last segment of what ``source`` names ('' for a run's root)."""
    if source.path:
        return source.path.rsplit("/", 1)[-1]
    uri = source.artifact_uri
    if uri.startswith("runs:/"):
        uri = parse_runs_uri(uri, reason="INVALID_ARTIFACT_URI").path
    return uri.rstrip("/").rsplit("/", 1)[-1] if uri else ""


def download_tree(transport: Transport, source: pb.ArtifactRef, dst_dir: str) -> str:
    """Downloads the file or folder ``source`` names into ``dst_dir/<its last segment>`` (the
    root itself into ``dst_dir``); returns that local path."""
    info = stat(transport, source)
    name = _local_name(source)
    local_root = os.path.join(dst_dir, name) if name else dst_dir
    if not info.is_dir:
        download_file(transport, source, local_root)
        return local_root
    make_private_dirs(local_root)
    files = [f for f in list_all(transport, source, recursive=True) if not f.is_dir]
    prefix = f"{source.path}/" if source.path else ""
    real_root = os.path.realpath(local_root)
    jobs: list[tuple[pb.ArtifactRef, str]] = []
    for f in files:
        rel = f.path[len(prefix) :] if f.path.startswith(prefix) else f.path
        local = os.path.realpath(os.path.join(local_root, *rel.split("/")))
        if not local.startswith(real_root + os.sep):  # never write outside dst, whatever the server says
            raise KeelError(f"refusing to write {f.path!r} outside {local_root}", reason="INVALID_ARTIFACT_PATH")
        child = pb.ArtifactRef(run_id=source.run_id, artifact_uri=source.artifact_uri, path=f.path)
        jobs.append((child, local))
    with ThreadPoolExecutor(max_workers=PARALLEL_FILES, thread_name_prefix="keel-download") as pool:
        list(pool.map(lambda job: download_file(transport, *job), jobs))
    return local_root
