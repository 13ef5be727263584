"""PyTorch autologging against a real in-process keel server: Lightning training (params,
per-epoch and per-step metrics, early stopping, checkpoints, the model), SummaryWriter loops,
a server that goes away mid-training, disable=True, and the arguments it refuses."""

from __future__ import annotations

import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightning")
pytest.importorskip("tensorboard")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import EarlyStopping  # noqa: E402
from server_fixtures import ServerHandle, running_server  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

import keel  # noqa: E402
import keel.pytorch  # noqa: E402
from keel.autologging import KeelAutologgingWarning  # noqa: E402
from keel.autologging import pytorch as pytorch_autolog  # noqa: E402
from keel.exceptions import InvalidArgument  # noqa: E402

ORIGINAL_FIT = pl.Trainer.fit
ORIGINAL_ADD_SCALAR = SummaryWriter.add_scalar
FEATURES = 4


class Regressor(pl.LightningModule):
    """A linear regression that logs its training loss per step and per epoch, and a validation
    loss per epoch."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.net = torch.nn.Linear(FEATURES, 1)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=1e-4)


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Every model starts from the same weights: the loss curves the tests rely on (a falling
    validation loss) are the same on every run."""
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def data() -> tuple[DataLoader, DataLoader, np.ndarray]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, FEATURES, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    train = DataLoader(TensorDataset(x, y), batch_size=16)
    val = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=32)
    return train, val, x[:8].numpy()


