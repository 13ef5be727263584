"""Helpers for the registry suites (servers come from tests/server_fixtures.py).

Sources are real: an experiment and a run created through the SDK, with files logged through
the artifact service, so registration resolves ``runs:/`` URIs and copies real bytes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass


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
