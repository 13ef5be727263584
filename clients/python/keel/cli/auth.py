"""``keel users|groups|tokens|permissions|whoami|events ...``: auth and the audit log from the shell
(tables or short sentences by default; ``--json`` prints one JSON object or array).

keel users create NAME [--service-account] [--admin]     keel users list     keel users disable NAME
keel groups create NAME     keel groups add-member GROUP USER     keel groups remove-member GROUP USER
keel groups list
keel tokens create --user NAME [--name LABEL] [--expires-in SECONDS]   (the secret alone on stdout)
keel tokens list [--user NAME]     keel tokens revoke ID
keel permissions grant (--user U | --group G) (--experiment ID | --model NAME) LEVEL
keel permissions revoke (--user U | --group G) (--experiment ID | --model NAME)
keel permissions list (--experiment ID | --model NAME)
keel whoami
keel events list [--actor A] [--model NAME] [--experiment ID] [--method M] [--since T] [--until T]
keel events watch [--after ID] [--actor A] [--model NAME] [--experiment ID] [--method M]

Calls authenticate with $KEEL_TRACKING_TOKEN, as every keel command does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from typing import Any

from keel.cli.output import emit

USER_COLUMNS = ("name", "kind", "admin", "disabled", "groups", "created")
GROUP_COLUMNS = ("name", "members", "created")
TOKEN_COLUMNS = ("id", "user", "name", "state", "created", "expires")
PERMISSION_COLUMNS = ("subject", "resource", "level")
EVENT_COLUMNS = ("id", "time", "actor", "method", "resource_type", "resource_id", "outcome")
LEVEL_HELP = "NONE, READ, USE, EDIT or MANAGE (any case)"
TIME_HELP = "ms since epoch, an ISO-8601 time (UTC when no offset) or an age: 30s, 10m, 2h, 1d"


def register(sub: argparse._SubParsersAction) -> None:
    _register_users(sub)
    _register_groups(sub)
    _register_tokens(sub)
    _register_permissions(sub)
    p = sub.add_parser("whoami", help="the identity the server sees for this shell's token")
    _json_flag(p)
    p.set_defaults(func=_whoami)
    _register_events(sub)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _group(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse._SubParsersAction:
    parser = sub.add_parser(name, help=help_text)
    commands = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    commands.required = True
    return commands


def _register_users(sub: argparse._SubParsersAction) -> None:
    users = _group(sub, "users", "users and service accounts (admin): create, list, disable")
    p = users.add_parser("create", help="create a user or service account")
    p.add_argument("name")
    p.add_argument("--service-account", action="store_true", help="a non-human identity")
    p.add_argument("--admin", action="store_true", help="an administrator (bypasses every permission check)")
    _json_flag(p)
    p.set_defaults(func=_users_create)
    p = users.add_parser("list", help="list users, by name")
    _json_flag(p)
    p.set_defaults(func=_users_list)
    p = users.add_parser("disable", help="disable a user: its tokens stop working at once")
    p.add_argument("name")
    _json_flag(p)
    p.set_defaults(func=_users_disable)


def _register_groups(sub: argparse._SubParsersAction) -> None:
    groups = _group(sub, "groups", "groups of users (admin): create, add-member, remove-member, list")
    p = groups.add_parser("create", help="create a group")
    p.add_argument("name")
    _json_flag(p)
    p.set_defaults(func=_groups_create)
    for name, help_text, func in (
        ("add-member", "add a user to a group", _groups_add_member),
        ("remove-member", "remove a user from a group", _groups_remove_member),
    ):
        p = groups.add_parser(name, help=help_text)
        p.add_argument("group")
        p.add_argument("user")
        _json_flag(p)
        p.set_defaults(func=func)
    p = groups.add_parser("list", help="list groups with their members")
    _json_flag(p)
    p.set_defaults(func=_groups_list)


def _register_tokens(sub: argparse._SubParsersAction) -> None:
    tokens = _group(sub, "tokens", "API tokens: create, list, revoke")
    p = tokens.add_parser(
        "create",
        help="create a token and print its secret (shown only this once)",
        description="Prints the secret alone on stdout, so export KEEL_TRACKING_TOKEN=$(keel tokens create --user U) "
        "works; the token's id goes to stderr. With --json: an object with id, token (the secret) and the rest.",
    )
    p.add_argument("--user", required=True, help="the user the token authenticates as")
    p.add_argument("--name", default="", help="a label, to tell tokens apart")
    p.add_argument("--expires-in", type=int, default=None, metavar="SECONDS", help="default: never expires")
    _json_flag(p)
    p.set_defaults(func=_tokens_create)
    p = tokens.add_parser("list", help="list tokens (never their secrets), newest first")
    p.add_argument("--user", default=None, help="whose tokens (default: your own; any user's for an admin)")
    _json_flag(p)
    p.set_defaults(func=_tokens_list)
    p = tokens.add_parser("revoke", help="revoke a token by its id")
    p.add_argument("id")
    _json_flag(p)
    p.set_defaults(func=_tokens_revoke)


def _selectors(parser: argparse.ArgumentParser, *, subject: bool) -> None:
    if subject:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", metavar="U", help="a user or service account")
        who.add_argument("--group", metavar="G", help="a group")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--experiment", metavar="ID", help="an experiment id")
    what.add_argument("--model", metavar="NAME", help="a registered model name")


def _register_permissions(sub: argparse._SubParsersAction) -> None:
    permissions = _group(
        sub, "permissions", "grants on experiments and registered models: grant, revoke, list"
    )
    p = permissions.add_parser("grant", help="grant a level to a user or group (replaces its earlier grant)")
    _selectors(p, subject=True)
    p.add_argument("level", metavar="LEVEL", help=LEVEL_HELP)
    _json_flag(p)
    p.set_defaults(func=_permissions_grant)
    p = permissions.add_parser("revoke", help="remove the grant of a user or group")
    _selectors(p, subject=True)
    _json_flag(p)
    p.set_defaults(func=_permissions_revoke)
    p = permissions.add_parser("list", help="list the grants on an experiment or registered model")
    _selectors(p, subject=False)
    _json_flag(p)
    p.set_defaults(func=_permissions_list)


def _register_events(sub: argparse._SubParsersAction) -> None:
    events = _group(sub, "events", "the audit log: list past events, watch new ones")
    p = events.add_parser("list", help="list audit events, oldest first")
    _event_filters(p)
    p.add_argument("--since", help=f"only events at or after this time: {TIME_HELP}")
    p.add_argument("--until", help=f"only events before this time: {TIME_HELP}")
    p.add_argument("--resource-type", help="only this resource type: experiment, run, model, token, ...")
    p.add_argument("--resource-id", help="only this resource id (with --resource-type)")
    p.add_argument("--max-results", type=int, default=None, help="at most this many events (default: all)")
    _json_flag(p)
    p.set_defaults(func=_events_list)
    p = events.add_parser(
        "watch",
        help="print events as they are committed until interrupted (one JSON object per line with --json)",
    )
    p.add_argument(
        "--after", type=int, default=0, metavar="ID", help="start after this event id (default: 0, all)"
    )
    _event_filters(p)
    _json_flag(p)
    p.set_defaults(func=_events_watch)


def _event_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--actor", help="only this identity")
    parser.add_argument("--model", metavar="NAME", help="only this registered model (its versions too)")
    parser.add_argument("--experiment", metavar="ID", help="only this experiment (its runs too)")
    parser.add_argument("--method", help="only this RPC, e.g. TransitionModelVersionStage")


# ---- plumbing --------------------------------------------------------------------------------
def _auth() -> Any:
    from keel.auth import AuthClient

    return AuthClient()


def _audit() -> Any:
    from keel.audit import AuditClient

    return AuditClient()


def _time(ms: int) -> str:
    """UTC, as ``--since`` reads a time without offset."""
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# ---- users -----------------------------------------------------------------------------------
def _user_row(user: Any) -> dict[str, Any]:
    return {
        "name": user.name,
        "kind": "service account" if user.service_account else "user",
        "admin": "yes" if user.admin else "",
        "disabled": "yes" if user.disabled else "",
        "groups": list(user.groups),
        "created": _time(user.creation_time),
    }


def _users_create(args: argparse.Namespace) -> int:
    user = _auth().create_user(args.name, service_account=args.service_account, admin=args.admin)
    if args.json:
        _print_json(user.to_dict())
    else:
        kind = "service account" if user.service_account else "user"
        print(f"{kind} {user.name} created" + (" (admin)" if user.admin else ""))
    return 0


def _users_list(args: argparse.Namespace) -> int:
    users = _auth().list_users()
    if args.json:
        emit([u.to_dict() for u in users], USER_COLUMNS, as_json=True)
    else:
        emit([_user_row(u) for u in users], USER_COLUMNS, as_json=False)
    return 0


def _users_disable(args: argparse.Namespace) -> int:
    user = _auth().disable_user(args.name)
    if args.json:
        _print_json(user.to_dict())
    else:
        print(f"user {user.name} disabled: its tokens no longer work")
    return 0


# ---- groups ----------------------------------------------------------------------------------
def _group_row(group: Any) -> dict[str, Any]:
    return {"name": group.name, "members": list(group.members), "created": _time(group.creation_time)}


def _groups_create(args: argparse.Namespace) -> int:
    group = _auth().create_group(args.name)
    if args.json:
        _print_json(group.to_dict())
    else:
        print(f"group {group.name} created")
    return 0


def _groups_add_member(args: argparse.Namespace) -> int:
    group = _auth().add_group_member(args.group, args.user)
    if args.json:
        _print_json(group.to_dict())
    else:
        print(f"{args.user} is a member of group {group.name}")
    return 0


def _groups_remove_member(args: argparse.Namespace) -> int:
    group = _auth().remove_group_member(args.group, args.user)
    if args.json:
        _print_json(group.to_dict())
    else:
        print(f"{args.user} removed from group {group.name}")
    return 0


def _groups_list(args: argparse.Namespace) -> int:
    groups = _auth().list_groups()
    if args.json:
        emit([g.to_dict() for g in groups], GROUP_COLUMNS, as_json=True)
    else:
        emit([_group_row(g) for g in groups], GROUP_COLUMNS, as_json=False)
    return 0


# ---- tokens ----------------------------------------------------------------------------------
def _token_state(token: Any, now_ms: int) -> str:
    if token.revoked_time:
        return "revoked"
    if token.expiry_time and token.expiry_time <= now_ms:
        return "expired"
    return "active"


def _token_row(token: Any, now_ms: int) -> dict[str, Any]:
    return {
        "id": token.id,
        "user": token.user,
        "name": token.name,
        "state": _token_state(token, now_ms),
        "created": _time(token.creation_time),
        "expires": _time(token.expiry_time) or "never",
    }


def _tokens_create(args: argparse.Namespace) -> int:
    token, secret = _auth().create_token(args.user, name=args.name, expires_in=args.expires_in)
    if args.json:
        _print_json({**token.to_dict(), "token": secret})
        return 0
    expires = f"expires {_time(token.expiry_time)} UTC" if token.expiry_time else "never expires"
    print(
        f"token {token.id} created for {token.user} ({expires}); the secret below is shown only now, keep it safe",
        file=sys.stderr,
    )
    print(secret)
    return 0


def _tokens_list(args: argparse.Namespace) -> int:
    tokens = _auth().list_tokens(user=args.user)
    if args.json:
        emit([t.to_dict() for t in tokens], TOKEN_COLUMNS, as_json=True)
    else:
        now_ms = int(time.time() * 1000)
        emit([_token_row(t, now_ms) for t in tokens], TOKEN_COLUMNS, as_json=False)
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    token = _auth().revoke_token(args.id)
    if args.json:
        _print_json(token.to_dict())
    else:
        print(f"token {token.id} of {token.user} revoked")
    return 0


# ---- permissions -----------------------------------------------------------------------------
def _subject_text(permission: Any) -> str:
    return f"user {permission.user}" if permission.user is not None else f"group {permission.group}"


def _resource_text(permission: Any) -> str:
    if permission.experiment_id is not None:
        return f"experiment {permission.experiment_id}"
    return f"model {permission.model_name}"


def _permissions_grant(args: argparse.Namespace) -> int:
    permission = _auth().grant_permission(
        args.level, user=args.user, group=args.group, experiment_id=args.experiment, model_name=args.model
    )
    if args.json:
        _print_json(permission.to_dict())
    else:
        print(f"{_subject_text(permission)} has {permission.level} on {_resource_text(permission)}")
    return 0


def _permissions_revoke(args: argparse.Namespace) -> int:
    _auth().revoke_permission(
        user=args.user, group=args.group, experiment_id=args.experiment, model_name=args.model
    )
    subject = f"user {args.user}" if args.user is not None else f"group {args.group}"
    resource = f"experiment {args.experiment}" if args.experiment is not None else f"model {args.model}"
    if args.json:
        _print_json(
            {
                "revoked": True,
                "user": args.user,
                "group": args.group,
                "experiment_id": args.experiment,
                "model_name": args.model,
            }
        )
    else:
        print(f"grant of {subject} on {resource} revoked")
    return 0


def _permissions_list(args: argparse.Namespace) -> int:
    permissions = _auth().list_permissions(experiment_id=args.experiment, model_name=args.model)
    if args.json:
        emit([p.to_dict() for p in permissions], PERMISSION_COLUMNS, as_json=True)
    else:
        rows = [
            {"subject": _subject_text(p), "resource": _resource_text(p), "level": p.level}
            for p in permissions
        ]
        emit(rows, PERMISSION_COLUMNS, as_json=False)
    return 0


# ---- whoami ----------------------------------------------------------------------------------
def _whoami(args: argparse.Namespace) -> int:
    identity = _auth().whoami()
    if args.json:
        _print_json(identity.to_dict())
        return 0
    if not identity.auth_enabled:
        print(
            f"{identity.name or 'anonymous'} (the server does not enforce auth: every caller may do everything)"
        )
        return 0
    kind = "service account" if identity.service_account else "user"
    for key, value in (
        ("name", identity.name),
        ("kind", kind + (", admin" if identity.admin else "")),
        ("groups", ", ".join(identity.groups)),
        ("auth method", identity.auth_method),
        ("token id", identity.token_id),
    ):
        print(f"{key + ':':<14}{value}")
    return 0


# ---- events ----------------------------------------------------------------------------------
def _event_line(event: Any) -> str:
    resource = f"{event.resource_type}:{event.resource_id}" if event.resource_id else event.resource_type
    return " ".join(
        part
        for part in (
            str(event.id),
            _time(event.time),
            event.actor or "-",
            event.method,
            resource or "-",
            event.outcome,
        )
        if part
    )


def _event_row(event: Any) -> dict[str, Any]:
    return {**event.to_dict(), "time": _time(event.time)}


def _events_list(args: argparse.Namespace) -> int:
    events = _audit().list_events(
        actor=args.actor,
        model_name=args.model,
        experiment_id=args.experiment,
        method=args.method,
        since=args.since,
        until=args.until,
        resource_type=args.resource_type,
        resource_id=args.resource_id,
        max_results=args.max_results,
    )
    if args.json:
        emit([e.to_dict() for e in events], EVENT_COLUMNS, as_json=True)
    else:
        emit([_event_row(e) for e in events], EVENT_COLUMNS, as_json=False)
    return 0


def _events_watch(args: argparse.Namespace) -> int:
    events = _audit().watch_events(
        after_id=args.after,
        actor=args.actor,
        method=args.method,
        model_name=args.model,
        experiment_id=args.experiment,
    )
    try:
        for event in events:
            line = json.dumps(event.to_dict()) if args.json else _event_line(event)
            print(line, flush=True)  # one line per event as it comes, also into a pipe
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a watch ends
    except BrokenPipeError:
        # The reader went away (`keel events watch | head`): stop quietly, and keep Python's
        # exit-time flush of stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        events.close()
    return 0
