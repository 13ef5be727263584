"""keel auth from the SDK: users, groups, API tokens and per-resource permissions.

::

    from keel.auth import AuthClient

    auth = AuthClient()                      # the tracking URI, as keel.Client
    auth.create_user("ci-bot", service_account=True)
    token, secret = auth.create_token("ci-bot", name="ci")   # the secret is shown only here
    auth.grant_permission("EDIT", user="ci-bot", model_name="fraud")

Calls carry the token of ``KEEL_TRACKING_TOKEN`` (or ``keel.set_tracking_token``), as every keel
call does. Levels, lowest first: NONE, READ, USE, EDIT, MANAGE.

This package also holds the generated ``keel.auth.v1`` stubs, which the server imports: the
transport is therefore imported only when a client is made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from keel.auth.v1 import auth_pb2 as pb
from keel.auth.v1 import auth_pb2_grpc
from keel.exceptions import InvalidArgument
from keel.paging import Pager
from keel.shared import pages

if TYPE_CHECKING:
    from keel._transport import Transport

T = TypeVar("T")

# Permission levels, lowest first.
LEVELS = ("NONE", "READ", "USE", "EDIT", "MANAGE")
_LEVEL_VALUES = {name: pb.PermissionLevel.Value(f"PERMISSION_LEVEL_{name}") for name in LEVELS}
_LEVEL_NAMES = {value: name for name, value in _LEVEL_VALUES.items()}
# Largest page the server hands out (it caps larger requests anyway).
_SERVER_PAGE_MAX = pages.USERS_AND_GROUPS.maximum


class _Entity:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (tuples become lists)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


@dataclass(frozen=True)
class Identity(_Entity):
    """Who the caller is (``WhoAmI``)."""

    name: str
    service_account: bool
    admin: bool
    groups: tuple[str, ...]
    # "token", "admin-token" or "certificate".
    auth_method: str
    # The id of the token used ('' for the admin token or a certificate).
    token_id: str
    # False when the server does not enforce auth (every caller is anonymous and allowed).
    auth_enabled: bool

    @classmethod
    def from_proto(cls, m: pb.Identity) -> Identity:
        return cls(
            name=m.name,
            service_account=m.service_account,
            admin=m.admin,
            groups=tuple(m.groups),
            auth_method=m.auth_method,
            token_id=m.token_id,
            auth_enabled=m.auth_enabled,
        )


@dataclass(frozen=True)
class User(_Entity):
    """A user or service account."""

    name: str
    service_account: bool
    admin: bool
    disabled: bool
    # ms since epoch.
    creation_time: int
    groups: tuple[str, ...]

    @classmethod
    def from_proto(cls, m: pb.User) -> User:
        return cls(
            name=m.name,
            service_account=m.service_account,
            admin=m.admin,
            disabled=m.disabled,
            creation_time=m.creation_time,
            groups=tuple(m.groups),
        )


@dataclass(frozen=True)
class Group(_Entity):
    """A group of users."""

    name: str
    members: tuple[str, ...]
    # ms since epoch.
    creation_time: int

    @classmethod
    def from_proto(cls, m: pb.Group) -> Group:
        return cls(name=m.name, members=tuple(m.members), creation_time=m.creation_time)


@dataclass(frozen=True)
class Token(_Entity):
    """An API token's public fields (never its secret)."""

    id: str
    user: str
    name: str
    # ms since epoch; expiry_time 0 = never expires, revoked_time 0 = not revoked.
    creation_time: int
    expiry_time: int
    revoked_time: int

    @classmethod
    def from_proto(cls, m: pb.Token) -> Token:
        return cls(
            id=m.id,
            user=m.user,
            name=m.name,
            creation_time=m.creation_time,
            expiry_time=m.expiry_time,
            revoked_time=m.revoked_time,
        )


@dataclass(frozen=True)
class Permission(_Entity):
    """One grant: ``level`` to a user or a group, on an experiment or a registered model (the
    other two selectors are None)."""

    level: str
    user: str | None = None
    group: str | None = None
    experiment_id: str | None = None
    model_name: str | None = None

    @classmethod
    def from_proto(cls, m: pb.Permission) -> Permission:
        subject, resource = m.subject.WhichOneof("kind"), m.resource.WhichOneof("kind")
        return cls(
            level=_LEVEL_NAMES.get(m.level, "UNSPECIFIED"),
            user=m.subject.user if subject == "user" else None,
            group=m.subject.group if subject == "group" else None,
            experiment_id=m.resource.experiment_id if resource == "experiment_id" else None,
            model_name=m.resource.model_name if resource == "model_name" else None,
        )


