"""The artifact service's domain layer: where an artifact is, and what may be done with it.

It turns a reference (a run id or an artifact URI, plus a relative path) into a store URI, with
ONE path validator (``validate_path``) and one root check, so nothing can be read or written
outside the run's (or the given URI's) root. It then drives the ``ArtifactStore`` (bytes) and
owns the rules around it: chunk and size limits, checksum verification, offsets, pagination,
presign lifetimes. No gRPC and no protobuf here.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from keel.shared import pages
from keel_server.artifacts.stores import ArtifactStore, ArtifactWriter, ObjectInfo, join_uri
from keel_server.common import db as dbmod
from keel_server.common import pagination, paths
from keel_server.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, quote
from keel_server.common.uris import parse_runs_uri

MAX_CHUNK_BYTES = 4 * 1024 * 1024
# S3 keys are limited to 1024 bytes; the local store follows the same rule so both behave alike.
MAX_PATH_BYTES = 1024
# The longest file or folder name local filesystems take (NAME_MAX).
MAX_SEGMENT_BYTES = 255
# A store URI is its root plus a path of at most MAX_PATH_BYTES.
MAX_URI_CHARS = 2 * MAX_PATH_BYTES
# Registered model versions' immutable snapshots live under this folder of the store's root;
# the registry writes and deletes there itself, never through this service.
REGISTRY_FOLDER = "_registry"
MAX_RUN_ID_CHARS = 32
LIST_DEFAULT_PAGE, LIST_MAX_PAGE = pages.LIST_ARTIFACTS
PRESIGN_DEFAULT_S, PRESIGN_MAX_S = 900, 7 * 24 * 3600
# Chunks read ahead of the gRPC stream during a download, so store reads overlap sends.
PREFETCH_CHUNKS = 4
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# The hosts a file:// URI may name: none, this machine, or "." (keel's spelling of a folder
# relative to the server's working directory, as in file://./keel-artifacts).
_LOCAL_FILE_HOSTS = ("", "localhost", ".")


def validate_path(path: str, field: str = "path") -> str:
    """The one check of relative artifact paths: '' (the root) or ``/``-separated segments with
    no ``..``, ``.``, empty segment, leading ``/``, backslash or NUL (INVALID_ARTIFACT_PATH, as
    written), then the hardened check of every percent-decoded spelling (``paths.check_safe``:
    UNSAFE_PATH). Returns the path, unchanged."""
    if path == "":
        return ""
    problem = ""
    if "\x00" in path:
        problem = "contains a NUL character"
    elif "\\" in path:
        problem = "contains a backslash (use '/' to separate folders)"
    elif path.startswith("/"):
        problem = "is absolute (artifact paths are relative to the run's artifact root; drop the leading '/')"
    elif len(path.encode("utf-8")) > MAX_PATH_BYTES:
        problem = f"is longer than {MAX_PATH_BYTES} bytes"
    else:
        segments = path.split("/")
        if "" in segments:
            problem = "has an empty segment ('//' or a trailing '/')"
        elif ".." in segments or "." in segments:
            problem = "has a '.' or '..' segment (paths cannot leave or re-enter folders)"
        elif any(len(s.encode("utf-8")) > MAX_SEGMENT_BYTES for s in segments):
            problem = f"has a file or folder name longer than {MAX_SEGMENT_BYTES} bytes"
    if problem:
        raise InvalidArgument(
            f"artifact path {quote(path)} {problem}", reason="INVALID_ARTIFACT_PATH", field=field, metadata={"path": path}
        )
    return paths.check_safe(path, field)


def _run_root(store: ArtifactStore, run_id: str) -> str:
    if not run_id or len(run_id) > MAX_RUN_ID_CHARS:
        raise InvalidArgument(f"run id {quote(run_id)} is not a keel run id", reason="INVALID_RUN_ID", field="run_id")
    run = dbmod.Run.get_or_none(dbmod.Run.run_id == run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} does not exist", reason="RUN_NOT_FOUND", metadata={"run_id": run_id})
    root = store.normalize_uri(run.artifact_uri)
    if not store.contains(root):
        raise FailedPrecondition(
            f"run {run_id}'s artifact location {run.artifact_uri} is outside this server's {store.describe()}",
            reason="ARTIFACT_URI_OUTSIDE_ROOT",
            metadata={"run_id": run_id, "artifact_uri": run.artifact_uri},
        )
    return root


def resolve_artifact_uri(uri: str, store: ArtifactStore, field: str = "artifact_uri") -> str:
    """``runs:/<run_id>/<path>`` → ``<run's artifact root>/<path>``; a store URI → itself,
    normalised, if it is under the store's root. Anything else is refused."""
    return _resolve(uri, store, field)[1]


