"""Who is calling, and may they make this call: the checks the interceptor runs before a handler.

``authenticate`` turns the ``authorization: Bearer`` metadata (or, under mutual TLS, the client
certificate's common name) into a ``Caller``; ``authorize`` resolves the resources a call's
``policy.Rule`` names and compares the caller's level on each with what the rule needs.

Lookups are cached for ``CACHE_SECONDS`` so a call costs dictionary reads, not queries: a revoked
token, a disabled user or a changed grant takes effect on every replica within that time (and at
once on the replica that made the change). Which experiment a run belongs to never changes, so
that is cached without expiry.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from keel_server.auth import policy
from keel_server.auth.context import Caller
from keel_server.auth.store import ADMIN_USER, LEVEL_NAMES, LEVELS_BY_NAME, MANAGE, NONE, READ, AuthStore
from keel_server.common import uris
from keel_server.common.config import Settings
from keel_server.common.db import Deployment, Experiment, LoggedModel, RegisteredModel, Run, TransitionRequest
from keel_server.common.errors import KeelError, PermissionDenied, Unauthenticated, quote

CACHE_SECONDS = 0.5
_CACHE_LIMIT = 50_000
REGISTRY_FOLDER = "_registry"


@dataclass(frozen=True)
class Scope:
    """What a permission is checked on: an experiment (by id) or a registered model (by name).
    ``key`` is None when the resource does not exist (the default permission applies)."""

    kind: str  # "experiment" | "model" | "admin" (store paths outside any run or model)
    key: str | None


@dataclass(frozen=True)
class Decision:
    """What the audit log records about an allowed call."""

    resource_type: str
    resource_id: str
    scope: Scope | None


class _TtlCache:
    def __init__(self, ttl: float | None) -> None:
        self.ttl = ttl
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        found = self._items.get(key)
        if found is not None and (self.ttl is None or now - found[0] < self.ttl):
            return found[1]
        value = load()
        if len(self._items) >= _CACHE_LIMIT:
            self._items.clear()
        self._items[key] = (now, value)
        return value

    def clear(self) -> None:
        self._items.clear()


class Guard:
    def __init__(self, settings: Settings, store: AuthStore | None = None) -> None:
        self.settings = settings
        self.store = store or AuthStore()
        self.default_level = LEVELS_BY_NAME[settings.default_permission.upper()]
        self._admin_token = settings.admin_token
        self._admin: Caller | None = None
        self._admin_lock = threading.Lock()
        self._callers = _TtlCache(CACHE_SECONDS)
        self._levels = _TtlCache(CACHE_SECONDS)
        self._names = _TtlCache(CACHE_SECONDS)  # experiment/model names, deployments
        self._run_experiments = _TtlCache(None)

    def invalidate(self) -> None:
        """Forgets every cached identity and grant (this replica changed one)."""
        self._callers.clear()
        self._levels.clear()
        self._names.clear()

    # ------------------------------------------------------------------ authentication
    def authenticate(
        self, metadata: Mapping[str, str], context: grpc.ServicerContext | None, certificate_name: str | None = None
    ) -> Caller:
        """The caller of a gRPC call (its metadata and context) or of an HTTP request (its
        Authorization header as metadata, and its client certificate's common name)."""
        header = metadata.get("authorization", "")
        if header:
            scheme, _, credential = header.partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise Unauthenticated(
                    "the authorization metadata must be 'Bearer <token>'", reason="MALFORMED_CREDENTIALS"
                )
            return self.caller_for_token(credential.strip())
        certificate_name = certificate_name or _certificate_name(context)
        if certificate_name:
            caller = self._callers.get(("cert", certificate_name), lambda: self._load_certificate(certificate_name))
            if caller is None:
                raise Unauthenticated(
                    f"the client certificate's subject {quote(certificate_name)} is not a keel user or service "
                    "account: create it with `keel users create --service-account`, or send a token",
                    reason="UNKNOWN_CERTIFICATE",
                )
            return caller
        raise Unauthenticated(
            "this keel server requires authentication: send 'authorization: Bearer <token>' "
            "(set KEEL_TRACKING_TOKEN or keel.set_tracking_token())",
            reason="MISSING_CREDENTIALS",
        )

    def caller_for_token(self, token: str) -> Caller:
        if self._admin_token and hmac.compare_digest(token.encode(), self._admin_token.encode()):
            return self._admin_caller()
        caller = self._callers.get(("token", token), lambda: self._load_token(token))
        if caller is None:
            raise Unauthenticated(
                "the token is not valid: it is unknown, expired or revoked, or its user is disabled",
                reason="INVALID_TOKEN",
            )
        return caller

    def _admin_caller(self) -> Caller:
        if self._admin is None:
            with self._admin_lock:
                if self._admin is None:
                    user = self.store.ensure_admin()
                    self._admin = Caller(
                        name=user.name, principal_id=user.id, admin=True, auth_method="admin-token"
                    )
        return self._admin

    def _load_token(self, token: str) -> Caller | None:
        found = self.store.authenticate(token)
        if found is None:
            return None
        principal, token_id = found
        return self._caller_of(principal, "token", token_id)

    def _load_certificate(self, name: str) -> Caller | None:
        principal = self.store.principal_named(name)
        if principal is None or principal.disabled:
            return None
        return self._caller_of(principal, "certificate", "")

    def caller_named(self, name: str) -> Caller | None:
        """An enabled user or service account by name (cached like tokens), for an admin service
        account acting for it (``gate.ACT_AS_METADATA``); None when unknown or disabled."""

        def load() -> Caller | None:
            principal = self.store.principal_named(name)
            if principal is None or principal.disabled:
                return None
            return self._caller_of(principal, "act-as", "")

        return self._callers.get(("name", name), load)  # type: ignore[no-any-return]

    def _caller_of(self, principal: Any, method: str, token_id: str) -> Caller:
        return Caller(
            name=principal.name,
            principal_id=principal.id,
            admin=bool(principal.admin),
            service_account=bool(principal.service_account),
            group_ids=self.store.group_ids_of(principal.id),
            auth_method=method,
            token_id=token_id,
        )

    # ------------------------------------------------------------------ authorization
    def authorize(self, method: str, rule: policy.Rule, request: Any, caller: Caller | None) -> Decision:
        """Raises PERMISSION_DENIED unless ``caller`` may make this call; what to audit otherwise.
        With no caller (auth off, audit on) it only resolves what the call touches."""
        rpc = method.rsplit("/", 1)[-1]
        if rule.admin and caller is not None and not caller.admin:
            raise PermissionDenied(f"{rpc} is for administrators only", reason="ADMIN_ONLY")
        decision = Decision(rule.resource_type or "", "", None)
        for index, need in enumerate(rule.needs):
            value = _field(request, need.field)
            if _empty(value):
                continue  # an optional field (CreateModelVersion.run_id); the handler validates the rest
            level = need.level
            if method.endswith("/CreatePresignedUrl") and getattr(request, "method", 0) == 2:
                level = max(level, policy.EDIT)  # a presigned PUT writes
            scopes = self.scopes(need.kind, value, caller)
            for scope in scopes:
                if caller is not None and not caller.admin and self.level_on(caller, scope) < level:
                    raise PermissionDenied(
                        f"{caller.name} may not call {rpc} here: it needs {LEVEL_NAMES[level]} on "
                        f"{_describe(need, value)}",
                        reason="PERMISSION_DENIED",
                        metadata={"needs": LEVEL_NAMES[level]},
                    )
            if index == 0:
                decision = Decision(
                    rule.resource_type or _RESOURCE_TYPES.get(need.kind, need.kind),
                    _resource_id(rule, request, value),
                    scopes[0] if scopes else None,
                )
        if rule.resource_field and not decision.resource_id:
            decision = Decision(decision.resource_type, str(_field(request, rule.resource_field) or ""), decision.scope)
        return decision

    def scopes(self, kind: str, value: Any, caller: Caller | None) -> list[Scope]:
        """The experiments and models a request field refers to."""
        if kind == policy.EXPERIMENT:
            return [Scope("experiment", str(value) if self._experiment_exists(str(value)) else None)]
        if kind == policy.EXPERIMENT_NAME:
            return [Scope("experiment", self._experiment_by_name(str(value)))]
        if kind == policy.RUN:
            return [Scope("experiment", self._experiment_of_run(str(value)))]
        if kind == policy.RUNS:
            return [Scope("experiment", self._experiment_of_run(str(run_id))) for run_id in value] or []
        if kind == policy.LOGGED_MODEL:
            return [Scope("experiment", self._experiment_of_logged_model(str(value)))]
        if kind == policy.MODEL:
            return [Scope("model", str(value) if self._model_exists(str(value)) else None)]
        if kind == policy.MODEL_URI:
            return [self.scope_of_uri(str(value))]
        if kind == policy.ARTIFACT_REF:
            if value.run_id:
                return [Scope("experiment", self._experiment_of_run(value.run_id))]
            return [self.scope_of_uri(value.artifact_uri)]
        if kind == policy.ARTIFACT_URI:
            return [self.scope_of_uri(str(value))]
        if kind == policy.DEPLOYMENT:
            return [self._scope_of_deployment(str(value))]
        if kind == policy.GRANT_RESOURCE:
            which = value.WhichOneof("kind")
            if which == "experiment_id":
                return [Scope("experiment", value.experiment_id if self._experiment_exists(value.experiment_id) else None)]
            if which == "model_name":
                return [Scope("model", value.model_name if self._model_exists(value.model_name) else None)]
            return []
        if kind == policy.SELF_OR_ADMIN:
            if caller is None or caller.admin or not value or value == caller.name:
                return []
            return [Scope("admin", None)]
        if kind == policy.TOKEN_OWNER:
            if caller is None or caller.admin or self.store.token_owner(str(value)) == caller.name:
                return []
            return [Scope("admin", None)]
        if kind in (policy.TRANSITION_REQUEST, policy.TRANSITION_REQUEST_OF_OTHERS):
            found = self._transition_request(str(value))
            if kind == policy.TRANSITION_REQUEST_OF_OTHERS and (
                caller is None or (found is not None and found[1] == caller.name)
            ):
                return []
            return [Scope("model", found[0] if found is not None else None)]
        raise ValueError(f"unknown policy need kind {kind!r}")

    def level_on(self, caller: Caller, scope: Scope) -> int:
        """The caller's level on a scope: MANAGE for admins, else the highest of its grants and
        the default permission; the default alone on what does not exist."""
        if caller.admin:
            return MANAGE
        if scope.kind == "admin":
            return NONE
        if scope.key is None:
            return self.default_level
        key = (caller.principal_id, caller.group_ids, scope.kind, scope.key)
        return max(self.default_level, self._levels.get(key, lambda: self._grant_level(caller, scope)))

    def readable_ids(self, caller: Caller, kind: str) -> list[int] | None:
        """Ids of the experiments or models (``kind``) the caller may read; None for all of them."""
        if caller.admin or self.default_level >= READ:
            return None
        return list(
            self._levels.get(
                (caller.principal_id, caller.group_ids, "readable", kind),
                lambda: self.store.readable_ids(caller.principal_id, caller.group_ids, kind),
            )
        )

    def _grant_level(self, caller: Caller, scope: Scope) -> int:
        assert scope.key is not None
        if scope.kind == "model":
            model_id = self._model_id(scope.key)
            if model_id is None:
                return NONE
            return self.store.level(caller.principal_id, caller.group_ids, "model", str(model_id))
        return self.store.level(caller.principal_id, caller.group_ids, "experiment", scope.key)

    # ------------------------------------------------------------------ resolving resources
    def _experiment_exists(self, experiment_id: str) -> bool:
        if not experiment_id.isdigit() or len(experiment_id) > 18:
            return False
        return bool(
            self._names.get(
                ("experiment", experiment_id),
                lambda: Experiment.select().where(Experiment.experiment_id == int(experiment_id)).exists(),
            )
        )

    def _experiment_by_name(self, name: str) -> str | None:
        def load() -> str | None:
            row = Experiment.select(Experiment.experiment_id).where(Experiment.name == name).tuples().first()
            return None if row is None else str(row[0])

        return self._names.get(("experiment-name", name), load)

    def _experiment_of_run(self, run_id: str) -> str | None:
        found = self._run_experiments.get(run_id, lambda: _run_experiment(run_id))
        if found is None:
            self._run_experiments._items.pop(run_id, None)  # it may be created later: never cache absence
        return found

    def _experiment_of_logged_model(self, model_id: str) -> str | None:
        key = ("logged-model", model_id)
        found = self._run_experiments.get(key, lambda: _logged_model_experiment(model_id))
        if found is None:
            self._run_experiments._items.pop(key, None)  # it may be created later: never cache absence
        return found  # type: ignore[no-any-return]

    def _model_id(self, name: str) -> int | None:
        return self._names.get(("model", name), lambda: self.store.model_id(name))

    def _model_exists(self, name: str) -> bool:
        return self._model_id(name) is not None

    def scope_of_uri(self, uri: str) -> Scope:
        """The experiment or model a models:/, runs:/ or artifact store URI belongs to."""
        if uri.startswith("models:"):
            name = _parsed(lambda: uris.parse_models_uri(uri).name)
            return Scope("model", name if name and self._model_exists(name) else None)
        if uris.is_runs_uri(uri):
            run_id = _parsed(lambda: uris.parse_runs_uri(uri).run_id)
            return Scope("experiment", self._experiment_of_run(run_id) if run_id else None)
        segments = uri.partition("://")[2].split("/")
        if REGISTRY_FOLDER in segments:
            at = segments.index(REGISTRY_FOLDER)
            model_key = segments[at + 1] if at + 1 < len(segments) else ""
            name = self._model_name_by_id(model_key)
            return Scope("model", name) if name else Scope("admin", None)
        runs = [segments[i - 1] for i in range(1, len(segments)) if segments[i] == "artifacts" and segments[i - 1]]
        experiments = {self._experiment_of_run(run_id) for run_id in runs} - {None}
        if len(experiments) == 1:
            return Scope("experiment", experiments.pop())
        return Scope("admin", None)  # the store outside any one run: administrators only

    def _model_name_by_id(self, model_key: str) -> str | None:
        if not model_key.isdigit():
            return None
        from keel_server.common.db import RegisteredModel

        def load() -> str | None:
            row = RegisteredModel.select(RegisteredModel.name).where(RegisteredModel.id == int(model_key)).tuples().first()
            return None if row is None else str(row[0])

        return self._names.get(("model-id", model_key), load)

    def _transition_request(self, request_id: str) -> tuple[str, str] | None:
        """The model name and the requester of a transition request; None when there is none."""
        if not request_id.isascii() or not request_id.isdigit() or len(request_id) > 18:
            return None

        def load() -> tuple[str, str] | None:
            row = (
                TransitionRequest.select(RegisteredModel.name, TransitionRequest.requester)
                .join(RegisteredModel)
                .where(TransitionRequest.id == int(request_id))
                .tuples()
                .first()
            )
            return None if row is None else (str(row[0]), str(row[1]))

        key = ("transition-request", request_id)
        found = self._names.get(key, load)
        if found is None:
            self._names._items.pop(key, None)  # it may be created a moment later: never cache absence
        return found  # type: ignore[no-any-return]

    def _scope_of_deployment(self, name: str) -> Scope:
        def load() -> str | None:
            row = Deployment.select(Deployment.model_uri).where(Deployment.name == name).tuples().first()
            return None if row is None else str(row[0])

        uri = self._names.get(("deployment", name), load)
        if uri is None:
            return Scope("model", None)
        return self.scope_of_uri(uri)


def _run_experiment(run_id: str) -> str | None:
    if not run_id or len(run_id) > 64:
        return None
    row = Run.select(Run.experiment).where(Run.run_id == run_id).tuples().first()
    return None if row is None else str(row[0])


def _logged_model_experiment(model_id: str) -> str | None:
    """A logged model's experiment (it never changes, like a run's)."""
    if not model_id or len(model_id) > 64:
        return None
    row = LoggedModel.select(LoggedModel.experiment).where(LoggedModel.model_id == model_id).tuples().first()
    return None if row is None else str(row[0])


def _parsed(parse: Callable[[], str]) -> str | None:
    """What a URI names, or None when it is malformed (no resource: the handler says why)."""
    try:
        return parse()
    except KeelError:
        return None


def _certificate_name(context: grpc.ServicerContext | None) -> str | None:
    if context is None:
        return None
    from keel_server.common.tls import peer_certificate_name

    return peer_certificate_name(context)


def _field(request: Any, path: str) -> Any:
    value = request
    for part in path.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str | bytes):
        return not value
    if hasattr(value, "ByteSize"):
        return value.ByteSize() == 0
    if isinstance(value, Iterable):
        return len(list(value)) == 0
    return False


