"""Registry methods of ``keel.Client``, named and shaped like ``MlflowClient``'s."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from keel._transport import Transport, new_request_id
from keel.exceptions import InvalidArgument
from keel.paging import PagedList, Pager, collect_pages
from keel.registry.entities import (
    REQUEST_STATUSES,
    ModelHistoryEvent,
    ModelVersion,
    RegisteredModel,
    TransitionRequest,
)
from keel.registry.v1 import registry_pb2 as pb
from keel.registry.v1 import registry_pb2_grpc
from keel.shared import pages

T = TypeVar("T")

# Registration copies the model files server-side before it returns: allow for big models.
REGISTRATION_TIMEOUT_S = 600.0


def current_user() -> str:
    """Who the history records for changes made from this process: $KEEL_USER, else the OS user."""
    user = os.environ.get("KEEL_USER", "")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database (some containers): stay anonymous
        return ""


def _version(version: int | str) -> int:
    """MLflow passes versions as int or digit strings; both are accepted."""
    text = str(version).strip()
    ascii_digits = text.isascii() and text.isdigit()  # '²' is a digit to isdigit(), not to int()
    if isinstance(version, bool) or not ascii_digits or not 1 <= int(text) < 2**63:
        raise InvalidArgument(
            f"version must be a version number from 1 to 2^63-1 such as 3 or '3', got {version!r}",
            reason="INVALID_VERSION",
            field="version",
        )
    return int(text)


def _tags(tags: Mapping[str, Any] | None, message: Callable[..., T]) -> list[T]:
    return [message(key=str(k), value=str(v)) for k, v in (tags or {}).items()]


class RegistryClientMixin:
    _service_transport: Callable[[str], Transport]

    @property
    def _registry_transport(self) -> Transport:
        return self._service_transport("registry")

    # ---- plumbing ----------------------------------------------------------------------------
    @property
    def _registry(self) -> registry_pb2_grpc.ModelRegistryServiceStub:
        return self._registry_transport.stub(registry_pb2_grpc.ModelRegistryServiceStub)

    def _registry_call(
        self, method: Callable[..., T], request: Any, *, idempotent: bool, timeout: float | None = None
    ) -> T:
        user = current_user()
        metadata = (("x-keel-user", user),) if user else None
        if timeout is None:
            return self._registry_transport.call(method, request, idempotent=idempotent, metadata=metadata)
        return self._registry_transport.call(
            method, request, idempotent=idempotent, metadata=metadata, timeout=timeout
        )

    # ---- registered models ------------------------------------------------------------------
    def create_registered_model(
        self, name: str, tags: Mapping[str, Any] | None = None, description: str | None = None
    ) -> RegisteredModel:
        request = pb.CreateRegisteredModelRequest(
            name=name, tags=_tags(tags, pb.RegisteredModelTag), description=description or ""
        )
        return RegisteredModel.from_proto(
            self._registry_call(self._registry.CreateRegisteredModel, request, idempotent=False)
        )

    def get_registered_model(self, name: str) -> RegisteredModel:
        request = pb.GetRegisteredModelRequest(name=name)
        return RegisteredModel.from_proto(
            self._registry_call(self._registry.GetRegisteredModel, request, idempotent=True)
        )

    def update_registered_model(self, name: str, description: str | None = None) -> RegisteredModel:
        request = pb.UpdateRegisteredModelRequest(name=name, description=description or "")
        return RegisteredModel.from_proto(
            self._registry_call(self._registry.UpdateRegisteredModel, request, idempotent=True)
        )

    def rename_registered_model(self, name: str, new_name: str) -> RegisteredModel:
        request = pb.RenameRegisteredModelRequest(name=name, new_name=new_name)
        return RegisteredModel.from_proto(
            self._registry_call(self._registry.RenameRegisteredModel, request, idempotent=False)
        )

    def delete_registered_model(self, name: str) -> None:
        self._registry_call(
            self._registry.DeleteRegisteredModel, pb.DeleteRegisteredModelRequest(name=name), idempotent=False
        )

    def search_registered_models(
        self,
        filter_string: str | None = None,
        max_results: int = 100,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[RegisteredModel]:
        """Models matching ``filter_string`` (``name LIKE 'fraud%' AND tags.team = 'risk'``)."""

        def fetch(token: str, want: int) -> tuple[list[RegisteredModel], str]:
            request = pb.SearchRegisteredModelsRequest(
                filter=filter_string or "",
                order_by=list(order_by or ()),
                page_size=min(want, pages.REGISTERED_MODELS.maximum),
                page_token=token,
            )
            response = self._registry_call(self._registry.SearchRegisteredModels, request, idempotent=True)
            return [
                RegisteredModel.from_proto(m) for m in response.registered_models
            ], response.next_page_token

        return collect_pages(fetch, max_results, page_token)

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        request = pb.SetRegisteredModelTagRequest(name=name, key=key, value=str(value))
        self._registry_call(self._registry.SetRegisteredModelTag, request, idempotent=True)

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        request = pb.DeleteRegisteredModelTagRequest(name=name, key=key)
        self._registry_call(self._registry.DeleteRegisteredModelTag, request, idempotent=False)

    # ---- model versions ---------------------------------------------------------------------
    def create_model_version(
        self,
        name: str,
        source: str,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
        *,
        run_link: str | None = None,
        request_id: str | None = None,
        await_registration_for: int | None = None,
    ) -> ModelVersion:
        """Registers a new version from ``source`` (``runs:/<run_id>/<path>``, ``models:/...`` or an
        artifact URI). The server snapshots the files before it answers, so the version is READY
        (or FAILED_REGISTRATION) on return; ``await_registration_for`` is accepted for MLflow
        compatibility. Every call carries a request id (a fresh one unless given), which makes it
        safe to retry: a retried call returns the version the first attempt created."""
        del await_registration_for  # registration is synchronous
        request = pb.CreateModelVersionRequest(
            name=name,
            source=source,
            run_id=run_id or "",
            tags=_tags(tags, pb.ModelVersionTag),
            description=description or "",
            run_link=run_link or "",
            request_id=request_id or new_request_id(),
            user_id=current_user(),
        )
        response = self._registry_call(
            self._registry.CreateModelVersion, request, idempotent=True, timeout=REGISTRATION_TIMEOUT_S
        )
        return ModelVersion.from_proto(response)

    def get_model_version(self, name: str, version: int | str) -> ModelVersion:
        request = pb.GetModelVersionRequest(name=name, version=_version(version))
        return ModelVersion.from_proto(
            self._registry_call(self._registry.GetModelVersion, request, idempotent=True)
        )

    def update_model_version(
        self, name: str, version: int | str, description: str | None = None
    ) -> ModelVersion:
        request = pb.UpdateModelVersionRequest(
            name=name, version=_version(version), description=description or ""
        )
        return ModelVersion.from_proto(
            self._registry_call(self._registry.UpdateModelVersion, request, idempotent=True)
        )

    def delete_model_version(self, name: str, version: int | str) -> None:
        request = pb.DeleteModelVersionRequest(name=name, version=_version(version))
        self._registry_call(self._registry.DeleteModelVersion, request, idempotent=False)

    def set_model_version_tag(self, name: str, version: int | str, key: str, value: Any) -> None:
        request = pb.SetModelVersionTagRequest(
            name=name, version=_version(version), key=key, value=str(value)
        )
        self._registry_call(self._registry.SetModelVersionTag, request, idempotent=True)

    def delete_model_version_tag(self, name: str, version: int | str, key: str) -> None:
        request = pb.DeleteModelVersionTagRequest(name=name, version=_version(version), key=key)
        self._registry_call(self._registry.DeleteModelVersionTag, request, idempotent=False)

    def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int = 10_000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[ModelVersion]:
        """Versions matching ``filter_string`` (``name = 'x'``, ``run_id = '...'``,
        ``version_number > 3``, ``tags.k = 'v'``), newest version first within a model."""

        def fetch(token: str, want: int) -> tuple[list[ModelVersion], str]:
            request = pb.SearchModelVersionsRequest(
                filter=filter_string or "",
                order_by=list(order_by or ()),
                page_size=min(want, pages.MODEL_VERSIONS.maximum),
                page_token=token,
            )
            response = self._registry_call(self._registry.SearchModelVersions, request, idempotent=True)
            return [ModelVersion.from_proto(v) for v in response.model_versions], response.next_page_token

        return collect_pages(fetch, max_results, page_token)

    def get_model_version_download_uri(self, name: str, version: int | str) -> str:
        request = pb.GetModelVersionDownloadUriRequest(name=name, version=_version(version))
        return self._registry_call(
            self._registry.GetModelVersionDownloadUri, request, idempotent=True
        ).artifact_uri

    # ---- stages ------------------------------------------------------------------------------
    def transition_model_version_stage(
        self, name: str, version: int | str, stage: str, archive_existing_versions: bool = False
    ) -> ModelVersion:
        request = pb.TransitionModelVersionStageRequest(
            name=name,
            version=_version(version),
            stage=stage,
            archive_existing_versions=archive_existing_versions,
            user_id=current_user(),
        )
        return ModelVersion.from_proto(
            self._registry_call(self._registry.TransitionModelVersionStage, request, idempotent=False)
        )

    def get_latest_versions(self, name: str, stages: Sequence[str] | None = None) -> list[ModelVersion]:
        """The latest READY version in each of ``stages`` (all stages when None) that has one."""
        request = pb.GetLatestVersionsRequest(name=name, stages=list(stages or ()))
        response = self._registry_call(self._registry.GetLatestVersions, request, idempotent=True)
        return [ModelVersion.from_proto(v) for v in response.model_versions]

    # ---- aliases -----------------------------------------------------------------------------
    def set_registered_model_alias(
        self, name: str, alias: str, version: int | str, expected_version: int | str | None = None
    ) -> ModelVersion:
        """Points ``alias`` at ``version``. With ``expected_version`` (0 or '' = the alias must not
        exist yet) the move happens only if the alias still points there; otherwise
        ``keel.exceptions.Aborted``, so two deployers cannot silently overwrite each other."""
        request = pb.SetRegisteredModelAliasRequest(
            name=name, alias=alias, version=_version(version), user_id=current_user()
        )
        if expected_version is not None:
            request.expected_version = 0 if expected_version in (0, "", "0") else _version(expected_version)
        # Re-sending a plain set is harmless; a compare-and-set must not be replayed blindly.
        idempotent = expected_version is None
        return ModelVersion.from_proto(
            self._registry_call(self._registry.SetRegisteredModelAlias, request, idempotent=idempotent)
        )

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        request = pb.DeleteRegisteredModelAliasRequest(name=name, alias=alias, user_id=current_user())
        self._registry_call(self._registry.DeleteRegisteredModelAlias, request, idempotent=False)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        request = pb.GetModelVersionByAliasRequest(name=name, alias=alias)
        return ModelVersion.from_proto(
            self._registry_call(self._registry.GetModelVersionByAlias, request, idempotent=True)
        )

    # ---- history and URIs --------------------------------------------------------------------
    def list_model_history(self, name: str, max_results: int | None = None) -> list[ModelHistoryEvent]:
        """Every recorded stage change and alias move of a model, newest first."""

        def fetch(token: str) -> tuple[list[ModelHistoryEvent], str]:
            request = pb.ListModelHistoryRequest(
                name=name, page_size=pages.MODEL_HISTORY.maximum, page_token=token
            )
            response = self._registry_call(self._registry.ListModelHistory, request, idempotent=True)
            return [ModelHistoryEvent.from_proto(e) for e in response.events], response.next_page_token

        return Pager(fetch, limit=max_results).to_list()

    def resolve_model_uri(self, uri: str) -> str:
        """The artifact URI of the version a ``models:/`` URI designates now."""
        request = pb.ResolveModelUriRequest(model_uri=uri)
        return self._registry_call(self._registry.ResolveModelUri, request, idempotent=True).artifact_uri

    def resolve_model_version(self, uri: str) -> ModelVersion:
        """The version a ``models:/`` URI designates now."""
        request = pb.ResolveModelUriRequest(model_uri=uri)
        return ModelVersion.from_proto(
            self._registry_call(self._registry.ResolveModelUri, request, idempotent=True).model_version
        )

    # Returns a keel.evaluation.comparison.ModelVersionComparison; not named in the signature,
    # since a type-time import of keel.evaluation from the client is an import circle for mypy.
    def compare_model_versions(self, name: str, versions: Sequence[int | str]) -> Any:
        """``versions`` (2 to 20) of model ``name`` side by side: their source runs' params and
        metrics and their evaluation results (``keel.evaluate``'s metrics and SHAP importances),
        each row marking whether the versions differ; see ``keel.evaluation.comparison``."""
        from keel.evaluation.comparison import compare_model_versions

        return compare_model_versions(self, name, versions)

    # ---- review and approval -----------------------------------------------------------------
    def set_registered_model_policy(
        self, name: str, require_approval: Sequence[str] | str | None = None
    ) -> RegisteredModel:
        """Sets the stages of ``name`` that a version enters only through an approved transition
        request: ``["Production"]``, ``["Staging", "Production"]`` (or ``"Production"``); ``None`` or
        ``[]`` lifts the requirement. With a stage protected, ``transition_model_version_stage`` into
        it raises ``keel.exceptions.FailedPrecondition`` (reason ``APPROVAL_REQUIRED``). Returns the
        model (``approval_required_stages`` shows the policy)."""
        stages = [require_approval] if isinstance(require_approval, str) else list(require_approval or ())
        request = pb.SetRegisteredModelPolicyRequest(
            name=name, policy=pb.RegisteredModelPolicy(approval_required_stages=stages)
        )
        return RegisteredModel.from_proto(
            self._registry_call(self._registry.SetRegisteredModelPolicy, request, idempotent=True)
        )

    def create_transition_request(
        self,
        name: str,
        version: int | str,
        stage: str,
        archive_existing_versions: bool = False,
        comment: str | None = None,
    ) -> TransitionRequest:
        """Asks for ``version`` to be moved to ``stage``; someone else approves (or rejects) it.
        The request is PENDING; its ``id`` is what approve/reject/cancel take."""
        request = pb.CreateTransitionRequestRequest(
            name=name,
            version=_version(version),
            stage=stage,
            archive_existing_versions=archive_existing_versions,
            comment=comment or "",
        )
        return TransitionRequest.from_proto(
            self._registry_call(self._registry.CreateTransitionRequest, request, idempotent=False)
        )

    def list_transition_requests(
        self,
        name: str,
        status: str | None = None,
        version: int | str | None = None,
        max_results: int | None = None,
    ) -> list[TransitionRequest]:
        """The transition requests of ``name``, newest first; only those with ``status``
        (``PENDING``, ``APPROVED``, ``REJECTED``, ``CANCELLED``, any case) or of ``version`` when given."""
        status_number = _request_status(status)
        version_number = _version(version) if version not in (None, "") else 0

        def fetch(token: str) -> tuple[list[TransitionRequest], str]:
            request = pb.ListTransitionRequestsRequest(
                name=name,
                version=version_number,
                status=status_number,
                page_size=pages.TRANSITION_REQUESTS.maximum,
                page_token=token,
            )
            response = self._registry_call(self._registry.ListTransitionRequests, request, idempotent=True)
            items = [TransitionRequest.from_proto(r) for r in response.transition_requests]
            return items, response.next_page_token

        return Pager(fetch, limit=max_results).to_list()

    def approve_transition_request(
        self, request_id: int | str, comment: str | None = None
    ) -> TransitionRequest:
        """Approves a pending request: the version moves (archiving the others when the request
        asked) in the same transaction. ``keel.exceptions.PermissionDenied`` for its own requester
        (with auth on), ``Aborted`` when the version moved or was deleted since the request,
        ``FailedPrecondition`` when the request is no longer pending."""
        request = pb.ApproveTransitionRequestRequest(id=str(request_id), comment=comment or "")
        return TransitionRequest.from_proto(
            self._registry_call(self._registry.ApproveTransitionRequest, request, idempotent=False)
        )

    def reject_transition_request(
        self, request_id: int | str, comment: str | None = None
    ) -> TransitionRequest:
        """Rejects a pending request (nothing moves); the comment tells the requester why."""
        request = pb.RejectTransitionRequestRequest(id=str(request_id), comment=comment or "")
        return TransitionRequest.from_proto(
            self._registry_call(self._registry.RejectTransitionRequest, request, idempotent=False)
        )

    def cancel_transition_request(
        self, request_id: int | str, comment: str | None = None
    ) -> TransitionRequest:
        """Withdraws a pending request (its requester, or anyone with MANAGE on the model)."""
        request = pb.CancelTransitionRequestRequest(id=str(request_id), comment=comment or "")
        return TransitionRequest.from_proto(
            self._registry_call(self._registry.CancelTransitionRequest, request, idempotent=False)
        )


def _request_status(status: str | None) -> pb.TransitionRequestStatus.ValueType:
    """The proto number of a transition request status name (any case); UNSPECIFIED for None/''."""
    if not status:
        return pb.TRANSITION_REQUEST_STATUS_UNSPECIFIED
    for number, name in REQUEST_STATUSES.items():
        if status.strip().upper() == name:
            return number
    raise InvalidArgument(
        f"status {status!r} is not a transition request status: use one of {', '.join(REQUEST_STATUSES.values())}",
        reason="INVALID_STATUS",
        field="status",
    )
