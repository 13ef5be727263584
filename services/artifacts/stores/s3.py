"""``s3://bucket/prefix`` artifact store on any S3 server (MinIO, SeaweedFS, AWS), through ``minio``.

Uploads go through the low-level multipart API so that "visible only when the checksum
matches" holds: parts (>= 8 MiB, several uploading while the next fills) are sent as the stream
arrives, and CompleteMultipartUpload is called only after size and sha256 matched; any failure
aborts the multipart upload. Files smaller than one part are sent as a single PUT at the end.

A multipart upload cut by an S3 outage cannot be aborted while S3 is down: the abort is retried
on a background thread for ~15 s, and whatever is still left (or left by a process that died) is
aborted by ``sweep``, which the server runs at start and periodically: incomplete multipart
uploads under the store's prefix idle (initiated and last part) for the stale age, except those
this process is still sending.

Every call has short timeouts and bounded retries, so a store that is down gives UNAVAILABLE
("artifact store s3://b/p at http://host:port is unavailable: ...") within seconds, never a hang.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
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

# Seconds between the background retries of an abort that failed (S3 down): ~15 s in all, then
# the stale upload sweep takes over.
ABORT_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
# The sweep lists at most this many pages of 1000 incomplete uploads per run (the next run
# goes on), and at most this many pages of 1000 parts per upload.
SWEEP_MAX_PAGES = 100
SWEEP_MAX_PART_PAGES = 10

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
            store._mark_live(self._upload_id, True)
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
            store._mark_live(self._upload_id, False)
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
            upload_id, self._upload_id = self._upload_id, ""
            self._store._mark_live(upload_id, False)
            self._store._abort_upload(self._key, upload_id)


class S3ArtifactStore(ArtifactStore):
    scheme = "s3"
    # Multipart upload ids this process is sending, whichever store object started them: the
    # sweep never aborts them.
    _live_uploads: set[str] = set()
    _live_lock = threading.Lock()

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

    # ---- multipart uploads left behind: abort with retries, and the sweep -------------------
    def _mark_live(self, upload_id: str, live: bool) -> None:
        with self._live_lock:
            if live:
                self._live_uploads.add(upload_id)
            else:
                self._live_uploads.discard(upload_id)

    def _try_abort(self, key: str, upload_id: str, quiet: bool = False) -> bool:
        """Aborts one multipart upload; True when it is gone (aborted now or before)."""
        try:
            self.client._abort_multipart_upload(self.bucket, key, upload_id)
            return True
        except S3Error as exc:
            if exc.code == "NoSuchUpload":
                return True
            error: Exception = exc
        except Exception as exc:  # noqa: BLE001 - S3 down: retried, then swept
            error = exc
        (log.debug if quiet else log.warning)(
            "could not abort multipart upload %s of s3://%s/%s: %s", upload_id, self.bucket, key, _short(error)
        )
        return False

    def _abort_upload(self, key: str, upload_id: str) -> None:
        """Aborts a multipart upload now or, when S3 cannot be reached, retries on a background
        thread for ~15 s; after that the stale upload sweep aborts it."""
        if not self._try_abort(key, upload_id):
            threading.Thread(
                target=self._retry_abort, args=(key, upload_id), name="keel-s3-abort", daemon=True
            ).start()

    def _retry_abort(self, key: str, upload_id: str) -> None:
        for delay in ABORT_RETRY_DELAYS:
            time.sleep(delay)  # backoff between attempts (a daemon thread: never delays exit)
            if self._try_abort(key, upload_id, quiet=True):
                log.info("aborted multipart upload %s of s3://%s/%s on retry", upload_id, self.bucket, key)
                return
        log.warning(
            "multipart upload %s of s3://%s/%s is left in the bucket (S3 unreachable); the stale "
            "upload sweep will abort it",
            upload_id, self.bucket, key,
        )  # fmt: skip

    def incomplete_uploads(self) -> tuple[list[tuple[str, str, datetime | None]], datetime]:
        """(key, upload id, initiated) of the incomplete multipart uploads under the store's
        prefix (at most ``SWEEP_MAX_PAGES`` pages), and the S3 server's clock (its Date header,
        so ages do not depend on the skew between the two clocks)."""
        self.check_ready()
        prefix = f"{self.prefix}/" if self.prefix else ""
        query: dict[str, str] = {"uploads": "", "prefix": prefix, "max-uploads": "1000"}
        found: list[tuple[str, str, datetime | None]] = []
        now = datetime.now(UTC)
        for _ in range(SWEEP_MAX_PAGES):
            with self.calls(self.root_uri):
                response = self.client._execute("GET", self.bucket, query_params=dict(query))  # type: ignore[arg-type]
                root = ElementTree.fromstring(response.data)
            now = _http_date(response.headers.get("Date")) or datetime.now(UTC)
            ns = {"s3": root.tag[1:].split("}")[0]} if root.tag.startswith("{") else {}
            q = "s3:" if ns else ""
            for el in root.findall(f"{q}Upload", ns):
                key = el.findtext(f"{q}Key", "", ns) or ""
                upload_id = el.findtext(f"{q}UploadId", "", ns) or ""
                if key.startswith(prefix) and upload_id:
                    found.append((key, upload_id, _iso_time(el.findtext(f"{q}Initiated", "", ns) or "")))
            markers = {
                "key-marker": root.findtext(f"{q}NextKeyMarker", "", ns) or "",
                "upload-id-marker": root.findtext(f"{q}NextUploadIdMarker", "", ns) or "",
            }
            markers = {k: v for k, v in markers.items() if v}
            truncated = (root.findtext(f"{q}IsTruncated", "false", ns) or "").lower() == "true"
            if not truncated or not markers or all(query.get(k) == v for k, v in markers.items()):
                break
            query.update(markers)
        return found, now

    def _last_part_time(self, key: str, upload_id: str) -> datetime | None:
        """When the latest part of an upload arrived (None: no parts, or the upload is gone)."""
        latest: datetime | None = None
        marker: str | None = None
        for _ in range(SWEEP_MAX_PART_PAGES):
            with self.calls(self.root_uri):
                result = self.client._list_parts(self.bucket, key, upload_id, part_number_marker=marker)
            for part in result.parts:
                if part.last_modified is not None and (latest is None or part.last_modified > latest):
                    latest = part.last_modified
            if not result.is_truncated or not result.next_part_number_marker:
                break
            marker = str(result.next_part_number_marker)
        return latest

    def sweep(self, stale_seconds: float) -> int:
        """Aborts the incomplete multipart uploads under the prefix that no upload of this
        process is sending and whose latest activity (initiated, or last part received) is at
        least ``stale_seconds`` old by the S3 server's clock. Returns how many it aborted."""
        uploads, now = self.incomplete_uploads()
        aborted = 0
        for key, upload_id, initiated in uploads:
            with self._live_lock:
                if upload_id in self._live_uploads:
                    continue
            if stale_seconds > 0:
                if initiated is not None and (now - initiated).total_seconds() < stale_seconds:
                    continue
                try:
                    last_part = self._last_part_time(key, upload_id)
                except NotFound:
                    continue  # completed or aborted meanwhile
                latest = max((t for t in (initiated, last_part) if t is not None), default=None)
                if latest is None or (now - latest).total_seconds() < stale_seconds:
                    continue  # active recently, or its age cannot be told
            if self._try_abort(key, upload_id):
                aborted += 1
        if aborted:
            log.info("aborted %d stale multipart upload(s) under %s", aborted, self.root_uri)
        return aborted

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


def _iso_time(text: str) -> datetime | None:
    """An S3 timestamp (``2024-01-02T03:04:05.000Z``) as an aware datetime; None if unreadable."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _http_date(text: str | None) -> datetime | None:
    """An HTTP Date header as an aware datetime; None if absent or unreadable."""
    if not text:
        return None
    try:
        value = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _short(exc: Any) -> str:
    """The useful part of a urllib3/minio error (the innermost reason, one line)."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(exc).__name__
    return text[:300]
