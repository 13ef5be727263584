"""Fixtures of the registry suites: a fresh model name, a real source run, versions."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from registry_helpers import Source, make_source, unique


@pytest.fixture()
def source(client) -> Source:  # type: ignore[no-untyped-def]
    return make_source(client)


@pytest.fixture()
def model_name(client) -> str:  # type: ignore[no-untyped-def]
    """A fresh registered model of the module's server."""
    name = unique("model")
    client.create_registered_model(name)
    return name


@pytest.fixture()
def versions(client, model_name: str, source: Source) -> Callable[[int], list[str]]:  # type: ignore[no-untyped-def]
    """Registers ``n`` versions of ``model_name`` from ``source``; returns their numbers."""

    def register(n: int) -> list[str]:
        return [
            client.create_model_version(model_name, source.uri, run_id=source.run_id).version
            for _ in range(n)
        ]

    return register
