"""Background clean-ups of a keel server: one shape for each of them.

A sweeper runs ``run_once`` at start and then every ``interval`` seconds on a daemon thread, so
an unreachable store or database never delays start or exit; ``stop`` (a shutdown hook) ends it.
``run_once`` logs its own failures: the next pass tries again.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod


def sweep_interval(age_seconds: float) -> float:
    """Seconds between sweeps for leftovers that count as dead after ``age_seconds``: a quarter
    of it, between 1 s and 10 min."""
    return min(max(age_seconds / 4, 1.0), 600.0)


class PeriodicSweeper(ABC):
    thread_name = "keel-sweeper"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)

    @abstractmethod
    def run_once(self) -> object:
        """One pass; never raises."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)  # mid-pass on a slow backend: left to end as a daemon

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self.run_once()
            self._stopped.wait(self.interval)
