"""Artifact stores: where the bytes live, chosen by the scheme of ``KEEL_ARTIFACT_URI``.

One small interface (``ArtifactStore``) with two implementations: ``file://`` (a local folder,
the embedded default) and ``s3://bucket/prefix`` (any S3 server, through the ``minio`` SDK).
Every method takes absolute store URIs; the domain layer (``keel_server.artifacts.store``) turns
runs and relative paths into those URIs and checks that they stay under ``root_uri``.

Guarantees every store keeps:

- a write is streamed (``open_writer`` → ``write`` chunks → ``commit``) and the object becomes
  visible only at ``commit``, after the received size and sha256 matched what was expected;
  ``abort`` (or any failure) leaves nothing behind, and a commit replaces an existing object
  atomically;
- reads stream from a byte offset and never hold a whole object in memory;
- the sha256 of every object written through keel is known afterwards: kept as object metadata
  where the store can (S3, when known up front) and always in the ``artifact_object`` table,
  keyed by the object's URI and checked against its size.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keel_server.common import db as dbmod
from keel_server.common.errors import InvalidArgument
from keel_server.common.prepared import Statement, arg

if TYPE_CHECKING:
    from keel_server.common.config import Settings

# Largest chunk a reader yields: big enough to keep per-message overhead small, small enough
# to stay in the CPU caches while it is framed and sent (1 MiB measured fastest through Python
# gRPC on loopback, see bench/profiles/) and that a few in flight keep memory flat.
READ_CHUNK_BYTES = 1024 * 1024
# Upload chunks waiting between the gRPC thread and a writer's helper thread (each <= 4 MiB).
WRITE_QUEUE_CHUNKS = 4

KNOWN_SCHEMES = ("file", "s3")


@dataclass(frozen=True)
class ObjectInfo:
    """A file or directory. ``path`` is relative to the URI that was listed ('' for stat)."""

    path: str
    is_dir: bool
    size: int = 0
    sha256: str = ""


def join_uri(base: str, relative: str) -> str:
    """``base`` + ``/`` + ``relative`` (``relative`` already validated; '' gives ``base``)."""
    return f"{base.rstrip('/')}/{relative}" if relative else base.rstrip("/")


class ArtifactWriter(ABC):
    """One upload in progress. Hashes and counts what it is given; subclasses store it.

    From the second chunk on, hashing and storing run on a helper thread (``hashlib`` and file
    or socket writes release the GIL), so the gRPC thread can take the next message off the
    wire meanwhile. At most ``WRITE_QUEUE_CHUNKS`` chunks wait between the two: memory stays
    flat. A failure on the helper thread is raised by the next ``write`` or by ``commit``.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.size = 0
        self._hash = hashlib.sha256()
        self._done = False
        self._queue: queue.Queue[bytes | memoryview | None] | None = None
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stopping = False

    def write(self, data: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        self.size += len(data)
        if self._queue is None:
            if self.size == len(data):  # the first chunk: small files never start a thread
                self._store_chunk(data)
                return
            self._queue = queue.Queue(maxsize=WRITE_QUEUE_CHUNKS)
            self._worker = threading.Thread(target=self._drain, name="keel-artifact-writer", daemon=True)
            self._worker.start()
        self._queue.put(data)

    def _store_chunk(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._write(data)

    def _drain(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not None:
            if self._error is None and not self._stopping:
                try:
                    self._store_chunk(data)
                except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread
                    self._error = exc
            # After a failure keep taking chunks (and dropping them) so ``write`` never blocks.

    def _join(self, stop: bool) -> None:
        """Waits until every queued chunk is stored (or, with ``stop``, dropped)."""
        if self._queue is not None and self._worker is not None:
            self._stopping = self._stopping or stop
            self._queue.put(None)
            self._worker.join()
            self._queue = self._worker = None

    def commit(self, expected_size: int | None, expected_sha256: str) -> ObjectInfo:
        """Publishes the object if size and sha256 match what the client announced; otherwise
        aborts and raises INVALID_ARGUMENT (nothing is stored)."""
        try:
            self._join(stop=False)
            if self._error is not None:
                raise self._error
            sha = self._hash.hexdigest()
            if expected_size is not None and expected_size != self.size:
                raise InvalidArgument(
                    f"upload of {self.uri} announced {expected_size} bytes but {self.size} arrived; nothing was stored",
                    reason="SIZE_MISMATCH",
                    metadata={"expected": expected_size, "received": self.size},
                )
            if expected_sha256 and expected_sha256 != sha:
                raise InvalidArgument(
                    f"upload of {self.uri} has sha256 {sha} but the client announced {expected_sha256}; "
                    "nothing was stored (the bytes were corrupted or the file changed while it was sent)",
                    reason="CHECKSUM_MISMATCH",
                    metadata={"expected": expected_sha256, "received": sha},
                )
            self._publish(sha)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return ObjectInfo(path="", is_dir=False, size=self.size, sha256=sha)

    def abort(self) -> None:
        """Discards everything written so far. Safe to call twice."""
        if not self._done:
            self._done = True
            self._join(stop=True)
            self._discard()

    @abstractmethod
    def _write(self, data: bytes | memoryview) -> None: ...

    @abstractmethod
    def _publish(self, sha256: str) -> None:
        """Makes the object visible atomically (and records its checksum)."""

    @abstractmethod
    def _discard(self) -> None: ...


class ArtifactStore(ABC):
    """The byte store behind the artifact service. All URIs are absolute store URIs."""

    scheme: str
    #: Absolute, normalised root (``file:///abs/path`` or ``s3://bucket/prefix``).
    root_uri: str
    #: Whether downloads read ahead on a helper thread (worth it where a read waits on the
    #: network; a read from the local page cache is faster than the thread hand-off).
    read_ahead: bool = True

    # ---- the interface -------------------------------------------------------------------
    @abstractmethod
    def open_writer(self, uri: str, expected_sha256: str = "", expected_size: int | None = None) -> ArtifactWriter:
        """Starts a streamed write of one file. The expectations are hints (S3 keeps the sha256
        as metadata and sizes its parts); ``commit`` is where they are enforced."""

    @abstractmethod
    def open_reader(self, uri: str, offset: int = 0) -> tuple[ObjectInfo, Iterator[bytes]]:
        """Size/sha256 of a file and an iterator of its bytes from ``offset``. Closing the
        iterator (or exhausting it) releases the file or connection. NotFound when absent."""

    @abstractmethod
    def stat(self, uri: str) -> ObjectInfo:
        """A file (size, sha256) or directory. NotFound when nothing is there."""

    @abstractmethod
    def list_entries(self, uri: str, recursive: bool, cursor: str = "", limit: int = 1000) -> tuple[list[ObjectInfo], str]:
        """At most ``limit`` entries under folder ``uri`` (paths relative to it) in the store's
        order, resumed after ``cursor``; returns them and the cursor of the next page ('' at the
        end). Cursors are opaque to callers. Recursive listings report files only; a missing
        folder or a file lists as empty."""

    @abstractmethod
    def delete(self, uri: str) -> int:
        """Deletes a file or everything under a directory; returns the number of files."""

    @abstractmethod
    def copy_tree(self, src_uri: str, dst_uri: str) -> tuple[int, int]:
        """Copies a file or directory to ``dst_uri`` inside the store (server-side on S3),
        replacing what was there; returns (file count, total bytes)."""

    @abstractmethod
    def presign(self, uri: str, method: str, expires_seconds: int) -> str:
        """A presigned ``GET`` or ``PUT`` URL; FailedPrecondition where unsupported."""

    def describe(self) -> str:
        """How error messages name this store (``artifact store s3://b/p at http://host:port``)."""
        return f"artifact store {self.root_uri}"

    def normalize_uri(self, uri: str) -> str:
        """The canonical spelling of a URI of this store (no trailing ``/``)."""
        return uri.rstrip("/")

    def contains(self, uri: str) -> bool:
        """True when ``uri`` is the root or under it."""
        root = self.root_uri.rstrip("/")
        return uri == root or uri.startswith(root + "/")

    def check_ready(self) -> None:
        """Raises Unavailable (or FailedPrecondition for bad credentials) if the store cannot
        be used now. Cheap; the first call may create the bucket."""
        return None

    def sweep(self, stale_seconds: float) -> int:
        """Removes what dead uploads left behind (local staging files, S3 incomplete multipart
        uploads) and returns how many it removed. An upload counts as dead when it is idle for
        ``stale_seconds`` or (where the store can tell) its process is gone; an upload of this
        process still in progress is never touched. Run at start and periodically by the server
        (``settings.stale_upload_seconds``). Raises domain errors (Unavailable) like any call."""
        return 0

    # ---- checksum index: the artifact_object table ----------------------------------------
    # Keyed by sha256 of the URI. A row counts only while its size matches the object's, so a
    # file replaced outside keel reads as "sha256 unknown", never as a wrong sha256.
    _index_locks = [threading.Lock() for _ in range(64)]

    @staticmethod
    def _uri_key(uri: str) -> str:
        return hashlib.sha256(uri.encode()).hexdigest()

    def _lock_for(self, uri: str) -> threading.Lock:
        """Serialises publish+record of one URI inside this process (last writer wins consistently)."""
        return self._index_locks[int(self._uri_key(uri)[:8], 16) % len(self._index_locks)]

    def _remember(self, uri: str, size: int, sha256: str) -> None:
        self._remember_many([(uri, size, sha256)])

    def _remember_many(self, records: Iterable[tuple[str, int, str]]) -> None:
        """``_remember`` for many (uri, size, sha256) in one transaction per 500."""
        rows = list(records)
        for start in range(0, len(rows), 500):
            with dbmod.write_transaction():
                for uri, size, sha256 in rows[start : start + 500]:
                    _UPSERT_OBJECT.execute(key=self._uri_key(uri), uri=uri, size=size, sha256=sha256, now=dbmod.now_ms())

    def _recall(self, uri: str, size: int) -> str:
        row = _RECALL_OBJECT.one(key=self._uri_key(uri))
        return str(row[1]) if row is not None and row[0] == size else ""

    def _forget(self, uris: Iterable[str]) -> None:
        keys = [self._uri_key(u) for u in uris]
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            with dbmod.write_transaction():
                dbmod.ArtifactObject.delete().where(dbmod.ArtifactObject.uri_hash.in_(batch)).execute()


def _upsert_object() -> object:
    model = dbmod.ArtifactObject
    values = {model.size: arg("size"), model.sha256: arg("sha256"), model.updated_time: arg("now"), model.uri: arg("uri")}
    return model.insert({model.uri_hash: arg("key"), **values}).on_conflict(
        conflict_target=[model.uri_hash] if not dbmod.is_mysql() else None, update=values
    )


# The checksum index's statements, compiled once per database: Peewee builds a one-row
# statement in ~100-200 us, several times what running it costs (a registry snapshot recalls
# and records every file it links).
_UPSERT_OBJECT = Statement(_upsert_object)
_RECALL_OBJECT = Statement(
    lambda: dbmod.ArtifactObject.select(dbmod.ArtifactObject.size, dbmod.ArtifactObject.sha256).where(
        dbmod.ArtifactObject.uri_hash == arg("key")
    )
)


def open_store(settings: Settings) -> ArtifactStore:
    """The store ``settings.artifact_uri`` names. ValueError (one line, listing the known
    schemes) for an unknown scheme or incomplete settings, so ``keel server`` refuses to start."""
    uri = settings.artifact_uri
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "file":
        from keel_server.artifacts.stores.local import LocalArtifactStore

        return LocalArtifactStore(uri)
    if scheme == "s3":
        from keel_server.artifacts.stores.s3 import S3ArtifactStore

        return S3ArtifactStore.from_settings(settings)
    raise ValueError(
        f"unknown artifact store scheme {scheme or '(none)'!r} in KEEL_ARTIFACT_URI={uri!r}; "
        f"known schemes: {', '.join(KNOWN_SCHEMES)} (file://./keel-artifacts, s3://bucket/prefix)"
    )


__all__ = [
    "KNOWN_SCHEMES",
    "READ_CHUNK_BYTES",
    "WRITE_QUEUE_CHUNKS",
    "ArtifactStore",
    "ArtifactWriter",
    "ObjectInfo",
    "join_uri",
    "open_store",
]
