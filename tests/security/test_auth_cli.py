"""``keel users|groups|tokens|permissions|whoami|events`` as a user runs them: the real ``keel``
command as a child process against a server with auth on (``auth=True`` and an admin token), each
form as text and as ``--json``; a token made with ``keel tokens create`` authenticating the next
command, and refused once revoked; usage mistakes refused with one line; ``keel events watch``
following new events, stopped by Ctrl-C, and resuming across a server restart without a gap or a
duplicate. The SDK's client-side checks (levels, selectors, ``--since`` forms) are covered too."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backends import make_database_url
from server_fixtures import ServerHandle, free_port, running_server, server_process

import keel
import keel._transport
from keel.audit import AuditClient, parse_time
from keel.auth import AuthClient
from keel.exceptions import InvalidArgument, Unavailable

ADMIN_TOKEN = secrets.token_urlsafe(24)
# The `keel` console script of this environment (the module where it is not installed).
_SCRIPT = Path(sys.executable).with_name("keel")
KEEL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "keel.cli"]
COMMAND_TIMEOUT_S = 60.0
WATCH_TIMEOUT_S = 30.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    root = tmp_path_factory.mktemp("auth-cli")
    with make_database_url("sqlite", root) as db_url:
        with running_server(db_url, f"file://{root}/artifacts", auth=True, admin_token=ADMIN_TOKEN) as handle:
            yield handle


def _environment(token: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    # Only what the test gives: no tracking URI, token or TLS setting of the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    if token is not None:
        env["KEEL_TRACKING_TOKEN"] = token
    return {**env, **(extra or {})}


def keel_cli(
    server: ServerHandle, *argv: str, token: str | None = ADMIN_TOKEN, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``keel --tracking-uri <server> ARGV`` with ``token`` as KEEL_TRACKING_TOKEN."""
    return subprocess.run(
        [*KEEL, "--tracking-uri", server.uri, *argv],
        capture_output=True,
        text=True,
        env=_environment(token, env),
        timeout=COMMAND_TIMEOUT_S,
    )


def ok(server: ServerHandle, *argv: str, token: str | None = ADMIN_TOKEN) -> str:
    """Stdout of a command that must succeed."""
    result = keel_cli(server, *argv, token=token)
    assert result.returncode == 0, f"keel {' '.join(argv)} failed: {result.stderr}"
    return result.stdout


def ok_json(server: ServerHandle, *argv: str, token: str | None = ADMIN_TOKEN) -> Any:
    return json.loads(ok(server, *argv, "--json", token=token))


def fails(server: ServerHandle, *argv: str, code: int = 1, token: str | None = ADMIN_TOKEN) -> str:
    """The stderr of a command that must fail with exit ``code``: one line for a server or SDK
    error (code 1); argparse's usage and its error line for a usage mistake (code 2)."""
    result = keel_cli(server, *argv, token=token)
    assert result.returncode == code, (
        f"keel {' '.join(argv)}: {result.returncode} {result.stdout} {result.stderr}"
    )
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    else:
        assert lines[0].startswith("usage: keel "), result.stderr
    return result.stderr


def new_token(server: ServerHandle, user: str, *extra: str) -> tuple[str, str]:
    """(id, secret) of a fresh token for ``user``, made by the admin with ``--json``."""
    created = ok_json(server, "tokens", "create", "--user", user, *extra)
    return created["id"], created["token"]


@pytest.fixture()
def admin_sdk(server: ServerHandle) -> Iterator[keel.Client]:
    """A ``keel.Client`` of the server calling as the admin (for resources the CLI cannot make)."""
    keel.set_tracking_token(ADMIN_TOKEN)
    try:
        yield keel.Client(server.uri)
    finally:
        keel.set_tracking_token(None)


