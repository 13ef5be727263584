"""The model registry from the SDK: ``keel.register_model`` and the registry entities.

The full API is on ``keel.Client`` (``create_registered_model``, ``transition_model_version_stage``,
``set_registered_model_alias``, ``list_model_history``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from keel.exceptions import AlreadyExists
from keel.registry.entities import ModelHistoryEvent, ModelVersion, RegisteredModel, TransitionRequest
from keel.shared.uris import is_runs_uri, parse_runs_uri

log = logging.getLogger("keel.registry")


def register_model(
    model_uri: str,
    name: str,
    tags: Mapping[str, Any] | None = None,
    *,
    await_registration_for: int | None = None,
) -> ModelVersion:
    """Registers the model at ``model_uri`` (``runs:/<run_id>/<path>``, ``models:/...`` or an
    artifact URI) as a new version of ``name``, creating the registered model when it does not
    exist yet. Returns the new version (READY: its files are already snapshotted)."""
    from keel.client import Client

    # A malformed runs:/ URI is refused here, before anything is created.
    run_id = parse_runs_uri(model_uri).run_id if is_runs_uri(model_uri) else ""
    client = Client()
    try:
        client.create_registered_model(name)
        log.info("Successfully registered model '%s'.", name)
    except AlreadyExists:
        log.info("Registered model '%s' already exists. Creating a new version of this model...", name)
    version = client.create_model_version(
        name,
        source=model_uri,
        run_id=run_id or None,
        tags=tags,
        await_registration_for=await_registration_for,
    )
    log.info("Created version '%s' of model '%s'.", version.version, name)
    return version


__all__ = ["ModelHistoryEvent", "ModelVersion", "RegisteredModel", "TransitionRequest", "register_model"]