def check_reference_uri(uri: str, store: ArtifactStore, field: str = "artifact_uri") -> str:
    """The rules a reference URI must meet before anything is looked up (artifact refs and model
    version sources share them): ``runs:/<run_id>/<path>`` or a URI of the store's own scheme
    (never a bare local path, ``http(s)://`` or another scheme: INVALID_ARTIFACT_URI), no unsafe
    spelling (``paths.check_safe``: UNSAFE_PATH), a ``file://`` URI names no other host, and a
    store URI names a folder under the store's root (PERMISSION_DENIED ARTIFACT_URI_OUTSIDE_ROOT
    otherwise: another folder or bucket). Pure string checks. Returns ``uri`` unchanged."""
    if len(uri) > MAX_URI_CHARS:
        raise InvalidArgument(
            f"{field} {quote(uri)} is {len(uri)} characters long; the limit is {MAX_URI_CHARS}",
            reason="INVALID_ARTIFACT_URI",
            field=field,
        )
    scheme, sep, rest = uri.partition("://")
    if not uri.startswith("runs:/") and (not sep or scheme != store.scheme):
        if not sep or not scheme:
            kind = "a bare local path: the server never reads files outside its artifact store"
        elif scheme in ("http", "https"):
            kind = f"an {scheme} URL: name stored files by their {store.scheme}:// URI, never by a URL"
        else:
            kind = f"of scheme {scheme!r}, but this server's artifact store is {store.scheme}://"
        raise InvalidArgument(
            f"{field} {quote(uri)} is {kind}; use runs:/<run_id>/<path> or a {store.scheme}:// URI "
            f"under {store.root_uri}",
            reason="INVALID_ARTIFACT_URI",
            field=field,
            metadata={"uri": uri, "root": store.root_uri},
        )
    paths.check_safe(uri, field, uri=True)
    if uri.startswith("runs:/"):
        return uri
    host = rest.partition("/")[0]
    if scheme == "file" and host not in _LOCAL_FILE_HOSTS:
        raise InvalidArgument(
            f"{field} {quote(uri)} names host {quote(host)}: a file:// URI names this server's own files, "
            f"as file:///<absolute path> under {store.root_uri}",
            reason="INVALID_ARTIFACT_URI",
            field=field,
            metadata={"uri": uri, "host": host},
        )
    folder = rest.partition("/")[2] if scheme == "file" else rest  # what follows the host (or the bucket)
    if not folder.strip("/"):
        raise InvalidArgument(
            f"{field} {quote(uri)} names no folder: give a {store.scheme}:// URI under {store.root_uri}, "
            "or runs:/<run_id>/<path>",
            reason="INVALID_ARTIFACT_URI",
            field=field,
            metadata={"uri": uri},
        )
    if not store.contains(store.normalize_uri(uri)):
        raise PermissionDenied(
            f"{field} {quote(uri)} is outside this server's {store.describe()}: only files under "
            f"{store.root_uri} can be named, never another folder or bucket; log them to a run and use "
            "runs:/<run_id>/<path>",
            reason="ARTIFACT_URI_OUTSIDE_ROOT",
            metadata={"uri": uri, "root": store.root_uri, "field": field},
        )
    return uri


def _resolve(uri: str, store: ArtifactStore, field: str = "artifact_uri") -> tuple[str, str]:
    """(the boundary nothing may leave: the run's root or the store's, the resolved URI)."""
    check_reference_uri(uri, store, field)
    if uri.startswith("runs:/"):
        runs = parse_runs_uri(uri, reason="INVALID_ARTIFACT_URI", field=field)
        run_root = _run_root(store, runs.run_id)
        return run_root, join_uri(run_root, validate_path(runs.path, field=field))
    normal = store.normalize_uri(uri)  # under the root: check_reference_uri saw to it
    root = store.root_uri.rstrip("/")
    # Re-validate what lies under the root, so '..' or '//' cannot sneak in through a URI.
    validate_path(normal[len(root) :].lstrip("/") if normal != root else "", field=field)
    return root, normal


def _owning_run_root(store: ArtifactStore, uri: str) -> str:
    """The artifact root of the run whose artifacts hold ``uri`` ('' when none does).

    A run's root is always ``<experiment location>/<run_id>/artifacts``, so the candidates are
    the prefixes of ``uri`` that end in ``<id>/artifacts``; one indexed lookup confirms them.
    """
    scheme, _, rest = uri.partition("://")
    segments = rest.split("/")
    candidates = [
        (segments[i - 1], f"{scheme}://{'/'.join(segments[: i + 1])}")
        for i in range(1, len(segments))
        if segments[i] == "artifacts" and 0 < len(segments[i - 1]) <= MAX_RUN_ID_CHARS
    ]
    if not candidates:
        return ""
    rows = dbmod.Run.select(dbmod.Run.run_id, dbmod.Run.artifact_uri).where(
        dbmod.Run.run_id.in_({run_id for run_id, _ in candidates})
    )
    roots = {row.run_id: store.normalize_uri(row.artifact_uri) for row in rows}
    owned = [prefix for run_id, prefix in candidates if roots.get(run_id) == prefix]
    return max(owned, key=len, default="")