# ---- whoami ----------------------------------------------------------------------------------
def test_whoami_as_admin_as_text_and_json_and_through_the_environment(server: ServerHandle) -> None:
    identity = ok_json(server, "whoami")
    assert identity["admin"] is True and identity["auth_enabled"] is True
    assert identity["auth_method"] == "admin-token" and identity["token_id"] == ""
    text = ok(server, "whoami")
    assert identity["name"] in text and "admin-token" in text

    # KEEL_TRACKING_URI instead of --tracking-uri.
    result = subprocess.run(
        [*KEEL, "whoami", "--json"],
        capture_output=True,
        text=True,
        env=_environment(ADMIN_TOKEN, {"KEEL_TRACKING_URI": server.uri}),
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == identity["name"]


def test_whoami_without_or_with_a_bad_token_is_unauthenticated(server: ServerHandle) -> None:
    assert "UNAUTHENTICATED" in fails(server, "whoami", token=None)
    assert "UNAUTHENTICATED" in fails(server, "whoami", "--json", token=secrets.token_urlsafe(24))
    # A token keel cannot send (a space in it) is refused before any call.
    assert "INVALID_TRACKING_TOKEN" in fails(server, "whoami", token="two words")


def test_whoami_without_auth_on_the_server(tmp_path: Path) -> None:
    # A `keel server` process: a second in-process server would share this process's database
    # proxy with the module's server.
    env = {
        "KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts",
    }
    with server_process(env=env, cwd=tmp_path) as plain:
        assert ok_json(plain, "whoami", token=None)["auth_enabled"] is False
        assert "does not enforce auth" in ok(plain, "whoami", token=None)


# ---- users -----------------------------------------------------------------------------------
def test_users_create_list_disable(server: ServerHandle) -> None:
    alice, bot, root = unique("alice"), unique("bot"), unique("root")
    assert ok(server, "users", "create", alice).strip() == f"user {alice} created"
    created = ok_json(server, "users", "create", bot, "--service-account")
    assert created["name"] == bot and created["service_account"] is True and created["admin"] is False
    assert created["disabled"] is False and created["creation_time"] > 0 and created["groups"] == []
    assert ok(server, "users", "create", root, "--admin").strip() == f"user {root} created (admin)"

    listed = {u["name"]: u for u in ok_json(server, "users", "list")}
    assert {alice, bot, root} <= listed.keys()
    assert listed[root]["admin"] is True and listed[bot]["service_account"] is True
    names = [u["name"] for u in ok_json(server, "users", "list")]
    assert names == sorted(names)
    table = ok(server, "users", "list").splitlines()
    assert table[0].split()[:2] == ["NAME", "KIND"]
    assert any(line.startswith(bot) and "service account" in line for line in table)

    assert "disabled" in ok(server, "users", "disable", alice)
    disabled = ok_json(server, "users", "disable", bot)
    assert disabled["name"] == bot and disabled["disabled"] is True

    assert "ALREADY_EXISTS" in fails(server, "users", "create", alice)
    assert "INVALID_ARGUMENT" in fails(server, "users", "create", "not a name!")
    assert "NOT_FOUND" in fails(server, "users", "disable", unique("ghost"))
    fails(server, "users", "create", code=2)  # NAME missing


def test_disabled_users_token_stops_working(server: ServerHandle) -> None:
    carol = unique("carol")
    ok(server, "users", "create", carol)
    _, secret = new_token(server, carol)
    assert ok_json(server, "whoami", token=secret)["name"] == carol
    ok(server, "users", "disable", carol)
    assert "UNAUTHENTICATED" in fails(server, "whoami", token=secret)


def test_users_commands_need_an_admin(server: ServerHandle) -> None:
    dave = unique("dave")
    ok(server, "users", "create", dave)
    _, secret = new_token(server, dave)
    assert "PERMISSION_DENIED" in fails(server, "users", "create", unique("x"), token=secret)
    assert "PERMISSION_DENIED" in fails(server, "users", "list", "--json", token=secret)


# ---- groups ----------------------------------------------------------------------------------
def test_groups_create_add_remove_list(server: ServerHandle) -> None:
    team, erin, frank = unique("team"), unique("erin"), unique("frank")
    ok(server, "users", "create", erin)
    ok(server, "users", "create", frank)
    assert ok(server, "groups", "create", team).strip() == f"group {team} created"
    assert "ALREADY_EXISTS" in fails(server, "groups", "create", team)
    assert ok_json(server, "groups", "create", unique("other"))["members"] == []

    assert ok(server, "groups", "add-member", team, erin).strip() == f"{erin} is a member of group {team}"
    group = ok_json(server, "groups", "add-member", team, frank)
    assert group["name"] == team and group["members"] == sorted([erin, frank])
    assert ok_json(server, "groups", "add-member", team, frank)["members"] == sorted(
        [erin, frank]
    )  # twice: fine
    user = {u["name"]: u for u in ok_json(server, "users", "list")}[erin]
    assert team in user["groups"]

    listed = {g["name"]: g for g in ok_json(server, "groups", "list")}
    assert listed[team]["members"] == sorted([erin, frank])
    table = ok(server, "groups", "list").splitlines()
    assert table[0].split() == ["NAME", "MEMBERS", "CREATED"]
    assert any(line.startswith(team) and erin in line for line in table)

    assert ok(server, "groups", "remove-member", team, erin).strip() == f"{erin} removed from group {team}"
    assert ok_json(server, "groups", "remove-member", team, frank)["members"] == []
    assert "NOT_FOUND" in fails(server, "groups", "remove-member", team, frank)
    assert "NOT_FOUND" in fails(server, "groups", "add-member", unique("ghost"), erin)
    assert "NOT_FOUND" in fails(server, "groups", "add-member", team, unique("ghost"))
    fails(server, "groups", "add-member", team, code=2)  # USER missing


# ---- tokens ----------------------------------------------------------------------------------
def test_token_create_use_list_revoke(server: ServerHandle) -> None:
    gina = unique("gina")
    ok(server, "users", "create", gina)

    # Text: the secret alone on stdout (so $(keel tokens create ...) works), the id on stderr.
    result = keel_cli(server, "tokens", "create", "--user", gina, "--name", "laptop")
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret and len(result.stdout.splitlines()) == 1 and "shown only now" in result.stderr
    identity = ok_json(server, "whoami", token=secret)
    assert identity["name"] == gina and identity["admin"] is False
    assert identity["auth_method"] == "token" and identity["token_id"] in result.stderr
    text = ok(server, "whoami", token=secret)
    assert gina in text and identity["token_id"] in text

    # JSON: id and token, and the token works too.
    token_id, secret2 = new_token(server, gina, "--name", "ci", "--expires-in", "3600")
    assert ok_json(server, "whoami", token=secret2)["token_id"] == token_id
    listed = ok_json(server, "tokens", "list", "--user", gina)
    assert [t["name"] for t in listed] == ["ci", "laptop"]  # newest first
    assert all("token" not in t and secret not in json.dumps(t) for t in listed)
    in_an_hour = listed[0]["creation_time"] + 3600 * 1000
    assert abs(listed[0]["expiry_time"] - in_an_hour) < 5000 and listed[1]["expiry_time"] == 0
    # A user lists its own tokens without --user.
    assert {t["id"] for t in ok_json(server, "tokens", "list", token=secret)} == {t["id"] for t in listed}
    table = ok(server, "tokens", "list", "--user", gina).splitlines()
    assert table[0].split() == ["ID", "USER", "NAME", "STATE", "CREATED", "EXPIRES"]
    assert all("active" in line for line in table[1:]) and len(table) == 3

    # Revoking: text, then --json; the revoked token is refused at once.
    assert (
        ok(server, "tokens", "revoke", identity["token_id"]).strip()
        == f"token {identity['token_id']} of {gina} revoked"
    )
    assert "UNAUTHENTICATED" in fails(server, "whoami", token=secret)
    revoked = ok_json(server, "tokens", "revoke", token_id, token=secret2)  # its owner may revoke it
    assert revoked["id"] == token_id and revoked["revoked_time"] > 0
    assert "UNAUTHENTICATED" in fails(server, "tokens", "list", token=secret2)
    states = [line.split()[3] for line in ok(server, "tokens", "list", "--user", gina).splitlines()[1:]]
    assert states == ["revoked", "revoked"]

    assert "NOT_FOUND" in fails(server, "tokens", "revoke", unique("nope"))
    assert "NOT_FOUND" in fails(server, "tokens", "create", "--user", unique("ghost"))


def test_token_bad_inputs(server: ServerHandle) -> None:
    henry = unique("henry")
    ok(server, "users", "create", henry)
    assert "--user" in fails(server, "tokens", "create", code=2)
    assert "invalid int value" in fails(
        server, "tokens", "create", "--user", henry, "--expires-in", "soon", code=2
    )
    assert "INVALID_EXPIRY" in fails(server, "tokens", "create", "--user", henry, "--expires-in", "0")
    assert "INVALID_EXPIRY" in fails(
        server, "tokens", "create", "--user", henry, "--expires-in", "-5", "--json"
    )
    # Another user's tokens are not for a non-admin to make or see.
    other = unique("iris")
    ok(server, "users", "create", other)
    _, secret = new_token(server, henry)
    assert "PERMISSION_DENIED" in fails(server, "tokens", "create", "--user", other, token=secret)
    assert "PERMISSION_DENIED" in fails(server, "tokens", "list", "--user", other, token=secret)


# ---- permissions -----------------------------------------------------------------------------
def test_permissions_grant_list_revoke(server: ServerHandle, admin_sdk: keel.Client) -> None:
    model = unique("fraud")
    admin_sdk.create_registered_model(model)
    experiment_id = admin_sdk.create_experiment(unique("exp"))
    ivy, team = unique("ivy"), unique("team")
    creator = ok_json(server, "whoami")["name"]  # the creator of a resource gets MANAGE on it
    ok(server, "users", "create", ivy)
    ok(server, "groups", "create", team)

    assert ok(server, "permissions", "grant", "--user", ivy, "--model", model, "edit").strip() == (
        f"user {ivy} has EDIT on model {model}"
    )
    granted = ok_json(server, "permissions", "grant", "--group", team, "--model", model, "READ")
    assert granted == {
        "level": "READ",
        "user": None,
        "group": team,
        "experiment_id": None,
        "model_name": model,
    }
    listed = ok_json(server, "permissions", "list", "--model", model)
    assert [(p["user"], p["group"], p["level"]) for p in listed] == [
        *sorted([(creator, None, "MANAGE"), (ivy, None, "EDIT")]),  # users first, by name
        (None, team, "READ"),
    ]
    table = ok(server, "permissions", "list", "--model", model).splitlines()
    assert table[0].split() == ["SUBJECT", "RESOURCE", "LEVEL"]
    assert any(f"user {ivy}" in line and "EDIT" in line for line in table)
    assert f"group {team}" in table[-1] and "READ" in table[-1]

    # A grant replaces the subject's earlier one.
    ok(server, "permissions", "grant", "--user", ivy, "--model", model, "MANAGE")
    levels = {
        p["user"] or p["group"]: p["level"] for p in ok_json(server, "permissions", "list", "--model", model)
    }
    assert levels == {creator: "MANAGE", ivy: "MANAGE", team: "READ"}

    granted = ok_json(server, "permissions", "grant", "--user", ivy, "--experiment", experiment_id, "USE")
    assert granted["experiment_id"] == experiment_id and granted["model_name"] is None
    on_experiment = ok_json(server, "permissions", "list", "--experiment", experiment_id)
    assert {(p["user"], p["level"]) for p in on_experiment} == {(creator, "MANAGE"), (ivy, "USE")}
    assert f"experiment {experiment_id}" in ok(server, "permissions", "list", "--experiment", experiment_id)

    assert "revoked" in ok(server, "permissions", "revoke", "--user", ivy, "--model", model)
    assert ok_json(server, "permissions", "revoke", "--group", team, "--model", model)["revoked"] is True
    assert [p["user"] for p in ok_json(server, "permissions", "list", "--model", model)] == [creator]
    ok(server, "permissions", "revoke", "--user", creator, "--model", model)
    assert ok_json(server, "permissions", "list", "--model", model) == []
    assert ok(server, "permissions", "list", "--model", model).strip() == "(none)"
    assert "NOT_FOUND" in fails(server, "permissions", "revoke", "--user", ivy, "--model", model)
    assert "NOT_FOUND" in fails(
        server, "permissions", "grant", "--user", ivy, "--model", unique("ghost"), "READ"
    )
    assert "NOT_FOUND" in fails(
        server, "permissions", "grant", "--user", unique("ghost"), "--model", model, "READ"
    )


def test_permissions_follow_the_grant(server: ServerHandle, admin_sdk: keel.Client) -> None:
    """Without a grant a user (default READ) cannot manage a model; MANAGE lets it grant."""
    model, jack, kim = unique("churn"), unique("jack"), unique("kim")
    admin_sdk.create_registered_model(model)
    ok(server, "users", "create", jack)
    ok(server, "users", "create", kim)
    _, secret = new_token(server, jack)
    assert "PERMISSION_DENIED" in fails(
        server, "permissions", "grant", "--user", kim, "--model", model, "READ", token=secret
    )
    assert "PERMISSION_DENIED" in fails(server, "permissions", "list", "--model", model, token=secret)
    ok(server, "permissions", "grant", "--user", jack, "--model", model, "MANAGE")
    ok(server, "permissions", "grant", "--user", kim, "--model", model, "READ", token=secret)
    listed = ok_json(server, "permissions", "list", "--model", model, token=secret)
    assert {p["user"]: p["level"] for p in listed if p["user"] in (jack, kim)} == {
        jack: "MANAGE",
        kim: "READ",
    }


def test_permissions_bad_inputs(server: ServerHandle) -> None:
    assert "INVALID_PERMISSION_LEVEL" in fails(
        server, "permissions", "grant", "--user", "u", "--model", "m", "SUPER"
    )
    assert "not allowed with argument --user" in fails(
        server, "permissions", "grant", "--user", "u", "--group", "g", "--model", "m", "READ", code=2
    )
    assert "one of the arguments --user --group is required" in fails(
        server, "permissions", "grant", "--model", "m", "READ", code=2
    )
    assert "not allowed with argument --experiment" in fails(
        server, "permissions", "grant", "--user", "u", "--experiment", "1", "--model", "m", "READ", code=2
    )
    assert "one of the arguments --experiment --model is required" in fails(
        server, "permissions", "revoke", "--user", "u", code=2
    )
    assert "not allowed with argument --user" in fails(
        server, "permissions", "revoke", "--user", "u", "--group", "g", "--model", "m", code=2
    )
    assert "required" in fails(server, "permissions", "list", "--json", code=2)
    assert "LEVEL" in fails(server, "permissions", "grant", "--user", "u", "--model", "m", code=2)


def test_sdk_refuses_bad_grants_before_calling() -> None:
    auth = AuthClient("grpc://127.0.0.1:1")  # nothing listens there: a call would be UNAVAILABLE
    with pytest.raises(InvalidArgument, match="NONE, READ, USE, EDIT, MANAGE"):
        auth.grant_permission("ADMIN", user="u", model_name="m")
    with pytest.raises(InvalidArgument, match="not both or neither"):
        auth.grant_permission("READ", user="u", group="g", model_name="m")
    with pytest.raises(InvalidArgument, match="not both or neither"):
        auth.revoke_permission(user="u")
    with pytest.raises(InvalidArgument, match="not both or neither"):
        auth.list_permissions(experiment_id="1", model_name="m")
    with pytest.raises(InvalidArgument, match="expires_in"):
        auth.create_token("u", expires_in=0)
    with pytest.raises(InvalidArgument, match="max_results"):
        auth.list_users(max_results=0)
    with pytest.raises(InvalidArgument, match="after_id"):
        next(AuditClient("grpc://127.0.0.1:1").watch_events(after_id=-1))


# ---- events ----------------------------------------------------------------------------------
def test_since_forms() -> None:
    now = 1_714_557_600_000  # 2024-05-01T10:00:00Z
    assert parse_time("1714557600000") == now
    assert parse_time(now) == now
    assert parse_time("2024-05-01T10:00:00Z") == now
    assert parse_time("2024-05-01T10:00:00") == now  # no offset: UTC
    assert parse_time("2024-05-01T12:00:00+02:00") == now
    assert parse_time(dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)) == now
    assert parse_time("10m", now_ms=now) == now - 600_000
    assert parse_time("2h", now_ms=now) == now - 7_200_000
    assert parse_time("1d", now_ms=now) == now - 86_400_000
    assert parse_time("30S", now_ms=now) == now - 30_000
    assert parse_time(None) == 0
    for bad in ("", "soon", "10y", "-5", "1.5h", "2024-13-01", str(2**63), -1, "1969-12-31T00:00:00Z"):
        with pytest.raises(InvalidArgument, match="INVALID_TIME|ms since epoch"):
            parse_time(bad)  # type: ignore[arg-type]