def _trainer(max_epochs: int, **kwargs: object) -> pl.Trainer:
    options: dict[str, object] = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
    }
    options.update(kwargs)
    return pl.Trainer(max_epochs=max_epochs, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    root = tmp_path_factory.mktemp("keel-autolog-pytorch")
    with running_server(f"sqlite:///{root}/keel.db", f"file://{root}/artifacts") as handle:
        yield handle


@pytest.fixture()
def tracking(server: ServerHandle) -> Iterator[keel.Client]:
    """The fluent API on the module's server, a fresh experiment per test, autologging off and
    no run left active afterwards."""
    keel.set_tracking_uri(server.uri)
    keel.set_experiment(f"autolog-pt-{uuid.uuid4().hex[:12]}")
    try:
        yield keel.Client(server.uri)
    finally:
        pytorch_autolog.autolog(disable=True)
        while keel.active_run() is not None:
            keel.end_run()
    assert pl.Trainer.fit is ORIGINAL_FIT and SummaryWriter.add_scalar is ORIGINAL_ADD_SCALAR


def _runs() -> list:
    return keel.search_runs(output_format="list")


def _history(client: keel.Client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_two_epoch_lightning_run(tracking: keel.Client, data) -> None:
    train, val, sample = data
    keel.pytorch.autolog()
    model = Regressor()
    trainer = _trainer(2)
    trainer.fit(model, train, val)
    assert keel.active_run() is None  # the run autologging started ended with the fit
    [run] = _runs()
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["epochs"] == "2" and params["max_epochs"] == "2"
    assert params["optimizer_name"] == "Adam"
    assert float(params["lr"]) == 0.05 and float(params["weight_decay"]) == 1e-4
    assert params["betas"] == "(0.9, 0.999)"
    for key in ("train_loss", "train_loss_epoch", "val_loss"):
        history = _history(tracking, run.info.run_id, key)
        assert [step for step, _ in history] == [0, 1], key
    val_history = _history(tracking, run.info.run_id, "val_loss")
    assert val_history[1][1] < val_history[0][1]  # it learned
    assert val_history[1][1] == pytest.approx(float(trainer.callback_metrics["val_loss"]), rel=1e-6)
    # no step-level points without log_every_n_step
    assert [s for s, _ in _history(tracking, run.info.run_id, "train_loss_step")] == [0, 1]

    artifacts = {f.path for f in tracking.list_artifacts(run.info.run_id)}
    assert {"model", "model_summary.txt", "checkpoints"} <= artifacts
    summary = keel.artifacts.load_text(f"runs:/{run.info.run_id}/model_summary.txt")
    assert "net" in summary and "Linear" in summary
    checkpoints = {f.path for f in tracking.list_artifacts(run.info.run_id, "checkpoints")}
    assert checkpoints == {"checkpoints/latest_checkpoint.pth", "checkpoints/latest_checkpoint_metrics.json"}
    assert run.data.tags["mlflow.latest_checkpoint_artifact"] == "checkpoints/latest_checkpoint.pth"
    state = keel.artifacts.load_dict(f"runs:/{run.info.run_id}/checkpoints/latest_checkpoint_metrics.json")
    assert state["epoch"] == 1 and state["val_loss"] == pytest.approx(val_history[1][1])

    # the model loads back through pyfunc and predicts what the trained module predicts
    loaded = keel.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    expected = model(torch.from_numpy(sample)).detach().numpy()
    np.testing.assert_allclose(loaded.predict(sample), expected, rtol=1e-5)
    signature = loaded.metadata.signature
    assert signature is not None and signature.inputs is not None
    # the forward patch that captured the first batch is gone
    assert "forward" not in model.__dict__


def test_early_stopping_steps_and_registration_in_the_users_run(tracking: keel.Client, data) -> None:
    train, val, _ = data
    name = f"autolog-pt-{uuid.uuid4().hex[:12]}"
    keel.pytorch.autolog(
        log_every_n_step=2, checkpoint=False, registered_model_name=name, extra_tags={"team": "vision"}
    )
    # mode="max" on a falling loss: epoch 0 is the best, epoch 1 worse, patience 1 -> stops at 1
    stopper = EarlyStopping(monitor="val_loss", mode="max", patience=1)
    trainer = _trainer(5, callbacks=[stopper])
    with keel.start_run() as run:
        trainer.fit(Regressor(), train, val)
        assert keel.active_run() is not None and keel.active_run().info.run_id == run.info.run_id
    assert trainer.current_epoch == 2 and stopper.stopped_epoch == 1
    logged = tracking.get_run(run.info.run_id)
    assert logged.data.params["monitor"] == "val_loss"
    assert logged.data.params["patience"] == "1" and logged.data.params["mode"] == "max"
    metrics = logged.data.metrics
    assert metrics["stopped_epoch"] == 1 and metrics["restored_epoch"] == 0
    assert metrics["wait_count"] == 1
    assert metrics["best_score"] == pytest.approx(float(stopper.best_score))
    assert logged.data.tags["team"] == "vision"
    # 4 batches an epoch, 2 epochs: global steps 1..8, every 2nd one logged
    step_points = _history(tracking, run.info.run_id, "train_loss_step")
    assert [s for s, _ in step_points] == [1, 3, 5, 7]
    assert [s for s, _ in _history(tracking, run.info.run_id, "val_loss")] == [0, 1]
    artifacts = {f.path for f in tracking.list_artifacts(run.info.run_id)}
    assert "checkpoints" not in artifacts  # checkpoint=False
    [version] = tracking.search_model_versions(f"name = '{name}'")
    assert str(version.version) == "1" and version.run_id == run.info.run_id


def test_exclusive_leaves_the_users_run_alone(tracking: keel.Client, data) -> None:
    train, val, _ = data
    keel.pytorch.autolog(exclusive=True, log_models=False)
    with keel.start_run() as run:
        _trainer(1).fit(Regressor(), train, val)
    [only] = _runs()
    assert only.info.run_id == run.info.run_id and only.data.params == {} and only.data.metrics == {}


def test_summary_writer_scalars_become_metric_histories(tracking: keel.Client, tmp_path: Path) -> None:
    keel.pytorch.autolog()
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 2), torch.randn(16, 1)
    losses = []
    for step in range(5):  # a plain training loop
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        writer.add_scalar("loss", loss, step)
        writer.add_scalars("lr", {"group0": 0.1, "group1": 0.01 * step}, global_step=step)
    writer.add_hparams({"lr": 0.1, "batch": 16}, {"final_loss": losses[-1]})
    assert keel.active_run() is not None  # the writer's run, until close()
    writer.close()
    assert keel.active_run() is None
    [run] = _runs()
    assert run.info.status == "FINISHED"
    history = _history(tracking, run.info.run_id, "loss")
    assert [s for s, _ in history] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in history], losses, rtol=1e-6)
    assert [v for _, v in _history(tracking, run.info.run_id, "lr/group1")] == pytest.approx(
        [0.0, 0.01, 0.02, 0.03, 0.04]
    )
    assert run.data.params == {"lr": "0.1", "batch": "16"}
    assert _history(tracking, run.info.run_id, "final_loss") == [(0, pytest.approx(losses[-1]))]
    # TensorBoard still got its event file
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_summary_writer_in_the_users_run_every_n_steps(tracking: keel.Client, tmp_path: Path) -> None:
    keel.pytorch.autolog(log_every_n_step=2)
    with keel.start_run() as run, SummaryWriter(log_dir=str(tmp_path / "tb")) as writer:
        for step in range(6):
            writer.add_scalar("accuracy", step / 10, step)
        writer.flush()  # sends what is queued: visible before the writer closes
        assert [s for s, _ in _history(tracking, run.info.run_id, "accuracy")] == [0, 2, 4]
    [only] = _runs()
    assert only.info.run_id == run.info.run_id and only.info.status == "FINISHED"


