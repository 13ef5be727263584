"""``file://`` artifact store: a local folder (the embedded default, ``file://./keel-artifacts``).

Uploads are written to a temp file in a hidden staging folder at the root (same filesystem,
never listed), fsynced, then moved into place with ``os.replace``: readers see the old file or
the new one, never a partial one, and a failed upload leaves nothing in the visible tree.

Staging entries (``.part`` uploads, ``.copy``/``.old`` folders of ``copy_tree``) are named
``<uuid>.<pid>-<start>.<host><suffix>``: the process that owns them. A process killed mid-upload
leaves its entry behind (with the whole announced size reserved), so ``sweep`` (run at start and
periodically) removes entries whose owner on this host is gone (no such pid, or the pid now
belongs to a later process) and any entry idle (mtime/ctime) for the stale age, whoever owns it;
never an entry of an upload this process still runs. Several servers may share the folder.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from stat import S_ISDIR

from keel.shared.chunks import NO_ROOM, libc_function, reserve_space
from keel_server.artifacts.stores import READ_CHUNK_BYTES, ArtifactStore, ArtifactWriter, ObjectInfo, join_uri
from keel_server.common.errors import FailedPrecondition, NotFound, PermissionDenied, ResourceExhausted

# Hidden staging folder for uploads in progress, at the store root (excluded from listings).
STAGING_DIR = ".keel-staging"
# An upload hands what it has written to the kernel's writeback every this many bytes, so the
# fsync before the rename finds little left to do.
WRITEBACK_BYTES = 8 * 1024 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_LINK_UNSUPPORTED = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
# What keel leaves in the staging folder: uploads in progress, copy_tree's folders.
STAGING_SUFFIXES = (".part", ".copy", ".old")

log = logging.getLogger("keel.artifacts.local")


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, from ``/proc/<pid>/stat``): tells a
    process from a later one that reuses its pid. None when there is no such process; '' when
    it exists but the start is unknown (no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except OSError:
        return ""
    else:
        # Field 2 (the command) may hold spaces and ')': the fields after the last ')' are 3...
        fields = data[data.rfind(b")") + 2 :].split()
        return fields[19].decode() if len(fields) > 19 else ""
    try:  # no /proc (not Linux): signal 0 tells whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass
    return ""


_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "localhost"
_owner_cache: dict[int, str] = {}


def _owner_tag() -> str:
    """``<pid>-<start>`` of this process (computed again after a fork)."""
    pid = os.getpid()
    if pid not in _owner_cache:
        _owner_cache[pid] = f"{pid}-{_process_start(pid) or '0'}"
    return _owner_cache[pid]


def _staging_owner(name: str) -> tuple[str, int, str] | None:
    """(host, pid, start) of a staging entry named by ``_staging_name``; None for other names
    (entries of older keel versions: only their age tells whether they are dead)."""
    stem = next((name[: -len(s)] for s in STAGING_SUFFIXES if name.endswith(s)), "")
    parts = stem.split(".", 2)
    if len(parts) != 3:
        return None
    pid_text, _, start = parts[1].partition("-")
    if not pid_text.isdigit():
        return None
    return parts[2], int(pid_text), start


def _owner_gone(host: str, pid: int, start: str) -> bool:
    """True when the owner of a staging entry surely is dead: on this host, and its pid is free
    or now belongs to a process started at another time. Another host's owner: never sure."""
    if host != _HOST:
        return False
    current = _process_start(pid)
    if current is None:
        return True
    return bool(current) and start not in ("", "0") and current != start


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# Linux ``sync_file_range(2)``: start writeback of a range without waiting (None elsewhere).
_sync_file_range = libc_function("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """A hint: start writing this range to disk now (no waiting, no effect on what is cached).
    Durability still comes from the fsync before the rename."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _remove(path: str) -> None:
    """Removes a file or folder if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    def __init__(self, store: LocalArtifactStore, uri: str, size: int | None) -> None:
        super().__init__(uri)
        self._store = store
        self._target = store.path_of(uri)
        os.makedirs(store.staging, mode=0o700, exist_ok=True)
        self._temp = store._claim_staging(".part")
        try:
            # O_EXCL: a fresh file, never an existing one written in place; private to the server's
            # user (0600) while it is being written, as every temporary file of keel's.
            self._fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
        except BaseException:
            store._release_staging(self._temp)
            raise
        self._written = 0
        self._flushed = 0  # bytes handed to the kernel's writeback so far
        if size:
            try:
                reserve_space(self._fd, size, self._temp)
            except OSError as exc:
                self._discard()
                self._raise_if_full(exc)
                raise

    def _raise_if_full(self, exc: OSError) -> None:
        """A full disk (or quota) is the caller's to fix: RESOURCE_EXHAUSTED, not INTERNAL."""
        if exc.errno in NO_ROOM:
            raise ResourceExhausted(
                f"the {self._store.describe()} has no room for {self.uri} ({exc.strerror}); "
                "nothing was stored: free space there and upload again",
                reason="STORE_FULL",
            ) from exc

    def _write(self, data: bytes | memoryview) -> None:
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self._raise_if_full(exc)
            raise
        self._written += len(data)
        if self._written - self._flushed >= WRITEBACK_BYTES:
            _start_writeback(self._fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def _publish(self, sha256: str) -> None:
        # One fsync at the end; the writeback started while the bytes arrived makes it short.
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if os.path.isdir(self._target):
            raise FailedPrecondition(
                f"cannot upload to {self.uri}: a directory is there; delete it first or choose another path",
                reason="IS_A_DIRECTORY",
            )
        self._store._publish_file(self._temp, self._target, self.uri, self.size, sha256)
        self._store._release_staging(self._temp)

    def _discard(self) -> None:
        try:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        finally:
            try:
                os.unlink(self._temp)
            except FileNotFoundError:
                pass
            self._store._release_staging(self._temp)


class LocalArtifactStore(ArtifactStore):
    scheme = "file"
    read_ahead = False
    # Staging entries of this process's uploads and copies in progress, whichever store object
    # (several may share a folder in one process) made them: never swept.
    _live: set[str] = set()
    _live_lock = threading.Lock()

    def __init__(self, uri: str) -> None:
        self.base = _file_uri_to_path(uri)
        self.root_uri = "file://" + self.base
        self.staging = os.path.join(self.base, STAGING_DIR)
        try:
            os.makedirs(self.base, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create the artifact folder {self.base}: {exc.strerror}") from exc

    # ---- staging: names that say who owns them, and the sweep of dead ones ----------------
    def _claim_staging(self, suffix: str) -> str:
        """A fresh staging path owned by this process, marked live before anything is created
        there (so a concurrent sweep never takes it); ``_release_staging`` once it is gone."""
        path = os.path.join(self.staging, f"{uuid.uuid4().hex}.{_owner_tag()}.{_HOST}{suffix}")
        with self._live_lock:
            self._live.add(path)
        return path

    def _release_staging(self, path: str) -> None:
        with self._live_lock:
            self._live.discard(path)

    def sweep(self, stale_seconds: float) -> int:
        """Removes staging entries of dead uploads and copies: those whose owner on this host is
        gone, and any idle (mtime and ctime) for ``stale_seconds``, except this process's own
        uploads in progress. Returns the number of entries removed."""
        try:
            with os.scandir(self.staging) as it:
                names = [e.name for e in it if e.name.endswith(STAGING_SUFFIXES)]
        except (FileNotFoundError, NotADirectoryError):
            return 0
        own = _owner_tag()
        now = time.time()
        removed = freed = 0
        for name in names:
            path = os.path.join(self.staging, name)
            with self._live_lock:
                if path in self._live:
                    continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # finished meanwhile
            owner = _staging_owner(name)
            if owner is not None and owner[0] == _HOST and f"{owner[1]}-{owner[2]}" == own:
                dead = True  # this process's, and not in progress: left over
            elif owner is not None and _owner_gone(*owner):
                dead = True
            else:
                dead = now - max(st.st_mtime, st.st_ctime) >= stale_seconds
            if dead:
                freed += st.st_blocks * 512 if not S_ISDIR(st.st_mode) else 0
                _remove(path)
                removed += 1
        if removed:
            log.info(
                "removed %d staging entr%s of dead uploads from %s (%d bytes of files)",
                removed, "y" if removed == 1 else "ies", self.staging, freed,
            )  # fmt: skip
        return removed

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

    def _publish_file(self, temp: str, target: str, uri: str, size: int, sha256: str) -> None:
        """Moves a finished (fsynced) staging file into place with ``os.replace``, and records it."""
        with self._lock_for(uri):
            # A concurrent delete may prune the parent between makedirs and replace: retry.
            for attempt in range(3):
                try:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.replace(temp, target)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
                except (FileExistsError, NotADirectoryError) as exc:
                    raise FailedPrecondition(
                        f"cannot upload to {uri}: a file is in the way of its parent folders",
                        reason="PARENT_IS_A_FILE",
                    ) from exc
            self._remember(uri, size, sha256)

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
            fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
            # fstat of the open file: a concurrent replace cannot change what this reader sees
            # (stored files are never written in place).
            st = os.fstat(fd)
            if S_ISDIR(st.st_mode):
                os.close(fd)
                raise IsADirectoryError(path)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no artifact at {uri}", reason="ARTIFACT_NOT_FOUND", metadata={"uri": uri}) from None
        except IsADirectoryError:
            raise FailedPrecondition(
                f"{uri} is a directory: list it and download its files", reason="IS_A_DIRECTORY"
            ) from None
        try:
            size = st.st_size
            info = ObjectInfo(path="", is_dir=False, size=size, sha256=self._checksum(uri, path, size))
        except BaseException:
            os.close(fd)
            raise

        def chunks() -> Iterator[bytes]:
            # pread straight into a new bytes object: one copy out of the page cache, no
            # buffering layer, no shared file position.
            position = min(offset, size)
            try:
                while block := os.pread(fd, READ_CHUNK_BYTES, position):
                    position += len(block)
                    yield block
            finally:
                os.close(fd)

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
        return _LocalWriter(self, uri, expected_size)

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
        """Hard-links every file of ``src`` into a staging folder, then renames that into place.

        Safe because stored files are never modified in place: an upload writes a new file and
        ``os.replace``s it (a new inode), a delete unlinks. So overwriting or deleting the source
        later leaves the copy's bytes alone, and no file data needs copying or syncing; one
        fsync of the destination's parent makes the new entries durable. Where a link is
        impossible (another filesystem mounted under the root) the file is copied instead and
        fsynced once before the rename. The destination appears whole or not at all."""
        src = self.path_of(src_uri)
        dst = self.path_of(dst_uri)
        try:
            src_is_dir = S_ISDIR(os.stat(src).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"nothing to copy at {src_uri}", reason="ARTIFACT_NOT_FOUND", metadata={"uri": src_uri}) from None
        if src_is_dir:
            pairs = sorted(
                (os.path.relpath(os.path.join(d, n), src).replace(os.sep, "/"), os.path.join(d, n))
                for d, _, names in os.walk(src)
                for n in names
            )
        else:
            pairs = [("", src)]
        if not pairs:  # an empty folder: nothing to copy, as on S3
            self.delete(dst_uri)
            return 0, 0
        os.makedirs(self.staging, mode=0o700, exist_ok=True)
        staged = self._claim_staging(".copy")
        copied: list[str] = []  # files that had to be copied, not linked: fsynced before the rename
        records: list[tuple[str, int, str]] = []
        try:
            if src_is_dir:
                os.mkdir(staged)
            for rel, path in pairs:
                target = os.path.join(staged, *rel.split("/")) if rel else staged
                if rel and "/" in rel:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                size = os.path.getsize(path)
                sha = self._checksum(self._uri_of(path), path, size)
                try:
                    os.link(path, target)
                except OSError as exc:
                    if exc.errno not in _LINK_UNSUPPORTED:
                        raise
                    shutil.copyfile(path, target)
                    copied.append(target)
                records.append((join_uri(dst_uri, rel), size, sha))
            for path in copied:
                fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._swap_into_place(staged, dst, dst_uri)
        except BaseException:
            _remove(staged)
            raise
        finally:
            self._release_staging(staged)
        self._remember_many(records)
        return len(records), sum(size for _, size, _ in records)

    def _swap_into_place(self, staged: str, dst: str, dst_uri: str) -> None:
        """Replaces whatever is at ``dst`` by ``staged`` (a file or a folder) with renames."""
        parent = os.path.dirname(dst)
        old = ""
        try:
            with self._lock_for(dst_uri):
                for attempt in range(3):  # a concurrent delete may prune the parent: retry
                    try:
                        os.makedirs(parent, exist_ok=True)
                        if os.path.isdir(dst) or (os.path.lexists(dst) and os.path.isdir(staged)):
                            # rename() cannot replace a folder, nor a file by a folder: move it aside.
                            self._release_staging(old)  # a failed attempt's, if any (swept later)
                            old = self._claim_staging(".old")
                            os.rename(dst, old)
                        os.replace(staged, dst)
                        break
                    except FileNotFoundError:
                        if attempt == 2:
                            raise
                    except (FileExistsError, NotADirectoryError) as exc:
                        raise FailedPrecondition(
                            f"cannot copy to {dst_uri}: a file is in the way of its parent folders",
                            reason="PARENT_IS_A_FILE",
                        ) from exc
                _fsync_dir(parent)
            if old:
                files = [os.path.join(d, n) for d, _, names in os.walk(old) for n in names] if os.path.isdir(old) else [old]
                _remove(old)
                prefix = len(old)
                self._forget(self._uri_of(dst + p[prefix:]) for p in files)
        finally:
            if old:
                self._release_staging(old)

    def presign(self, uri: str, method: str, expires_seconds: int) -> str:
        raise FailedPrecondition(
            f"the local artifact store {self.root_uri} cannot presign URLs: stream through "
            "DownloadArtifact/UploadArtifact instead",
            reason="PRESIGN_UNSUPPORTED",
        )