def test_events_list_filters_and_forms(server: ServerHandle, admin_sdk: keel.Client) -> None:
    before = int(time.time() * 1000)
    lena, model = unique("lena"), unique("risk")
    ok(server, "users", "create", lena)
    admin_sdk.create_registered_model(model)
    ok(server, "permissions", "grant", "--user", lena, "--model", model, "READ")
    _, secret = new_token(server, lena)
    fails(server, "users", "list", token=secret)  # a refused attempt is recorded too

    events = ok_json(server, "events", "list")
    assert events and [e["id"] for e in events] == sorted(e["id"] for e in events)
    for field in ("id", "time", "actor", "method", "resource_type", "resource_id", "outcome"):
        assert all(field in e for e in events), field
    created = [e for e in events if e["method"] == "CreateUser" and e["resource_id"] == lena]
    assert len(created) == 1 and created[0]["resource_type"] == "user" and created[0]["outcome"] == "OK"
    assert created[0]["time"] >= before - 1000

    by_method = ok_json(server, "events", "list", "--method", "CreateUser")
    assert by_method and all(e["method"] == "CreateUser" for e in by_method)
    on_model = ok_json(server, "events", "list", "--model", model)
    assert {e["method"] for e in on_model} >= {"CreateRegisteredModel", "GrantPermission"}
    denied = ok_json(server, "events", "list", "--actor", lena)
    assert [(e["method"], e["outcome"]) for e in denied] == [("ListUsers", "DENIED")]
    # --since: an age, an ISO time and ms all bound the list; the future leaves it empty.
    for since in (
        "1h",
        dt.datetime.fromtimestamp(before / 1000 - 1, tz=dt.UTC).isoformat(),
        str(before - 1000),
    ):
        assert lena in {e["resource_id"] for e in ok_json(server, "events", "list", "--since", since)}
    assert ok_json(server, "events", "list", "--since", str(before + 3_600_000)) == []
    assert len(ok_json(server, "events", "list", "--max-results", "2")) == 2

    table = ok(server, "events", "list", "--actor", lena).splitlines()
    assert table[0].split() == ["ID", "TIME", "ACTOR", "METHOD", "RESOURCE_TYPE", "RESOURCE_ID", "OUTCOME"]
    assert "ListUsers" in table[1] and "DENIED" in table[1]

    assert "INVALID_TIME" in fails(server, "events", "list", "--since", "yesterday")
    # Seeing every event is for admins; lena may not list the user events.
    assert all(e["resource_type"] != "user" for e in ok_json(server, "events", "list", token=secret))


