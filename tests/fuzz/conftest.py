"""Hypothesis profiles for the fuzz tests (issue #20).

``ci`` (the default, what ``make test`` runs): bounded, deterministic-enough for CI.
``fuzz`` (``make fuzz``, ``KEEL_FUZZ_PROFILE=fuzz``): many more examples.
The RPC fuzzer's own knobs are ``KEEL_FUZZ_CALLS`` and ``KEEL_FUZZ_SEED`` (see test_rpc_fuzz.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

# rpc_fuzzer.py sits next to this file (the test folders are not packages).
sys.path.insert(0, str(Path(__file__).resolve().parent))

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=5_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("KEEL_FUZZ_PROFILE", "ci"))


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    mod = sys.modules.get("rpc_fuzzer")
    if mod is not None:
        terminalreporter.write_line(
            f"rpc fuzz: seeds {mod.FIXED_SEED} (fixed) and {mod.RUN_SEED} (this run; replay with "
            f"KEEL_FUZZ_SEED={mod.RUN_SEED}); hypothesis profile {os.environ.get('KEEL_FUZZ_PROFILE', 'ci')}"
        )
        if os.environ.get("KEEL_FUZZ_STATS") and mod.STATS:
            for path, codes in sorted(mod.STATS.items()):
                terminalreporter.write_line(f"  {path}: " + ", ".join(f"{k} {v}" for k, v in sorted(codes.items())))
