"""``s3://bucket/prefix`` artifact store on any S3 server (MinIO, SeaweedFS, AWS), through ``minio``.

Uploads go through the low-level multipart API so that "visible only when the checksum
matches" holds: parts (>= 8 MiB, several uploading while the next fills) are sent as the stream
arrives, and CompleteMultipartUpload is called only after size and sha256 matched; any failure
aborts the multipart upload. Files smaller than one part are sent as a single PUT at the end.

Every call has short timeouts and bounded retries, so a store that is down gives UNAVAILABLE
("artifact store s3://b/p at http://host:port is unavailable: ...") within seconds, never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit
from xml.etree import ElementTree

import urllib3
from minio import Minio
from minio.commonconfig import ComposeSource, CopySource
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from keel_server.artifacts.stores import READ_CHUNK_BYTES, ArtifactStore, ArtifactWriter, ObjectInfo, join_uri
from keel_server.common.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    KeelError,
    NotFound,
    Unavailable,
)

if TYPE_CHECKING:
    from keel_server.common.config import Settings

log = logging.getLogger("keel.artifacts.s3")

_Headers = dict[str, str | list[str] | tuple[str]]

# Parts of 8 MiB, up to four sent at once while the next fills: ~40 MiB of server memory per
# large upload. Against one 16 MiB part in flight, filled by appending to a bytearray (two
# copies): 1 GiB to SeaweedFS on 2 cores took ~20% less keel CPU and went ~12% faster.
PART_BYTES = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4
MAX_PARTS = 10_000
# Largest object S3 copies in one CopyObject; bigger ones are copied part by part (compose).
MAX_SINGLE_COPY = 5 * 1024**3
SHA_META = "x-amz-meta-sha256"
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchUpload"}
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}

# Part uploads run here so the next part fills while the previous one is sent.
_part_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="keel-s3-part")


class _S3Writer(ArtifactWriter):
    def __init__(self, store: S3ArtifactStore, uri: str, expected_sha256: str, expected_size: int | None) -> None:
        super().__init__(uri)
        self._store = store
        self._key = store.key_of(uri)
        self._expected_sha = expected_sha256
        self._part_bytes = PART_BYTES
        if expected_size:  # very large announced files get bigger parts (S3 allows 10000)
            self._part_bytes = max(PART_BYTES, math.ceil(expected_size / MAX_PARTS))
        # Chunks of the part being filled: received bytes are immutable, so they are kept as
        # they came and joined once (one copy) when the part is sent.
        self._chunks: list[bytes | memoryview] = []
        self._buffered = 0
        self._upload_id = ""
        self._etags: list[str] = []  # of the parts already sent, in order
        self._in_flight: deque[Future[str]] = deque()  # the parts being sent, oldest first

    def _write(self, data: bytes | memoryview) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= self._part_bytes:
            self._flush_part()

    def _take_buffered(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks, self._buffered = [], 0
        return data

    def _flush_part(self) -> None:
        part = self._take_buffered()
        store = self._store
        if not self._upload_id:
            headers: _Headers = {"Content-Type": "application/octet-stream"}
            if self._expected_sha:
                headers[SHA_META] = self._expected_sha
            with store.calls(self.uri):
                self._upload_id = store.client._create_multipart_upload(store.bucket, self._key, headers)
        if len(self._in_flight) >= PARTS_IN_FLIGHT:
            self._wait_oldest()  # memory stays at PARTS_IN_FLIGHT parts plus the one filling
        number = len(self._etags) + len(self._in_flight) + 1
        if number > MAX_PARTS:
            raise InvalidArgument(
                f"upload of {self.uri} exceeds {MAX_PARTS} parts of {self._part_bytes} bytes: announce the size "
                "in the upload header so larger parts are used",
                reason="UPLOAD_TOO_LARGE",
            )
        self._in_flight.append(
            _part_pool.submit(store.client._upload_part, store.bucket, self._key, part, None, self._upload_id, number)
        )

    def _wait_oldest(self) -> None:
        with self._store.calls(self.uri):
            self._etags.append(self._in_flight[0].result())
        self._in_flight.popleft()

    def _publish(self, sha256: str) -> None:
        store = self._store
        if not self._upload_id:
            # Smaller than one part: one PUT of the buffered bytes, checksum as metadata.
            data = self._take_buffered()
            with store.calls(self.uri), store._lock_for(self.uri):
                store.client._put_object(
                    store.bucket, self._key, data, headers={"Content-Type": "application/octet-stream", SHA_META: sha256}
                )
                store._remember(self.uri, self.size, sha256)
            return
        if self._buffered:
            self._flush_part()
        while self._in_flight:
            self._wait_oldest()
        parts = [Part(number, etag) for number, etag in enumerate(self._etags, start=1)]
        with store.calls(self.uri), store._lock_for(self.uri):
            store.client._complete_multipart_upload(store.bucket, self._key, self._upload_id, parts)
            self._upload_id = ""  # completed: nothing to abort any more
            store._remember(self.uri, self.size, sha256)

    def _discard(self) -> None:
        self._chunks, self._buffered = [], 0
        while self._in_flight:
            pending = self._in_flight.popleft()
            pending.cancel()
            with contextlib.suppress(Exception):
                pending.result()
        if self._upload_id:
            try:
                self._store.client._abort_multipart_upload(self._store.bucket, self._key, self._upload_id)
            except Exception as exc:  # noqa: BLE001 - parts of an unfinished upload are invisible anyway
                log.warning("could not abort multipart upload %s of %s: %s", self._upload_id, self.uri, exc)
            self._upload_id = ""


class S3ArtifactStore(ArtifactStore):
    scheme = "s3"

    def __init__(self, root_uri: str, endpoint_url: str, access_key: str, secret_key: str) -> None:
        rest = root_uri[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"artifact URI {root_uri!r} names no bucket: use s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root_uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        endpoint = urlsplit(endpoint_url if "://" in endpoint_url else f"http://{endpoint_url}")
        if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
            raise ValueError(f"KEEL_S3_ENDPOINT_URL={endpoint_url!r} is not http(s)://host:port")
        self.endpoint_url = f"{endpoint.scheme}://{endpoint.netloc}"
        # Short timeouts and bounded retries: a dead store must fail fast, never hang a call.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3, read=30),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(502, 503, 504)),
            maxsize=64,
        )
        self.client = Minio(
            endpoint.netloc,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=endpoint.scheme == "https",
            http_client=http,
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ArtifactStore:
        if not settings.s3_endpoint_url:
            raise ValueError(
                f"KEEL_ARTIFACT_URI={settings.artifact_uri!r} needs KEEL_S3_ENDPOINT_URL (http://host:port), "
                "KEEL_S3_ACCESS_KEY and KEEL_S3_SECRET_KEY"
            )
        return cls(settings.artifact_uri, settings.s3_endpoint_url, settings.s3_access_key, settings.s3_secret_key)

    def describe(self) -> str:
        return f"artifact store {self.root_uri} at {self.endpoint_url}"

    def key_of(self, uri: str) -> str:
        """The object key of a store URI (already checked to be under the root)."""
        return uri[len(f"s3://{self.bucket}") :].lstrip("/")

    # ---- errors ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def calls(self, uri: str) -> Iterator[None]:
        """Turns minio/urllib3 failures into domain errors that name the store."""
        try:
            yield
        except KeelError:
            raise
        except S3Error as exc:
            self._raise_s3(exc, uri)
        except (ServerError, InvalidResponseError, MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(
                f"{self.describe()} is unavailable: {_short(exc)}",
                reason="ARTIFACT_STORE_UNAVAILABLE",
                metadata={"store": self.root_uri, "endpoint": self.endpoint_url},
            ) from None

    def _raise_s3(self, exc: S3Error, uri: str) -> NoReturn:
        if exc.code in _NOT_FOUND_CODES:
            raise NotFound(f"no artifact at {uri}", reason="ARTIFACT_NOT_FOUND", metadata={"uri": uri}) from None
        if exc.code in _AUTH_CODES:
            raise FailedPrecondition(
                f"{self.describe()} refused keel's credentials ({exc.code}: {exc.message}); "
                "check KEEL_S3_ACCESS_KEY and KEEL_S3_SECRET_KEY of the server",
                reason="ARTIFACT_STORE_AUTH_FAILED",
                metadata={"store": self.root_uri, "endpoint": self.endpoint_url, "s3_code": exc.code},
            ) from None
        if exc.code in ("PreconditionFailed",):
            raise Aborted(f"{uri} changed while it was being read: retry", reason="ARTIFACT_CHANGED") from None
        raise Unavailable(
            f"{self.describe()} failed: {exc.code}: {exc.message}",
            reason="ARTIFACT_STORE_UNAVAILABLE",
            metadata={"store": self.root_uri, "endpoint": self.endpoint_url, "s3_code": exc.code},
        ) from None

    def check_ready(self) -> None:
        """Creates the bucket when missing (once per process)."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            with self.calls(self.root_uri):
                if not self.client.bucket_exists(self.bucket):
                    try:
                        self.client.make_bucket(self.bucket)
                    except S3Error as exc:
                        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
            self._bucket_ready = True

    # ---- reads -----------------------------------------------------------------------------
    def _stat_file(self, uri: str) -> tuple[ObjectInfo, str] | None:
        """(info, etag) of the object at ``uri``; None when there is no such object."""
        key = self.key_of(uri)
        if not key:
            return None
        try:
            with self.calls(uri):
                obj = self.client.stat_object(self.bucket, key)
        except NotFound:
            return None
        size = int(obj.size or 0)
        meta = obj.metadata or {}
        sha = str(meta.get(SHA_META) or meta.get(SHA_META.title()) or "") or self._recall(uri, size)
        return ObjectInfo(path="", is_dir=False, size=size, sha256=sha), str(obj.etag or "")

    def _is_dir(self, uri: str) -> bool:
        key = self.key_of(uri)
        if not key:
            return True
        with self.calls(uri):
            for _ in self.client.list_objects(self.bucket, prefix=key + "/", recursive=True):
                return True
        return False

    def stat(self, uri: str) -> ObjectInfo:
        self.check_ready()
        found = self._stat_file(uri)
        if found is not None:
            return found[0]
        if self._is_dir(uri):
            return ObjectInfo(path="", is_dir=True)
        raise NotFound(f"no artifact at {uri}", reason="ARTIFACT_NOT_FOUND", metadata={"uri": uri})

    def open_reader(self, uri: str, offset: int = 0) -> tuple[ObjectInfo, Iterator[bytes]]:
        self.check_ready()
        found = self._stat_file(uri)
        if found is None:
            if self._is_dir(uri):
                raise FailedPrecondition(f"{uri} is a directory: list it and download its files", reason="IS_A_DIRECTORY")
            raise NotFound(f"no artifact at {uri}", reason="ARTIFACT_NOT_FOUND", metadata={"uri": uri})
        info, etag = found
        return info, self._chunks(uri, offset, info.size, etag)

    def _chunks(self, uri: str, offset: int, size: int, etag: str) -> Iterator[bytes]:
        if offset >= size:
            return
        # If-Match: the bytes come from the object that was stat'ed, or the read fails (ABORTED).
        headers: _Headers | None = {"If-Match": f'"{etag}"'} if etag else None
        with self.calls(uri):
            response = self.client.get_object(self.bucket, self.key_of(uri), offset=offset, request_headers=headers)
        try:
            with self.calls(uri):
                yield from response.stream(READ_CHUNK_BYTES)
        finally:
            response.close()
            response.release_conn()

    def list_entries(self, uri: str, recursive: bool, cursor: str = "", limit: int = 1000) -> tuple[list[ObjectInfo], str]:
        """Walks the keys under ``uri`` in the server's own order (byte order on AWS and MinIO,
        path-component order on SeaweedFS) and resumes with StartAfter = the last key consumed,
        which every server interprets consistently with its own order. Direct children are
        found by folding keys into their first path segment, so no merge of objects and common
        prefixes (whose relative order differs between servers) is ever needed. The cursor is
        ``<last key consumed>\0<last entry returned>``."""
        self.check_ready()
        key = self.key_of(uri)
        prefix = f"{key}/" if key else ""
        last_key, _, last_entry = cursor.partition("\x00")
        out: list[ObjectInfo] = []
        token = ""
        while True:
            keys, truncated, token = self._list_page(uri, prefix, last_key if not token else "", token)
            for name, size in keys:
                rel = name[len(prefix) :]
                if not rel:
                    continue
                head, slash, _ = rel.partition("/")
                entry = rel if recursive or not slash else head
                if entry == last_entry:  # the rest of a folder already returned
                    last_key = name
                    continue
                if len(out) == limit:
                    return out, f"{last_key}\x00{last_entry}"
                if recursive or not slash:
                    sha = self._recall(join_uri(uri, rel), size)
                    out.append(ObjectInfo(path=rel, is_dir=False, size=size, sha256=sha))
                else:
                    out.append(ObjectInfo(path=head, is_dir=True))
                last_key, last_entry = name, entry
            if not truncated:
                return out, ""

    def _list_page(self, uri: str, prefix: str, start_after: str, token: str) -> tuple[list[tuple[str, int]], bool, str]:
        """One ListObjectsV2 page (no delimiter): (key, size) in the server's order."""
        query: dict[str, str] = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
        if token:
            query["continuation-token"] = token
        elif start_after:
            query["start-after"] = start_after
        with self.calls(uri):
            response = self.client._execute("GET", self.bucket, query_params=query)  # type: ignore[arg-type]
            root = ElementTree.fromstring(response.data)
        ns = {"s3": root.tag[1:].split("}")[0]} if root.tag.startswith("{") else {}
        q = "s3:" if ns else ""
        keys = [
            (el.findtext(f"{q}Key", "", ns) or "", int(el.findtext(f"{q}Size", "0", ns) or 0))
            for el in root.findall(f"{q}Contents", ns)
        ]
        truncated = (root.findtext(f"{q}IsTruncated", "false", ns) or "").lower() == "true"
        return keys, truncated, root.findtext(f"{q}NextContinuationToken", "", ns) or ""

    # ---- writes ----------------------------------------------------------------------------
    def open_writer(self, uri: str, expected_sha256: str = "", expected_size: int | None = None) -> ArtifactWriter:
        self.check_ready()
        return _S3Writer(self, uri, expected_sha256, expected_size)

    def _keys_under(self, uri: str) -> list[tuple[str, int]]:
        """(key, size) of the object at ``uri`` and of every object under it as a folder."""
        key = self.key_of(uri)
        found: list[tuple[str, int]] = []
        file = self._stat_file(uri)
        if file is not None:
            found.append((key, file[0].size))
        with self.calls(uri):
            for obj in self.client.list_objects(self.bucket, prefix=f"{key}/" if key else "", recursive=True):
                found.append((str(obj.object_name), int(obj.size or 0)))
        return found

    def delete(self, uri: str) -> int:
        self.check_ready()
        keys = [k for k, _ in self._keys_under(uri)]
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            with self.calls(uri):
                errors = list(self.client.remove_objects(self.bucket, [DeleteObject(k) for k in batch]))
            if errors:
                raise Unavailable(
                    f"{self.describe()} could not delete {len(errors)} object(s) under {uri}: {errors[0]}",
                    reason="ARTIFACT_STORE_UNAVAILABLE",
                )
            self._forget(f"s3://{self.bucket}/{k}" for k in batch)
        return len(keys)

    def copy_tree(self, src_uri: str, dst_uri: str) -> tuple[int, int]:
        self.check_ready()
        src_key, dst_key = self.key_of(src_uri), self.key_of(dst_uri)
        sources = self._keys_under(src_uri)
        if not sources:
            raise NotFound(f"nothing to copy at {src_uri}", reason="ARTIFACT_NOT_FOUND", metadata={"uri": src_uri})
        self.delete(dst_uri)
        total = 0
        for key, size in sources:
            rel = key[len(src_key) :].lstrip("/")
            target = f"{dst_key}/{rel}" if rel else dst_key
            source_uri = f"s3://{self.bucket}/{key}"
            sha = self._recall(source_uri, size)
            with self.calls(src_uri):
                if size <= MAX_SINGLE_COPY:  # keeps the user metadata (sha256) as is
                    self.client.copy_object(self.bucket, target, CopySource(self.bucket, key))
                else:
                    meta: dict[str, str | list[str] | tuple[str]] | None = {SHA_META: sha} if sha else None
                    self.client.compose_object(self.bucket, target, [ComposeSource(self.bucket, key)], metadata=meta)
            if sha:
                self._remember(f"s3://{self.bucket}/{target}", size, sha)
            total += size
        return len(sources), total

    def presign(self, uri: str, method: str, expires_seconds: int) -> str:
        self.check_ready()
        key = self.key_of(uri)
        expires = timedelta(seconds=expires_seconds)
        with self.calls(uri):
            if method == "GET":
                return str(self.client.presigned_get_object(self.bucket, key, expires=expires))
            return str(self.client.presigned_put_object(self.bucket, key, expires=expires))


def _short(exc: Any) -> str:
    """The useful part of a urllib3/minio error (the innermost reason, one line)."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(exc).__name__
    return text[:300]