def parse_level(level: str) -> pb.PermissionLevel.ValueType:
    """``"edit"`` → ``PERMISSION_LEVEL_EDIT``; anything but the five level names is refused."""
    value = _LEVEL_VALUES.get(level.strip().upper()) if isinstance(level, str) else None
    if value is None:
        raise InvalidArgument(
            f"permission level {level!r} is unknown: use one of {', '.join(LEVELS)}",
            reason="INVALID_PERMISSION_LEVEL",
            field="level",
        )
    return value


def _subject(user: str | None, group: str | None) -> pb.Subject:
    if (user is None) == (group is None):
        raise InvalidArgument(
            "a grant is for exactly one user or one group: pass user=... or group=..., not both or neither",
            reason="INVALID_SUBJECT",
            field="subject",
        )
    return pb.Subject(user=user) if user is not None else pb.Subject(group=str(group))


def _resource(experiment_id: str | None, model_name: str | None) -> pb.Resource:
    if (experiment_id is None) == (model_name is None):
        raise InvalidArgument(
            "a grant is on exactly one experiment or one registered model: pass experiment_id=... "
            "or model_name=..., not both or neither",
            reason="INVALID_RESOURCE",
            field="resource",
        )
    if experiment_id is not None:
        return pb.Resource(experiment_id=str(experiment_id))
    return pb.Resource(model_name=str(model_name))


