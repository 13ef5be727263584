"""Server settings: read once (flags over ``KEEL_*`` variables over defaults) into a frozen object.

The object is passed explicitly to the server, stores and artifact backends; nothing reads the
environment after start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

ALL_SERVICES = ("tracking", "registry", "artifacts", "inference")
# Permission levels, lowest first (keel.auth.v1.PermissionLevel without the prefix).
PERMISSION_LEVEL_NAMES = ("NONE", "READ", "USE", "EDIT", "MANAGE")


@dataclass(frozen=True)
class Settings:
    db_url: str = "sqlite:///keel.db"
    artifact_uri: str = "file://./keel-artifacts"
    s3_endpoint_url: str = ""
    s3_access_key: str = field(default="", repr=False)
    s3_secret_key: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int = 50051
    services: tuple[str, ...] = ALL_SERVICES
    # Worker threads of the gRPC server (also the size of the DB connection pool).
    max_workers: int = 16
    # Seconds in-flight calls get to finish after SIGTERM.
    grace_seconds: float = 10.0
    # Largest gRPC message accepted or sent, in bytes (large batches and tensors must pass).
    max_message_bytes: int = 256 * 1024 * 1024
    log_level: str = "INFO"
    log_json: bool = True
    # Optional Prometheus metrics HTTP port (0 = off).
    metrics_port: int = 0
    # Inference: optional MLflow-compatible HTTP scoring port (0 = off).
    http_port: int = 0
    # MLflow's REST API for the unmodified `mlflow` client (docs/mlflow-port.md; 0 = off).
    mlflow_port: int = 0
    # The web console (docs/console.md; 0 = off).
    ui_port: int = 0
    # Console behind a trusted proxy (docs/console.md): the request header naming the signed-in
    # user, and the token of an admin service account the console acts for that user with.
    ui_identity_header: str = ""
    ui_token: str = field(default="", repr=False)
    # Inference: seconds between polls of the registry for stage/alias moves.
    registry_poll_seconds: float = 2.0
    # Let several processes listen on one port (SO_REUSEPORT): `keel models serve --workers N`.
    reuse_port: bool = False
    # Where the services this process does not run are (grpc://host:port, or several replicas
    # as grpc://h1:p1,h2:p2); handed to clients by the discovery RPC. Empty: unknown here.
    # A version still PENDING_REGISTRATION this long after its last change was left by a server
    # that died mid-snapshot: the registry's sweeper finishes it or marks it FAILED_REGISTRATION.
    registration_timeout_seconds: float = 600.0
    tracking_address: str = ""
    registry_address: str = ""
    artifacts_address: str = ""
    inference_address: str = ""
    # Age (seconds without activity) after which an unfinished upload counts as dead: its local
    # staging file (``<root>/.keel-staging``) or its S3 multipart upload is removed by the sweep
    # at start and by the periodic sweep while running. 0 treats every upload that is not this
    # process's own as dead (tests only: it cuts the live uploads of other replicas).
    stale_upload_seconds: float = 3600.0
    # Auth (docs/auth.md). Off: every caller may do everything, as without auth.
    auth: bool = False
    # A bearer token for the built-in admin user, so a fresh deployment can create the rest.
    admin_token: str = field(default="", repr=False)
    # What an authenticated identity without a grant gets on a resource: NONE, READ, USE, EDIT
    # or MANAGE.
    default_permission: str = "READ"
    # The audit log: on with auth; KEEL_AUDIT=true turns it on without auth (actor "anonymous").
    audit: bool = False
    # TLS for the gRPC port and the HTTP endpoints (PEM files); a client CA turns on mutual TLS.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Defaults, then ``KEEL_<FIELD>`` variables, then non-None ``overrides`` (CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"KEEL_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, raw, cls)
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = _coerce(key, value, cls) if isinstance(value, str) else value
        settings = replace(cls(), **values)
        settings.validate()
        return settings

    def validate(self) -> None:
        unknown = [s for s in self.services if s not in ALL_SERVICES]
        if unknown or not self.services:
            raise ValueError(
                f"unknown service(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ALL_SERVICES)}"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range 0..65535")
        for service in ALL_SERVICES:
            address = self.address_of(service)
            if address and not address.startswith(("grpc://", "grpcs://")):
                raise ValueError(
                    f"KEEL_{service.upper()}_ADDRESS={address!r} is not a grpc:// or grpcs:// address "
                    "(grpc://host:port, or grpc://host1:port1,host2:port2 for replicas)"
                )
        if self.stale_upload_seconds < 0:
            raise ValueError(f"stale_upload_seconds must be >= 0, got {self.stale_upload_seconds}")
        if self.registration_timeout_seconds <= 0:
            raise ValueError(f"registration_timeout_seconds must be > 0, got {self.registration_timeout_seconds}")
        if self.default_permission.upper() not in PERMISSION_LEVEL_NAMES:
            raise ValueError(
                f"default_permission {self.default_permission!r} is not one of {', '.join(PERMISSION_LEVEL_NAMES)}"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key (KEEL_TLS_CERT, KEEL_TLS_KEY)")
        if self.ui_identity_header and not self.ui_token:
            raise ValueError(
                "KEEL_UI_IDENTITY_HEADER needs KEEL_UI_TOKEN: the token of the admin service account the "
                "console acts for the proxy's users with (docs/console.md)"
            )
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key too")

    @property
    def audit_enabled(self) -> bool:
        """The audit log is written with auth on, or when asked for without auth."""
        return self.auth or self.audit

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert)

    def address_of(self, service: str) -> str:
        """The configured address of ``service`` ('' when not set)."""
        return str(getattr(self, f"{service}_address"))


def _coerce(name: str, raw: str, cls: type[Settings]) -> Any:
    kind = {f.name: f.type for f in fields(cls)}.get(name)
    if kind is None:
        raise ValueError(f"unknown setting {name!r}")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind == "tuple[str, ...]":
            return tuple(s.strip() for s in raw.split(",") if s.strip())
    except ValueError as exc:
        raise ValueError(f"setting {name}={raw!r} is not a valid {kind}") from exc
    return raw
