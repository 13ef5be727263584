"""Fixtures of the console tests (API and browser): a real keel server in-process on SQLite with
the console on a free port.

``console_server`` (module scope) has auth off. ``console_server_factory(**overrides)`` starts
another one with any ``Settings`` overrides (``auth=True`` gets a fresh admin token unless one is
given) and stops it at the end of the module. Each handle has:

- ``grpc_uri`` (``grpc://127.0.0.1:P``), ``ui_url`` (``http://127.0.0.1:Q``, no trailing slash),
  ``settings``, ``admin_token`` ('' with auth off), ``root`` (its temp folder);
- ``client(token=None)``: a ``keel.Client`` of the server (with that bearer token);
- ``make_user(name, admin=False, service_account=False) -> token``: a user and a token of theirs
  (auth on only);
- ``grant(user, kind, name, level)``: a permission (``kind`` "experiment" or "registered_model",
  ``level`` "READ" / "USE" / "EDIT" / "MANAGE").

All servers of one test module share one SQLite database and artifact folder: keel's database
proxy is one per process (the last server started points it at its database), so separate
databases would silently swap under the servers started first. Name what each test creates.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from server_fixtures import ServerHandle, free_port, running_server

from keel_server.common.config import Settings


@dataclass
class ConsoleServer:
    grpc_uri: str
    ui_url: str
    settings: Settings
    root: Path
    handle: ServerHandle
    admin_token: str = ""
    _clients: list[Any] = field(default_factory=list)

    @property
    def ui_port(self) -> int:
        return self.handle.running.front_doors["ui"].port  # type: ignore[union-attr]

    def client(self, token: str | None = None) -> Any:
        """A ``keel.Client`` of this server; sets the SDK's (process-wide) tracking token to
        ``token`` (the admin's with auth on and no token given) and the fluent API's URI."""
        import keel

        if token is None and self.settings.auth:
            token = self.admin_token
        keel.set_tracking_token(token or None)
        keel.set_tracking_uri(self.grpc_uri)
        return keel.Client(self.grpc_uri)

    def _auth_call(self, method: str, request: Any) -> Any:
        from keel.auth.v1 import auth_pb2_grpc
        from keel.channels import open_plain_channel

        channel = open_plain_channel(self.grpc_uri)
        try:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            return getattr(stub, method)(
                request, metadata=(("authorization", f"Bearer {self.admin_token}"),), timeout=30
            )
        finally:
            channel.close()

    def make_user(self, name: str, admin: bool = False, service_account: bool = False) -> str:
        """Creates user ``name`` and returns a token of theirs (auth on only)."""
        from keel.auth.v1 import auth_pb2 as pb

        self._auth_call("CreateUser", pb.CreateUserRequest(name=name, admin=admin, service_account=service_account))
        return str(self._auth_call("CreateToken", pb.CreateTokenRequest(user=name, name="console-test")).secret)

    def grant(self, user: str, kind: str, name: str, level: str) -> None:
        """Grants ``user`` ``level`` on the experiment (id) or registered model (name) ``name``."""
        from keel.auth.v1 import auth_pb2 as pb

        resource_field = {"experiment": "experiment_id", "registered_model": "model_name"}[kind]
        self._auth_call(
            "GrantPermission",
            pb.GrantPermissionRequest(
                subject=pb.Subject(user=user),
                resource=pb.Resource(**{resource_field: name}),
                level=pb.PermissionLevel.Value(f"PERMISSION_LEVEL_{level}"),
            ),
        )


@contextlib.contextmanager
def _console(root: Path, **overrides: Any) -> Iterator[ConsoleServer]:
    admin_token = ""
    if overrides.get("auth"):
        admin_token = overrides.setdefault("admin_token", "admin-" + secrets.token_hex(16))
    # ui_port 0 means "no console" to build_server, so take a free port.
    if not overrides.get("ui_port"):
        overrides["ui_port"] = free_port()
    db_url = f"sqlite:///{root}/keel.db"
    with running_server(db_url, f"file://{root}/artifacts", **overrides) as handle:
        assert handle.running is not None
        door = handle.running.front_doors["ui"]
        yield ConsoleServer(
            grpc_uri=handle.uri,
            ui_url=f"http://127.0.0.1:{door.port}",
            settings=handle.settings,
            root=root,
            handle=handle,
            admin_token=admin_token,
        )


@pytest.fixture(scope="module")
def console_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The database and artifact folder of every console server of the module."""
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="module")
def console_server(console_root: Path) -> Iterator[ConsoleServer]:
    """keel (all services, SQLite, local artifacts, auth off) with the console on a free port."""
    with _console(console_root) as server:
        yield server


@pytest.fixture(scope="module")
def console_server_factory(console_root: Path) -> Iterator[Callable[..., ConsoleServer]]:
    """``factory(**settings_overrides) -> ConsoleServer``; every server started is stopped at the
    end of the module."""
    with contextlib.ExitStack() as stack:

        def factory(**overrides: Any) -> ConsoleServer:
            return stack.enter_context(_console(console_root, **overrides))

        yield factory
