"""Who is calling: set by the server interceptor for the duration of one call.

Stores read it (never the request metadata) to filter what a caller may see and to give a
creator MANAGE on what it creates. ``None`` means auth is off: every caller may do everything.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    """An authenticated identity."""

    name: str
    principal_id: int
    admin: bool = False
    service_account: bool = False
    group_ids: tuple[int, ...] = ()
    # "token", "admin-token", "certificate" or "act-as".
    auth_method: str = "token"
    token_id: str = ""
    # The admin service account acting for this user (x-keel-act-as; docs/auth.md), else ''.
    via: str = ""


caller_var: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("keel_caller", default=None)


def current_caller() -> Caller | None:
    """The caller of the running call; None when auth is off (or outside a call)."""
    return caller_var.get()
