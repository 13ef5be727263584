"""1 GiB through a real `keel server` process: identical bytes both ways, flat server memory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, cast

import pytest
from art_helpers import make_run
from server_fixtures import server_process

import keel
from keel.artifacts import _transfer
from keel_server.common import db as dbmod

MiB = 1024 * 1024
SIZE = 1024 * MiB
RSS_GROWTH_LIMIT = 100 * MiB


class Generated:
    """``SIZE`` pseudo-random bytes produced as they are read (never all in memory): 1 MiB
    random blocks, each mixed with its index so no two blocks are equal."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.index = 0
        self.base = os.urandom(MiB)
        self.digest = hashlib.sha256()

    def __enter__(self) -> Generated:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self, n: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        block = (self.index.to_bytes(8, "little") + self.base[8:])[: min(MiB, self.remaining, n if n > 0 else MiB)]
        self.index += 1
        self.remaining -= len(block)
        self.digest.update(block)
        return block


def _rss(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process, in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


@pytest.mark.slow
def test_one_gib_roundtrip_with_flat_server_memory(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/keel.db"
    args = ["--services", "artifacts", "--db-url", db_url, "--artifact-uri", f"file://{tmp_path}/artifacts"]
    with server_process(args) as server:
        assert server.process is not None
        pid = server.process.pid
        dbmod.initialize(db_url)
        run_id = make_run(f"file://{tmp_path}/artifacts")
        client = keel.Client(server.uri)
        client.log_text(run_id, "warm-up", "warm.txt")  # first-call allocations happen before the baseline
        baseline, _ = _rss(pid)

        source = Generated(SIZE)
        target = _transfer.ref(run_id=run_id, path="big/one-gib.bin")
        info = _transfer.upload_stream(client._transport, target, lambda: cast(IO[bytes], source), SIZE)
        assert info.file_size == SIZE and info.sha256 == source.digest.hexdigest()

        local = Path(client.download_artifacts(run_id, "big/one-gib.bin", str(tmp_path / "dl")))
        digest = hashlib.sha256()
        with open(local, "rb") as f:
            while block := f.read(8 * MiB):
                digest.update(block)
        assert digest.hexdigest() == source.digest.hexdigest()
        _, peak = _rss(pid)
        assert peak - baseline < RSS_GROWTH_LIMIT, f"server RSS grew by {(peak - baseline) / MiB:.0f} MiB"

