"""Review and approval of stage transitions: which stages of a model need an approved request
(its policy), the requests themselves, and their decisions. Owns its transactions; knows
nothing of gRPC.

- A model's policy lists the stages (Staging, Production) a version enters only through an
  approved transition request; ``refuse_direct_transition`` is what the registry store's
  TransitionModelVersionStage consults.
- Every write takes the model's row lock first (``RegistryStore._lock_model``), like the
  registry's own writes, so requests, decisions and transitions of one model serialise on every
  backend. An approval makes its stage change with the registry's one transition routine
  (``RegistryStore._apply_transition``) inside the same transaction that closes the request and
  writes the history: it commits whole or not at all.
- A request remembers the version's stage when it was made; approving it after the version
  moved (or was deleted) is ABORTED, so a reviewer never approves something other than what
  was asked.
- With auth on, the requester is the authenticated identity and cannot approve their own
  request (administrators included: the point is a second pair of eyes). With auth off, names
  come from the ``x-keel-user`` metadata and no identity is checked.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from keel.shared import pages
from keel_server.audit import recorder
from keel_server.auth.context import current_caller
from keel_server.common import pagination, querying
from keel_server.common.db import (
    ApprovalRequiredStage,
    ModelHistoryNote,
    ModelVersion,
    RegisteredModel,
    TransitionRequest,
    now_ms,
    write_transaction,
)
from keel_server.common.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    KeelError,
    NotFound,
    PermissionDenied,
    quote,
)
from keel_server.common.prepared import Statement, arg
from keel_server.registry import validation as check
from keel_server.registry.records import (
    ARCHIVABLE_STAGES,
    REQUEST_APPROVED,
    REQUEST_CANCELLED,
    REQUEST_PENDING,
    REQUEST_REJECTED,
    REQUEST_STATUSES,
    STAGES,
    TRANSITION_APPROVED,
    TRANSITION_CANCELLED,
    TRANSITION_REJECTED,
    TRANSITION_REQUESTED,
    ModelRecord,
    Page,
    TransitionRequestRecord,
)

if TYPE_CHECKING:
    from keel_server.registry.store import RegistryStore

# Stages a policy may protect: those a deployment serves from (and archive_existing targets).
PROTECTABLE_STAGES: tuple[str, ...] = ARCHIVABLE_STAGES
MAX_COMMENT = 10_000
REQUESTS_PAGE = pages.TRANSITION_REQUESTS
# Request ids are BIGINT keys written as decimal digits.
_MAX_ID_DIGITS = 18
# How often a decision looks its request's model up again when the model was renamed between
# the lookup and the lock (each attempt is one short transaction).
_LOOKUP_ATTEMPTS = 3

# What each decision writes to the history, and how its messages say it.
_DECISIONS = {
    REQUEST_APPROVED: (TRANSITION_APPROVED, "approved"),
    REQUEST_REJECTED: (TRANSITION_REJECTED, "rejected"),
    REQUEST_CANCELLED: (TRANSITION_CANCELLED, "cancelled"),
}


class HistoryNote(NamedTuple):
    """What a transition request event adds to its history row."""

    transition_request_id: str
    comment: str


# ---------------------------------------------------------------------------------------------
# What the registry store consults
# ---------------------------------------------------------------------------------------------


def approval_required_stages(model_ids: Sequence[int]) -> dict[int, list[str]]:
    """The protected stages of each model that has some, in STAGES order."""
    if not model_ids:
        return {}
    found: dict[int, list[str]] = {}
    rows = ApprovalRequiredStage.select().where(ApprovalRequiredStage.model.in_(list(model_ids)))
    for row in rows:
        found.setdefault(row.model_id, []).append(row.stage)
    return {model_id: sorted(stages, key=STAGES.index) for model_id, stages in found.items()}


_PROTECTED_STAGE = Statement(
    lambda: ApprovalRequiredStage.select(ApprovalRequiredStage.stage)
    .where((ApprovalRequiredStage.model == arg("model")) & (ApprovalRequiredStage.stage == arg("stage")))
    .limit(1)
)


def refuse_direct_transition(model: RegisteredModel, version: int, target: str) -> None:
    """FAILED_PRECONDITION (APPROVAL_REQUIRED) when the model's policy protects ``target``: the
    way in is an approved transition request. Call under the model lock."""
    if _PROTECTED_STAGE.one(model=model.id, stage=target) is None:  # on every transition: prepared
        return
    command = f"keel models request-transition {shlex.quote(model.name)} {version} {target}"
    raise FailedPrecondition(
        f"registered model '{model.name}' requires an approved transition request to enter {target}, so "
        f"version {version} cannot be moved there directly: request it (`{command}`, or "
        "Client.create_transition_request) and have someone else with MANAGE on the model approve it",
        reason="APPROVAL_REQUIRED",
        metadata={"name": model.name, "version": version, "stage": target},
    )


def history_notes(event_ids: Sequence[int]) -> dict[int, HistoryNote]:
    """The request and comment of each transition request event among ``event_ids``."""
    if not event_ids:
        return {}
    rows = ModelHistoryNote.select().where(ModelHistoryNote.event.in_(list(event_ids)))
    return {row.event_id: HistoryNote(str(row.transition_request_id), row.comment) for row in rows}


# ---------------------------------------------------------------------------------------------
# Policies, requests and decisions
# ---------------------------------------------------------------------------------------------


class ApprovalStore:
    def __init__(self, registry: RegistryStore) -> None:
        self.registry = registry

    # ---- policy ------------------------------------------------------------------------------
    def set_registered_model_policy(self, name: str, stages: Iterable[str]) -> ModelRecord:
        """Replaces the stages of ``name`` that need an approved request (empty: none)."""
        check.model_name(name)
        wanted = _protectable(stages)

        def work() -> None:
            with write_transaction():
                model = self.registry._lock_model(name)
                now = approval_required_stages([model.id]).get(model.id, [])
                recorder.note(
                    before=f"approval required for {', '.join(now)}" if now else "no approval required"
                )
                ApprovalRequiredStage.delete().where(ApprovalRequiredStage.model == model.id).execute()
                if wanted:
                    ApprovalRequiredStage.insert_many(
                        [{"model": model.id, "stage": stage} for stage in wanted]
                    ).execute()

        self.registry._retrying(work)
        return self.registry.get_registered_model(name)

    # ---- requests ----------------------------------------------------------------------------
    def create_transition_request(
        self,
        name: str,
        version: int,
        stage: str,
        archive_existing_versions: bool,
        comment: str,
        actor: str = "",
    ) -> TransitionRequestRecord:
        check.model_name(name)
        check.version_number(version)
        target = check.stage(stage)
        if archive_existing_versions:
            check.archive_target(target)
        _comment(comment)
        requester = _identity(actor)

        def work() -> int:
            with write_transaction():
                model = self.registry._lock_model(name)
                row = self.registry._version(model, version)
                if row.current_stage == target:
                    raise FailedPrecondition(
                        f"version {version} of registered model '{name}' is already in {target}: there is "
                        "nothing to request",
                        reason="ALREADY_IN_STAGE",
                        metadata={"name": name, "version": version, "stage": target},
                    )
                pending = (
                    TransitionRequest.select(TransitionRequest.id)
                    .where(
                        (TransitionRequest.model == model.id)
                        & (TransitionRequest.version == version)
                        & (TransitionRequest.to_stage == target)
                        & (TransitionRequest.status == REQUEST_PENDING)
                    )
                    .first()
                )
                if pending is not None:
                    raise AlreadyExists(
                        f"version {version} of registered model '{name}' already has a pending request to "
                        f"{target} (id {pending.id}): have it approved or rejected, or cancel it before asking again",
                        reason="TRANSITION_REQUEST_ALREADY_EXISTS",
                        metadata={"name": name, "version": version, "stage": target, "id": pending.id},
                    )
                recorder.note(before=f"stage={row.current_stage}")
                request_id = int(
                    TransitionRequest.insert(
                        model=model.id,
                        version=version,
                        from_stage=row.current_stage,
                        to_stage=target,
                        archive_existing_versions=archive_existing_versions,
                        requester=requester,
                        comment=comment,
                        status=REQUEST_PENDING,
                        creation_time=now_ms(),
                    ).execute()
                )
                self._record(
                    model,
                    TRANSITION_REQUESTED,
                    requester,
                    version,
                    row.current_stage,
                    target,
                    request_id,
                    comment,
                )
                return request_id

        return self.get_transition_request(self.registry._retrying(work))

    def get_transition_request(self, request_id: int) -> TransitionRequestRecord:
        row = (
            TransitionRequest.select(TransitionRequest, RegisteredModel.name)
            .join(RegisteredModel)
            .where(TransitionRequest.id == request_id)
            .first()
        )
        if row is None:
            raise _not_found(str(request_id))
        return _record_of(row, row.model.name)

    def list_transition_requests(
        self, name: str, version: int, status: str, page_size: int, page_token: str
    ) -> Page[TransitionRequestRecord]:
        size = pagination.page_size(page_size, *REQUESTS_PAGE)
        if version:
            check.version_number(version)
        if status and status not in REQUEST_STATUSES:
            raise InvalidArgument(
                f"status {quote(status)} is not a transition request status: use one of "
                f"{', '.join(REQUEST_STATUSES)}, or none for every status",
                reason="INVALID_STATUS",
                field="status",
            )
        model = self.registry._model(name)
        fp = pagination.fingerprint("transition-requests", model.id, version, status)
        query = TransitionRequest.select().where(TransitionRequest.model == model.id)
        if version:
            query = query.where(TransitionRequest.version == version)
        if status:
            query = query.where(TransitionRequest.status == status)
        rows = list(querying.id_page(query, TransitionRequest.id, page_token, fp, size, newest_first=True))
        rows, token = pagination.trim(rows, size, lambda last: [last.id], fp)
        return Page([_record_of(row, model.name) for row in rows], token)

    # ---- decisions ---------------------------------------------------------------------------
    def approve_transition_request(
        self, request_id: str, comment: str, actor: str = ""
    ) -> TransitionRequestRecord:
        return self._decide(request_id, REQUEST_APPROVED, comment, actor)

    def reject_transition_request(
        self, request_id: str, comment: str, actor: str = ""
    ) -> TransitionRequestRecord:
        return self._decide(request_id, REQUEST_REJECTED, comment, actor)

    def cancel_transition_request(
        self, request_id: str, comment: str, actor: str = ""
    ) -> TransitionRequestRecord:
        return self._decide(request_id, REQUEST_CANCELLED, comment, actor)

    def _decide(self, request_id: str, decision: str, comment: str, actor: str) -> TransitionRequestRecord:
        key = _request_key(request_id)
        _comment(comment)
        decider = _identity(actor)
        event_type, done = _DECISIONS[decision]

        def attempt(model_name: str) -> None:
            """One transaction; _ModelMoved when the request is not under ``model_name`` any more."""
            with write_transaction():
                try:
                    model = self.registry._lock_model(model_name)
                except NotFound:
                    raise _ModelMoved() from None
                request = TransitionRequest.get_or_none(
                    (TransitionRequest.id == key) & (TransitionRequest.model == model.id)
                )
                if request is None:
                    raise _ModelMoved()  # renamed (and the name reused) since the lookup
                what = (
                    f"request {key} {request.status}: version {request.version} {request.from_stage} -> "
                    f"{request.to_stage}{' (archive existing)' if request.archive_existing_versions else ''}, "
                    f"by {request.requester or 'unknown'}"
                )
                recorder.note(before=what, resource_id=f"{model.name}/{request.version}")
                if request.status != REQUEST_PENDING:
                    by = f" by {request.decided_by}" if request.decided_by else ""
                    raise FailedPrecondition(
                        f"transition request {key} is already {request.status}{by}: only a pending request can be "
                        f"{done}; make a new request with create_transition_request",
                        reason="TRANSITION_REQUEST_CLOSED",
                        metadata={"id": key, "status": request.status},
                    )
                row = self._approvable_version(model, request, key) if decision == REQUEST_APPROVED else None
                # The decision first, then the stage change it causes (newest-first history reads
                # requested -> approved -> moved from the bottom).
                self._record(
                    model,
                    event_type,
                    decider,
                    request.version,
                    request.from_stage,
                    request.to_stage,
                    key,
                    comment,
                )
                if row is not None:
                    moved = self.registry._apply_transition(
                        model, row, request.to_stage, request.archive_existing_versions, decider
                    )
                    recorder.note(before=f"{what}; {moved}")
                TransitionRequest.update(
                    status=decision, decided_by=decider, decision_comment=comment, decision_time=now_ms()
                ).where(TransitionRequest.id == key).execute()

        def work() -> None:
            for _ in range(_LOOKUP_ATTEMPTS):
                try:
                    attempt(self._model_name_of(key))
                    return
                except _ModelMoved:
                    continue
            raise Aborted(
                f"the registered model of transition request {key} was renamed or deleted while the request was "
                f"being {done}: retry",
                reason="CONCURRENT_MODIFICATION",
                metadata={"id": key},
            )

        self.registry._retrying(work)
        return self.get_transition_request(key)

    def _approvable_version(
        self, model: RegisteredModel, request: TransitionRequest, key: int
    ) -> ModelVersion:
        """The version an approval moves, checked to be where it was when the request was made
        and refused to its own requester (with auth on)."""
        caller = current_caller()
        if caller is not None and caller.name == request.requester:
            raise PermissionDenied(
                f"{caller.name} made transition request {key} and cannot approve it: approval needs someone "
                "else with MANAGE on the model (cancel it with cancel_transition_request if it is no longer wanted)",
                reason="SELF_APPROVAL",
                metadata={"id": key},
            )
        row = ModelVersion.get_or_none(
            (ModelVersion.model == model.id) & (ModelVersion.version == request.version)
        )
        if row is None:
            raise Aborted(
                f"version {request.version} of registered model '{model.name}' was deleted after transition "
                f"request {key} was made: reject or cancel the request",
                reason="MODEL_VERSION_DELETED",
                metadata={"id": key, "name": model.name, "version": request.version},
            )
        if row.current_stage != request.from_stage:
            raise Aborted(
                f"version {request.version} of registered model '{model.name}' moved from {request.from_stage} to "
                f"{row.current_stage} after transition request {key} was made, so approving it would not do what "
                "was reviewed: reject or cancel it, and request the transition again if it is still wanted",
                reason="MODEL_VERSION_MOVED",
                metadata={
                    "id": key,
                    "name": model.name,
                    "version": request.version,
                    "requested_from_stage": request.from_stage,
                    "current_stage": row.current_stage,
                },
            )
        return row

    def _record(
        self,
        model: RegisteredModel,
        event_type: str,
        actor: str,
        version: int,
        from_stage: str,
        to_stage: str,
        request_id: int,
        comment: str,
    ) -> None:
        """One history row of a transition request event, with its note."""
        event_id = self.registry._record_event(
            model, event_type, actor, version=version, from_stage=from_stage, to_stage=to_stage
        )
        ModelHistoryNote.insert(event=event_id, transition_request_id=request_id, comment=comment).execute()

    @staticmethod
    def _model_name_of(key: int) -> str:
        found = (
            TransitionRequest.select(RegisteredModel.name)
            .join(RegisteredModel)
            .where(TransitionRequest.id == key)
            .tuples()
            .first()
        )
        if found is None:
            raise _not_found(str(key))
        return str(found[0])


class _ModelMoved(Exception):
    """Rolls a decision's transaction back to look its model up again."""


