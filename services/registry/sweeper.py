"""The registration sweeper: one per registry server, on a daemon thread.

A server that dies while it copies a new version's files leaves the version
PENDING_REGISTRATION. Every registry replica sweeps for such versions (untouched for
``settings.registration_timeout_seconds``) at start and then periodically; the store's
``sweep_registrations`` lets exactly one replica redo each copy, so the version ends READY or
FAILED_REGISTRATION within about the timeout plus one interval.
"""

from __future__ import annotations

import logging
import threading

from keel_server.common import metrics
from keel_server.common.app import App
from keel_server.registry.store import RegistryStore

log = logging.getLogger("keel.registry")


def sweep_interval(timeout_seconds: float) -> float:
    """A quarter of the timeout, between 1 s and 5 min."""
    return min(max(timeout_seconds / 4, 1.0), 300.0)


class RegistrationSweeper:
    def __init__(self, app: App, store: RegistryStore) -> None:
        self.store = store
        self.stale_after_ms = int(app.settings.registration_timeout_seconds * 1000)
        self.interval = sweep_interval(app.settings.registration_timeout_seconds)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="keel-registration-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)  # mid-copy on a slow store: left to end as a daemon

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

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self.run_once()
            self._stopped.wait(self.interval)
