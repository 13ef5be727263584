"""``file://`` artifact store: a local folder (the embedded default, ``file://./keel-artifacts``).

Uploads are written to a temp file in a hidden staging folder at the root (same filesystem,
never listed), fsynced, then moved into place with ``os.replace``: readers see the old file or
the new one, never a partial one, and a failed upload leaves nothing in the visible tree.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator

from keel_server.artifacts.stores import READ_CHUNK_BYTES, ArtifactStore, ArtifactWriter, ObjectInfo, join_uri
from keel_server.common.errors import FailedPrecondition, NotFound, PermissionDenied

# Hidden staging folder for uploads in progress, at the store root (excluded from listings).
STAGING_DIR = ".keel-staging"


def _file_uri_to_path(uri: str) -> str:
    """``file:///abs`` or ``file://./rel`` → a path (relative ones are resolved against the cwd).

    Parsed by hand, not with urllib: keel joins relative paths into URIs verbatim, so ``?``,
    ``#`` and ``%`` are ordinary characters of a file name here.
    """
    if not uri.startswith("file://"):
        raise ValueError(f"{uri!r} is not a file:// URI")
    path = uri[len("file://") :]
    if path.startswith("localhost/"):
        path = path[len("localhost") :]
    if not path:
        raise ValueError(f"artifact URI {uri!r} names no folder: use file:///abs/path or file://./relative")
    return os.path.normpath(os.path.abspath(path))


class _LocalWriter(ArtifactWriter):
    def __init__(self, store: LocalArtifactStore, uri: str) -> None:
        super().__init__(uri)
        self._store = store
        self._target = store.path_of(uri)
        os.makedirs(store.staging, exist_ok=True)
        self._temp = os.path.join(store.staging, f"{uuid.uuid4().hex}.part")
        self._file = open(self._temp, "wb")  # noqa: SIM115 - closed in _publish/_discard

    def _write(self, data: bytes) -> None:
        self._file.write(data)

    def _publish(self, sha256: str) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if os.path.isdir(self._target):
            raise FailedPrecondition(
                f"cannot upload to {self.uri}: a directory is there; delete it first or choose another path",
                reason="IS_A_DIRECTORY",
            )
        with self._store._lock_for(self.uri):
            # A concurrent delete may prune the parent between makedirs and replace: retry.
            for attempt in range(3):
                try:
                    os.makedirs(os.path.dirname(self._target), exist_ok=True)
                    os.replace(self._temp, self._target)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
                except (FileExistsError, NotADirectoryError) as exc:
                    raise FailedPrecondition(
                        f"cannot upload to {self.uri}: a file is in the way of its parent folders",
                        reason="PARENT_IS_A_FILE",
                    ) from exc
            self._store._remember(self.uri, self.size, sha256)

    def _discard(self) -> None:
        try:
            self._file.close()
        finally:
            try:
                os.unlink(self._temp)
            except FileNotFoundError:
                pass


class LocalArtifactStore(ArtifactStore):
    scheme = "file"

    def __init__(self, uri: str) -> None:
        self.base = _file_uri_to_path(uri)
        self.root_uri = "file://" + self.base
        self.staging = os.path.join(self.base, STAGING_DIR)
        try:
            os.makedirs(self.base, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create the artifact folder {self.base}: {exc.strerror}") from exc

    def normalize_uri(self, uri: str) -> str:
        """``file://./rel`` and ``file://localhost/abs`` → ``file:///abs/path``."""
        return "file://" + _file_uri_to_path(uri)

    def path_of(self, uri: str) -> str:
        """The filesystem path of a store URI (already checked to be under the root). The
        staging folder is not addressable."""
        path = _file_uri_to_path(uri)
        if path == self.staging or path.startswith(self.staging + os.sep):
            raise PermissionDenied(f"{uri} is keel's upload staging area", reason="ARTIFACT_URI_OUTSIDE_ROOT")
        return path

    def _uri_of(self, path: str) -> str:
        return "file://" + path

    # ---- reads ---------------------------------------------------------------------------
    def _checksum(self, uri: str, path: str, size: int) -> str:
        """The recorded sha256; computed (and recorded) for files written outside keel."""
        sha = self._recall(uri, size)
        if sha:
            return sha
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(READ_CHUNK_BYTES):
                digest.update(block)
        sha = digest.hexdigest()
        self._remember(uri, size, sha)
        return sha

    def stat(self, uri: str) -> ObjectInfo:
        path = self.path_of(uri)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no artifact at {uri}", reason="ARTIFACT_NOT_FOUND", metadata={"uri": uri}) from None
        if os.path.isdir(path):
            return ObjectInfo(path="", is_dir=True)
        return ObjectInfo(path="", is_dir=False, size=st.st_size, sha256=self._checksum(uri, path, st.st_size))

    def open_reader(self, uri: str, offset: int = 0) -> tuple[ObjectInfo, Iterator[bytes]]:
        path = self.path_of(uri)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the iterator
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no artifact at {uri}", reason="ARTIFACT_NOT_FOUND", metadata={"uri": uri}) from None
        except IsADirectoryError:
            raise FailedPrecondition(
                f"{uri} is a directory: list it and download its files", reason="IS_A_DIRECTORY"
            ) from None
        try:
            # fstat of the open file: a concurrent replace cannot change what this reader sees.
            size = os.fstat(f.fileno()).st_size
            info = ObjectInfo(path="", is_dir=False, size=size, sha256=self._checksum(uri, path, size))
            f.seek(min(offset, size))
        except BaseException:
            f.close()
            raise

        def chunks() -> Iterator[bytes]:
            with f:
                while block := f.read(READ_CHUNK_BYTES):
                    yield block

        return info, chunks()

    def list_entries(self, uri: str, recursive: bool, cursor: str = "", limit: int = 1000) -> tuple[list[ObjectInfo], str]:
        """Byte order of the path, with folders keyed ``name/`` (``a.txt`` < ``a/x`` < ``a0``, as
        S3 orders keys); the cursor is the key of the last entry returned."""
        path = self.path_of(uri)
        if not os.path.isdir(path):
            return [], ""
        out: list[ObjectInfo] = []
        for entry in self._walk(path, "", recursive, cursor):
            if len(out) == limit:
                last = out[-1]
                return out, last.path + "/" if last.is_dir else last.path
            out.append(entry)
        return out, ""

    def _walk(self, folder: str, prefix: str, recursive: bool, start_after: str) -> Iterator[ObjectInfo]:
        """Entries in lexicographic order of their relative path. Sorting children by
        ``name + '/'`` for folders makes a depth-first walk come out in that order."""
        try:
            with os.scandir(folder) as it:
                entries = [(e.name + "/" if e.is_dir() else e.name, e) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort(key=lambda pair: pair[0])
        for key, entry in entries:
            if not prefix and entry.name == STAGING_DIR:
                continue
            rel = prefix + entry.name
            if entry.is_dir():
                if recursive:
                    dir_key = prefix + key
                    # Skip folders whose whole content sorts before the cursor.
                    if start_after and dir_key < start_after and not start_after.startswith(dir_key):
                        continue
                    yield from self._walk(entry.path, dir_key, recursive, start_after)
                elif prefix + key > start_after:
                    yield ObjectInfo(path=rel, is_dir=True)
            elif rel > start_after:
                try:
                    size = entry.stat().st_size
                except FileNotFoundError:
                    continue  # deleted while listing
                uri = self._uri_of(entry.path)
                yield ObjectInfo(path=rel, is_dir=False, size=size, sha256=self._recall(uri, size))

    # ---- writes --------------------------------------------------------------------------
    def open_writer(self, uri: str, expected_sha256: str = "", expected_size: int | None = None) -> ArtifactWriter:
        return _LocalWriter(self, uri)

    def delete(self, uri: str) -> int:
        path = self.path_of(uri)
        if os.path.isdir(path):
            files = [os.path.join(d, name) for d, _, names in os.walk(path) for name in names]
            shutil.rmtree(path, ignore_errors=True)
            self._forget(self._uri_of(p) for p in files)
            count = len(files)
        elif os.path.isfile(path):
            os.unlink(path)
            self._forget([uri])
            count = 1
        else:
            return 0
        self._prune_empty_parents(os.path.dirname(path))
        return count

    def _prune_empty_parents(self, folder: str) -> None:
        """Removes folders left empty by a delete (up to the root), as S3 would show them."""
        while folder != self.base and folder.startswith(self.base + os.sep):
            try:
                os.rmdir(folder)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    return
                raise
            folder = os.path.dirname(folder)

    def copy_tree(self, src_uri: str, dst_uri: str) -> tuple[int, int]:
        src = self.path_of(src_uri)
        if not os.path.exists(src):
            raise NotFound(f"nothing to copy at {src_uri}", reason="ARTIFACT_NOT_FOUND", metadata={"uri": src_uri})
        self.delete(dst_uri)
        if os.path.isfile(src):
            pairs = [("", src)]
        else:
            pairs = [
                (os.path.relpath(os.path.join(d, n), src).replace(os.sep, "/"), os.path.join(d, n))
                for d, _, names in os.walk(src)
                for n in names
            ]
        count = total = 0
        for rel, path in sorted(pairs):
            target_uri = join_uri(dst_uri, rel)
            size = os.path.getsize(path)
            sha = self._checksum(self._uri_of(path), path, size)
            # Copy through the staging folder so each copied file appears atomically too.
            writer = _LocalWriter(self, target_uri)
            try:
                with open(path, "rb") as f:
                    while block := f.read(READ_CHUNK_BYTES):
                        writer.write(block)
                writer.commit(size, sha)
            except BaseException:
                writer.abort()
                raise
            count += 1
            total += size
        return count, total

    def presign(self, uri: str, method: str, expires_seconds: int) -> str:
        raise FailedPrecondition(
            f"the local artifact store {self.root_uri} cannot presign URLs: stream through "
            "DownloadArtifact/UploadArtifact instead",
            reason="PRESIGN_UNSUPPORTED",
        )