# ---------------------------------------------------------------------------------------------
# Inputs and records
# ---------------------------------------------------------------------------------------------


def _identity(actor: str) -> str:
    """Who makes a request or decision: the authenticated caller with auth on (never a name the
    client chose), else the ``x-keel-user`` name the servicer passes."""
    caller = current_caller()
    name = caller.name if caller is not None else actor
    return check.bounded(name, check.MAX_USER, "user", "user_id")


def _comment(text: str) -> str:
    return check.bounded(text, MAX_COMMENT, "comment", "comment", "INVALID_COMMENT")


def _protectable(stages: Iterable[str]) -> list[str]:
    """Canonical, distinct, in STAGES order; only Staging and Production may be protected."""
    wanted: set[str] = set()
    for given in stages:
        stage = check.stage(given, field="policy.approval_required_stages")
        if stage not in PROTECTABLE_STAGES:
            raise InvalidArgument(
                f"stage {stage} cannot require approval: only {' and '.join(PROTECTABLE_STAGES)} can "
                "(versions enter None at registration and Archived when replaced)",
                reason="INVALID_POLICY_STAGE",
                field="policy.approval_required_stages",
                metadata={"valid_stages": ",".join(PROTECTABLE_STAGES)},
            )
        wanted.add(stage)
    return sorted(wanted, key=STAGES.index)


