"""keel.auth.v1.AuthService: thin gRPC layer over ``AuthStore``.

Who may call what is decided before these handlers run (``policy.POLICY``); they only convert
protobuf ⇄ records. With auth off, WhoAmI answers an anonymous identity and the rest work for
anyone (there is nothing to protect), so an operator can prepare users before turning auth on.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from keel.auth.v1 import auth_pb2 as pb
from keel.auth.v1 import auth_pb2_grpc
from keel_server.auth import policy, visibility
from keel_server.auth.context import current_caller
from keel_server.auth.store import LEVEL_NAMES, AuthStore, GrantRecord, GroupRecord, TokenRecord, UserRecord
from keel_server.common.app import App
from keel_server.common.errors import InvalidArgument

_EMPTY = empty_pb2.Empty()
# Most resources one GetCallerPermissions call may ask about.
MAX_PERMISSION_QUERIES = 1000
# keel.auth.v1.PermissionLevel numbers are the store's levels plus one (0 is UNSPECIFIED).
_LEVEL_OFFSET = 1


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app
        self.store = AuthStore()

    def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.ServicerContext) -> pb.Identity:
        caller = current_caller()
        if caller is None:
            return pb.Identity(name="anonymous", auth_enabled=self.app.settings.auth)
        user = self.store.user_by_id(caller.principal_id)
        return pb.Identity(
            name=caller.name,
            service_account=caller.service_account,
            admin=caller.admin,
            groups=list(user.groups) if user else [],
            auth_method=caller.auth_method,
            token_id=caller.token_id,
            auth_enabled=True,
        )

    # ------------------------------------------------------------------ users and groups
    def CreateUser(self, request: pb.CreateUserRequest, context: grpc.ServicerContext) -> pb.User:
        return _user(self.store.create_user(request.name, request.service_account, request.admin))

    def ListUsers(self, request: pb.ListUsersRequest, context: grpc.ServicerContext) -> pb.ListUsersResponse:
        users, token = self.store.list_users(request.page_size, request.page_token)
        return pb.ListUsersResponse(users=[_user(u) for u in users], next_page_token=token)

    def DisableUser(self, request: pb.DisableUserRequest, context: grpc.ServicerContext) -> pb.User:
        return _user(self.store.disable_user(request.name))

    def CreateGroup(self, request: pb.CreateGroupRequest, context: grpc.ServicerContext) -> pb.Group:
        return _group(self.store.create_group(request.name))

    def AddGroupMember(self, request: pb.AddGroupMemberRequest, context: grpc.ServicerContext) -> pb.Group:
        return _group(self.store.add_member(request.group, request.user))

    def RemoveGroupMember(self, request: pb.RemoveGroupMemberRequest, context: grpc.ServicerContext) -> pb.Group:
        return _group(self.store.remove_member(request.group, request.user))

    def ListGroups(self, request: pb.ListGroupsRequest, context: grpc.ServicerContext) -> pb.ListGroupsResponse:
        groups, token = self.store.list_groups(request.page_size, request.page_token)
        return pb.ListGroupsResponse(groups=[_group(g) for g in groups], next_page_token=token)

    # ------------------------------------------------------------------ tokens
    def CreateToken(self, request: pb.CreateTokenRequest, context: grpc.ServicerContext) -> pb.CreateTokenResponse:
        token, secret = self.store.create_token(
            self._user_or_caller(request.user), request.name, request.expires_in_seconds
        )
        return pb.CreateTokenResponse(token=_token(token), secret=secret)

    def ListTokens(self, request: pb.ListTokensRequest, context: grpc.ServicerContext) -> pb.ListTokensResponse:
        return pb.ListTokensResponse(tokens=[_token(t) for t in self.store.list_tokens(self._user_or_caller(request.user))])

    def RevokeToken(self, request: pb.RevokeTokenRequest, context: grpc.ServicerContext) -> pb.Token:
        return _token(self.store.revoke_token(request.id))

    # ------------------------------------------------------------------ grants
    def GrantPermission(self, request: pb.GrantPermissionRequest, context: grpc.ServicerContext) -> pb.Permission:
        subject_type, subject = _subject(request.subject)
        resource_type, resource = _resource(request.resource)
        if request.level == pb.PERMISSION_LEVEL_UNSPECIFIED or request.level - _LEVEL_OFFSET not in LEVEL_NAMES:
            raise InvalidArgument(
                "level must be one of NONE, READ, USE, EDIT or MANAGE", reason="INVALID_PERMISSION_LEVEL", field="level"
            )
        return _permission(self.store.grant(subject_type, subject, resource_type, resource, request.level - _LEVEL_OFFSET))

    def RevokePermission(self, request: pb.RevokePermissionRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        subject_type, subject = _subject(request.subject)
        resource_type, resource = _resource(request.resource)
        self.store.revoke(subject_type, subject, resource_type, resource)
        return _EMPTY

    def ListPermissions(self, request: pb.ListPermissionsRequest, context: grpc.ServicerContext) -> pb.ListPermissionsResponse:
        resource_type, resource = _resource(request.resource)
        return pb.ListPermissionsResponse(permissions=[_permission(g) for g in self.store.list_grants(resource_type, resource)])

    def GetCallerPermissions(
        self, request: pb.GetCallerPermissionsRequest, context: grpc.ServicerContext
    ) -> pb.GetCallerPermissionsResponse:
        if not 1 <= len(request.resources) <= MAX_PERMISSION_QUERIES:
            raise InvalidArgument(
                f"resources must hold 1..{MAX_PERMISSION_QUERIES} entries, got {len(request.resources)}",
                reason="INVALID_RESOURCES",
                field="resources",
            )
        for resource in request.resources:
            _resource(resource)
        caller, guard = current_caller(), visibility.guard_var.get()
        levels: list[Any]
        if caller is None or guard is None:
            levels = [pb.PERMISSION_LEVEL_MANAGE] * len(request.resources)
            return pb.GetCallerPermissionsResponse(levels=levels, auth_enabled=self.app.settings.auth)
        levels = [
            guard.level_on(caller, guard.scopes(policy.GRANT_RESOURCE, resource, caller)[0]) + _LEVEL_OFFSET
            for resource in request.resources
        ]
        return pb.GetCallerPermissionsResponse(levels=levels, auth_enabled=True)

    def _user_or_caller(self, user: str) -> str:
        if user:
            return user
        caller = current_caller()
        if caller is None:
            raise InvalidArgument("set user: auth is off, so there is no calling user", reason="USER_REQUIRED", field="user")
        return caller.name


def _subject(subject: pb.Subject) -> tuple[str, str]:
    which = subject.WhichOneof("kind")
    if which is None or not getattr(subject, which):
        raise InvalidArgument("subject: set exactly one of user and group", reason="INVALID_SUBJECT", field="subject")
    return which, str(getattr(subject, which))


def _resource(resource: pb.Resource) -> tuple[str, str]:
    which = resource.WhichOneof("kind")
    if which is None or not getattr(resource, which):
        raise InvalidArgument(
            "resource: set exactly one of experiment_id and model_name", reason="INVALID_RESOURCE", field="resource"
        )
    return ("experiment" if which == "experiment_id" else "model"), str(getattr(resource, which))


def _user(user: UserRecord) -> pb.User:
    return pb.User(
        name=user.name,
        service_account=user.service_account,
        admin=user.admin,
        disabled=user.disabled,
        creation_time=user.creation_time,
        groups=list(user.groups),
    )


def _group(group: GroupRecord) -> pb.Group:
    return pb.Group(name=group.name, members=list(group.members), creation_time=group.creation_time)


def _token(token: TokenRecord) -> pb.Token:
    return pb.Token(
        id=token.id,
        user=token.user,
        name=token.name,
        creation_time=token.creation_time,
        expiry_time=token.expiry_time,
        revoked_time=token.revoked_time,
    )


def _permission(grant: GrantRecord) -> pb.Permission:
    subject = pb.Subject(user=grant.subject_name) if grant.subject_type == "user" else pb.Subject(group=grant.subject_name)
    resource = (
        pb.Resource(experiment_id=grant.resource_name)
        if grant.resource_type == "experiment"
        else pb.Resource(model_name=grant.resource_name)
    )
    return pb.Permission(subject=subject, resource=resource, level=grant.level + _LEVEL_OFFSET)  # type: ignore[arg-type]


def add_to_server(server: grpc.Server, app: App) -> list[str]:
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(app), server)
    return [pb.DESCRIPTOR.services_by_name["AuthService"].full_name]