def test_watch_gives_up_when_the_server_stays_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnecting is bounded by the transport's retry budget (shortened here to keep it quick)."""
    monkeypatch.setattr(keel._transport, "RETRY_BUDGET_S", 1.0)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        next(AuditClient(f"grpc://127.0.0.1:{free_port()}").watch_events())
    assert time.monotonic() - started < 10.0


class _Lines:
    """Reads a child's stdout on a thread so the test waits for lines with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, wanted: Any, timeout: float = WATCH_TIMEOUT_S) -> list[str]:
        """Lines up to and including the first for which ``wanted(line)`` holds."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching line within {timeout}s; got {seen}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the watch ended before a matching line; got {seen}")
            seen.append(line)
            if wanted(line):
                return seen


@contextlib.contextmanager
def watching(uri: str, *argv: str) -> Iterator[tuple[subprocess.Popen[str], _Lines]]:
    process = subprocess.Popen(
        [*KEEL, "--tracking-uri", uri, "events", "watch", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(ADMIN_TOKEN),
    )
    try:
        yield process, _Lines(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=COMMAND_TIMEOUT_S)


def _interrupt(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=COMMAND_TIMEOUT_S)
    return code, process.stderr.read() if process.stderr else ""


def test_events_watch_prints_new_events_until_ctrl_c(server: ServerHandle) -> None:
    first, second = unique("mia"), unique("noah")
    ok(server, "users", "create", first)
    with watching(server.uri, "--json") as (process, lines):
        # The earlier event arrives first (the watch is connected), then one made afterwards.
        seen = lines.until(lambda line: first in line)
        ok(server, "users", "create", second)
        seen += lines.until(lambda line: second in line)
        events = [json.loads(line) for line in seen]
        ids = [e["id"] for e in events]
        assert ids == sorted(set(ids)) and all({"id", "time", "actor", "method"} <= e.keys() for e in events)
        code, stderr = _interrupt(process)
    assert code == 0 and stderr == ""

    after = events[-1]["id"]
    third = unique("olga")
    ok(server, "users", "create", third)
    (event,) = [e for e in ok_json(server, "events", "list", "--method", "CreateUser") if third in e["after"]]
    with watching(server.uri, "--after", str(after), "--method", "CreateUser") as (process, lines):
        # Text: one line per event, from the first after --after, of the method asked for.
        first_line, *_ = lines.until(lambda line: line.split()[0] == str(event["id"]))
        assert int(first_line.split()[0]) > after and "CreateUser" in first_line and "admin" in first_line
        code, stderr = _interrupt(process)
    assert code == 0 and stderr == ""


def test_events_watch_resumes_after_a_server_restart(tmp_path: Path) -> None:
    """The watch outlives a restart of the server (same port and database): it reconnects and
    goes on after the last event it printed, with no event missed or printed twice."""
    port = free_port()
    env = {
        "KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts",
        "KEEL_AUTH": "true",
        "KEEL_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    uri = f"grpc://127.0.0.1:{port}"
    names = [unique("before"), unique("down"), unique("after")]
    with server_process(args=["--port", str(port)], env=env, cwd=tmp_path) as first:
        ok(first, "users", "create", names[0])
        with watching(uri, "--json") as (process, lines):
            seen = lines.until(lambda line: names[0] in line)
            # (the server_process context stops the server with SIGTERM here)
            first.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            first.process.wait(timeout=COMMAND_TIMEOUT_S)  # type: ignore[union-attr]
            with server_process(args=["--port", str(port)], env=env, cwd=tmp_path) as second:
                ok(second, "users", "create", names[1])
                ok(second, "users", "create", names[2])
                seen += lines.until(lambda line: names[2] in line)
                code, stderr = _interrupt(process)
    assert code == 0 and stderr == ""
    ids = [json.loads(line)["id"] for line in seen]
    assert ids == sorted(set(ids))  # no duplicate, in order
    with server_process(args=["--port", str(port)], env=env, cwd=tmp_path) as third:
        every = [e["id"] for e in ok_json(third, "events", "list")]
    assert ids == every[: len(ids)]  # no gap: every event up to the last one printed
    created = [json.loads(line)["after"] for line in seen if json.loads(line)["method"] == "CreateUser"]
    assert len(created) == 3 and all(name in after for name, after in zip(names, created, strict=True))
