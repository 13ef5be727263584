"""Process-wide glibc allocator settings for a keel server (no-ops elsewhere).

Artifact transfers allocate and free megabyte buffers on several threads (gRPC's own, the RPC
workers, the upload writers). With glibc's defaults each thread may get its own arena (up to
8 per core) and every arena keeps its own free memory, so the same transfer left a server 30
to 200 MiB bigger depending on which threads happened to touch the buffers. Two arenas keep
that bounded (measured: a 1 GiB upload grows the server by 20-35 MiB, equally fast); the
thresholds keep the few warm MiB a transfer reuses instead of returning and re-faulting them.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# Blocks up to 8 MiB (a 4 MiB chunk and its copies) come from the heap, not fresh mmaps...
MALLOC_MMAP_THRESHOLD = 8 * 1024 * 1024
# ...and up to this much free heap per arena is kept instead of handed back between chunks
# (about 65,000 page faults less per 256 MiB uploaded).
MALLOC_TRIM_THRESHOLD = 16 * 1024 * 1024
# Arenas shared by all threads. The GIL serialises most allocation anyway.
MALLOC_ARENA_MAX = 2

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def tune_allocator() -> bool:
    """Applies the settings above; False where the C library is not glibc. Call it before the
    server starts its threads: glibc fixes the arena limit once a process has made 8 arenas."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl, macOS: nothing to tune
        return False
    applied = all(
        mallopt(option, value) == 1
        for option, value in (
            (_M_ARENA_MAX, MALLOC_ARENA_MAX),
            (_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD),
        )
    )
    if not applied:
        log.warning("the C library refused an allocator setting; server memory may grow more during transfers")
    return applied