@dataclass(frozen=True)
class Location:
    """A resolved reference: the root it was given against, the validated path under it, and
    the boundary (the run's artifact root, or the store's root for store URIs); ``in_run`` when
    that boundary is a run's artifact root."""

    root: str
    path: str
    base: str
    in_run: bool

    @property
    def uri(self) -> str:
        return join_uri(self.root, self.path)


class UploadSession:
    """One upload: enforces chunk and size limits as bytes arrive, and the checksum at the end."""

    def __init__(self, location: Location, writer: ArtifactWriter, size: int | None, sha256: str) -> None:
        self.location = location
        self._writer = writer
        self._size = size
        self._sha256 = sha256

    def write(self, chunk: bytes | memoryview) -> None:
        if len(chunk) > MAX_CHUNK_BYTES:
            raise InvalidArgument(
                f"upload chunk of {len(chunk)} bytes is over the {MAX_CHUNK_BYTES}-byte limit: send smaller chunks",
                reason="CHUNK_TOO_LARGE",
            )
        if self._size is not None and self._writer.size + len(chunk) > self._size:
            raise InvalidArgument(
                f"upload of {self.location.uri} sends more than the {self._size} bytes its header announced; "
                "nothing was stored",
                reason="SIZE_MISMATCH",
            )
        self._writer.write(chunk)

    def expect_sha256(self, sha256: str) -> None:
        """The trailer's checksum (for clients that hash while sending)."""
        sha = _check_sha(sha256, "trailer.sha256")
        if self._sha256 and sha and sha != self._sha256:
            raise InvalidArgument(
                "the upload trailer's sha256 differs from the header's: send one, or the same in both",
                reason="CHECKSUM_MISMATCH",
            )
        self._sha256 = sha or self._sha256

    def commit(self) -> ObjectInfo:
        info = self._writer.commit(self._size, self._sha256)
        return ObjectInfo(path=self.location.path, is_dir=False, size=info.size, sha256=info.sha256)

    def abort(self) -> None:
        self._writer.abort()


def _check_sha(value: str, field: str) -> str:
    sha = value.strip().lower()
    if sha and not _SHA256_RE.match(sha):
        raise InvalidArgument(
            f"{field} {value!r} is not a sha256: give 64 hex characters (or leave it empty)",
            reason="INVALID_SHA256",
            field=field,
        )
    return sha


