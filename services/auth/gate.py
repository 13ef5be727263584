"""The checks every call passes before its handler runs, and the audit event it leaves.

``Gate.enter`` runs in the interceptor with the decoded request: it authenticates the caller,
authorizes the call by ``policy.POLICY`` (PERMISSION_DENIED before the handler or any existence
check of the handler's own), records refused attempts, and for a change opens the pending audit
event that the store's transaction commits with the change. ``Gate.leave`` closes it.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from keel_server.audit import recorder
from keel_server.auth import policy, visibility
from keel_server.auth.context import Caller, caller_var
from keel_server.auth.guard import Decision, Guard
from keel_server.common.config import Settings
from keel_server.common.errors import KeelError, PermissionDenied, Unauthenticated, quote
from keel_server.common.logs import request_id_var

log = logging.getLogger("keel.auth")

OUTCOME_OK, OUTCOME_DENIED, OUTCOME_UNAUTHENTICATED = 1, 2, 3
# A trusted front end (the console behind a proxy, docs/console.md) calls as an admin service
# account with this metadata naming the user it acts for; the call then runs as that user.
ACT_AS_METADATA = "x-keel-act-as"
ANONYMOUS = "anonymous"
# Calls after which this replica forgets its cached identities and grants at once.
_AUTH_CHANGES = ("/keel.auth.v1.AuthService/",)


@dataclass
class Entered:
    """One call that passed the gate: what ``leave`` must undo and finish."""

    rule: policy.Rule
    method: str
    tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = field(default_factory=list)
    audit_token: contextvars.Token[Any] | None = None


class Gate:
    def __init__(self, settings: Settings) -> None:
        self.auth = settings.auth
        self.audit = settings.audit_enabled
        self.guard = Guard(settings) if (self.auth or self.audit) else None

    @property
    def active(self) -> bool:
        return self.guard is not None

    def enter(
        self,
        method: str,
        metadata: Mapping[str, str],
        context: grpc.ServicerContext | None,
        request: Any,
        *,
        peer: str = "",
        certificate_name: str | None = None,
    ) -> Entered | None:
        """Raises UNAUTHENTICATED or PERMISSION_DENIED, or returns what the call opened. The HTTP
        endpoints pass no context but the ``peer`` address and client ``certificate_name``."""
        peer = peer or _peer(context)
        assert self.guard is not None
        rule = policy.rule_for(method)
        if rule is None:
            # Fail closed: an RPC without a policy entry never runs with auth on.
            if self.auth:
                raise PermissionDenied(
                    f"{method} has no entry in keel's permission table; it cannot be called with auth on",
                    reason="NO_POLICY",
                )
            return None
        if rule.public:
            return None
        caller: Caller | None = None
        if self.auth:
            try:
                caller = self.guard.authenticate(metadata, context, certificate_name)
            except Unauthenticated:
                self._record_refusal(method, rule, request, peer, "", OUTCOME_UNAUTHENTICATED)
                raise
            act_as = metadata.get(ACT_AS_METADATA, "")
            if act_as:
                try:
                    caller = self._acting_for(caller, act_as)
                except PermissionDenied:
                    self._record_refusal(method, rule, request, peer, caller.name, OUTCOME_DENIED)
                    raise
        try:
            decision = self.guard.authorize(method, rule, request, caller)
        except PermissionDenied:
            self._record_refusal(method, rule, request, peer, caller.name if caller else "", OUTCOME_DENIED)
            raise
        entered = Entered(rule=rule, method=method)
        if caller is not None:
            entered.tokens.append((caller_var, caller_var.set(caller)))
            entered.tokens.append((visibility.guard_var, visibility.guard_var.set(self.guard)))
        if self.audit and rule.mutates:
            if caller is not None and caller.via:
                peer = f"via {caller.via} from {peer}"[:128]  # both names in the audit log
            event = self._event(method, decision, request, peer, caller.name if caller else ANONYMOUS, OUTCOME_OK)
            entered.audit_token = recorder.begin(event)
        return entered

    def _acting_for(self, caller: Caller, name: str) -> Caller:
        """The caller ``name`` an admin service account acts for; PERMISSION_DENIED for anyone
        else, and for a user that does not exist or is disabled."""
        assert self.guard is not None
        if not (caller.admin and caller.service_account):
            raise PermissionDenied(
                f"{caller.name} may not act for another user: {ACT_AS_METADATA} is honoured only for an "
                "admin service account",
                reason="ACT_AS_REFUSED",
            )
        target = self.guard.caller_named(name)
        if target is None:
            raise PermissionDenied(
                f"{quote(name)} is not an enabled keel user: an admin creates it with `keel users create`",
                reason="ACT_AS_UNKNOWN_USER",
            )
        return replace(target, via=caller.name)

    def check_message(self, entered: Entered | None, request: Any) -> None:
        """Authorizes one more message of a request stream (PredictStream names a deployment in each)."""
        if entered is None or not entered.rule.each_message or self.guard is None:
            return
        self.guard.authorize(entered.method, entered.rule, request, caller_var.get())

    def leave(self, entered: Entered | None, succeeded: bool) -> None:
        if entered is None:
            return
        try:
            if entered.audit_token is not None:
                if succeeded:
                    recorder.finish_unwritten()
                recorder.end(entered.audit_token)
            if succeeded and self.guard is not None and (entered.rule.create or entered.method.startswith(_AUTH_CHANGES)):
                if entered.rule.mutates:
                    self.guard.invalidate()
        finally:
            for var, token in reversed(entered.tokens):
                var.reset(token)

    def guarded_stream(self, entered: Entered | None, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            self.check_message(entered, request)
            yield request

    # ------------------------------------------------------------------ audit events
    def _event(
        self, method: str, decision: Decision, request: Any, peer: str, actor: str, outcome: int
    ) -> recorder.PendingEvent:
        service, _, rpc = method.strip("/").partition("/")
        scope = decision.scope
        return recorder.PendingEvent(
            actor=actor,
            service=service,
            method=rpc,
            resource_type=decision.resource_type,
            resource_id=decision.resource_id,
            scope_type=scope.kind if scope is not None and scope.key is not None else "",
            scope_id=scope.key if scope is not None and scope.key is not None else "",
            after=recorder.summarize(request) if outcome == OUTCOME_OK else "",
            request_id=request_id_var.get(),
            peer=peer,
            outcome=outcome,
        )

    def _record_refusal(
        self, method: str, rule: policy.Rule, request: Any, peer: str, actor: str, outcome: int
    ) -> None:
        if not self.audit or self.guard is None:
            return
        try:
            # Where the call would have gone, resolved without any permission check. The event is
            # never shown to the refused caller, so naming what exists leaks nothing.
            decision = self.guard.authorize(method, rule, request, None)
        except KeelError:
            decision = Decision(rule.resource_type, "", None)
        try:
            recorder.record(self._event(method, decision, request, peer, actor, outcome))
        except Exception:  # noqa: BLE001 - a refusal must be answered even when it cannot be logged
            log.exception("could not record a refused call to %s in the audit log", method)


def _peer(context: grpc.ServicerContext | None) -> str:
    if context is None:
        return ""
    try:
        return str(context.peer())[:128]
    except Exception:  # noqa: BLE001 - test doubles and closed calls
        return ""