_RESOURCE_TYPES = {
    policy.EXPERIMENT: "experiment",
    policy.EXPERIMENT_NAME: "experiment",
    policy.RUN: "run",
    policy.RUNS: "run",
    policy.LOGGED_MODEL: "logged_model",
    policy.MODEL: "model",
    policy.MODEL_URI: "model_uri",
    policy.ARTIFACT_REF: "artifact",
    policy.ARTIFACT_URI: "artifact",
    policy.DEPLOYMENT: "deployment",
    policy.GRANT_RESOURCE: "permission",
    policy.SELF_OR_ADMIN: "user",
    policy.TOKEN_OWNER: "token",
    policy.TRANSITION_REQUEST: "model_version",
    policy.TRANSITION_REQUEST_OF_OTHERS: "model_version",
}


def _resource_id(rule: policy.Rule, request: Any, value: Any) -> str:
    if rule.resource_type == "model_version" and hasattr(request, "version") and request.version:
        return f"{request.name}/{request.version}"
    if rule.resource_type == "model_alias":
        return f"{request.name}@{request.alias}"
    if hasattr(value, "run_id") and hasattr(value, "artifact_uri"):  # an ArtifactRef
        root = f"runs:/{value.run_id}" if value.run_id else value.artifact_uri
        return f"{root.rstrip('/')}/{value.path}" if value.path else root
    if hasattr(value, "WhichOneof"):
        which = value.WhichOneof("kind")
        return f"{which}={getattr(value, which)}" if which else ""
    if isinstance(value, str | int):
        return str(value)
    return ",".join(str(v) for v in value)


