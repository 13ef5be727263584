"""What PyTorch autologging adds to a Lightning epoch (issue #19's performance part).

Run with ``make bench-autolog`` (or ``.venv/bin/python bench/bench_autolog.py [--quick]``).

One ``keel server`` process (tracking, registry, artifacts; SQLite in a temp dir) on loopback,
and in this process a Lightning training: an MLP (32 -> 128 -> 128 -> 1) on synthetic
regression data, 16,384 training rows in batches of 128 (128 steps an epoch) and 2,048
validation rows, on the CPU with one intra-op thread. The module logs ``train_loss`` per step and per epoch and
``val_loss`` per epoch with ``self.log``. The trainer has no logger, no checkpointing, no
progress bar and no model summary of its own, so the plain run does the least and the
difference is autologging's.

Configurations, taking turns fit by fit (each round starting with another, so that a change in
the load of this shared machine falls on all of them alike):

- plain: autologging off;
- plain, second set: the same again (the noise floor: what two identical sets differ by);
- autolog (defaults): ``keel.pytorch.autolog()``: params, epoch metrics, a checkpoint of each
  better ``val_loss`` (``checkpoints/latest_checkpoint.pth``), the model summary and, after
  the fit, the model;
- autolog, checkpoint=False: the same without checkpoints (params, metrics, summary, model);
- autolog, every step: the same with ``log_every_n_step=1`` (a point per step and metric).

Epoch time: from one epoch's ``on_train_epoch_start`` to the next one's (the last epoch: to
``on_train_end``), so it holds everything the epoch runs, validation and every callback's
epoch-end work included; the first epoch of each fit (sanity check, warm-up) is left out.
Epoch CPU: this process's CPU time over the same span (the training and autologging's sending
thread; not the server's), steadier than wall time on a machine shared with other work.
In hooks: the time spent in autologging's Lightning hooks, per epoch (the benchmark wraps them
with a timer): autologging's own work in the training thread, which the machine's load does
not blur. Server CPU: the ``keel server`` process's CPU time during the fit, per epoch (it
shares this machine's two CPUs with the training). Fit time: around ``trainer.fit``, so it also holds what autologging does once per fit
(starting the run; after training: sending what is queued, logging the model, ending the
run). Target (issue #19): under 5% added to the epoch's time, judged on the least disturbed
(best) epoch and on the CPU time, which the load of a shared machine blurs least; the medians
are reported beside them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_security import child_pids, cpu_ms  # noqa: E402
from bench_tracking import machine, process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## PyTorch autologging overhead (bench/bench_autolog.py)"
TARGET_PCT = 5.0
FEATURES, HIDDEN = 32, 128
TRAIN_ROWS, VAL_ROWS, BATCH = 16_384, 2_048, 128


@dataclass(frozen=True)
class Sizes:
    epochs: int = 6  # per fit; the first is left out of the epoch times
    rounds: int = 8


QUICK = Sizes(epochs=3, rounds=1)


@dataclass
class Config:
    label: str
    autolog: dict[str, Any] | None  # keel.pytorch.autolog arguments; None: off
    control: bool = False
    epochs: list[float] = field(default_factory=list)  # wall seconds
    epoch_cpu: list[float] = field(default_factory=list)  # this process's CPU seconds (all threads)
    fits: list[float] = field(default_factory=list)
    hook_per_epoch: list[float] = field(default_factory=list)  # seconds in autologging's hooks
    server_cpu_per_epoch: list[float] = field(default_factory=list)  # the server process's CPU ms


# seconds spent in autologging's Lightning hooks (the training thread's share of its work)
_hook_seconds = [0.0]


def time_the_hooks() -> None:
    """Wraps the autologging callback's hooks with a timer (a measurement aid of this benchmark)."""
    from keel.autologging import pytorch as autologging

    def timed(hook: Any) -> Any:
        def wrapper(self: Any, trainer: Any, *args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return hook(self, trainer, *args, **kwargs)
            finally:
                _hook_seconds[0] += time.perf_counter() - began

        return wrapper

    for name in ("on_train_start", "on_train_batch_end", "on_train_epoch_end"):
        setattr(autologging._Hooks, name, timed(getattr(autologging._Hooks, name)))


def configs() -> list[Config]:
    return [
        Config("plain", None),
        Config("plain, second set (noise)", None, control=True),
        Config("autolog (defaults)", {}),
        Config("autolog, checkpoint=False", {"checkpoint": False}),
        Config("autolog, log_every_n_step=1", {"log_every_n_step": 1}),
    ]


def keel_server(folder: Path) -> Any:
    env = {
        "KEEL_DB_URL": f"sqlite:///{folder}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{folder}/artifacts",
        "KEEL_LOG_LEVEL": "WARNING",
        "KEEL_AUTH": "false",
        "KEEL_METRICS_PORT": "0",
        "KEEL_HTTP_PORT": "0",
    }
    cmd = [
        sys.executable,
        "-m",
        "keel.cli",
        "server",
        "--port",
        "0",
        "--services",
        "tracking,registry,artifacts",
    ]
    return process(cmd, r"keel server listening on [^:]+:(\d+)", env)


def training() -> tuple[Any, Any, Any, Any]:
    """(module class, timing callback class, train loader, validation loader)."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(FEATURES, HIDDEN),
                torch.nn.ReLU(),
                torch.nn.Linear(HIDDEN, HIDDEN),
                torch.nn.ReLU(),
                torch.nn.Linear(HIDDEN, 1),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []  # (wall, process CPU)

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.marks.append((time.perf_counter(), time.process_time()))

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.marks.append((time.perf_counter(), time.process_time()))

        def epochs(self) -> list[tuple[float, float]]:
            return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.marks, self.marks[1:], strict=False)]

    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(FEATURES, 1, generator=generator)
    x = torch.randn(TRAIN_ROWS + VAL_ROWS, FEATURES, generator=generator)
    y = torch.sin(x @ weights) + 0.1 * torch.randn(len(x), 1, generator=generator)
    train = DataLoader(TensorDataset(x[:TRAIN_ROWS], y[:TRAIN_ROWS]), batch_size=BATCH, shuffle=True)
    val = DataLoader(TensorDataset(x[TRAIN_ROWS:], y[TRAIN_ROWS:]), batch_size=512)
    return MLP, EpochTimer, train, val


def one_fit(config: Config, sizes: Sizes, parts: tuple[Any, Any, Any, Any], server_pid: int) -> None:
    import lightning.pytorch as pl

    import keel

    module_class, timer_class, train, val = parts
    timer = timer_class()
    trainer = pl.Trainer(
        max_epochs=sizes.epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    if config.autolog is not None:
        keel.pytorch.autolog(**config.autolog)
    try:
        _hook_seconds[0] = 0.0
        server_before = cpu_ms(server_pid)
        began = time.perf_counter()
        trainer.fit(module_class(), train, val)
        config.hook_per_epoch.append(_hook_seconds[0] / sizes.epochs)
        config.server_cpu_per_epoch.append((cpu_ms(server_pid) - server_before) / sizes.epochs)
        config.fits.append(time.perf_counter() - began)
    finally:
        keel.pytorch.autolog(disable=True)
    for wall, cpu in timer.epochs()[1:]:
        config.epochs.append(wall)
        config.epoch_cpu.append(cpu)


def rotated(items: list[Config], index: int) -> list[Config]:
    shift = index % len(items)
    return items[shift:] + items[:shift]


def report(all_configs: list[Config], sizes: Sizes, seconds: float, load: tuple[float, float]) -> str:
    import lightning
    import torch

    import keel

    plain = all_configs[0]
    base = {
        "median": statistics.median(plain.epochs),
        "best": min(plain.epochs),
        "cpu": statistics.median(plain.epoch_cpu),
        "fit": statistics.median(plain.fits),
    }
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    steps = TRAIN_ROWS // BATCH
    lines = [
        SECTION,
        "",
        f"Run {when} on {machine()}; torch {torch.__version__}, lightning {lightning.__version__}, keel "
        f"{keel.__version__}; load average {load[0]:.1f} before, {load[1]:.1f} after; {seconds:.0f} s in all.",
        "One `keel server` process (tracking, registry, artifacts; SQLite) on loopback. Lightning on the CPU "
        f"(torch.set_num_threads(1)): an MLP {FEATURES}->{HIDDEN}->{HIDDEN}->1, {TRAIN_ROWS:,} training rows in "
        f"batches of {BATCH} ({steps} steps an epoch), {VAL_ROWS:,} validation rows; `self.log` of train_loss (step "
        f"and epoch) and val_loss. {sizes.rounds} fits of {sizes.epochs} epochs per configuration, taken in turns; "
        "each fit's first epoch is left out. Epoch: from one epoch's start to the next one's (validation and every "
        "callback included); best: the least disturbed epoch; CPU: this process's CPU time over the epoch (training "
        "and autologging's sending thread); in hooks: time in autologging's Lightning hooks (the benchmark times "
        "them); server CPU: the `keel server` process's. Fit: around `trainer.fit` (autologging's once-per-fit "
        f"work included). Target (issue #19): under {TARGET_PCT:.0f}% added to the epoch, judged on the best epoch "
        "and the CPU time, which the load of this shared machine blurs least.",
        "",
        "| configuration | epoch median ms | added | epoch best ms | added | epoch CPU ms | added "
        "| in hooks ms/epoch | server CPU ms/epoch | fit median s | added s | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def pct(value: float, reference: float) -> str:
        return f"{100 * (value - reference) / reference:+.1f}%"

    autologged = [c for c in all_configs if c.autolog is not None]
    noise = next(c for c in all_configs if c.control)
    missed = []
    for config in all_configs:
        median, best = statistics.median(config.epochs), min(config.epochs)
        cpu, fit = statistics.median(config.epoch_cpu), statistics.median(config.fits)
        server = statistics.median(config.server_cpu_per_epoch)
        on = config.autolog is not None
        hooks = f"{statistics.median(config.hook_per_epoch) * 1000:.2f}" if on else ""
        if config is plain:
            verdict, added = "", ("", "", "", "")
        else:
            added = (
                pct(median, base["median"]),
                pct(best, base["best"]),
                pct(cpu, base["cpu"]),
                f"{fit - base['fit']:+.2f}",
            )
            worst = max(100 * (best - base["best"]) / base["best"], 100 * (cpu - base["cpu"]) / base["cpu"])
            verdict = "(noise floor)" if config.control else ("met" if worst < TARGET_PCT else "MISSED")
        if verdict == "MISSED":
            missed.append(config.label)
        lines.append(
            f"| {config.label} | {median * 1000:.1f} | {added[0]} | {best * 1000:.1f} | {added[1]} | {cpu * 1000:.1f} "
            f"| {added[2]} | {hooks} | {server:.1f} | {fit:.2f} | {added[3]} | {verdict} |"
        )
    lines += [
        "",
        "- In the training thread an autologged epoch reads `trainer.callback_metrics` and queues the points; with a "
        "better `val_loss` it writes the checkpoint file (`trainer.save_checkpoint`). The rest (one LogBatch a "
        "second, the checkpoint upload) runs on a background thread, so training never waits for the server; on "
        "this 2-CPU machine that thread and the server still share the cores with the training.",
        "- Once per fit: starting the run, and after the last epoch sending what is queued, the model summary, "
        "`keel.pytorch.log_model` (a few files) and ending the run: the added fit time.",
        "- The second plain set is the noise floor of this run: epoch medians of identical sets differ by that much "
        "on this machine shared with other work.",
        "- Epoch medians against plain, at load average "
        f"{load[0]:.1f} to {load[1]:.1f} on {os.cpu_count()} CPUs (noise floor "
        f"{pct(statistics.median(noise.epochs), base['median'])}), with the CPU time each set adds per epoch here "
        "and in the server: "
        + "; ".join(
            f"{c.label} {pct(statistics.median(c.epochs), base['median'])} "
            f"({(statistics.median(c.epoch_cpu) - base['cpu']) * 1000:+.0f} ms, "
            f"{statistics.median(c.server_cpu_per_epoch) - statistics.median(plain.server_cpu_per_epoch):+.0f} ms)"
            for c in autologged
        )
        + ".",
        "- Target: " + (f"missed for {', '.join(missed)}." if missed else "met for every configuration."),
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(existing):
        RESULTS.write_text(pattern.sub(lambda _: text + "\n", existing))
    else:
        RESULTS.write_text(existing.rstrip("\n") + "\n\n" + text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one short round (a smoke run; RESULTS.md untouched)"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    began, load_before = time.monotonic(), os.getloadavg()[0]
    for name in ("KEEL_TRACKING_TOKEN", "KEEL_REGISTRY_URI", "KEEL_ARTIFACTS_URI", "KEEL_TRACKING_URI"):
        os.environ.pop(name, None)
    import logging

    import torch

    import keel
    import keel.pytorch

    # one intra-op thread: with two, a training step spins against the server and the other
    # processes of this 2-CPU machine, and epoch times swing by whole seconds
    torch.set_num_threads(1)
    parts = training()
    time_the_hooks()
    # Lightning's tips, device lines and deprecations, not ours (its logger is set on import)
    warnings.filterwarnings("ignore", module="lightning")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    all_configs = configs()
    before = child_pids()
    with tempfile.TemporaryDirectory(prefix="keel-bench-autolog-") as tmp, keel_server(Path(tmp)) as port:
        (server_pid,) = child_pids() - before
        keel.set_tracking_uri(f"grpc://127.0.0.1:{port}")
        keel.set_experiment(f"bench-autolog-{uuid.uuid4().hex[:8]}")
        one_fit(all_configs[2], Sizes(epochs=2, rounds=1), parts, server_pid)  # warm-up: imports, connection
        all_configs[2].epochs.clear()
        all_configs[2].fits.clear()
        all_configs[2].hook_per_epoch.clear()
        all_configs[2].server_cpu_per_epoch.clear()
        for round_index in range(sizes.rounds):
            for config in rotated(all_configs, round_index):
                one_fit(config, sizes, parts, server_pid)
                print(
                    f"round {round_index + 1}/{sizes.rounds}: {config.label}: fit {config.fits[-1]:.2f} s",
                    flush=True,
                )
    text = report(all_configs, sizes, time.monotonic() - began, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.quick:
        write_section(text)


if __name__ == "__main__":
    main()