class AuthClient:
    """The AuthService of the server at ``tracking_uri`` (default: the tracking URI)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        from keel._transport import get_tracking_uri, transport

        self.tracking_uri = tracking_uri or get_tracking_uri()
        self._transport: Transport = transport(self.tracking_uri)
        self._stub = self._transport.stub(auth_pb2_grpc.AuthServiceStub)

    def _call(self, method: Callable[..., T], request: Any, *, idempotent: bool) -> T:
        return self._transport.call(method, request, idempotent=idempotent)

    # ---- who am I ---------------------------------------------------------------------------
    def whoami(self) -> Identity:
        """The identity the server sees for this process's calls."""
        return Identity.from_proto(self._call(self._stub.WhoAmI, pb.WhoAmIRequest(), idempotent=True))

    # ---- users ------------------------------------------------------------------------------
    def create_user(self, name: str, *, service_account: bool = False, admin: bool = False) -> User:
        request = pb.CreateUserRequest(name=name, service_account=service_account, admin=admin)
        return User.from_proto(self._call(self._stub.CreateUser, request, idempotent=False))

    def list_users(self, max_results: int | None = None) -> list[User]:
        """Every user (at most ``max_results``), ordered by name, across the server's pages."""

        def fetch(token: str) -> tuple[list[User], str]:
            request = pb.ListUsersRequest(page_size=_page_size(max_results), page_token=token)
            response = self._call(self._stub.ListUsers, request, idempotent=True)
            return [User.from_proto(u) for u in response.users], response.next_page_token

        return Pager(fetch, limit=max_results).to_list()

    def disable_user(self, name: str) -> User:
        """Disables a user: its tokens stop working at once; its grants stay."""
        request = pb.DisableUserRequest(name=name)
        return User.from_proto(self._call(self._stub.DisableUser, request, idempotent=True))

    # ---- groups -----------------------------------------------------------------------------
    def create_group(self, name: str) -> Group:
        request = pb.CreateGroupRequest(name=name)
        return Group.from_proto(self._call(self._stub.CreateGroup, request, idempotent=False))

    def add_group_member(self, group: str, user: str) -> Group:
        """Adds ``user`` to ``group`` (adding a member twice is not an error)."""
        request = pb.AddGroupMemberRequest(group=group, user=user)
        return Group.from_proto(self._call(self._stub.AddGroupMember, request, idempotent=True))

    def remove_group_member(self, group: str, user: str) -> Group:
        """Removes ``user`` from ``group``; NotFound when it is not a member."""
        request = pb.RemoveGroupMemberRequest(group=group, user=user)
        return Group.from_proto(self._call(self._stub.RemoveGroupMember, request, idempotent=False))

    def list_groups(self, max_results: int | None = None) -> list[Group]:
        """Every group with its members (at most ``max_results``), ordered by name."""

        def fetch(token: str) -> tuple[list[Group], str]:
            request = pb.ListGroupsRequest(page_size=_page_size(max_results), page_token=token)
            response = self._call(self._stub.ListGroups, request, idempotent=True)
            return [Group.from_proto(g) for g in response.groups], response.next_page_token

        return Pager(fetch, limit=max_results).to_list()

    # ---- tokens -----------------------------------------------------------------------------
    def create_token(self, user: str, name: str = "", expires_in: float | None = None) -> tuple[Token, str]:
        """A new API token for ``user`` that expires after ``expires_in`` seconds (None: never).
        Returns the token and its secret, which the server never shows again."""
        seconds = 0
        if expires_in is not None:
            seconds = int(expires_in)
            if isinstance(expires_in, bool) or seconds < 1:
                raise InvalidArgument(
                    f"expires_in must be a number of seconds >= 1 (None: never expires), got {expires_in!r}",
                    reason="INVALID_EXPIRY",
                    field="expires_in",
                )
        request = pb.CreateTokenRequest(user=user, name=name, expires_in_seconds=seconds)
        response = self._call(self._stub.CreateToken, request, idempotent=False)
        return Token.from_proto(response.token), response.secret

    def list_tokens(self, user: str | None = None) -> list[Token]:
        """The tokens of ``user`` (default: the caller's own), newest first, revoked ones included."""
        request = pb.ListTokensRequest(user=user or "")
        response = self._call(self._stub.ListTokens, request, idempotent=True)
        return [Token.from_proto(t) for t in response.tokens]

    def revoke_token(self, token_id: str) -> Token:
        """Revokes a token by its public id; every replica refuses it within a second."""
        request = pb.RevokeTokenRequest(id=token_id)
        return Token.from_proto(self._call(self._stub.RevokeToken, request, idempotent=False))

    # ---- permissions ------------------------------------------------------------------------
    def grant_permission(
        self,
        level: str,
        *,
        user: str | None = None,
        group: str | None = None,
        experiment_id: str | None = None,
        model_name: str | None = None,
    ) -> Permission:
        """Grants ``level`` to one user or group on one experiment or registered model, replacing
        an earlier grant to the same subject there."""
        request = pb.GrantPermissionRequest(
            subject=_subject(user, group),
            resource=_resource(experiment_id, model_name),
            level=parse_level(level),
        )
        return Permission.from_proto(self._call(self._stub.GrantPermission, request, idempotent=True))

    def revoke_permission(
        self,
        *,
        user: str | None = None,
        group: str | None = None,
        experiment_id: str | None = None,
        model_name: str | None = None,
    ) -> None:
        """Removes the grant of a user or group on a resource; NotFound when there is none."""
        request = pb.RevokePermissionRequest(
            subject=_subject(user, group), resource=_resource(experiment_id, model_name)
        )
        self._call(self._stub.RevokePermission, request, idempotent=False)

    def list_permissions(
        self, *, experiment_id: str | None = None, model_name: str | None = None
    ) -> list[Permission]:
        """The grants on one experiment or registered model: users first, then groups, by name."""
        request = pb.ListPermissionsRequest(resource=_resource(experiment_id, model_name))
        response = self._call(self._stub.ListPermissions, request, idempotent=True)
        return [Permission.from_proto(p) for p in response.permissions]


def _page_size(max_results: int | None) -> int:
    if max_results is None:
        return _SERVER_PAGE_MAX
    if isinstance(max_results, bool) or max_results < 1:
        raise InvalidArgument(
            f"max_results must be >= 1 (None: all), got {max_results!r}",
            reason="INVALID_PAGE_SIZE",
            field="max_results",
        )
    return min(max_results, _SERVER_PAGE_MAX)


__all__ = [
    "LEVELS",
    "AuthClient",
    "Group",
    "Identity",
    "Permission",
    "Token",
    "User",
    "parse_level",
]
