"""`make demo` (scripts/demo.py) runs end to end and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_demo_runs_every_step() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    for expected in (
        "keel server is up",
        "-> iris-classifier v3",
        "now Production",
        "deployment 'iris' is READY",
        "Querying over keel's gRPC Predict",
        "model ready=True",
        'HTTP 200: {"predictions"',
        "stopped keel server",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
    workdir = out.rsplit("removed ", 1)[1].strip()
    assert not Path(workdir).exists()
