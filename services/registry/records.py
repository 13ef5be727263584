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
TRANSITION_REQUESTED = "TRANSITION_REQUESTED"
TRANSITION_APPROVED = "TRANSITION_APPROVED"
TRANSITION_REJECTED = "TRANSITION_REJECTED"
TRANSITION_CANCELLED = "TRANSITION_CANCELLED"

# Transition request statuses (stored as text, mapped to the proto enum by the servicer).
REQUEST_PENDING = "PENDING"
REQUEST_APPROVED = "APPROVED"
REQUEST_REJECTED = "REJECTED"
REQUEST_CANCELLED = "CANCELLED"
REQUEST_STATUSES: tuple[str, ...] = (REQUEST_PENDING, REQUEST_APPROVED, REQUEST_REJECTED, REQUEST_CANCELLED)


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
    # stages entered only through an approved transition request, in STAGES order
    approval_required_stages: list[str] = field(default_factory=list)


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
    # transition request events: the request and the comment made with the event
    transition_request_id: str = ""
    comment: str = ""


@dataclass
class TransitionRequestRecord:
    id: str
    name: str
    version: int
    from_stage: str
    stage: str
    archive_existing_versions: bool
    requester: str
    comment: str
    status: str
    creation_time: int
    decided_by: str
    decision_comment: str
    decision_time: int


@dataclass
class Page(Generic[T]):
    """One page of a search or listing; ``next_page_token`` is empty at the end."""

    items: list[T]
    next_page_token: str
