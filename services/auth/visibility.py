"""What stores ask about the caller of the running call: which experiments and models it may
see (searches and lists filter in SQL, so paging stays intact), and that it created something
(the creator gets MANAGE, in the creating transaction).

With auth off every function answers "everything" / does nothing.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

import peewee as pw

from keel_server.audit import recorder
from keel_server.auth.context import current_caller
from keel_server.auth.store import AuthStore

if TYPE_CHECKING:
    from keel_server.auth.guard import Guard

# The guard of the server handling the running call (several servers may share one process).
guard_var: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("keel_guard", default=None)
_store = AuthStore()


def readable_ids(kind: str) -> list[int] | None:
    """Ids of the experiments (``kind="experiment"``) or registered models (``"model"``) the
    caller may read; None when it may read all of them (auth off, an admin, or a default
    permission of READ or more)."""
    caller, guard = current_caller(), guard_var.get()
    if caller is None or guard is None:
        return None
    return guard.readable_ids(caller, kind)


def readable_condition(kind: str, id_column: pw.Field) -> pw.ColumnBase | None:
    """A WHERE condition keeping the rows whose experiment/model id (``id_column``) the caller
    may read; None when no condition is needed."""
    ids = readable_ids(kind)
    if ids is None:
        return None
    return id_column.in_(ids) if ids else pw.SQL("1 = 0")


def can_read_model_uri(model_uri: str) -> bool:
    """Whether the caller may read the model or run a model URI (a deployment's) names."""
    from keel_server.auth.store import READ

    caller, guard = current_caller(), guard_var.get()
    if caller is None or guard is None:
        return True
    return guard.level_on(caller, guard.scope_of_uri(model_uri)) >= READ


def audit_events_condition() -> pw.Expression | None:
    """The audit events the caller may see: administrators all; others the events of the
    experiments and models they can read, and their own calls."""
    from keel_server.common.db import AuditEvent, RegisteredModel

    caller, guard = current_caller(), guard_var.get()
    if caller is None or guard is None or caller.admin:
        return None
    experiments = guard.readable_ids(caller, "experiment")
    models = guard.readable_ids(caller, "model")
    if experiments is None:
        in_experiments = AuditEvent.scope_type == "experiment"
    else:
        in_experiments = (AuditEvent.scope_type == "experiment") & AuditEvent.scope_id.in_([str(i) for i in experiments])
    if models is None:
        in_models = AuditEvent.scope_type == "model"
    else:
        rows: Any = RegisteredModel.select(RegisteredModel.name).where(RegisteredModel.id.in_(models)).tuples()
        names = [row[0] for row in rows]
        in_models = (AuditEvent.scope_type == "model") & AuditEvent.scope_id.in_(names)
    return in_experiments | in_models | (AuditEvent.actor == caller.name)


def record_creation(kind: str, key: int | str, name: str) -> None:
    """Call inside the transaction that created an experiment or a registered model (``kind``)
    with its stored ``key`` (id) and ``name``: its creator gets MANAGE, and the running call's
    audit event names the new resource (experiments by id, models by name, as the audit log's
    filters do)."""
    caller = current_caller()
    if caller is not None:
        _store.grant_creator(caller.principal_id, kind, str(key))
    public_id = str(key) if kind == "experiment" else name
    recorder.note(resource_id=public_id, scope=(kind, public_id))
