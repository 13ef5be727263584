"""The chaos suite: ``make test-chaos`` runs every variant at full length (KEEL_CHAOS_FULL=1);
``make test`` runs the bounded variants and skips those marked ``chaos_long``."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: a chaos scenario (failures injected while writers run)")
    config.addinivalue_line("markers", "chaos_long: a long chaos variant, run only with KEEL_CHAOS_FULL=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("KEEL_CHAOS_FULL") == "1":
        return
    skip = pytest.mark.skip(reason="long chaos variant: set KEEL_CHAOS_FULL=1 (make test-chaos)")
    for item in items:
        if "chaos_long" in item.keywords:
            item.add_marker(skip)