def test_lightning_tensorboard_logger_is_not_logged_twice(
    tracking: keel.Client, data, tmp_path: Path
) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    train, val, _ = data
    keel.pytorch.autolog(log_models=False, checkpoint=False)
    trainer = _trainer(2, logger=TensorBoardLogger(str(tmp_path)), log_every_n_steps=1)
    trainer.fit(Regressor(), train, val)
    [run] = _runs()  # the fit's run only: the logger's writer did not start another
    assert [s for s, _ in _history(tracking, run.info.run_id, "val_loss")] == [0, 1]
    assert "epoch" not in run.data.metrics  # Lightning writes "epoch" to TensorBoard, not self.log


def test_server_gone_mid_training_warns_once_and_training_completes(
    data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops after the first epoch: the rest of the logging fails, one warning says so,
    and the fit runs to its end."""
    import keel._transport

    train, val, _ = data
    # the SDK's retry window for a server that stays down (8 s) shortened, so the test is quick
    monkeypatch.setattr(keel._transport, "RETRY_BUDGET_S", 0.5)
    with running_server(f"sqlite:///{tmp_path}/keel.db", f"file://{tmp_path}/artifacts") as handle:
        assert handle.running is not None
        keel.set_tracking_uri(handle.uri)
        keel.set_experiment("gone")
        stopped = []

        class StopServer(pl.Callback):
            def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                if not stopped:
                    handle.running.stop(grace=0)  # type: ignore[union-attr]
                    stopped.append(trainer.current_epoch)

        keel.pytorch.autolog()
        try:
            trainer = _trainer(3, callbacks=[StopServer()])
            model = Regressor()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                trainer.fit(model, train, val)
        finally:
            pytorch_autolog.autolog(disable=True)
            while keel.active_run() is not None:
                keel.end_run()
    ours = [w for w in caught if issubclass(w.category, KeelAutologgingWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert "Unavailable" in str(ours[0].message)
    assert stopped == [0] and trainer.current_epoch == 3 and trainer.state.finished
    assert keel.active_run() is None


def test_disable_restores_the_patches_and_logs_nothing(tracking: keel.Client, data, tmp_path: Path) -> None:
    train, val, _ = data
    keel.autolog(exclude_flavors=["sklearn"])
    assert pl.Trainer.fit is not ORIGINAL_FIT and SummaryWriter.add_scalar is not ORIGINAL_ADD_SCALAR
    keel.autolog(disable=True, exclude_flavors=["sklearn"])
    assert pl.Trainer.fit is ORIGINAL_FIT and SummaryWriter.add_scalar is ORIGINAL_ADD_SCALAR
    _trainer(1).fit(Regressor(), train, val)
    with SummaryWriter(log_dir=str(tmp_path)) as writer:
        writer.add_scalar("loss", 1.0, 0)
    assert _runs() == [] and keel.active_run() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"log_datasets": True}, "log_datasets=True is not supported"),
        ({"log_every_n_epoch": 0}, "log_every_n_epoch must be a positive int"),
        ({"log_every_n_step": 1.5}, "log_every_n_step must be a positive int"),
        ({"checkpoint_mode": "avg"}, "checkpoint_mode must be 'min' or 'max'"),
        ({"checkpoint_save_freq": "step"}, "checkpoint_save_freq must be 'epoch' or a positive number"),
        ({"checkpoint_monitor": ""}, "checkpoint_monitor must name a metric"),
        ({"registered_model_name": ""}, "registered_model_name must be a non-empty string"),
        ({"silent": "yes"}, "silent must be True or False"),
        ({"extra_tags": ["a"]}, "extra_tags must be a dict"),
    ],
)
def test_refused_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        keel.pytorch.autolog(**kwargs)
    assert pl.Trainer.fit is ORIGINAL_FIT  # nothing was turned on


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exclude_flavors": ["tensorflow"]}, r"exclude_flavors names \['tensorflow'\]"),
        ({"log_traces": True}, "keel has no tracing"),
        ({"log_datasets": True}, "keel does not record datasets"),
    ],
)
def test_universal_autolog_refuses_what_it_does_not_do(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        keel.autolog(**kwargs)


def test_turning_it_on_imports_nothing_until_the_library_is_imported() -> None:
    """keel.autolog() leaves torch unimported; importing torch.utils.tensorboard afterwards
    patches SummaryWriter on the spot (an import hook)."""
    script = (
        "import sys, keel\n"
        "keel.autolog(exclude_flavors=['sklearn'])\n"
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'imported too early'\n"
        "from torch.utils.tensorboard import SummaryWriter\n"
        "assert hasattr(SummaryWriter.add_scalar, '__wrapped__'), 'not patched on import'\n"
        "import torch.utils.tensorboard as tb\n"
        "assert tb.__spec__.loader.__class__.__name__ != '_HookedLoader'\n"
        "keel.autolog(disable=True, exclude_flavors=['sklearn'])\n"
        "assert not hasattr(SummaryWriter.add_scalar, '__wrapped__')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_disable_ends_the_run_an_open_writer_started(tracking: keel.Client, tmp_path: Path) -> None:
    keel.pytorch.autolog()
    writer = SummaryWriter(log_dir=str(tmp_path))
    writer.add_scalar("loss", 0.5, 3)
    keel.pytorch.autolog(disable=True)  # the writer is still open: its point is sent, its run ended
    assert keel.active_run() is None
    writer.add_scalar("loss", 0.25, 4)  # autologging is off: TensorBoard only
    writer.close()
    [run] = _runs()
    assert run.info.status == "FINISHED"
    assert _history(tracking, run.info.run_id, "loss") == [(3, 0.5)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"log_post_training_metrics": True}, "log_post_training_metrics=True is not supported"),
        ({"pos_label": 1}, "pos_label=1 is not supported"),
        ({"log_datasets": True}, "keel does not record datasets"),
        ({"serialization_format": "skops"}, "serialization_format must be 'cloudpickle' or 'pickle'"),
    ],
)
def test_sklearn_autolog_refuses_what_it_does_not_do(kwargs: dict, message: str) -> None:
    """The scikit-learn integration follows the same rule (it shares keel.autologging.common)."""
    from keel.autologging import sklearn as sklearn_autolog

    with pytest.raises(InvalidArgument, match=message):
        sklearn_autolog.autolog(**kwargs)