def _request_key(request_id: str) -> int:
    if not request_id:
        raise InvalidArgument(
            "id is empty: pass the id of a transition request (ListTransitionRequests, or "
            "`keel models requests NAME`, lists them)",
            reason="INVALID_TRANSITION_REQUEST_ID",
            field="id",
        )
    if not (request_id.isascii() and request_id.isdigit()) or len(request_id) > _MAX_ID_DIGITS:
        raise InvalidArgument(
            f"id {quote(request_id)} is not a transition request id: ids are decimal digits such as '12'",
            reason="INVALID_TRANSITION_REQUEST_ID",
            field="id",
        )
    return int(request_id)


def _not_found(request_id: str) -> KeelError:
    return NotFound(
        f"transition request {quote(request_id)} not found",
        reason="TRANSITION_REQUEST_NOT_FOUND",
        metadata={"id": request_id},
    )


def _record_of(row: TransitionRequest, name: str) -> TransitionRequestRecord:
    return TransitionRequestRecord(
        id=str(row.id),
        name=name,
        version=row.version,
        from_stage=row.from_stage,
        stage=row.to_stage,
        archive_existing_versions=bool(row.archive_existing_versions),
        requester=row.requester,
        comment=row.comment,
        status=row.status,
        creation_time=row.creation_time,
        decided_by=row.decided_by,
        decision_comment=row.decision_comment,
        decision_time=row.decision_time,
    )
