"""gRPC face of the model registry: request shape → store call → message. No domain logic and
no Peewee here (``store.py`` owns both); errors are domain errors mapped by the interceptor."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from keel.registry.v1 import registry_pb2 as pb
from keel.registry.v1 import registry_pb2_grpc
from keel_server.common.app import App
from keel_server.registry.approvals import ApprovalStore
from keel_server.registry.records import (
    ALIAS_DELETED,
    ALIAS_SET,
    FAILED_REGISTRATION,
    PENDING_REGISTRATION,
    READY,
    REQUEST_APPROVED,
    REQUEST_CANCELLED,
    REQUEST_PENDING,
    REQUEST_REJECTED,
    STAGE_TRANSITION,
    TRANSITION_APPROVED,
    TRANSITION_CANCELLED,
    TRANSITION_REJECTED,
    TRANSITION_REQUESTED,
    HistoryRecord,
    ModelRecord,
    TransitionRequestRecord,
    VersionRecord,
)
from keel_server.registry.store import RegistryStore
from keel_server.registry.sweeper import RegistrationSweeper

# Request metadata naming the person behind a change (the SDK sends the OS user by default).
USER_METADATA_KEY = "x-keel-user"

_STATUS = {
    PENDING_REGISTRATION: pb.MODEL_VERSION_STATUS_PENDING_REGISTRATION,
    FAILED_REGISTRATION: pb.MODEL_VERSION_STATUS_FAILED_REGISTRATION,
    READY: pb.MODEL_VERSION_STATUS_READY,
}
_EVENT = {
    STAGE_TRANSITION: pb.MODEL_HISTORY_EVENT_TYPE_STAGE_TRANSITION,
    ALIAS_SET: pb.MODEL_HISTORY_EVENT_TYPE_ALIAS_SET,
    ALIAS_DELETED: pb.MODEL_HISTORY_EVENT_TYPE_ALIAS_DELETED,
    TRANSITION_REQUESTED: pb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_REQUESTED,
    TRANSITION_APPROVED: pb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_APPROVED,
    TRANSITION_REJECTED: pb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_REJECTED,
    TRANSITION_CANCELLED: pb.MODEL_HISTORY_EVENT_TYPE_TRANSITION_CANCELLED,
}
_REQUEST_STATUS = {
    REQUEST_PENDING: pb.TRANSITION_REQUEST_STATUS_PENDING,
    REQUEST_APPROVED: pb.TRANSITION_REQUEST_STATUS_APPROVED,
    REQUEST_REJECTED: pb.TRANSITION_REQUEST_STATUS_REJECTED,
    REQUEST_CANCELLED: pb.TRANSITION_REQUEST_STATUS_CANCELLED,
}
_REQUEST_STATUS_NAMES = {number: name for name, number in _REQUEST_STATUS.items()}
_EMPTY = empty_pb2.Empty()


def version_message(v: VersionRecord) -> pb.ModelVersion:
    return pb.ModelVersion(
        name=v.name,
        version=v.version,
        creation_timestamp=v.creation_time,
        last_updated_timestamp=v.last_updated_time,
        user_id=v.user_id,
        current_stage=v.current_stage,
        description=v.description,
        source=v.source,
        run_id=v.run_id,
        status=_STATUS.get(v.status, pb.MODEL_VERSION_STATUS_UNSPECIFIED),
        status_message=v.status_message,
        tags=[pb.ModelVersionTag(key=k, value=val) for k, val in v.tags.items()],
        run_link=v.run_link,
        aliases=v.aliases,
        storage_location=v.storage_location,
    )


def model_message(m: ModelRecord) -> pb.RegisteredModel:
    return pb.RegisteredModel(
        name=m.name,
        creation_timestamp=m.creation_time,
        last_updated_timestamp=m.last_updated_time,
        description=m.description,
        latest_versions=[version_message(v) for v in m.latest_versions],
        tags=[pb.RegisteredModelTag(key=k, value=val) for k, val in m.tags.items()],
        aliases=[pb.RegisteredModelAlias(alias=a, version=n) for a, n in m.aliases.items()],
        policy=pb.RegisteredModelPolicy(approval_required_stages=m.approval_required_stages),
    )


def event_message(e: HistoryRecord) -> pb.ModelHistoryEvent:
    return pb.ModelHistoryEvent(
        event_type=_EVENT.get(e.event_type, pb.MODEL_HISTORY_EVENT_TYPE_UNSPECIFIED),
        name=e.name,
        version=e.version,
        from_stage=e.from_stage,
        to_stage=e.to_stage,
        alias=e.alias,
        from_version=e.from_version,
        actor=e.actor,
        timestamp=e.timestamp,
        comment=e.comment,
        transition_request_id=e.transition_request_id,
    )


def request_message(r: TransitionRequestRecord) -> pb.TransitionRequest:
    return pb.TransitionRequest(
        id=r.id,
        name=r.name,
        version=r.version,
        stage=r.stage,
        archive_existing_versions=r.archive_existing_versions,
        requester=r.requester,
        comment=r.comment,
        status=_REQUEST_STATUS.get(r.status, pb.TRANSITION_REQUEST_STATUS_UNSPECIFIED),
        creation_timestamp=r.creation_time,
        decision_timestamp=r.decision_time,
        decided_by=r.decided_by,
        decision_comment=r.decision_comment,
        from_stage=r.from_stage,
    )


def actor(context: grpc.ServicerContext, user_id: str = "") -> str:
    """Who makes a change: the ``x-keel-user`` metadata, else the request's user_id field."""
    for key, value in context.invocation_metadata() or ():
        if key == USER_METADATA_KEY and value:
            return str(value)
    return user_id


