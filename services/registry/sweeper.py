"""The registration sweeper: one per registry server.

A server that dies while it copies a new version's files leaves the version
PENDING_REGISTRATION. Every registry replica sweeps for such versions (untouched for
``settings.registration_timeout_seconds``) at start and then periodically; the store's
``sweep_registrations`` lets exactly one replica redo each copy, so the version ends READY or
FAILED_REGISTRATION within about the timeout plus one interval.
"""

from __future__ import annotations

import logging

from keel_server.common import metrics
from keel_server.common.app import App
from keel_server.common.sweeper import PeriodicSweeper, sweep_interval
from keel_server.registry.store import RegistryStore

log = logging.getLogger("keel.registry")


class RegistrationSweeper(PeriodicSweeper):
    thread_name = "keel-registration-sweeper"

    def __init__(self, app: App, store: RegistryStore) -> None:
        super().__init__(sweep_interval(app.settings.registration_timeout_seconds))
        self.store = store
        self.stale_after_ms = int(app.settings.registration_timeout_seconds * 1000)

    def run_once(self) -> tuple[int, int]:
        """One sweep: (finished, failed); (0, 0) when the database failed (logged)."""
        try:
            finished, failed = self.store.sweep_registrations(self.stale_after_ms)
        except Exception as exc:  # noqa: BLE001 - the next pass tries again
            log.warning("sweep of unfinished registrations failed: %s", exc)
            return 0, 0
        metrics.sweeper_action("registrations", "finished", finished)
        metrics.sweeper_action("registrations", "failed", failed)
        return finished, failed
