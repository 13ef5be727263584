"""Artifact transfer pieces both ends use: chunk message framing, and disk reservation.

Chunk framing: a chunk message (``UploadArtifactRequest`` or ``DownloadArtifactResponse`` with
only ``chunk`` set) is field 2, length-delimited: the tag byte 0x12, the length as a varint,
then the bytes. Framing one by hand costs one copy of the bytes where building and serialising
a message costs two, and reading one back as a view of the received buffer costs none where
parsing it and reading ``.chunk`` costs two. The SDK frames uploads and the server downloads;
anything else on the wire (headers, trailers, chunks framed differently by another client)
goes through protobuf.

Files on disk: the receiving end of a transfer (the SDK downloading, the local artifact store
uploading, the model server filling its cache) reserves the file's blocks before the first byte
moves, so a full disk fails at once instead of half-way through; downloaded models and their
folders are private to the process user.

No protobuf module is imported here (the generated stubs live in SDK packages whose
``__init__`` imports the SDK's transfer code); callers pass the message class's parser.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
from collections.abc import Callable
from typing import IO, Any, TypeVar

CHUNK_TAG = 0x12
UPLOAD_METHOD = "/keel.artifacts.v1.ArtifactService/UploadArtifact"
DOWNLOAD_METHOD = "/keel.artifacts.v1.ArtifactService/DownloadArtifact"
# errno values of a full disk or quota.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


M = TypeVar("M")


def frame_chunk(data: bytes | memoryview) -> bytes:
    """The serialised message ``{chunk: data}`` (valid for both streaming messages)."""
    n = len(data)
    prefix = bytearray((CHUNK_TAG,))
    while n > 0x7F:
        prefix.append((n & 0x7F) | 0x80)
        n >>= 7
    prefix.append(n)
    return b"".join((prefix, data))


def parse_chunk(data: bytes) -> memoryview | None:
    """The bytes of a serialised chunk-only message, as a view (no copy); None for any other."""
    if not data or data[0] != CHUNK_TAG:
        return None
    length = shift = 0
    for pos in range(1, min(len(data), 11)):
        byte = data[pos]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return memoryview(data)[pos + 1 :] if pos + 1 + length == len(data) else None
    return None


def parse_message_or_chunk(parse: Callable[[bytes], M], data: bytes) -> M | memoryview:
    """A received streaming message: a view of the bytes of a chunk-only message, or else the
    message protobuf parses (``parse``: the message class's ``FromString``)."""
    chunk = parse_chunk(data)
    return parse(data) if chunk is None else chunk


def serialize_message(message: bytes | Any) -> bytes:
    """gRPC serializer that passes pre-framed chunks through and serialises messages."""
    return message if isinstance(message, bytes) else message.SerializeToString()  # type: ignore[no-any-return]


# ---------------------------------------------------------------- files on disk
def libc_function(name: str, *argtypes: Any) -> Callable[..., int] | None:
    """A Linux C library function through ctypes (errno kept for ``ctypes.get_errno``), or None
    on other systems or where the C library lacks it (callers then do without)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


# None where the system cannot reserve blocks (then files are written as usual).
fallocate = libc_function("fallocate", ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_FALLOC_FL_KEEP_SIZE = 1


def reserve_space(fd: int, size: int, path: str) -> None:
    """Reserves disk blocks for the ``size`` bytes about to be written to ``fd`` from its start
    (its length stays as it is), so that a disk without room fails here, before a byte moves
    (OSError ENOSPC or EDQUOT, naming ``path``), not half-way through a long transfer; the
    blocks also come in one piece. A filesystem that cannot reserve is written as usual."""
    if size <= 0:
        return
    if hasattr(os, "fstatvfs"):
        # Checked first: fallocate would fill the disk up to its last block before failing.
        # (f_bfree counts the blocks kept for root too: fallocate has the last word on those.)
        fs = os.fstatvfs(fd)
        if size > fs.f_bfree * fs.f_frsize:
            raise OSError(errno.ENOSPC, f"{size} bytes needed, {fs.f_bfree * fs.f_frsize} free", path)
    if fallocate is None:
        return
    if fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, size) != 0:
        code = ctypes.get_errno()
        if code in NO_ROOM:
            raise OSError(code, f"{size} bytes needed: {os.strerror(code)}", path)


# What keel creates on the local disk (download folders and files, model caches) is private to
# the process user: another user of the machine can neither read a model's files nor swap them
# before they are loaded (pickles run code; CVE-2026-4137 was a world-writable temp folder).
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def make_private_dirs(path: str) -> None:
    """Creates folder ``path`` and its missing parents, each with mode 0700 (never wider; the
    umask may narrow it). Folders that already exist are left as they are: keel changes the
    mode only of what it creates, never of a folder the user gave."""
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(folder):  # a file is in the way
                raise
            # else: a parallel download made it first


def open_private_file(path: str) -> IO[bytes]:
    """A new, empty file at ``path`` with mode 0600, open for writing. Whatever was at ``path``
    is removed first, and the file is created exclusively: a symlink planted there meanwhile
    makes this fail instead of writing through it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "wb")
