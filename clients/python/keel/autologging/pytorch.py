"""PyTorch autologging (MLflow's ``mlflow.pytorch.autolog``): PyTorch Lightning training, and
plain training loops that write scalars with ``torch.utils.tensorboard.SummaryWriter``.

**Lightning** (``lightning.pytorch`` and the older ``pytorch_lightning``): every
``Trainer.fit`` logs to the active run, or to a new run that ends with the call:

- params: ``epochs`` (MLflow's name for ``max_epochs``) and the trainer's settings
  (``max_epochs``, ``min_epochs``, ``max_steps``, ``accumulate_grad_batches``,
  ``gradient_clip_val``, ``precision``, ...); the first optimizer's ``optimizer_name`` and its
  settings (``lr``, ``weight_decay``, ``betas``, ...); an ``EarlyStopping`` callback's
  ``monitor``, ``mode``, ``patience``, ``min_delta``;
- metrics: everything the module logs with ``self.log`` (``trainer.callback_metrics``,
  validation included) at each epoch's end with the epoch as step (every
  ``log_every_n_epoch`` epochs), and with ``log_every_n_step`` the step-level ones every n
  steps with the global step; after training, the early stopping state: ``stopped_epoch`` and
  ``restored_epoch`` (when it stopped the training), ``best_score``, ``wait_count``;
- artifacts: ``model_summary.txt`` (Lightning's ``ModelSummary``), the trained module as
  ``model`` (``keel.pytorch.log_model``, with a signature from the first batch its ``forward``
  saw; registered under ``registered_model_name``), and with ``checkpoint`` the best (or every)
  checkpoint under ``checkpoints/`` (MLflow's names, tag ``mlflow.latest_checkpoint_artifact``).

**SummaryWriter**: ``add_scalar`` and ``add_scalars`` (as ``<main_tag>/<tag>``) become metric
points with their ``global_step`` (0 when none) and wall time, ``add_hparams`` params and
metrics; to the active run, or to a run the writer starts on its first scalar and ends at its
``close()`` (or at interpreter exit). ``log_every_n_step`` keeps the steps divisible by n.
Scalars that Lightning's own ``TensorBoardLogger`` writes are not logged twice.

Turning it on imports nothing: Lightning and ``torch.utils.tensorboard`` are patched when they
are (or once they get) imported. Metric points, params and files are sent from a background
thread, so a training step never waits for the server; the model is logged, and a run the
integration started is ended, when the training returns. Logging never breaks training: the
first failure of a training call is a ``KeelAutologgingWarning``, and once the server is found
unreachable the rest of that training's logging is skipped.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from keel.autologging.common import (
    BackgroundLogger,
    FailureReporter,
    PatchSet,
    Session,
    check_flag,
    check_registered_model_name,
    close_session,
    open_session,
    refuse_not_done,
    string_tags,
    version_supported,
    when_imported,
)

log = logging.getLogger(__name__)

MODEL_PATH = "model"
SUMMARY_FILE = "model_summary.txt"
CHECKPOINT_DIR = "checkpoints"
LATEST_CHECKPOINT_TAG = "mlflow.latest_checkpoint_artifact"  # MLflow's tag, for its download helpers
SIGNATURE_ROWS = 5  # rows of the first batch kept for the model signature
# import name of a Lightning package -> its distribution
LIGHTNING_PACKAGES = {"lightning.pytorch": "lightning", "pytorch_lightning": "pytorch-lightning"}
TENSORBOARD_MODULE = "torch.utils.tensorboard"
# the versions this integration is tested with (disable_for_unsupported_versions): [lowest, below)
SUPPORTED_VERSIONS = {
    "torch": ("2.1", "3.0"),
    "lightning": ("2.0", "3.0"),
    "pytorch-lightning": ("2.0", "3.0"),
}
TRAINER_SETTINGS = (
    "max_epochs",
    "min_epochs",
    "max_steps",
    "min_steps",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "precision",
    "check_val_every_n_epoch",
    "val_check_interval",
    "limit_train_batches",
    "limit_val_batches",
)
EARLY_STOPPING_PARAMS = ("monitor", "mode", "patience", "min_delta")


@dataclass(frozen=True)
class AutologSettings:
    log_every_n_epoch: int = 1
    log_every_n_step: int | None = None
    log_models: bool = True
    log_model_signatures: bool = True
    registered_model_name: str | None = None
    exclusive: bool = False
    disable_for_unsupported_versions: bool = False
    silent: bool = False
    extra_tags: dict[str, str] = field(default_factory=dict)
    checkpoint: bool = True
    checkpoint_monitor: str = "val_loss"
    checkpoint_mode: str = "min"
    checkpoint_save_best_only: bool = True
    checkpoint_save_weights_only: bool = False
    checkpoint_save_freq: str | int = "epoch"


_lock = threading.Lock()
_settings: AutologSettings | None = None  # None: autologging is off
_patches = PatchSet()  # Trainer.fit and SummaryWriter methods, and import hooks not yet run
_fits = 0  # autologged Lightning fits in progress (a fit inside one is not logged again)
_quiet = threading.local()  # .on: inside SummaryWriter.add_hparams (its own add_scalar calls)


def autolog(
    log_every_n_epoch: int = 1,
    log_every_n_step: int | None = None,
    log_models: bool = True,
    log_datasets: bool = False,
    disable: bool = False,
    exclusive: bool = False,
    disable_for_unsupported_versions: bool = False,
    silent: bool = False,
    registered_model_name: str | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    checkpoint: bool = True,
    checkpoint_monitor: str = "val_loss",
    checkpoint_mode: str = "min",
    checkpoint_save_best_only: bool = True,
    checkpoint_save_weights_only: bool = False,
    checkpoint_save_freq: str | int = "epoch",
    log_model_signatures: bool = True,
) -> None:
    """Log PyTorch Lightning ``Trainer.fit`` calls and ``SummaryWriter`` scalars (see the module
    docstring). MLflow's arguments, with MLflow's meaning:

    ``log_every_n_epoch`` / ``log_every_n_step``: epoch metrics every n epochs (default 1);
    step metrics every n steps (default: none; for SummaryWriter, every scalar).
    ``log_models``, ``log_model_signatures``, ``registered_model_name``: the trained module as
    ``model``. ``exclusive``: log nothing into a run the user opened. ``silent``: failures as
    log records instead of warnings. ``disable_for_unsupported_versions``: leave torch and
    Lightning alone outside the versions this is tested with (2.x). ``extra_tags``: set on the
    run. ``checkpoint`` and ``checkpoint_monitor``, ``checkpoint_mode`` (``min``/``max``),
    ``checkpoint_save_best_only``, ``checkpoint_save_weights_only``, ``checkpoint_save_freq``
    (``"epoch"`` or every n steps): checkpoints as artifacts. ``disable=True`` restores the
    patched methods. ``log_datasets=True`` asks for what keel does not do: ``InvalidArgument``.
    """
    global _settings
    from keel.exceptions import InvalidArgument
    from keel.extras import missing_extra

    refuse_not_done("PyTorch", log_datasets=log_datasets)
    for name, value in (("log_every_n_epoch", log_every_n_epoch), ("log_every_n_step", log_every_n_step)):
        if value is None and name == "log_every_n_step":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgument(f"{name} must be a positive int, got {value!r}", reason="INVALID_ARGUMENT")
    flags = {
        "log_models": log_models,
        "log_model_signatures": log_model_signatures,
        "exclusive": exclusive,
        "disable_for_unsupported_versions": disable_for_unsupported_versions,
        "silent": silent,
        "checkpoint": checkpoint,
        "checkpoint_save_best_only": checkpoint_save_best_only,
        "checkpoint_save_weights_only": checkpoint_save_weights_only,
    }
    for name, value in flags.items():
        check_flag(name, value)
    if checkpoint_mode not in ("min", "max"):
        raise InvalidArgument(
            f"checkpoint_mode must be 'min' or 'max', got {checkpoint_mode!r}", reason="INVALID_ARGUMENT"
        )
    if checkpoint_save_freq != "epoch" and (
        not isinstance(checkpoint_save_freq, int)
        or isinstance(checkpoint_save_freq, bool)
        or checkpoint_save_freq < 1
    ):
        raise InvalidArgument(
            f"checkpoint_save_freq must be 'epoch' or a positive number of steps, got {checkpoint_save_freq!r}",
            reason="INVALID_ARGUMENT",
        )
    if checkpoint_save_best_only and (not isinstance(checkpoint_monitor, str) or not checkpoint_monitor):
        raise InvalidArgument(
            "checkpoint_monitor must name a metric when checkpoint_save_best_only is True",
            reason="INVALID_ARGUMENT",
        )
    registered_model_name = check_registered_model_name(registered_model_name)
    tags = string_tags(extra_tags)
    with _lock:
        if disable:
            _patches.restore_all()
            _settings = None
            _close_open_writers()  # their points are sent and the runs they started ended
            return
        if importlib.util.find_spec("torch") is None:
            raise missing_extra("torch", "pytorch", purpose="needed for PyTorch autologging")
        if disable_for_unsupported_versions and not version_supported("torch", *SUPPORTED_VERSIONS["torch"]):
            log.info(
                "PyTorch autologging stays off: torch is outside the tested versions %s",
                SUPPORTED_VERSIONS["torch"],
            )
            _patches.restore_all()
            _settings = None
            return
        _settings = AutologSettings(
            log_every_n_epoch=log_every_n_epoch,
            log_every_n_step=log_every_n_step,
            log_models=log_models,
            log_model_signatures=log_model_signatures,
            registered_model_name=registered_model_name,
            exclusive=exclusive,
            disable_for_unsupported_versions=disable_for_unsupported_versions,
            silent=silent,
            extra_tags=tags,
            checkpoint=checkpoint,
            checkpoint_monitor=checkpoint_monitor,
            checkpoint_mode=checkpoint_mode,
            checkpoint_save_best_only=checkpoint_save_best_only,
            checkpoint_save_weights_only=checkpoint_save_weights_only,
            checkpoint_save_freq=checkpoint_save_freq,
        )
        if not _patches:
            _install()


def _install() -> None:
    """Patches what is imported and arranges for the rest to be patched on import."""
    for module_name in LIGHTNING_PACKAGES:
        if importlib.util.find_spec(module_name.split(".")[0]) is not None:
            _patches.on_restore(when_imported(module_name, _patch_lightning))
    # SummaryWriter needs the tensorboard package: without it nobody can write scalars with it
    if importlib.util.find_spec("tensorboard") is not None:
        _patches.on_restore(when_imported(TENSORBOARD_MODULE, _patch_summary_writer))


# ---------------------------------------------------------------------------------------------
# Lightning
# ---------------------------------------------------------------------------------------------


def _patch_lightning(pl: ModuleType) -> None:
    distribution = LIGHTNING_PACKAGES[pl.__name__]
    settings = _settings
    if (
        settings is not None
        and settings.disable_for_unsupported_versions
        and not version_supported(distribution, *SUPPORTED_VERSIONS[distribution])
    ):
        log.info(
            "%s autologging stays off: outside the tested versions %s",
            distribution,
            SUPPORTED_VERSIONS[distribution],
        )
        return
    _patches.wrap(pl.Trainer, "fit", lambda original: _patched_fit(original, pl))


def _patched_fit(original: Callable[..., Any], pl: ModuleType) -> Callable[..., Any]:
    @functools.wraps(original)
    def fit_and_log(self: Any, *args: Any, **kwargs: Any) -> Any:
        global _fits
        with _lock:
            settings = _settings if _fits == 0 else None
            _fits += 1
        try:
            if settings is None:
                return original(self, *args, **kwargs)
            return _LightningFit(settings, pl, self).run(original, args, kwargs)
        finally:
            with _lock:
                _fits -= 1

    return fit_and_log


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The one-number values of ``trainer.callback_metrics`` (tensors, numbers) as floats."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            if hasattr(value, "numel") and value.numel() != 1:
                continue
            out[str(key)] = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return out


class _LightningFit:
    """The logging of one ``Trainer.fit``: the callback's hooks land here."""

    def __init__(self, settings: AutologSettings, pl: ModuleType, trainer: Any) -> None:
        self.settings = settings
        self.pl = pl
        self.trainer = trainer
        self.reporter = FailureReporter(settings.silent)
        self.sender: BackgroundLogger | None = None
        self.step_metrics: set[str] = set()  # logged per step, so left out of the epoch points
        self.epoch_metrics: set[str] = set()
        self.sample: tuple[Any, Any] | None = None  # (input, output) rows of the first batch
        self.best_monitored: float | None = None
        self.monitor_missing_said = False

    # -- the fit

    def run(self, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        import keel

        session = self.reporter.safely("start a run", lambda: open_session(self.settings.exclusive))
        if session is None:
            return original(self.trainer, *args, **kwargs)
        self.sender = BackgroundLogger(session.run_id, keel.get_tracking_uri())
        self.reporter.safely("read the trainer's params", self._log_fit_params)
        callback = _callback_class(self.pl)(self)
        self.trainer.callbacks.append(callback)
        model = args[0] if args else kwargs.get("model")
        restore_forward = (
            self._capture_first_batch(model)
            if self.settings.log_models and self.settings.log_model_signatures
            else None
        )
        try:
            result = original(self.trainer, *args, **kwargs)
        except BaseException as exc:
            self._detach(callback, restore_forward)
            killed = isinstance(exc, KeyboardInterrupt | SystemExit)
            self._finish(session, "KILLED" if killed else "FAILED", trained=False)
            raise
        self._detach(callback, restore_forward)
        interrupted = bool(getattr(self.trainer, "interrupted", False))
        self._finish(session, "KILLED" if interrupted else "FINISHED", trained=not interrupted)
        return result

    def _detach(self, callback: Any, restore_forward: Callable[[], None] | None) -> None:
        if callback in self.trainer.callbacks:
            self.trainer.callbacks.remove(callback)
        if restore_forward is not None:
            restore_forward()

    def _finish(self, session: Session, status: str, trained: bool) -> None:
        assert self.sender is not None
        if trained:
            self.reporter.safely("read the early stopping state", self._log_early_stopping_state)
            self.reporter.safely("write the model summary", self._log_model_summary)
        self.sender.close()  # what is queued is sent before the model is logged
        self._report_sender_failures()
        if trained and self.settings.log_models:
            self.reporter.safely("log the model", self._log_model)
        close_session(self.reporter, session, status)

    def _report_sender_failures(self) -> None:
        if self.sender is not None:
            for what, exc in self.sender.take_failures():
                self.reporter.report(what, exc)

    # -- params

    def _early_stopping(self) -> Any:
        kind = self.pl.callbacks.EarlyStopping
        return next((cb for cb in self.trainer.callbacks if isinstance(cb, kind)), None)

    def _log_fit_params(self) -> None:
        assert self.sender is not None
        trainer = self.trainer
        params: dict[str, Any] = {"epochs": trainer.max_epochs}
        for name in TRAINER_SETTINGS:
            value = getattr(trainer, name, None)
            if value is not None:
                params[name] = value
        stopper = self._early_stopping()
        if stopper is not None:
            params.update({p: getattr(stopper, p) for p in EARLY_STOPPING_PARAMS if hasattr(stopper, p)})
        self.sender.log_params(params)
        self.sender.set_tags(self.settings.extra_tags)

    def on_train_start(self, trainer: Any) -> None:
        assert self.sender is not None
        optimizers = getattr(trainer, "optimizers", None) or []
        if not optimizers:
            return
        # only the first optimizer, as MLflow: a second one's lr would clash with the first's
        optimizer = getattr(optimizers[0], "_optimizer", optimizers[0])  # a LightningOptimizer wraps it
        params = {"optimizer_name": type(optimizer).__name__, **dict(getattr(optimizer, "defaults", {}))}
        self.sender.log_params(params)

    # -- metrics and checkpoints

    def on_train_batch_end(self, trainer: Any) -> None:
        assert self.sender is not None
        n = self.settings.log_every_n_step
        if n:  # (the sanity check runs no training batch)
            steps_per_batch = max(1, len(getattr(trainer, "optimizers", ()) or ()))
            step = trainer.global_step
            if (step // steps_per_batch + 1) % n == 0:
                metrics = _scalars(trainer.callback_metrics)
                # a metric logged on both steps and epochs has a "<name>_step" twin: log that one
                items = {
                    k: v
                    for k, v in metrics.items()
                    if k not in self.epoch_metrics and f"{k}_step" not in metrics
                }
                self.step_metrics.update(items)
                self.sender.log_metrics(items, step)
        freq = self.settings.checkpoint_save_freq
        if (
            self.settings.checkpoint
            and isinstance(freq, int)
            and trainer.global_step > 0
            and trainer.global_step % freq == 0
        ):
            self._checkpoint(trainer)

    def on_train_epoch_end(self, trainer: Any) -> None:
        assert self.sender is not None
        if trainer.sanity_checking:
            return
        items = {k: v for k, v in _scalars(trainer.callback_metrics).items() if k not in self.step_metrics}
        self.epoch_metrics.update(items)
        epoch = trainer.current_epoch
        if (epoch + 1) % self.settings.log_every_n_epoch == 0:
            self.sender.log_metrics(items, epoch)
        if self.settings.checkpoint and self.settings.checkpoint_save_freq == "epoch":
            self._checkpoint(trainer)
        self._report_sender_failures()

    def _checkpoint(self, trainer: Any) -> None:
        """MLflow's automatic checkpointing: the best checkpoint so far (by the monitored metric)
        as ``checkpoints/latest_checkpoint.pth``, or each as ``checkpoints/epoch_<n>/`` (or
        ``global_step_<n>/``) ``checkpoint.pth``, with the metrics at that point beside it."""
        assert self.sender is not None
        s = self.settings
        metrics = _scalars(trainer.callback_metrics)
        suffix = ".weights.pth" if s.checkpoint_save_weights_only else ".pth"
        if s.checkpoint_save_best_only:
            value = metrics.get(s.checkpoint_monitor)
            if value is None:
                if not self.monitor_missing_said:
                    log.warning(
                        "keel autologging saves no checkpoint: the monitored metric %r is not logged "
                        "(checkpoint_monitor names it; checkpoint=False turns checkpoints off)",
                        s.checkpoint_monitor,
                    )
                    self.monitor_missing_said = True
                return
            best = self.best_monitored
            if best is not None and not (value < best if s.checkpoint_mode == "min" else value > best):
                return
            self.best_monitored = value
            directory, model_file, metrics_file = (
                CHECKPOINT_DIR,
                f"latest_checkpoint{suffix}",
                "latest_checkpoint_metrics.json",
            )
        else:
            where = (
                f"epoch_{trainer.current_epoch}"
                if s.checkpoint_save_freq == "epoch"
                else f"global_step_{trainer.global_step}"
            )
            directory, model_file, metrics_file = (
                f"{CHECKPOINT_DIR}/{where}",
                f"checkpoint{suffix}",
                "checkpoint_metrics.json",
            )
        path = self.sender.scratch_path(model_file)
        trainer.save_checkpoint(path, weights_only=s.checkpoint_save_weights_only)
        state = {**metrics, "epoch": trainer.current_epoch, "global_step": trainer.global_step}
        self.sender.log_text(json.dumps(state), f"{directory}/{metrics_file}")
        self.sender.log_file(path, directory)
        self.sender.set_tags({LATEST_CHECKPOINT_TAG: f"{directory}/{model_file}"})

    # -- after training

    def _log_early_stopping_state(self) -> None:
        assert self.sender is not None
        stopper = self._early_stopping()
        if stopper is None:
            return
        metrics: dict[str, float] = {}
        if getattr(stopper, "stopped_epoch", 0):  # 0: it did not stop the training
            metrics["stopped_epoch"] = stopper.stopped_epoch
            metrics["restored_epoch"] = stopper.stopped_epoch - max(1, int(stopper.patience))
        best = getattr(stopper, "best_score", None)
        if best is not None and math.isfinite(float(best)):
            metrics["best_score"] = float(best)
        if hasattr(stopper, "wait_count"):
            metrics["wait_count"] = stopper.wait_count
        self.sender.log_metrics(metrics, step=0)

    def _log_model_summary(self) -> None:
        assert self.sender is not None
        summary_module = importlib.import_module(f"{self.pl.__name__}.utilities.model_summary")
        module = self.trainer.lightning_module
        self.sender.log_text(str(summary_module.ModelSummary(module, max_depth=-1)), SUMMARY_FILE)

    def _capture_first_batch(self, model: Any) -> Callable[[], None] | None:
        """Wraps ``model.forward`` on this instance until its first call, whose input and output
        rows give the logged model its signature (MLflow does the same)."""
        import torch

        if not isinstance(model, torch.nn.Module):
            return None
        own = model.__dict__.get("forward")
        original = model.forward

        def restore() -> None:
            if model.__dict__.get("forward") is capture:
                if own is None:
                    del model.__dict__["forward"]
                else:
                    model.__dict__["forward"] = own

        def capture(*inputs: Any, **kw: Any) -> Any:
            restore()  # one batch is enough: the rest of training calls forward directly
            output = original(*inputs, **kw)
            try:
                if (
                    self.sample is None
                    and len(inputs) == 1
                    and not kw
                    and isinstance(inputs[0], torch.Tensor)
                    and isinstance(output, torch.Tensor)
                ):
                    rows = slice(0, SIGNATURE_ROWS)
                    self.sample = (
                        inputs[0][rows].detach().cpu().numpy(),
                        output[rows].detach().float().cpu().numpy(),
                    )
            except Exception as exc:  # no signature then; never break the forward pass
                log.debug("keel autologging: no signature from the first batch: %s", exc)
            return output

        model.__dict__["forward"] = capture
        return restore

    def _log_model(self) -> None:
        from keel import pytorch as keel_pytorch
        from keel.models import infer_signature
        from keel.models.environment import pinned

        signature = None
        if self.sample is not None:
            sample = self.sample
            signature = self.reporter.safely("infer the model signature", lambda: infer_signature(*sample))
        keel_pytorch.log_model(
            self.trainer.lightning_module,
            MODEL_PATH,
            signature=signature,
            registered_model_name=self.settings.registered_model_name,
            # the module's class is a Lightning class: loading it needs Lightning
            extra_pip_requirements=[pinned(LIGHTNING_PACKAGES[self.pl.__name__])],
        )


def _guarded(hook: Callable[..., None]) -> Callable[..., None]:
    """A callback hook that never raises into the training loop."""

    @functools.wraps(hook)
    def safe(self: Any, trainer: Any, *args: Any, **kwargs: Any) -> None:
        fit: _LightningFit = self.keel_fit
        if not trainer.is_global_zero or fit.reporter.unreachable:
            return
        try:
            hook(fit, trainer)
        except Exception as exc:
            fit.reporter.report(f"log at {hook.__name__}", exc)

    return safe


class _Hooks:
    """The Lightning callback's hooks (mixed into a ``Callback`` of the package in use)."""

    def __init__(self, fit: _LightningFit) -> None:
        self.keel_fit = fit

    on_train_start = _guarded(_LightningFit.on_train_start)
    on_train_batch_end = _guarded(_LightningFit.on_train_batch_end)
    on_train_epoch_end = _guarded(_LightningFit.on_train_epoch_end)


_callback_classes: dict[str, type] = {}


def _callback_class(pl: ModuleType) -> type:
    """``KeelAutologgingCallback`` for ``lightning.pytorch`` or ``pytorch_lightning`` (a trainer
    takes only callbacks of its own package)."""
    found = _callback_classes.get(pl.__name__)
    if found is None:
        found = _callback_classes[pl.__name__] = type("KeelAutologgingCallback", (_Hooks, pl.Callback), {})
    return found


# ---------------------------------------------------------------------------------------------
# SummaryWriter
# ---------------------------------------------------------------------------------------------


class _WriterLogging:
    """The run and the background sender of one SummaryWriter (made at its first scalar)."""

    def __init__(self, settings: AutologSettings) -> None:
        import keel

        self.reporter = FailureReporter(settings.silent)
        self.session: Session | None = self.reporter.safely(
            "start a run", lambda: open_session(settings.exclusive)
        )
        self.sender = BackgroundLogger(self.session.run_id, keel.get_tracking_uri()) if self.session else None
        if self.sender is not None:
            self.sender.set_tags(settings.extra_tags)

    def record(self, metrics: Mapping[str, float], step: int, timestamp_ms: int | None) -> None:
        if self.sender is not None:
            self.sender.log_metrics(metrics, step, timestamp_ms)
            self._report()

    def params(self, params: Mapping[str, Any]) -> None:
        if self.sender is not None:
            self.sender.log_params(params)

    def flush(self) -> None:
        if self.sender is not None:
            self.sender.flush()
            self._report()

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
            self._report()
        if self.session is not None:
            close_session(self.reporter, self.session, "FINISHED")

    def _report(self) -> None:
        assert self.sender is not None
        for what, exc in self.sender.take_failures():
            self.reporter.report(what, exc)


_writers_lock = threading.Lock()
_writers: dict[Any, _WriterLogging] = {}  # SummaryWriter -> its logging, until close()
_lightning_writers: set[int] = set()  # id() of writers seen inside an autologged Lightning fit


def _writer_logging(writer: Any) -> _WriterLogging | None:
    """The writer's logging (made on first use), or None when this scalar is not to be logged."""
    settings = _settings
    if settings is None or getattr(_quiet, "on", False):
        return None
    with _writers_lock:
        if _fits > 0 or id(writer) in _lightning_writers:
            # Lightning's TensorBoardLogger: the fit's callback logs these already
            _lightning_writers.add(id(writer))
            return None
        found = _writers.get(writer)
    if found is None:
        made = _WriterLogging(settings)
        with _writers_lock:
            found = _writers.setdefault(writer, made)
    return found


def _record(writer: Any, values: Mapping[str, Any], global_step: Any, walltime: Any) -> None:
    try:
        logging_ = _writer_logging(writer)
        if logging_ is None:
            return
        step = int(global_step) if global_step is not None else 0
        every = _settings.log_every_n_step if _settings is not None else None
        if every and step % every:
            return
        # a loss tensor still in the graph: its number only (float() on it would warn)
        metrics = {str(k): float(v.detach() if hasattr(v, "detach") else v) for k, v in values.items()}
        timestamp = int(float(walltime) * 1000) if walltime is not None else None
        logging_.record(metrics, step, timestamp)
    except Exception as exc:  # never break the training loop
        log.warning("keel autologging could not log SummaryWriter scalars %s: %s", list(values), exc)


def _patch_summary_writer(tensorboard: ModuleType) -> None:
    writer = tensorboard.SummaryWriter
    settings = _settings
    if (
        settings is not None
        and settings.disable_for_unsupported_versions
        and not version_supported("torch", *SUPPORTED_VERSIONS["torch"])
    ):
        return
    _patches.wrap(writer, "add_scalar", _wrap_add_scalar)
    _patches.wrap(writer, "add_scalars", _wrap_add_scalars)
    _patches.wrap(writer, "add_hparams", _wrap_add_hparams)
    _patches.wrap(writer, "flush", _wrap_flush)
    _patches.wrap(writer, "close", _wrap_close)


def _wrap_add_scalar(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def add_scalar(
        self: Any,
        tag: Any,
        scalar_value: Any,
        global_step: Any = None,
        walltime: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        result = original(self, tag, scalar_value, global_step, walltime, *args, **kwargs)
        _record(self, {tag: scalar_value}, global_step, walltime)
        return result

    return add_scalar


def _wrap_add_scalars(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def add_scalars(
        self: Any,
        main_tag: Any,
        tag_scalar_dict: Any,
        global_step: Any = None,
        walltime: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        result = original(self, main_tag, tag_scalar_dict, global_step, walltime, *args, **kwargs)
        _record(
            self,
            {f"{main_tag}/{tag}": value for tag, value in dict(tag_scalar_dict).items()},
            global_step,
            walltime,
        )
        return result

    return add_scalars


def _wrap_add_hparams(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def add_hparams(self: Any, hparam_dict: Any, metric_dict: Any, *args: Any, **kwargs: Any) -> Any:
        before = getattr(_quiet, "on", False)
        _quiet.on = True  # its own add_scalar calls (one per metric) are logged below, once
        try:
            result = original(self, hparam_dict, metric_dict, *args, **kwargs)
        finally:
            _quiet.on = before
        try:
            logging_ = _writer_logging(self)
            if logging_ is not None:
                logging_.params(dict(hparam_dict))
                global_step = kwargs.get("global_step", args[2] if len(args) > 2 else None)
                _record(self, dict(metric_dict), global_step, None)
        except Exception as exc:
            log.warning("keel autologging could not log SummaryWriter hparams: %s", exc)
        return result

    return add_hparams


def _wrap_flush(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def flush(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        with _writers_lock:
            logging_ = _writers.get(self)
        if logging_ is not None:
            logging_.flush()
        return result

    return flush


def _wrap_close(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def close(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        with _writers_lock:
            logging_ = _writers.pop(self, None)
            _lightning_writers.discard(id(self))
        if logging_ is not None:
            logging_.close()
        return result

    return close


def _close_open_writers() -> None:
    """Sends what open writers still hold and ends the runs they started: at ``disable=True``,
    and at interpreter exit before keel's own exit handlers (registered earlier, so run later)
    end the remaining runs."""
    with _writers_lock:
        open_ones = list(_writers.values())
        _writers.clear()
    for logging_ in open_ones:
        try:
            logging_.close()
        except Exception as exc:
            log.warning("keel autologging could not close a SummaryWriter's run: %s", exc)


atexit.register(_close_open_writers)