class ArtifactRepository:
    """What the servicer calls: every operation on artifacts, over one ``ArtifactStore``."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def locate(self, run_id: str, artifact_uri: str, path: str, field: str = "ref") -> Location:
        """The root of a run or of an artifact URI (exactly one), plus a validated path."""
        if bool(run_id) == bool(artifact_uri):
            raise InvalidArgument(
                f"{field}: set exactly one of run_id and artifact_uri", reason="INVALID_ARTIFACT_REF", field=field
            )
        path = validate_path(path, field=f"{field}.path")
        if run_id:
            base = root = _run_root(self.store, run_id)
        else:
            base, root = _resolve(artifact_uri, self.store, f"{field}.artifact_uri")
        return Location(root=root, path=path, base=base, in_run=bool(run_id) or artifact_uri.startswith("runs:/"))

    def check_writable(self, location: Location, action: str) -> None:
        """Only one run's artifacts may be written, replaced or deleted through this service,
        however they are named: never the store's root, the registry's immutable snapshots,
        or anything outside a run. PERMISSION_DENIED otherwise, before anything changes."""
        uri = location.uri
        registry = f"{self.store.root_uri.rstrip('/')}/{REGISTRY_FOLDER}"
        if uri == registry or uri.startswith(registry + "/"):
            raise PermissionDenied(
                f"cannot {action} {quote(uri)}: the files of registered model versions never change; "
                "delete the model version or the registered model in the registry to remove them",
                reason="REGISTRY_SNAPSHOT_IMMUTABLE",
                metadata={"uri": uri},
            )
        if location.in_run or _owning_run_root(self.store, uri):
            return
        raise PermissionDenied(
            f"cannot {action} {quote(uri)}: it is not inside one run's artifacts; only a run's own artifacts "
            "can be changed: name them with run_id and path, or runs:/<run_id>/<path>",
            reason="NOT_RUN_ARTIFACTS",
            metadata={"uri": uri},
        )

    def resolve(self, uri: str) -> str:
        return resolve_artifact_uri(uri, self.store, field="uri")

    def begin_upload(self, location: Location, size: int | None, sha256: str) -> UploadSession:
        if location.uri == location.base:
            raise InvalidArgument(
                "an upload needs a file path under the root: set ref.path", reason="INVALID_ARTIFACT_PATH", field="ref.path"
            )
        if size is not None and size < 0:
            raise InvalidArgument(f"header.size must be >= 0, got {size}", reason="INVALID_SIZE", field="header.size")
        sha = _check_sha(sha256, "header.sha256")
        self.check_writable(location, "upload to")
        writer = self.store.open_writer(location.uri, expected_sha256=sha, expected_size=size)
        return UploadSession(location, writer, size, sha)

    def download(self, location: Location, offset: int) -> tuple[ObjectInfo, Iterator[bytes]]:
        if offset < 0:
            raise InvalidArgument(f"offset must be >= 0, got {offset}", reason="OFFSET_OUT_OF_RANGE", field="offset")
        info, chunks = self.store.open_reader(location.uri, offset)
        if offset > info.size:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            raise InvalidArgument(
                f"offset {offset} is past the end of {location.uri} ({info.size} bytes)",
                reason="OFFSET_OUT_OF_RANGE",
                field="offset",
                metadata={"offset": offset, "file_size": info.size},
            )
        return info, _prefetch(chunks, PREFETCH_CHUNKS) if self.store.read_ahead else chunks

    def stat(self, location: Location) -> ObjectInfo:
        info = self.store.stat(location.uri)
        return ObjectInfo(path=location.path, is_dir=info.is_dir, size=info.size, sha256=info.sha256)

    def list(
        self, location: Location, recursive: bool, page_size: int, page_token: str
    ) -> tuple[list[ObjectInfo], str]:
        """Entries with paths relative to the ref's root (MLflow's shape), and the next token."""
        size = pagination.page_size(page_size, LIST_DEFAULT_PAGE, LIST_MAX_PAGE)
        bound_to = pagination.fingerprint("artifacts", location.uri, recursive)
        cursor = pagination.decode_token(page_token, bound_to)
        entries, next_cursor = self.store.list_entries(
            location.uri, recursive, cursor=str(cursor[0]) if cursor else "", limit=size
        )
        token = pagination.encode_token([next_cursor], bound_to) if next_cursor else ""
        prefix = f"{location.path}/" if location.path else ""
        return [
            ObjectInfo(path=prefix + e.path, is_dir=e.is_dir, size=e.size, sha256=e.sha256) for e in entries
        ], token

    def delete(self, location: Location) -> int:
        self.check_writable(location, "delete")
        return self.store.delete(location.uri)

    def presign(self, location: Location, method: str, expires_seconds: int) -> tuple[str, int]:
        if method not in ("GET", "PUT"):
            raise InvalidArgument("method must be PRESIGN_METHOD_GET or PRESIGN_METHOD_PUT", reason="INVALID_METHOD", field="method")
        if location.uri == location.base:
            raise InvalidArgument("a presigned URL needs a file path: set ref.path", reason="INVALID_ARTIFACT_PATH", field="ref.path")
        if expires_seconds < 0 or expires_seconds > PRESIGN_MAX_S:
            raise InvalidArgument(
                f"expires_in_seconds must be 0 (meaning {PRESIGN_DEFAULT_S}) to {PRESIGN_MAX_S}, got {expires_seconds}",
                reason="INVALID_EXPIRY",
                field="expires_in_seconds",
            )
        expires = expires_seconds or PRESIGN_DEFAULT_S
        if method == "PUT":
            self.check_writable(location, "presign an upload to")
        if method == "GET":
            info = self.store.stat(location.uri)  # NotFound / is-a-directory before signing
            if info.is_dir:
                raise FailedPrecondition(f"{location.uri} is a directory", reason="IS_A_DIRECTORY")
        url = self.store.presign(location.uri, method, expires)
        return url, dbmod.now_ms() + expires * 1000

    def copy(self, source: Location, destination: Location) -> tuple[int, int]:
        self.check_writable(destination, "copy into")
        if destination.uri == source.uri or destination.uri.startswith(source.uri + "/"):
            raise InvalidArgument(
                "the copy destination is inside its source: choose a destination outside it",
                reason="INVALID_COPY",
                field="destination",
            )
        if source.uri.startswith(destination.uri + "/"):
            raise InvalidArgument(
                "the copy destination contains its source and would be replaced by the copy",
                reason="INVALID_COPY",
                field="destination",
            )
        return self.store.copy_tree(source.uri, destination.uri)


_DONE = object()


def _prefetch(chunks: Iterator[bytes], depth: int) -> Iterator[bytes]:
    """Reads ``chunks`` on a helper thread, at most ``depth`` ahead, so the store read of the
    next chunk overlaps the gRPC send of this one. Closing the result stops the reader."""
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        slots.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            slots.put(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="keel-artifact-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
