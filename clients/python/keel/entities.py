"""Tracking entities as MLflow users know them: plain Python objects built from the protos.

``Experiment``, ``Run`` (``.info`` and ``.data.params/.metrics/.tags``), ``RunInfo``, ``RunData``,
``Metric``, ``Param``, ``RunTag``, ``ViewType`` and ``RunStatus``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keel.tracking.v1 import tracking_pb2 as pb

_STAGE_NAMES = {pb.LIFECYCLE_STAGE_ACTIVE: "active", pb.LIFECYCLE_STAGE_DELETED: "deleted"}


class ViewType:
    """Which lifecycle stages a search returns (MLflow's names and values)."""

    ACTIVE_ONLY = pb.VIEW_TYPE_ACTIVE_ONLY
    DELETED_ONLY = pb.VIEW_TYPE_DELETED_ONLY
    ALL = pb.VIEW_TYPE_ALL

    @staticmethod
    def from_string(name: str) -> int:
        key = name.strip().upper()
        if key not in ("ACTIVE_ONLY", "DELETED_ONLY", "ALL"):
            raise ValueError(f"unknown view type {name!r}: use ACTIVE_ONLY, DELETED_ONLY or ALL")
        return int(getattr(ViewType, key))


class RunStatus:
    """Run statuses as strings (``"RUNNING"``, ...) and their proto values."""

    RUNNING, SCHEDULED, FINISHED, FAILED, KILLED = "RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"
    _TO_PB: dict[str, int] = {
        "RUNNING": pb.RUN_STATUS_RUNNING,
        "SCHEDULED": pb.RUN_STATUS_SCHEDULED,
        "FINISHED": pb.RUN_STATUS_FINISHED,
        "FAILED": pb.RUN_STATUS_FAILED,
        "KILLED": pb.RUN_STATUS_KILLED,
    }
    _FROM_PB: dict[int, str] = {v: k for k, v in _TO_PB.items()}

    @classmethod
    def to_proto(cls, status: str) -> int:
        value = cls._TO_PB.get(status.upper())
        if value is None:
            raise ValueError(f"unknown run status {status!r}: use one of {', '.join(cls._TO_PB)}")
        return value

    @classmethod
    def from_proto(cls, value: int) -> str:
        return cls._FROM_PB.get(value, "UNSPECIFIED")

    @classmethod
    def is_terminated(cls, status: str) -> bool:
        return status in (cls.FINISHED, cls.FAILED, cls.KILLED)


@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    timestamp: int = 0
    step: int = 0
    run_id: str | None = None

    def to_proto(self) -> pb.Metric:
        return pb.Metric(key=self.key, value=float(self.value), timestamp=int(self.timestamp), step=int(self.step))

    @classmethod
    def from_proto(cls, m: pb.Metric) -> Metric:
        return cls(key=m.key, value=m.value, timestamp=m.timestamp, step=m.step, run_id=m.run_id or None)


@dataclass(frozen=True)
class Param:
    key: str
    value: str


@dataclass(frozen=True)
class RunTag:
    key: str
    value: str


ExperimentTag = RunTag


@dataclass
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int
    last_update_time: int
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, e: pb.Experiment) -> Experiment:
        return cls(
            experiment_id=e.experiment_id,
            name=e.name,
            artifact_location=e.artifact_location,
            lifecycle_stage=_STAGE_NAMES.get(e.lifecycle_stage, "active"),
            creation_time=e.creation_time,
            last_update_time=e.last_update_time,
            tags={t.key: t.value for t in e.tags},
        )


@dataclass
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str
    parent_run_id: str | None = None

    @property
    def run_uuid(self) -> str:
        """MLflow's legacy name of ``run_id``."""
        return self.run_id

    @classmethod
    def from_proto(cls, i: pb.RunInfo) -> RunInfo:
        return cls(
            run_id=i.run_id,
            experiment_id=i.experiment_id,
            run_name=i.run_name,
            user_id=i.user_id,
            status=RunStatus.from_proto(i.status),
            start_time=i.start_time,
            end_time=i.end_time or None,
            artifact_uri=i.artifact_uri,
            lifecycle_stage=_STAGE_NAMES.get(i.lifecycle_stage, "active"),
            parent_run_id=i.parent_run_id or None,
        )


@dataclass
class RunData:
    """``metrics``: key → latest value; ``params`` and ``tags``: key → value."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # The latest points with their step and timestamp.
    metric_points: list[Metric] = field(default_factory=list, repr=False)

    @classmethod
    def from_proto(cls, d: pb.RunData) -> RunData:
        points = [Metric.from_proto(m) for m in d.metrics]
        return cls(
            metrics={m.key: m.value for m in points},
            params={p.key: p.value for p in d.params},
            tags={t.key: t.value for t in d.tags},
            metric_points=points,
        )


@dataclass
class Run:
    info: RunInfo
    data: RunData

    @classmethod
    def from_proto(cls, r: pb.Run) -> Run:
        return cls(info=RunInfo.from_proto(r.info), data=RunData.from_proto(r.data))

    @property
    def run_id(self) -> str:
        """``info.run_id``; also what MLflow's ``SubmittedRun`` (``projects.run``'s result) names it."""
        return self.info.run_id


__all__ = [
    "Experiment",
    "ExperimentTag",
    "Metric",
    "Param",
    "Run",
    "RunData",
    "RunInfo",
    "RunStatus",
    "RunTag",
    "ViewType",
]
