"""What the registry store returns: plain records, free of Peewee and protobuf, that the
servicer converts to messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

# STAGES: the canonical stage spellings, in the order GetLatestVersions reports them; defined
# once, with the models:/ URI grammar the SDK shares.
from keel.shared.uris import STAGES as STAGES

T = TypeVar("T")

# Stages archive_existing_versions may target (MLflow's rule).
ARCHIVABLE_STAGES: tuple[str, ...] = ("Staging", "Production")

# Version status values (stored as text, mapped to the proto enum by the servicer).
PENDING_REGISTRATION = "PENDING_REGISTRATION"
FAILED_REGISTRATION = "FAILED_REGISTRATION"
READY = "READY"

# History event kinds (stored as text).
STAGE_TRANSITION = "STAGE_TRANSITION"
ALIAS_SET = "ALIAS_SET"
ALIAS_DELETED = "ALIAS_DELETED"


@dataclass
class VersionRecord:
    name: str
    version: int
    creation_time: int
    last_updated_time: int
    user_id: str
    current_stage: str
    description: str
    source: str
    run_id: str
    run_link: str
    status: str
    status_message: str
    storage_location: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


@dataclass
class ModelRecord:
    name: str
    creation_time: int
    last_updated_time: int
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    # alias -> version number
    aliases: dict[str, int] = field(default_factory=dict)
    # the latest READY version of each stage that has one, in STAGES order
    latest_versions: list[VersionRecord] = field(default_factory=list)


@dataclass
class HistoryRecord:
    event_type: str
    name: str
    version: int
    from_stage: str
    to_stage: str
    alias: str
    from_version: int
    actor: str
    timestamp: int


@dataclass
class Page(Generic[T]):
    """One page of a search or listing; ``next_page_token`` is empty at the end."""

    items: list[T]
    next_page_token: str
