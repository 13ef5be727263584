"""What one replica serves: the loaded model of each deployment, kept in step with the
deployments table and with the registry.

Following the registry is done by polling: every ``registry_poll_seconds`` the replica re-reads
the deployments table (new rows load, removed rows unload) and re-resolves each deployment's
URI. When a stage or alias now designates another version, that version is downloaded, loaded
and warmed on a background thread while the old one keeps answering; then one reference
assignment swaps it in. A request takes the reference once at its start, so in-flight and new
requests never fail during a swap, and every response names the version that answered.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from keel.models.utils import ColumnBlock
from keel_server.common import metrics
from keel_server.common.db import now_ms
from keel_server.common.errors import FailedPrecondition, NotFound, Unavailable
from keel_server.common.interceptors import translate
from keel_server.inference.batching import MicroBatcher
from keel_server.inference.model import ServedModel, load_served_model
from keel_server.inference.resolver import Resolution, Resolver, remove_quietly
from keel_server.inference.store import BatchingConfig, DeploymentRecord, DeploymentSource

log = logging.getLogger("keel.inference")

PENDING, LOADING, READY, FAILED = "PENDING", "LOADING", "READY", "FAILED"


@dataclass
class LiveDeployment:
    record: DeploymentRecord
    state: str = PENDING
    message: str = ""
    updated: int = field(default_factory=now_ms)
    current: ServedModel | None = None
    current_resolution: Resolution | None = None
    loading: Resolution | None = None
    failed: Resolution | None = None
    current_dir: str = ""
    batcher: MicroBatcher | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    removed: bool = False

    @property
    def name(self) -> str:
        return self.record.name

    def set_state(self, state: str, message: str = "") -> None:
        self.state, self.message, self.updated = state, message, now_ms()


@dataclass(frozen=True)
class DeploymentView:
    """A deployment as GetDeployment reports it (this replica's view)."""

    name: str
    model_uri: str
    state: str
    message: str
    model_name: str
    version: int
    flavors: list[str]
    creation_time: int
    updated_time: int
    batching: BatchingConfig


class InferenceRuntime:
    def __init__(
        self,
        source: DeploymentSource,
        resolver: Resolver,
        poll_seconds: float,
        cache_dir: str | None = None,
        warm: bool = True,
    ) -> None:
        self.source = source
        self.resolver = resolver
        self.poll_seconds = max(0.05, poll_seconds)
        self._own_cache = cache_dir is None
        self.cache_dir = cache_dir or tempfile.mkdtemp(prefix="keel-inference-")
        self._warm = warm
        self._live: dict[str, LiveDeployment] = {}
        self._lock = threading.Lock()
        self._reconcile_lock = threading.Lock()
        self._loader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="keel-model-load")
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._poller: threading.Thread | None = None
        self._trash: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Starts following the table and the registry (the first reconcile runs at once)."""
        self._poller = threading.Thread(target=self._poll_loop, name="keel-inference-poll", daemon=True)
        self._poller.start()

    def load_now(self) -> None:
        """Reconciles and loads synchronously (``keel models serve`` is ready only once loaded)."""
        self.reconcile(wait=True)

    def close(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        self._loader.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            live = list(self._live.values())
            self._live.clear()
        for dep in live:
            self._unload(dep)
        self._empty_trash()
        if self._own_cache:
            remove_quietly(self.cache_dir)

    def kick(self) -> None:
        """Reconcile now rather than at the next poll (after a local Create/Delete)."""
        self._kick.set()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - a DB outage must not kill the poller
                log.exception("inference reconcile failed; retrying at the next poll")
            self._kick.wait(self.poll_seconds)
            self._kick.clear()

    # -- reconcile -----------------------------------------------------------------------

    def reconcile(self, wait: bool = False) -> None:
        with self._reconcile_lock:
            records = {r.name: r for r in self.source.list_all()}
            with self._lock:
                gone = [
                    d
                    for n, d in self._live.items()
                    if n not in records or d.record.model_uri != records[n].model_uri
                ]
                for dep in gone:
                    del self._live[dep.name]
                    if dep.name not in records:
                        metrics.forget_deployment(dep.name)
                for name, record in records.items():
                    if name not in self._live:
                        self._live[name] = self._new_live(record)
                live = list(self._live.values())
            for dep in gone:
                self._unload(dep)
            futures = [f for f in (self._check(dep) for dep in live) if f is not None]
            self._empty_trash()
        if wait:
            for f in futures:
                f.result()

    def _new_live(self, record: DeploymentRecord) -> LiveDeployment:
        dep = LiveDeployment(record=record)
        if record.batching.enabled:
            dep.batcher = MicroBatcher(
                record.name, record.batching.max_batch_size, record.batching.max_batch_delay_ms / 1000
            )
        return dep

    def _check(self, dep: LiveDeployment) -> Any:
        """Re-resolves a deployment's URI and starts loading when it designates something new."""
        try:
            resolution = self.resolver.resolve(dep.record.model_uri)
        except Exception as exc:  # noqa: BLE001 - recorded as the deployment's state
            text = _error_text(exc)
            with dep.lock:
                if dep.current is None:
                    dep.set_state(FAILED, f"cannot resolve {dep.record.model_uri}: {text}")
                else:
                    dep.message = f"cannot resolve {dep.record.model_uri} ({text}); still serving version {dep.current.version}"
            return None
        with dep.lock:
            if resolution in (dep.current_resolution, dep.loading, dep.failed) or dep.removed:
                return None
            dep.loading = resolution
            if dep.current is None:
                dep.set_state(LOADING, f"loading {_describe(resolution)}")
        return self._loader.submit(self._load, dep, resolution)

    def _load(self, dep: LiveDeployment, resolution: Resolution) -> None:
        folder = os.path.join(self.cache_dir, dep.name, f"{resolution.version}-{uuid.uuid4().hex[:8]}")
        started = time.perf_counter()
        try:
            model_dir = self.resolver.fetch(resolution, folder)
            served = load_served_model(model_dir, resolution.model_name, resolution.version, warm=self._warm)
            metrics.model_loaded(dep.name, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a bad model never takes the server down
            remove_quietly(folder)
            text = _error_text(exc)
            log.warning("deployment %s: %s failed to load: %s", dep.name, _describe(resolution), text)
            with dep.lock:
                dep.loading = None
                dep.failed = resolution
                if dep.current is None:
                    dep.set_state(FAILED, f"{_describe(resolution)} failed to load: {text}")
                else:
                    dep.message = f"{_describe(resolution)} failed to load ({text}); still serving version {dep.current.version}"
            return
        with dep.lock:
            if dep.removed:
                remove_quietly(folder)
                return
            old_dir = dep.current_dir
            # The swap: one reference assignment; requests that already took the old model finish on it.
            dep.current, dep.current_resolution, dep.current_dir = (
                served,
                resolution,
                (folder if model_dir == folder else ""),
            )
            dep.loading, dep.failed = None, None
            dep.set_state(READY, "")
        if old_dir:
            self._trash.append(old_dir)
        log.info("deployment %s now serves %s", dep.name, _describe(resolution))

    def _unload(self, dep: LiveDeployment) -> None:
        with dep.lock:
            dep.removed = True
            dep.current = None
            folder, dep.current_dir = dep.current_dir, ""
        if dep.batcher is not None:
            dep.batcher.close()
        if folder:
            self._trash.append(folder)
        log.info("deployment %s unloaded", dep.name)

    def _empty_trash(self) -> None:
        # Deferred by one poll so requests still running on a swapped-out model keep their files.
        trash, self._trash = self._trash, []
        for folder in trash:
            remove_quietly(folder)

    # -- API -----------------------------------------------------------------------------

    def create(self, name: str, model_uri: str, batching: BatchingConfig) -> DeploymentView:
        record = self.source.create(name, model_uri, batching)
        with self._lock:
            dep = self._live.get(name)
            if dep is None:
                dep = self._live[name] = self._new_live(record)
        self.kick()
        return self._view(dep)

    def delete(self, name: str) -> None:
        self.source.delete(name)
        with self._lock:
            dep = self._live.pop(name, None)
        metrics.forget_deployment(name)
        if dep is not None:
            self._unload(dep)

    def describe(self, name: str) -> DeploymentView:
        return self._view(self._find(name))

    def list_page(self, page_size: int, page_token: str) -> tuple[list[DeploymentView], str]:
        records, token = self.source.list_page(page_size, page_token)
        views = []
        for record in records:
            with self._lock:
                dep = self._live.get(record.name)
            views.append(self._view(dep) if dep is not None else self._view(LiveDeployment(record=record)))
        return views, token

    def views(self) -> list[DeploymentView]:
        with self._lock:
            live = list(self._live.values())
        return [self._view(d) for d in live]

    def all_ready(self) -> bool:
        with self._lock:
            return all(d.state == READY for d in self._live.values())

    def _find(self, name: str) -> LiveDeployment:
        with self._lock:
            dep = self._live.get(name)
        if dep is not None:
            return dep
        # Created on another replica since our last poll: the table is the truth.
        record = self.source.get(name)
        with self._lock:
            dep = self._live.get(name)
            if dep is None:
                dep = self._live[name] = self._new_live(record)
        self.kick()
        return dep

    def model_for(self, name: str, version: int = 0) -> tuple[LiveDeployment, ServedModel]:
        """The model that answers a request (taken once: a swap cannot change it mid-request)."""
        dep = self._find(name)
        served = dep.current
        if served is None:
            if dep.state == FAILED:
                raise FailedPrecondition(
                    f"deployment {name!r} failed to load: {dep.message}",
                    reason="DEPLOYMENT_FAILED",
                    metadata={"deployment": name},
                )
            raise Unavailable(
                f"deployment {name!r} is {dep.state.lower()} ({dep.message or 'not loaded yet'}); retry shortly",
                reason="DEPLOYMENT_NOT_READY",
                metadata={"deployment": name},
            )
        if version and version != served.version:
            raise NotFound(
                f"deployment {name!r} serves version {served.version or '(unversioned)'}; version {version} is not "
                "loaded (leave the version empty for the current one)",
                reason="MODEL_VERSION_NOT_LOADED",
                metadata={"deployment": name, "version": version},
            )
        return dep, served

    @staticmethod
    def predict(dep: LiveDeployment, served: ServedModel, data: Any, params: dict[str, Any] | None) -> Any:
        """Runs ``served`` (from ``model_for``) on decoded input, through the micro-batcher when
        the deployment has one and the request is a small parameterless table. Every protocol
        (keel Predict, KServe v2 ModelInfer, HTTP /invocations) comes through here: the predict
        metrics of the deployment are recorded here."""
        started = time.perf_counter()
        rows = metrics.row_count(data)
        batcher = dep.batcher
        if batcher is not None and isinstance(data, ColumnBlock):
            data = data.to_frame()  # the batcher merges DataFrames
        if batcher is not None and not params and _is_frame(data) and len(data) < batcher.max_rows:
            checked, _ = served.enforce(data, None)
            output = batcher.submit(served, checked).result()
        else:
            output = served.predict(data, params)
        metrics.predicted(dep.name, time.perf_counter() - started, rows)
        return output

    def _view(self, dep: LiveDeployment) -> DeploymentView:
        served = dep.current
        return DeploymentView(
            name=dep.name,
            model_uri=dep.record.model_uri,
            state=dep.state,
            message=dep.message,
            model_name=served.model_name if served else (dep.loading.model_name if dep.loading else ""),
            version=served.version if served else 0,
            flavors=list(served.flavors) if served else [],
            creation_time=dep.record.creation_time,
            updated_time=dep.updated,
            batching=dep.record.batching,
        )


def _is_frame(data: Any) -> bool:
    from keel.models.utils import is_dataframe

    return is_dataframe(data)


def _describe(resolution: Resolution) -> str:
    if resolution.model_name:
        return f"{resolution.model_name} version {resolution.version}"
    return resolution.artifact_uri


def _error_text(exc: BaseException) -> str:
    error = translate(exc)  # keel's errors, the server's and the SDK's: their message
    if error is not None:
        return error.message
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