class ModelRegistryServicer(registry_pb2_grpc.ModelRegistryServiceServicer):
    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.approvals = ApprovalStore(store)

    # ---- registered models
    def CreateRegisteredModel(
        self, request: pb.CreateRegisteredModelRequest, context: grpc.ServicerContext
    ) -> pb.RegisteredModel:
        tags = [(t.key, t.value) for t in request.tags]
        return model_message(self.store.create_registered_model(request.name, tags, request.description))

    def GetRegisteredModel(
        self, request: pb.GetRegisteredModelRequest, context: grpc.ServicerContext
    ) -> pb.RegisteredModel:
        return model_message(self.store.get_registered_model(request.name))

    def UpdateRegisteredModel(
        self, request: pb.UpdateRegisteredModelRequest, context: grpc.ServicerContext
    ) -> pb.RegisteredModel:
        return model_message(self.store.update_registered_model(request.name, request.description))

    def RenameRegisteredModel(
        self, request: pb.RenameRegisteredModelRequest, context: grpc.ServicerContext
    ) -> pb.RegisteredModel:
        return model_message(self.store.rename_registered_model(request.name, request.new_name))

    def DeleteRegisteredModel(
        self, request: pb.DeleteRegisteredModelRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.store.delete_registered_model(request.name)
        return _EMPTY

    def SearchRegisteredModels(
        self, request: pb.SearchRegisteredModelsRequest, context: grpc.ServicerContext
    ) -> pb.SearchRegisteredModelsResponse:
        page = self.store.search_registered_models(
            request.filter, list(request.order_by), request.page_size, request.page_token
        )
        return pb.SearchRegisteredModelsResponse(
            registered_models=[model_message(m) for m in page.items], next_page_token=page.next_page_token
        )

    def SetRegisteredModelTag(
        self, request: pb.SetRegisteredModelTagRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.store.set_registered_model_tag(request.name, request.key, request.value)
        return _EMPTY

    def DeleteRegisteredModelTag(
        self, request: pb.DeleteRegisteredModelTagRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.store.delete_registered_model_tag(request.name, request.key)
        return _EMPTY

    # ---- versions
    def CreateModelVersion(
        self, request: pb.CreateModelVersionRequest, context: grpc.ServicerContext
    ) -> pb.ModelVersion:
        record = self.store.create_model_version(
            name=request.name,
            source=request.source,
            run_id=request.run_id,
            tags=[(t.key, t.value) for t in request.tags],
            description=request.description,
            run_link=request.run_link,
            request_id=request.request_id,
            user_id=actor(context, request.user_id),
        )
        return version_message(record)

    def GetModelVersion(
        self, request: pb.GetModelVersionRequest, context: grpc.ServicerContext
    ) -> pb.ModelVersion:
        return version_message(self.store.get_model_version(request.name, request.version))

    def UpdateModelVersion(
        self, request: pb.UpdateModelVersionRequest, context: grpc.ServicerContext
    ) -> pb.ModelVersion:
        return version_message(
            self.store.update_model_version(request.name, request.version, request.description)
        )

    def DeleteModelVersion(
        self, request: pb.DeleteModelVersionRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.store.delete_model_version(request.name, request.version, actor=actor(context))
        return _EMPTY

    def SetModelVersionTag(
        self, request: pb.SetModelVersionTagRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.store.set_model_version_tag(request.name, request.version, request.key, request.value)
        return _EMPTY

    def DeleteModelVersionTag(
        self, request: pb.DeleteModelVersionTagRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.store.delete_model_version_tag(request.name, request.version, request.key)
        return _EMPTY

    def SearchModelVersions(
        self, request: pb.SearchModelVersionsRequest, context: grpc.ServicerContext
    ) -> pb.SearchModelVersionsResponse:
        page = self.store.search_model_versions(
            request.filter, list(request.order_by), request.page_size, request.page_token
        )
        return pb.SearchModelVersionsResponse(
            model_versions=[version_message(v) for v in page.items], next_page_token=page.next_page_token
        )

    def GetModelVersionDownloadUri(
        self, request: pb.GetModelVersionDownloadUriRequest, context: grpc.ServicerContext
    ) -> pb.GetModelVersionDownloadUriResponse:
        uri = self.store.get_model_version_download_uri(request.name, request.version)
        return pb.GetModelVersionDownloadUriResponse(artifact_uri=uri)

    # ---- stages
    def TransitionModelVersionStage(
        self, request: pb.TransitionModelVersionStageRequest, context: grpc.ServicerContext
    ) -> pb.ModelVersion:
        record = self.store.transition_model_version_stage(
            request.name,
            request.version,
            request.stage,
            request.archive_existing_versions,
            actor=actor(context, request.user_id),
        )
        return version_message(record)

    def GetLatestVersions(
        self, request: pb.GetLatestVersionsRequest, context: grpc.ServicerContext
    ) -> pb.GetLatestVersionsResponse:
        records = self.store.get_latest_versions(request.name, list(request.stages))
        return pb.GetLatestVersionsResponse(model_versions=[version_message(v) for v in records])

    # ---- aliases
    def SetRegisteredModelAlias(
        self, request: pb.SetRegisteredModelAliasRequest, context: grpc.ServicerContext
    ) -> pb.ModelVersion:
        expected = request.expected_version if request.HasField("expected_version") else None
        record = self.store.set_registered_model_alias(
            request.name, request.alias, request.version, expected, actor=actor(context, request.user_id)
        )
        return version_message(record)

    def DeleteRegisteredModelAlias(
        self, request: pb.DeleteRegisteredModelAliasRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.store.delete_registered_model_alias(
            request.name, request.alias, actor=actor(context, request.user_id)
        )
        return _EMPTY

    def GetModelVersionByAlias(
        self, request: pb.GetModelVersionByAliasRequest, context: grpc.ServicerContext
    ) -> pb.ModelVersion:
        return version_message(self.store.get_model_version_by_alias(request.name, request.alias))

    # ---- history and URIs
    def ListModelHistory(
        self, request: pb.ListModelHistoryRequest, context: grpc.ServicerContext
    ) -> pb.ListModelHistoryResponse:
        page = self.store.list_model_history(request.name, request.page_size, request.page_token)
        return pb.ListModelHistoryResponse(
            events=[event_message(e) for e in page.items], next_page_token=page.next_page_token
        )

    def ResolveModelUri(
        self, request: pb.ResolveModelUriRequest, context: grpc.ServicerContext
    ) -> pb.ResolveModelUriResponse:
        record, uri = self.store.resolve_model_uri(request.model_uri)
        return pb.ResolveModelUriResponse(model_version=version_message(record), artifact_uri=uri)

    # ---- review and approval
    def SetRegisteredModelPolicy(
        self, request: pb.SetRegisteredModelPolicyRequest, context: grpc.ServicerContext
    ) -> pb.RegisteredModel:
        stages = list(request.policy.approval_required_stages)
        return model_message(self.approvals.set_registered_model_policy(request.name, stages))

    def CreateTransitionRequest(
        self, request: pb.CreateTransitionRequestRequest, context: grpc.ServicerContext
    ) -> pb.TransitionRequest:
        record = self.approvals.create_transition_request(
            request.name,
            request.version,
            request.stage,
            request.archive_existing_versions,
            request.comment,
            actor=actor(context),
        )
        return request_message(record)

    def ListTransitionRequests(
        self, request: pb.ListTransitionRequestsRequest, context: grpc.ServicerContext
    ) -> pb.ListTransitionRequestsResponse:
        # UNSPECIFIED: every status; an unknown enum number goes on as digits for the store to refuse.
        status = _REQUEST_STATUS_NAMES.get(request.status, str(request.status)) if request.status else ""
        page = self.approvals.list_transition_requests(
            request.name, request.version, status, request.page_size, request.page_token
        )
        return pb.ListTransitionRequestsResponse(
            transition_requests=[request_message(r) for r in page.items], next_page_token=page.next_page_token
        )

    def ApproveTransitionRequest(
        self, request: pb.ApproveTransitionRequestRequest, context: grpc.ServicerContext
    ) -> pb.TransitionRequest:
        record = self.approvals.approve_transition_request(request.id, request.comment, actor=actor(context))
        return request_message(record)

    def RejectTransitionRequest(
        self, request: pb.RejectTransitionRequestRequest, context: grpc.ServicerContext
    ) -> pb.TransitionRequest:
        record = self.approvals.reject_transition_request(request.id, request.comment, actor=actor(context))
        return request_message(record)

    def CancelTransitionRequest(
        self, request: pb.CancelTransitionRequestRequest, context: grpc.ServicerContext
    ) -> pb.TransitionRequest:
        record = self.approvals.cancel_transition_request(request.id, request.comment, actor=actor(context))
        return request_message(record)


def add_to_server(server: grpc.Server, app: App) -> list[str]:
    store = RegistryStore(app)
    registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server(ModelRegistryServicer(store), server)
    sweeper = RegistrationSweeper(app, store)
    app.shutdown_hooks.append(sweeper.stop)
    sweeper.start()
    return [pb.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name]
