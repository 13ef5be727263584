"""Helpers for the registry suites (servers come from tests/server_fixtures.py).

Sources are real: an experiment and a run created through the SDK, with files logged through
the artifact service, so registration resolves ``runs:/`` URIs and copies real bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass
class Source:
    run_id: str
    uri: str  # runs:/<run_id>/model


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_source(client, files: dict[str, str] | None = None) -> Source:  # type: ignore[no-untyped-def]
    """A fresh run with ``files`` (path under model/ → text) logged under ``model/``."""
    experiment_id = client.create_experiment(unique("reg-exp"))
    run_id = client.create_run(experiment_id).info.run_id
    for path, text in (files or {"MLmodel": "flavors: {}\n", "weights.bin": "w1"}).items():
        client.log_text(run_id, text, f"model/{path}")
    return Source(run_id=run_id, uri=f"runs:/{run_id}/model")


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
