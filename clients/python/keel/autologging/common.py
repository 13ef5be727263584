"""What every autologging integration shares: patching and un-patching library methods (also
for modules imported later), reporting logging failures without breaking training, the run an
autologged training logs to, MLflow's arguments that keel has nothing to do for, and a
background sender of metric points and files.

Nothing here imports an optional library; the integrations (``keel.autologging.sklearn``,
``keel.autologging.pytorch``) do, when they are turned on.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger("keel.autologging")

MAX_PARAM_VALUE_CHARS = 6000  # the server's limit on a param value
MAX_KEY_CHARS = 250  # the server's limit on a param/metric/tag key


class KeelAutologgingWarning(UserWarning):
    """Something could not be logged; the training call itself went through."""


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------


def _is_unreachable(exc: BaseException) -> bool:
    """The server could not be reached (the SDK already spent its retries on the call)."""
    from keel.exceptions import DeadlineExceeded, Unavailable

    return isinstance(exc, Unavailable | DeadlineExceeded)


class FailureReporter:
    """The logging failures of one autologged training call.

    The first failure is a ``KeelAutologgingWarning`` (a log record with ``silent``); later
    ones are log records only, so a training loop that keeps failing to log warns once. After
    a failure that says the server cannot be reached, ``safely`` skips further calls: each
    would wait out the SDK's retries again and slow the training down.
    """

    def __init__(self, silent: bool) -> None:
        self.silent = silent
        self.failures = 0
        self.unreachable = False
        self._lock = threading.Lock()

    def report(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            first = self.failures == 1
            self.unreachable = self.unreachable or _is_unreachable(exc)
        message = f"keel autologging could not {what}: {type(exc).__name__}: {exc}"
        if first and not self.silent:
            warnings.warn(message, KeelAutologgingWarning, stacklevel=3)
        else:
            log.warning(message)

    def safely(self, what: str, action: Callable[[], Any]) -> Any:
        """``action()``, or None when it raised (reported) or the server is known unreachable."""
        if self.unreachable:
            log.debug("keel autologging skipped (server unreachable): %s", what)
            return None
        try:
            return action()
        except Exception as exc:  # autologging must never break the user's training
            self.report(what, exc)
            return None


# ---------------------------------------------------------------------------------------------
# MLflow's arguments
# ---------------------------------------------------------------------------------------------

# argument -> why keel does nothing for it (each must stay at its "ask for nothing" value)
NOT_DONE = {
    "log_datasets": "keel does not record datasets",
    "log_traces": "keel has no tracing",
    "log_post_training_metrics": "keel does not log metrics computed after training",
    "pos_label": "keel's training metrics take no positive label",
}


def refuse_not_done(integration: str, **values: Any) -> None:
    """Raises ``InvalidArgument`` for an MLflow argument that asks for something keel does not
    do (``log_datasets=True``...): nothing is ignored silently. ``values`` maps each such
    argument to its value; False and None ask for nothing."""
    from keel.exceptions import InvalidArgument

    for name, value in values.items():
        if value is None or value is False:
            continue
        raise InvalidArgument(
            f"{integration} autologging: {name}={value!r} is not supported ({NOT_DONE[name]}); "
            f"leave {name} out or pass {name}={'None' if name == 'pos_label' else 'False'}",
            reason="INVALID_ARGUMENT",
        )


def check_flag(name: str, value: Any) -> bool:
    from keel.exceptions import InvalidArgument

    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be True or False, got {value!r}", reason="INVALID_ARGUMENT")
    return value


def check_registered_model_name(value: Any) -> str | None:
    from keel.exceptions import InvalidArgument

    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidArgument("registered_model_name must be a non-empty string", reason="INVALID_ARGUMENT")
    return value


def string_tags(extra_tags: Mapping[str, Any] | None) -> dict[str, str]:
    from keel.exceptions import InvalidArgument

    if extra_tags is not None and not isinstance(extra_tags, Mapping):
        raise InvalidArgument(
            f"extra_tags must be a dict of tag names to values, got {type(extra_tags).__name__}",
            reason="INVALID_ARGUMENT",
        )
    return {str(k): str(v) for k, v in (extra_tags or {}).items()}


def version_supported(distribution: str, lowest: str, below: str) -> bool:
    """Whether the installed ``distribution`` is in [lowest, below): the range keel's autologging
    is tested with (for ``disable_for_unsupported_versions``). Read from the package metadata,
    without importing the package."""
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False

    def key(version: str) -> tuple[int, ...]:  # "2.6.6", "2.13.0+cpu", "1.9.0rc1": major, minor, patch
        return tuple(
            int(m.group()) if (m := re.match(r"\d+", piece)) else 0 for piece in version.split(".")[:3]
        )

    return key(lowest) <= key(installed) < key(below)


# ---------------------------------------------------------------------------------------------
# Patching
# ---------------------------------------------------------------------------------------------


class PatchSet:
    """The methods one integration replaced, to put back with ``restore_all`` (``disable=True``)."""

    def __init__(self) -> None:
        self._restores: list[Callable[[], None]] = []

    def wrap(
        self, owner: Any, name: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]
    ) -> None:
        """Replaces ``owner.<name>`` (as defined on ``owner`` itself: a class, or an object such as
        sklearn's ``available_if`` descriptor) with ``make_wrapper(original)``."""
        original = vars(owner)[name]
        wrapper = make_wrapper(original)
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(owner, name, wrapper)
        self._restores.append(lambda: setattr(owner, name, original))

    def on_restore(self, action: Callable[[], None]) -> None:
        self._restores.append(action)

    def restore_all(self) -> None:
        while self._restores:
            self._restores.pop()()

    def __bool__(self) -> bool:
        return bool(self._restores)


# module name -> callbacks to run once it is imported
_import_hooks: dict[str, list[Callable[[ModuleType], None]]] = {}
_hooks_lock = threading.RLock()


def when_imported(module_name: str, callback: Callable[[ModuleType], None]) -> Callable[[], None]:
    """Runs ``callback(module)`` now if ``module_name`` is imported, else right after its first
    import, so that turning autologging on never imports a library (Lightning takes seconds).
    Returns a function that cancels a callback not yet run."""
    with _hooks_lock:
        module = sys.modules.get(module_name)
        if module is None:
            _import_hooks.setdefault(module_name, []).append(callback)
            if not any(isinstance(finder, _PostImportFinder) for finder in sys.meta_path):
                sys.meta_path.insert(0, _PostImportFinder())
    if module is not None:
        callback(module)

    def cancel() -> None:
        with _hooks_lock:
            waiting = _import_hooks.get(module_name, [])
            if callback in waiting:
                waiting.remove(callback)
            if not waiting:
                _import_hooks.pop(module_name, None)

    return cancel


def _run_import_hooks(module_name: str, module: ModuleType) -> None:
    with _hooks_lock:
        callbacks = _import_hooks.pop(module_name, [])
    for callback in callbacks:
        try:
            callback(module)
        except Exception as exc:  # never break the user's import
            warnings.warn(
                f"keel autologging could not patch {module_name}: {type(exc).__name__}: {exc}",
                KeelAutologgingWarning,
                stacklevel=2,
            )


class _HookedLoader(importlib.abc.Loader):
    """The module's own loader, followed by the waiting import hooks."""

    def __init__(self, inner: importlib.abc.Loader, module_name: str) -> None:
        self._inner = inner
        self._module_name = module_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # the module keeps its real loader (importlib.resources and friends ask it)
        module.__loader__ = self._inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        self._inner.exec_module(module)
        _run_import_hooks(self._module_name, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a module with waiting hooks it asks the other finders and wraps
    the loader they return."""

    def __init__(self) -> None:
        self._finding: set[str] = set()

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _import_hooks or fullname in self._finding:
            return None
        self._finding.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        except (ImportError, ValueError):
            return None
        finally:
            self._finding.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _HookedLoader(spec.loader, fullname)  # type: ignore[arg-type]
        return spec


# ---------------------------------------------------------------------------------------------
# The run of one autologged training
# ---------------------------------------------------------------------------------------------


@dataclass
class Session:
    run_id: str
    managed: bool  # started by autologging, so ended by it


def open_session(exclusive: bool = False) -> Session | None:
    """The active run, or a new one that autologging manages; None with ``exclusive`` when the
    user has a run open (MLflow's meaning: autologged content stays out of the user's runs)."""
    import keel

    run = keel.active_run()
    if run is not None:
        return None if exclusive else Session(run.info.run_id, managed=False)
    return Session(keel.start_run().info.run_id, managed=True)


def close_session(reporter: FailureReporter, session: Session, status: str) -> None:
    """Ends a managed run (its metrics sent first). Even with an unreachable server the run is
    ended here, so that it leaves this thread's stack of active runs."""
    import keel

    if not session.managed:
        return
    active = keel.active_run()
    if active is None or active.info.run_id != session.run_id:
        return  # the user ended it, or opened another on top: leave theirs alone
    try:
        keel.end_run(status)
    except Exception as exc:
        reporter.report("end the autologged run", exc)


def param_items(params: Mapping[str, Any]) -> dict[str, str]:
    """Params as the server takes them: values as text cut to 6000 characters, over-long keys
    left out."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if len(key) > MAX_KEY_CHARS:
            continue
        text = str(value)
        out[key] = text if len(text) <= MAX_PARAM_VALUE_CHARS else text[: MAX_PARAM_VALUE_CHARS - 3] + "..."
    return out


# ---------------------------------------------------------------------------------------------
# Background sending
# ---------------------------------------------------------------------------------------------

SEND_INTERVAL_S = 1.0  # how long a metric point may wait to be sent
SEND_AT_POINTS = 1000  # ... or how many may wait (one LogBatch call)


@dataclass
class _File:
    local_path: str
    artifact_path: str | None


class BackgroundLogger:
    """Sends one run's metric points, params, tags and files from a daemon thread, so a training
    loop never waits for the server: points, params and tags go out every ``SEND_INTERVAL_S``
    seconds (or at ``SEND_AT_POINTS`` points), files as they come (with whatever waits).

    Failures are kept for the training thread to report (``take_failures``), so warnings come
    from the training thread. After a failure that says the server cannot be reached nothing more
    is sent: each call would wait out the SDK's retries again. Files handed over are copies in
    this logger's scratch folder (``scratch_path``), removed once sent and at ``close``.
    """

    def __init__(self, run_id: str, tracking_uri: str) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.stopped = False  # the server was unreachable: nothing more is sent
        self._failures: list[tuple[str, BaseException]] = []
        self._cond = threading.Condition()
        self._points: list[tuple[str, float, int, int]] = []  # (key, value, timestamp ms, step)
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._files: list[_File] = []
        self._requested = 0  # flushes asked for
        self._done = 0  # flushes completed
        self._closing = False
        self._thread: threading.Thread | None = None
        self._scratch: str | None = None

    # -- the training thread's side

    def log_metrics(self, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None) -> None:
        when = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        with self._cond:
            if self.stopped or self._closing:
                return
            # plain tuples here: the entities are made on the sending thread (a step's hook stays cheap)
            self._points.extend((key, value, when, step) for key, value in metrics.items())
            self._start()
            if len(self._points) >= SEND_AT_POINTS:
                self._cond.notify()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._hand_over(lambda: self._params.update(param_items(params)))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            self._hand_over(lambda: self._tags.update({str(k): str(v) for k, v in tags.items()}))

    def scratch_path(self, file_name: str) -> str:
        """A new path named ``file_name`` in this logger's scratch folder (to write, then
        ``log_file``)."""
        import tempfile

        with self._cond:
            if self._scratch is None:
                self._scratch = tempfile.mkdtemp(prefix="keel-autologging-")
            return os.path.join(tempfile.mkdtemp(dir=self._scratch), file_name)

    def log_file(self, local_path: str, artifact_path: str | None) -> None:
        """Uploads a file of the scratch folder into ``artifact_path`` of the run, then removes it."""
        self._hand_over(lambda: self._files.append(_File(local_path, artifact_path)))

    def log_text(self, text: str, artifact_file: str) -> None:
        path = self.scratch_path(os.path.basename(artifact_file))
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        self.log_file(path, os.path.dirname(artifact_file) or None)

    def take_failures(self) -> list[tuple[str, BaseException]]:
        """The failures met since the last call: (what could not be done, the error)."""
        with self._cond:
            failures, self._failures = self._failures, []
        return failures

    def flush(self) -> None:
        """Waits until everything handed over so far is sent (or has failed)."""
        with self._cond:
            if self._thread is None:
                return
            self._requested += 1
            target = self._requested
            self._cond.notify()
            while self._done < target and self._thread.is_alive():
                self._cond.wait(timeout=0.5)

    def close(self) -> None:
        """Sends what is left, stops the thread and removes the scratch folder."""
        import shutil

        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def _hand_over(self, add: Callable[[], None]) -> None:
        with self._cond:
            if self.stopped or self._closing:
                return
            add()
            self._start()
            self._cond.notify()

    # -- the sending thread

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keel-autologging", daemon=True)
            self._thread.start()

    def _has_work(self) -> bool:
        # params and tags wait for the next round with the points: fewer calls
        return bool(self._files or len(self._points) >= SEND_AT_POINTS)

    def _run(self) -> None:
        from keel.client import Client

        client = Client(self.tracking_uri)
        while True:
            with self._cond:
                if not (self._closing or self._requested > self._done or self._has_work()):
                    self._cond.wait(timeout=SEND_INTERVAL_S)
                points, self._points = self._points, []
                params, self._params = self._params, {}
                tags, self._tags = self._tags, {}
                files, self._files = self._files, []
                closing, requested = self._closing, self._requested
            self._send(client, points, params, tags, files)
            with self._cond:
                self._done = max(self._done, requested)
                self._cond.notify_all()
                if closing and not (self._points or self._params or self._tags or self._files):
                    return

    def _attempt(self, what: str, action: Callable[[], Any]) -> None:
        if self.stopped:
            return
        try:
            action()
        except Exception as exc:
            with self._cond:
                self._failures.append((what, exc))
                self.stopped = self.stopped or _is_unreachable(exc)

    def _send(
        self,
        client: Any,
        points: list[tuple[str, float, int, int]],
        params: dict[str, str],
        tags: dict[str, str],
        files: list[_File],
    ) -> None:
        from keel.entities import Metric, Param, RunTag

        # params apart from the points and tags: a param logged twice with two values (one
        # LogBatch is all or nothing) must not cost the metrics
        if params:
            batch = [Param(k, v) for k, v in params.items()]
            self._attempt("log params", lambda: client.log_batch(self.run_id, params=batch))
        if points or tags:
            metrics = [Metric(*point) for point in points]
            tag_batch = [RunTag(k, v) for k, v in tags.items()]
            self._attempt(
                "log metrics and tags", lambda: client.log_batch(self.run_id, metrics=metrics, tags=tag_batch)
            )
        for item in files:
            name = os.path.basename(item.local_path)
            upload = functools.partial(client.log_artifact, self.run_id, item.local_path, item.artifact_path)
            self._attempt(f"log {name}", upload)
            try:
                os.remove(item.local_path)
            except OSError:
                pass
