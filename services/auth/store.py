"""Identities, groups, API tokens and grants in the metadata database.

Token secrets are 256 random bits shown once; only their sha256 is stored. A token reads
``keel_<id>_<secret>``: the id finds the row, and the stored hash is compared with
``hmac.compare_digest`` (constant time), so a wrong secret for a real id takes as long to refuse
as any other.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw

from keel.shared import pages
from keel_server.audit import recorder
from keel_server.common.db import (
    ApiToken,
    Experiment,
    GroupMember,
    Principal,
    PrincipalGroup,
    RegisteredModel,
    ResourcePermission,
    now_ms,
    write_transaction,
)
from keel_server.common.errors import AlreadyExists, InvalidArgument, NotFound, quote
from keel_server.common.pagination import decode_token, fingerprint, page_size, trim
from keel_server.common.querying import upsert

# Permission levels (keel.auth.v1.PermissionLevel numbers minus one; higher includes lower).
NONE, READ, USE, EDIT, MANAGE = 0, 1, 2, 3, 4
LEVEL_NAMES = {NONE: "NONE", READ: "READ", USE: "USE", EDIT: "EDIT", MANAGE: "MANAGE"}
LEVELS_BY_NAME = {name: level for level, name in LEVEL_NAMES.items()}

# The user KEEL_ADMIN_TOKEN authenticates as; created on first start with auth on.
ADMIN_USER = "admin"
TOKEN_PREFIX = "keel_"
MAX_EXPIRES_IN_SECONDS = 10 * 365 * 24 * 3600
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_TOKEN_RE = re.compile(r"keel_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
LIST_PAGE_DEFAULT, LIST_PAGE_MAX = pages.USERS_AND_GROUPS


@dataclass(frozen=True)
class UserRecord:
    id: int
    name: str
    service_account: bool
    admin: bool
    disabled: bool
    creation_time: int
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupRecord:
    id: int
    name: str
    members: tuple[str, ...]
    creation_time: int


@dataclass(frozen=True)
class TokenRecord:
    id: str
    user: str
    name: str
    creation_time: int
    expiry_time: int
    revoked_time: int


@dataclass(frozen=True)
class GrantRecord:
    subject_type: str  # "user" | "group"
    subject_name: str
    resource_type: str  # "experiment" | "model"
    resource_name: str  # experiment id or model name
    level: int


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str, what: str) -> str:
    if not _NAME_RE.fullmatch(name or ""):
        raise InvalidArgument(
            f"{what} name {quote(name)} is not valid: use 1 to 128 letters, digits, '.', '_', '-' or '@', "
            "starting with a letter or digit",
            reason="INVALID_NAME",
            field="name",
        )
    return name


def level_of(name: str) -> int:
    """A level from its name (NONE, READ, USE, EDIT, MANAGE; any case)."""
    found = LEVELS_BY_NAME.get(name.strip().upper())
    if found is None:
        raise InvalidArgument(
            f"permission level {quote(name)} is not one of {', '.join(LEVEL_NAMES.values())}",
            reason="INVALID_PERMISSION_LEVEL",
            field="level",
        )
    return found


class AuthStore:
    # ------------------------------------------------------------------ users and groups
    def ensure_admin(self) -> UserRecord:
        """The built-in admin user (created on first start with auth on)."""
        with write_transaction():
            row = Principal.get_or_none(Principal.name == ADMIN_USER)
            if row is None:
                row = Principal.create(name=ADMIN_USER, admin=True)
            elif not row.admin or row.disabled:
                row.admin, row.disabled = True, False
                row.save()
        return self._user(row)

    def create_user(self, name: str, service_account: bool, admin: bool) -> UserRecord:
        check_name(name, "user")
        try:
            with write_transaction():
                row = Principal.create(name=name, service_account=service_account, admin=admin)
        except pw.IntegrityError:
            raise AlreadyExists(f"user {quote(name)} already exists", reason="USER_EXISTS") from None
        return self._user(row)

    def get_user(self, name: str) -> UserRecord:
        return self._user(self._principal(name))

    def user_by_id(self, principal_id: int) -> UserRecord | None:
        row = Principal.get_or_none(Principal.id == principal_id)
        return None if row is None else self._user(row)

    def list_users(self, requested_size: int, token: str) -> tuple[list[UserRecord], str]:
        rows, next_token = _page_by_name(Principal, "users", requested_size, token)
        return [self._user(row) for row in rows], next_token

    def disable_user(self, name: str) -> UserRecord:
        with write_transaction():
            row = self._principal(name)
            if row.name == ADMIN_USER:
                raise InvalidArgument(
                    "the built-in admin user cannot be disabled: unset KEEL_ADMIN_TOKEN to stop it signing in",
                    reason="ADMIN_USER_FIXED",
                    field="name",
                )
            row.disabled = True
            row.save()
        return self._user(row)

    def create_group(self, name: str) -> GroupRecord:
        check_name(name, "group")
        try:
            with write_transaction():
                row = PrincipalGroup.create(name=name)
        except pw.IntegrityError:
            raise AlreadyExists(f"group {quote(name)} already exists", reason="GROUP_EXISTS") from None
        return self._group(row)

    def add_member(self, group: str, user: str) -> GroupRecord:
        with write_transaction():
            group_row = self._group_row(group)
            user_row = self._principal(user)
            exists = GroupMember.get_or_none(GroupMember.group == group_row, GroupMember.principal == user_row)
            if exists is None:
                GroupMember.create(group=group_row, principal=user_row)
        return self._group(group_row)

    def remove_member(self, group: str, user: str) -> GroupRecord:
        with write_transaction():
            group_row = self._group_row(group)
            user_row = self._principal(user)
            removed = (
                GroupMember.delete()
                .where(GroupMember.group == group_row, GroupMember.principal == user_row)
                .execute()
            )
            if not removed:
                raise NotFound(f"user {quote(user)} is not a member of group {quote(group)}", reason="NOT_A_MEMBER")
        return self._group(group_row)

    def list_groups(self, requested_size: int, token: str) -> tuple[list[GroupRecord], str]:
        rows, next_token = _page_by_name(PrincipalGroup, "groups", requested_size, token)
        return [self._group(row) for row in rows], next_token

    def group_ids_of(self, principal_id: int) -> tuple[int, ...]:
        rows = GroupMember.select(GroupMember.group).where(GroupMember.principal == principal_id)
        return tuple(sorted(row.group_id for row in rows))

    # ------------------------------------------------------------------ tokens
    def create_token(self, user: str, name: str, expires_in_seconds: int) -> tuple[TokenRecord, str]:
        if len(name) > 128:
            raise InvalidArgument(
                f"token name is {len(name)} characters long; the limit is 128", reason="INVALID_NAME", field="name"
            )
        if not 0 <= expires_in_seconds <= MAX_EXPIRES_IN_SECONDS:
            raise InvalidArgument(
                f"expires_in_seconds must be between 0 (never) and {MAX_EXPIRES_IN_SECONDS}, got {expires_in_seconds}",
                reason="INVALID_EXPIRY",
                field="expires_in_seconds",
            )
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        created = now_ms()
        with write_transaction():
            owner = self._principal(user)
            row = ApiToken.create(
                id=token_id,
                principal=owner,
                name=name,
                secret_hash=hash_secret(secret),
                creation_time=created,
                expiry_time=created + expires_in_seconds * 1000 if expires_in_seconds else 0,
            )
            recorder.note(resource_id=token_id)
        return self._token(row, owner.name), f"{TOKEN_PREFIX}{token_id}_{secret}"

    def list_tokens(self, user: str) -> list[TokenRecord]:
        owner = self._principal(user)
        rows = ApiToken.select().where(ApiToken.principal == owner).order_by(ApiToken.creation_time.desc())
        return [self._token(row, owner.name) for row in rows]

    def token_owner(self, token_id: str) -> str | None:
        """The name of the user a token belongs to (None when there is no such token)."""
        row = (
            ApiToken.select(Principal.name)
            .join(Principal)
            .where(ApiToken.id == token_id)
            .tuples()
            .first()
        )
        return None if row is None else str(row[0])

    def revoke_token(self, token_id: str) -> TokenRecord:
        with write_transaction():
            row = ApiToken.get_or_none(ApiToken.id == token_id)
            if row is None:
                raise NotFound(f"token {quote(token_id)} does not exist", reason="TOKEN_NOT_FOUND", field="id")
            if not row.revoked_time:
                row.revoked_time = now_ms()
                row.save()
            owner = Principal.get_by_id(row.principal_id)
        return self._token(row, owner.name)

    def authenticate(self, bearer: str) -> tuple[Principal, str] | None:
        """The enabled principal and token id of a valid (known, unexpired, unrevoked) token."""
        match = _TOKEN_RE.fullmatch(bearer)
        if match is None:
            return None
        token_id, secret = match.groups()
        row = ApiToken.get_or_none(ApiToken.id == token_id)
        if row is None:
            hmac.compare_digest(hash_secret(secret), hash_secret(""))  # same work as a real comparison
            return None
        if not hmac.compare_digest(hash_secret(secret), row.secret_hash):
            return None
        now = now_ms()
        if row.revoked_time or (row.expiry_time and row.expiry_time <= now):
            return None
        principal = Principal.get_or_none(Principal.id == row.principal_id)
        if principal is None or principal.disabled:
            return None
        return principal, token_id

    def principal_named(self, name: str) -> Principal | None:
        return Principal.get_or_none(Principal.name == name)

    # ------------------------------------------------------------------ grants
    def grant(self, subject_type: str, subject: str, resource_type: str, resource: str, level: int) -> GrantRecord:
        with write_transaction():
            subject_id = self._subject_id(subject_type, subject)
            resource_id = self.resource_key(resource_type, resource)
            upsert(
                ResourcePermission,
                [
                    {
                        "resource_type": resource_type,
                        "resource_id": resource_id,
                        "subject_type": subject_type,
                        "subject_id": subject_id,
                        "level": level,
                    }
                ],
                target=[
                    ResourcePermission.resource_type,
                    ResourcePermission.resource_id,
                    ResourcePermission.subject_type,
                    ResourcePermission.subject_id,
                ],
                preserve=[ResourcePermission.level],
            )
        return GrantRecord(subject_type, subject, resource_type, resource, level)

    def grant_creator(self, principal_id: int, resource_type: str, resource_id: str) -> None:
        """MANAGE for the creator of a resource (inside the creating transaction)."""
        ResourcePermission.insert(
            resource_type=resource_type,
            resource_id=resource_id,
            subject_type="user",
            subject_id=principal_id,
            level=MANAGE,
        ).on_conflict_ignore().execute()

    def revoke(self, subject_type: str, subject: str, resource_type: str, resource: str) -> None:
        with write_transaction():
            subject_id = self._subject_id(subject_type, subject)
            resource_id = self.resource_key(resource_type, resource)
            removed = (
                ResourcePermission.delete()
                .where(
                    ResourcePermission.resource_type == resource_type,
                    ResourcePermission.resource_id == resource_id,
                    ResourcePermission.subject_type == subject_type,
                    ResourcePermission.subject_id == subject_id,
                )
                .execute()
            )
        if not removed:
            raise NotFound(
                f"{subject_type} {quote(subject)} has no grant on {resource_type} {quote(resource)}",
                reason="GRANT_NOT_FOUND",
            )

    def list_grants(self, resource_type: str, resource: str) -> list[GrantRecord]:
        resource_id = self.resource_key(resource_type, resource)
        rows = list(
            ResourcePermission.select().where(
                ResourcePermission.resource_type == resource_type, ResourcePermission.resource_id == resource_id
            )
        )
        users = {p.id: p.name for p in Principal.select().where(Principal.id.in_([r.subject_id for r in rows if r.subject_type == "user"]))}
        groups = {
            g.id: g.name
            for g in PrincipalGroup.select().where(PrincipalGroup.id.in_([r.subject_id for r in rows if r.subject_type == "group"]))
        }
        grants = [
            GrantRecord(
                r.subject_type,
                (users if r.subject_type == "user" else groups).get(r.subject_id, f"#{r.subject_id}"),
                resource_type,
                resource,
                r.level,
            )
            for r in rows
        ]
        return sorted(grants, key=lambda g: (g.subject_type != "user", g.subject_name))

    def level(self, principal_id: int, group_ids: Sequence[int], resource_type: str, resource_id: str) -> int:
        """The highest grant of the principal or its groups on a resource (NONE without any)."""
        subject = (ResourcePermission.subject_type == "user") & (ResourcePermission.subject_id == principal_id)
        if group_ids:
            subject |= (ResourcePermission.subject_type == "group") & (ResourcePermission.subject_id.in_(list(group_ids)))
        found = (
            ResourcePermission.select(pw.fn.MAX(ResourcePermission.level))
            .where(
                ResourcePermission.resource_type == resource_type,
                ResourcePermission.resource_id == resource_id,
                subject,
            )
            .scalar()
        )
        return int(found) if found is not None else NONE

    def readable_ids(self, principal_id: int, group_ids: Sequence[int], resource_type: str) -> list[int]:
        """Ids of the resources of a type the principal or its groups hold READ or more on."""
        subject = (ResourcePermission.subject_type == "user") & (ResourcePermission.subject_id == principal_id)
        if group_ids:
            subject |= (ResourcePermission.subject_type == "group") & (ResourcePermission.subject_id.in_(list(group_ids)))
        rows: Any = (
            ResourcePermission.select(ResourcePermission.resource_id)
            .where(ResourcePermission.resource_type == resource_type, ResourcePermission.level >= READ, subject)
            .distinct()
            .tuples()
        )
        return sorted({int(row[0]) for row in rows if str(row[0]).isdigit()})

    def resource_key(self, resource_type: str, resource: str) -> str:
        """The stored key of a resource: an experiment's id, a registered model's id (so grants
        follow a rename). NOT_FOUND when it does not exist."""
        if resource_type == "experiment":
            if not resource.isdigit() or Experiment.get_or_none(Experiment.experiment_id == int(resource)) is None:
                raise NotFound(f"experiment {quote(resource)} does not exist", reason="EXPERIMENT_NOT_FOUND")
            return str(int(resource))
        model_id = self.model_id(resource)
        if model_id is None:
            raise NotFound(f"registered model {quote(resource)} does not exist", reason="MODEL_NOT_FOUND")
        return str(model_id)

    def model_id(self, name: str) -> int | None:
        row = RegisteredModel.select(RegisteredModel.id).where(RegisteredModel.name == name).tuples().first()
        return None if row is None else int(row[0])

    # ------------------------------------------------------------------ helpers
    def _subject_id(self, subject_type: str, name: str) -> int:
        if subject_type == "user":
            return int(self._principal(name).id)
        return int(self._group_row(name).id)

    def _principal(self, name: str) -> Principal:
        row = Principal.get_or_none(Principal.name == name)
        if row is None:
            raise NotFound(f"user {quote(name)} does not exist", reason="USER_NOT_FOUND")
        return row

    def _group_row(self, name: str) -> PrincipalGroup:
        row = PrincipalGroup.get_or_none(PrincipalGroup.name == name)
        if row is None:
            raise NotFound(f"group {quote(name)} does not exist", reason="GROUP_NOT_FOUND")
        return row

    def _user(self, row: Principal) -> UserRecord:
        groups: Any = (
            PrincipalGroup.select(PrincipalGroup.name)
            .join(GroupMember)
            .where(GroupMember.principal == row.id)
            .order_by(PrincipalGroup.name)
            .tuples()
        )
        return UserRecord(
            id=row.id,
            name=row.name,
            service_account=row.service_account,
            admin=row.admin,
            disabled=row.disabled,
            creation_time=row.creation_time,
            groups=tuple(g[0] for g in groups),
        )

    def _group(self, row: PrincipalGroup) -> GroupRecord:
        members: Any = (
            Principal.select(Principal.name)
            .join(GroupMember)
            .where(GroupMember.group == row.id)
            .order_by(Principal.name)
            .tuples()
        )
        return GroupRecord(id=row.id, name=row.name, members=tuple(m[0] for m in members), creation_time=row.creation_time)

    def _token(self, row: ApiToken, owner: str) -> TokenRecord:
        return TokenRecord(
            id=row.id,
            user=owner,
            name=row.name,
            creation_time=row.creation_time,
            expiry_time=row.expiry_time,
            revoked_time=row.revoked_time,
        )


def _page_by_name(model: Any, what: str, requested_size: int, token: str) -> tuple[list[Any], str]:
    """One page of users or groups in name order (names are unique: the name is the cursor)."""
    size = page_size(requested_size, LIST_PAGE_DEFAULT, LIST_PAGE_MAX)
    bound = fingerprint(what)
    cursor = decode_token(token, bound)
    query = model.select().order_by(model.name)
    if cursor is not None:
        query = query.where(model.name > str(cursor[0]))
    return trim(list(query.limit(size + 1)), size, lambda r: [r.name], bound)


__all__ = ["ADMIN_USER", "AuthStore"]
