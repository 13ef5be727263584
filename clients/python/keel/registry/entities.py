"""Registry entities of the SDK, shaped like MLflow's (``version`` is a string of digits,
``status`` and ``current_stage`` are plain strings, ``tags`` a dict)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from keel.registry.v1 import registry_pb2 as pb

_STATUS = {
    pb.MODEL_VERSION_STATUS_PENDING_REGISTRATION: "PENDING_REGISTRATION",
    pb.MODEL_VERSION_STATUS_FAILED_REGISTRATION: "FAILED_REGISTRATION",
    pb.MODEL_VERSION_STATUS_READY: "READY",
}
_EVENT = {
    pb.MODEL_HISTORY_EVENT_TYPE_STAGE_TRANSITION: "STAGE_TRANSITION",
    pb.MODEL_HISTORY_EVENT_TYPE_ALIAS_SET: "ALIAS_SET",
    pb.MODEL_HISTORY_EVENT_TYPE_ALIAS_DELETED: "ALIAS_DELETED",
    pb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_REQUESTED: "TRANSITION_REQUESTED",
    pb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_APPROVED: "TRANSITION_APPROVED",
    pb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_REJECTED: "TRANSITION_REJECTED",
    pb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_CANCELLED: "TRANSITION_CANCELLED",
}
# Transition request statuses, by proto number (the SDK and CLI speak the names).
REQUEST_STATUSES = {
    pb.TRANSITION_REQUEST_STATUS_PENDING: "PENDING",
    pb.TRANSITION_REQUEST_STATUS_APPROVED: "APPROVED",
    pb.TRANSITION_REQUEST_STATUS_REJECTED: "REJECTED",
    pb.TRANSITION_REQUEST_STATUS_CANCELLED: "CANCELLED",
}


@dataclass
class ModelVersion:
    name: str
    version: str
    creation_timestamp: int
    last_updated_timestamp: int
    user_id: str
    current_stage: str
    description: str
    source: str
    run_id: str
    status: str
    status_message: str
    run_link: str
    storage_location: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @classmethod
    def from_proto(cls, m: pb.ModelVersion) -> ModelVersion:
        return cls(
            name=m.name,
            version=str(m.version),
            creation_timestamp=m.creation_timestamp,
            last_updated_timestamp=m.last_updated_timestamp,
            user_id=m.user_id,
            current_stage=m.current_stage,
            description=m.description,
            source=m.source,
            run_id=m.run_id,
            status=_STATUS.get(m.status, "UNSPECIFIED"),
            status_message=m.status_message,
            run_link=m.run_link,
            storage_location=m.storage_location,
            tags={t.key: t.value for t in m.tags},
            aliases=list(m.aliases),
        )


@dataclass
class RegisteredModel:
    name: str
    creation_timestamp: int
    last_updated_timestamp: int
    description: str
    latest_versions: list[ModelVersion] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    # alias -> version (a string of digits, as MLflow)
    aliases: dict[str, str] = field(default_factory=dict)
    # stages entered only through an approved transition request (set_registered_model_policy)
    approval_required_stages: list[str] = field(default_factory=list)

    @classmethod
    def from_proto(cls, m: pb.RegisteredModel) -> RegisteredModel:
        return cls(
            name=m.name,
            creation_timestamp=m.creation_timestamp,
            last_updated_timestamp=m.last_updated_timestamp,
            description=m.description,
            latest_versions=[ModelVersion.from_proto(v) for v in m.latest_versions],
            tags={t.key: t.value for t in m.tags},
            aliases={a.alias: str(a.version) for a in m.aliases},
            approval_required_stages=list(m.policy.approval_required_stages),
        )


@dataclass
class TransitionRequest:
    """A request to move ``version`` of ``name`` to ``stage``: ``status`` is ``PENDING``, then
    ``APPROVED`` (the version moved), ``REJECTED`` or ``CANCELLED``. ``from_stage`` is where the
    version was when asked; ``decided_by``/``decision_comment`` are set once it is decided."""

    id: str
    name: str
    version: str
    stage: str
    from_stage: str
    archive_existing_versions: bool
    requester: str
    comment: str
    status: str
    creation_timestamp: int
    decision_timestamp: int
    decided_by: str
    decision_comment: str

    @classmethod
    def from_proto(cls, r: pb.TransitionRequest) -> TransitionRequest:
        return cls(
            id=r.id,
            name=r.name,
            version=str(r.version),
            stage=r.stage,
            from_stage=r.from_stage,
            archive_existing_versions=r.archive_existing_versions,
            requester=r.requester,
            comment=r.comment,
            status=REQUEST_STATUSES.get(r.status, "UNSPECIFIED"),
            creation_timestamp=r.creation_timestamp,
            decision_timestamp=r.decision_timestamp,
            decided_by=r.decided_by,
            decision_comment=r.decision_comment,
        )


@dataclass
class ModelHistoryEvent:
    """One stage change or alias move: who, when, from, to.

    ``event_type`` is ``STAGE_TRANSITION`` (``version`` moved ``from_stage`` → ``to_stage``),
    ``ALIAS_SET`` (``alias`` moved ``from_version`` → ``version``; from '' when new) or
    ``ALIAS_DELETED`` (``alias`` pointed at ``from_version``). Versions are strings ('' = none).
    ``TRANSITION_REQUESTED``, ``TRANSITION_APPROVED``, ``TRANSITION_REJECTED`` and
    ``TRANSITION_CANCELLED`` concern transition request ``transition_request_id`` (``version``
    from ``from_stage`` to ``to_stage``), with the ``comment`` made with the event.
    """

    event_type: str
    name: str
    version: str
    from_stage: str
    to_stage: str
    alias: str
    from_version: str
    actor: str
    timestamp: int
    comment: str = ""
    transition_request_id: str = ""

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp / 1000, tz=UTC)

    @classmethod
    def from_proto(cls, e: pb.ModelHistoryEvent) -> ModelHistoryEvent:
        return cls(
            event_type=_EVENT.get(e.event_type, "UNSPECIFIED"),
            name=e.name,
            version=str(e.version) if e.version else "",
            from_stage=e.from_stage,
            to_stage=e.to_stage,
            alias=e.alias,
            from_version=str(e.from_version) if e.from_version else "",
            actor=e.actor,
            timestamp=e.timestamp,
            comment=e.comment,
            transition_request_id=e.transition_request_id,
        )


__all__ = ["ModelHistoryEvent", "ModelVersion", "RegisteredModel", "TransitionRequest"]