def _describe(need: policy.Need, value: Any) -> str:
    """What the caller asked about, in its own words (never what the server found behind it)."""
    kind = need.kind
    if kind in (policy.SELF_OR_ADMIN, policy.TOKEN_OWNER):
        return f"{need.field} {quote(str(value))} (only its owner or an administrator)"
    if kind == policy.RUNS:
        return f"the experiments of runs {quote(list(value))}"
    if kind == policy.RUN:
        return f"the experiment of run {quote(str(value))}"
    if kind == policy.LOGGED_MODEL:
        return f"the experiment of logged model {quote(str(value))}"
    if kind == policy.ARTIFACT_REF:
        return f"the run or model of {need.field} {quote(_resource_id(policy.Rule(), None, value))}"
    if kind in (policy.ARTIFACT_URI, policy.MODEL_URI):
        return f"the run or model of {need.field} {quote(str(value))}"
    if kind == policy.GRANT_RESOURCE:
        return _resource_id(policy.Rule(), None, value).replace("=", " ")
    if kind == policy.DEPLOYMENT:
        return f"the model of deployment {quote(str(value))}"
    if kind in (policy.TRANSITION_REQUEST, policy.TRANSITION_REQUEST_OF_OTHERS):
        return f"the model of transition request {quote(str(value))}"
    noun = {policy.EXPERIMENT: "experiment", policy.EXPERIMENT_NAME: "experiment", policy.MODEL: "registered model"}
    return f"{noun.get(kind, kind)} {quote(str(value))}"


__all__ = ["ADMIN_USER", "CACHE_SECONDS", "Decision", "Guard", "Scope"]
