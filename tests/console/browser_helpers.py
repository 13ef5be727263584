"""Playwright plumbing and seed data for the console's browser tests.

The browser is Debian's ``chromium`` (``apt-get install -y chromium``; Playwright's own browser
download does not work here), driven headless through the ``playwright`` package. Each test gets
a fresh browser context (so sessionStorage, where the console keeps a sign-in token, starts empty)
and leaves a screenshot in ``build/test-artifacts/console/<test>.png``. Uncaught JavaScript errors
on a page fail the test that caused them.

Data is made through the keel SDK, as a user would, before the browser looks at it. A test module
uses the fixtures ``browser`` and ``page`` by importing ``browser_fixture`` and ``page_fixture``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need the playwright package (requirements.txt)"
)
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "build" / "test-artifacts" / "console"
CHROMIUM = os.environ.get("KEEL_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Auto-waiting bound of every locator action and expect(): generous for a loaded 2-core machine,
# far below the test timeout.
WAIT_MS = 15_000

expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    """Headless Chromium for one test module (closed at its end, so no event loop outlives it)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) or set KEEL_CHROMIUM"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(name="page")
def page_fixture(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh context; its screenshot is saved when the test ends, pass or fail."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(WAIT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        try:
            pg.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        finally:
            context.close()
    assert not errors, f"uncaught JavaScript errors on the page: {errors}"


def open_console(page: Page, server: Any, route: str = "/experiments") -> Page:
    """Opens ``#<route>`` of the console of ``server`` (a ``console_server`` handle)."""
    page.goto(f"{server.ui_url}/#{route}")
    return page


def sign_in(page: Page, server: Any, token: str, route: str = "/experiments") -> Page:
    """Opens the console, which asks for a token when auth is on, and signs in with ``token``."""
    open_console(page, server, route)
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("signed-in-user")).to_be_visible()
    return page


def column_values(page: Page, col: str) -> list[str]:
    """The text of column ``col`` (a ``data-col`` id such as ``metrics.rmse:last``) in every run row."""
    return page.locator(f'[data-testid="run-row"] td[data-col="{col}"]').all_inner_texts()


# ---- seed data --------------------------------------------------------------------------------

MODELS = ("cnn", "mlp", "rf")


@dataclass
class RunsSeed:
    experiment_id: str
    experiment_name: str
    run_ids: list[str] = field(default_factory=list)
    by_name: dict[str, str] = field(default_factory=dict)
    rmse_last: dict[str, float] = field(default_factory=dict)


def seed_runs(client: Any, name: str, count: int) -> RunsSeed:
    """``count`` finished runs named run-000.. in a new experiment ``name``: params ``model``
    (cnn, mlp, rf in turn) and ``lr``, a tag ``team``, and a metric ``rmse`` logged at three steps
    so that its last, min and max differ."""
    from keel.entities import Metric, Param, RunTag

    experiment_id = client.create_experiment(name)
    seed = RunsSeed(experiment_id=str(experiment_id), experiment_name=name)
    now = int(time.time() * 1000)
    for i in range(count):
        run = client.create_run(experiment_id, run_name=f"run-{i:03d}", start_time=now - (count - i) * 1000)
        run_id = run.info.run_id
        last = round(0.5 + (i * 37 % 100) / 100, 4)  # distinct values in a shuffled order
        values = [last + 0.3, last - 0.1, last]  # max first, min in the middle, last differs from both
        client.log_batch(
            run_id,
            metrics=[Metric("rmse", v, now + s, s) for s, v in enumerate(values)],
            params=[Param("model", MODELS[i % 3]), Param("lr", str(round(0.001 * (1 + i % 5), 4)))],
            tags=[RunTag("team", "vision" if i % 2 else "speech")],
        )
        client.set_terminated(run_id)
        seed.run_ids.append(run_id)
        seed.by_name[f"run-{i:03d}"] = run_id
        seed.rmse_last[run_id] = last
    return seed


def seed_chart_run(client: Any, experiment_id: str, root: Path, points: int = 25) -> str:
    """A run with metric ``loss`` at steps 0..points-1 and artifacts of every previewed kind: text,
    JSON, YAML, CSV, a PNG, and an sklearn model (MLmodel with a signature) under ``model/``."""
    from keel.entities import Metric

    run = client.create_run(experiment_id, run_name="chart-run")
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric("loss", round(2.0 / (1 + s), 5), now + s * 100, s) for s in range(points)]
        + [Metric("accuracy", round(0.5 + s / (2 * points), 5), now + s * 100, s) for s in range(points)],
    )
    client.log_text(run_id, "hello from keel\nsecond line\n", "notes/readme.txt")
    client.log_dict(run_id, {"layers": [64, 32], "dropout": 0.1}, "config.json")
    client.log_text(run_id, "epochs: 10\noptimizer: adam\n", "config.yaml")
    client.log_text(run_id, "feature,importance\nsepal_length,0.12\npetal_width,0.51\n", "importance.csv")
    png = root / "plot.png"
    _write_png(png)
    client.log_artifact(run_id, str(png), "plots")
    log_sklearn_model(client, run_id, root)
    client.set_terminated(run_id)
    return run_id


def _write_png(path: Path) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (160, 90), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([10, 10, 150, 80], outline="navy", width=3)
    draw.line([10, 80, 60, 40, 100, 55, 150, 15], fill="crimson", width=3)
    img.save(path)


def log_sklearn_model(client: Any, run_id: str, root: Path) -> None:
    """An sklearn model saved by keel (MLmodel, signature, environment files) uploaded as
    ``model/`` of the run."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    import keel.sklearn
    from keel.models import infer_signature

    x = pd.DataFrame({"x1": np.arange(8, dtype=float), "x2": np.arange(8, dtype=float) ** 2})
    y = x["x1"] * 2 + 1
    model = LinearRegression().fit(x, y)
    folder = root / f"model-{run_id}"
    keel.sklearn.save_model(model, str(folder), signature=infer_signature(x, model.predict(x)))
    client.log_artifacts(run_id, str(folder), "model")


def seed_model_run(client: Any, experiment_name: str, root: Path) -> str:
    """A finished run in a new experiment with an sklearn model under ``model/``."""
    experiment_id = client.create_experiment(experiment_name)
    run_id = client.create_run(experiment_id, run_name="model-run").info.run_id
    log_sklearn_model(client, run_id, root)
    client.set_terminated(run_id)
    return str(run_id)


def seed_model(client: Any, run_id: str, name: str, versions: int) -> list[str]:
    """``versions`` versions of model ``name``, all from ``runs:/<run_id>/model``."""
    client.create_registered_model(name)
    return [
        str(client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version)
        for _ in range(versions)
    ]
