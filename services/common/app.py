"""What a running keel process shares between its services: settings, the database and the
artifact store. Built once at start-up and passed explicitly to every servicer."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import peewee as pw

from keel_server.common.config import Settings

if TYPE_CHECKING:
    from keel_server.artifacts.stores import ArtifactStore


@dataclass
class App:
    settings: Settings
    database: pw.Database
    _store: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Callbacks run on graceful shutdown (background threads, model workers).
    shutdown_hooks: list[Any] = field(default_factory=list, repr=False)
    # Callbacks run when shutdown starts, before in-flight calls drain: they end the streams
    # that never end on their own (WatchEvents), which would otherwise hold the whole grace period.
    drain_hooks: list[Any] = field(default_factory=list, repr=False)

    @property
    def artifact_store(self) -> ArtifactStore:
        """The artifact store chosen by ``KEEL_ARTIFACT_URI`` (opened on first use)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from keel_server.artifacts.stores import open_store

                    self._store = open_store(self.settings)
        return self._store
