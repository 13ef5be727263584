"""Console benchmark (issue #15): keel's web console against `mlflow ui` over the same data.

Run with ``make bench-console`` (or ``.venv/bin/python bench/bench_console.py [--quick]``).

On loopback, one after the other: a ``keel server --ui-port`` process (all services, SQLite) and
``mlflow server`` 3.x (build/venv-mlflow3, SQLite), each holding the same data:

- an experiment of 5,000 runs and one of 100,000 runs (bulk-inserted by bench_tracking's
  populate_keel / MLFLOW_POPULATE: 2 metrics, a param and a tag per run);
- a run with a 100,000-point metric ``loss`` (one spike of 100 at one step, the rest <= 1),
  logged through each server's own API with log_batch in chunks of 1,000;
- 10 runs with 3 metrics of 500 steps and 2 params, to compare.

Pages, opened in headless Chromium (Debian's, driven by Playwright), each in a fresh browser
context (cold) and then WARM_LOADS (3) times more in the same context (warm cache):

- the runs page of the 5,000- and of the 100,000-run experiment (ready: the first row drawn);
- the run page of the 100,000-point run (keel: the run page; MLflow: its "Model metrics" tab;
  ready: the chart drawn);
- compare of the 10 runs: keel's compare page, ready when every overlaid metric chart is
  drawn; in MLflow the chart view of the runs page (its overlaid charts of the runs: the
  equivalent), and also its compare-runs page (a parallel-coordinates plot, no metric charts).

Paint: ``performance.now()`` (milliseconds since the navigation started) at the first animation
frame in which the page's main content is in the DOM and visible, polled in the page. A page
not ready within PAINT_BOUND_S is reported as such, with what it had drawn by then.

Server time: every API request the page made before it was ready (keel: ``/api/...``; MLflow:
``/ajax-api/...`` and ``/graphql``) replayed on the warm server over one keep-alive HTTP
connection, median of SERVER_REPEATS; per page the slowest request and the sum of all. The keel
runs page's request is also timed deeper in the 100,000 runs (following ``next_page_token``),
sorted by a metric and by a param, and with an ``OR`` filter. Results are printed and written to
this script's section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mlflow_port import mlflow_server, mlflow_version  # noqa: E402
from bench_tracking import (  # noqa: E402
    MLFLOW_POPULATE,
    MlflowHttp,
    free_port,
    machine,
    populate_keel,
    process,
    replace_section,
    timed,
)

ROOT = Path(__file__).resolve().parent.parent
MLFLOW_VENV = ROOT / "build" / "venv-mlflow3"
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Console (bench/bench_console.py)"
SHOTS = ROOT / "build" / "bench-console"
CHROMIUM = os.environ.get("KEEL_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--no-first-run"]  # fmt: skip
VIEWPORT = {"width": 1440, "height": 1000}
PAINT_BOUND_S = 60.0
WARM_LOADS = 3
SERVER_REPEATS = 7
SERVER_BUDGET_S = 20.0  # per request: replays stop after this much time
SETUP_BOUND_S = 600.0  # logging the long metric and the compare runs, per server
SPIKE = 100.0
T0 = 1_700_000_000_000
# keel: a runs page must answer within this (issue #15); a 100k-point metric draws within CHART_MS
RUNS_PAGE_MS, CHART_MS = 200.0, 1000.0


@dataclass
class Sizes:
    small: int = 5_000
    large: int = 100_000
    points: int = 100_000
    compare_runs: int = 10
    compare_metrics: tuple[str, ...] = ("loss", "acc", "grad_norm")
    compare_steps: int = 500

    @property
    def spike_step(self) -> int:
        return self.points * 54_321 // 100_000


QUICK = Sizes(small=500, large=5_000, points=10_000, compare_steps=100)


# ---------------------------------------------------------------------------------------------
# Data: the same points for both servers
# ---------------------------------------------------------------------------------------------


def long_metric_chunks(sizes: Sizes) -> Iterator[list[tuple[str, float, int, int]]]:
    """The 100,000-point ``loss`` history as (key, value, timestamp, step), 1,000 at a time."""
    for start in range(0, sizes.points, 1000):
        yield [("loss", SPIKE if s == sizes.spike_step else 1.0 / (1 + s % 977), T0 + s, s)
               for s in range(start, min(sizes.points, start + 1000))]  # fmt: skip


def compare_run(i: int, sizes: Sizes) -> tuple[dict[str, str], list[list[tuple[str, float, int, int]]]]:
    """Params and metric chunks (<= 1,000 points) of compare run ``i``."""
    params = {"lr": str(round(0.001 * (i + 1), 4)), "model": ("cnn", "mlp", "rf")[i % 3]}
    points = []
    for key in sizes.compare_metrics:
        for s in range(sizes.compare_steps):
            value = {"loss": 1.0 / (1 + s) + i * 0.01, "acc": 1 - 0.5 / (1 + s * (i + 1) * 0.01)}.get(
                key, (i + 1) * 0.01 * s**0.5
            )
            points.append((key, value, T0 + s * 100, s))
    return params, [points[j : j + 1000] for j in range(0, len(points), 1000)]


@dataclass
class Data:
    small_exp: str = ""
    large_exp: str = ""
    long_exp: str = ""
    long_run: str = ""
    compare_exp: str = ""
    compare_runs: list[str] = field(default_factory=list)
    setup_s: dict[str, float] = field(default_factory=dict)


def deadline_check(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise RuntimeError(f"setup bound of {SETUP_BOUND_S:.0f} s passed while {what}")


def keel_log(grpc_uri: str, sizes: Sizes, data: Data) -> None:
    """The long metric and the compare runs through the keel SDK."""
    import keel
    from keel.entities import Metric, Param

    client = keel.Client(grpc_uri)
    deadline = time.monotonic() + SETUP_BOUND_S
    t0 = time.perf_counter()
    data.long_exp = str(client.create_experiment("long-metric"))
    data.long_run = client.create_run(data.long_exp, run_name="long-run", start_time=T0).info.run_id
    for chunk in long_metric_chunks(sizes):
        client.log_batch(data.long_run, metrics=[Metric(*p) for p in chunk])
        deadline_check(deadline, "logging the long metric to keel")
    client.set_terminated(data.long_run, end_time=T0 + sizes.points)
    data.setup_s["long_metric"] = time.perf_counter() - t0
    data.compare_exp = str(client.create_experiment("compare-10"))
    for i in range(sizes.compare_runs):
        run_id = client.create_run(data.compare_exp, run_name=f"cmp-{i}", start_time=T0).info.run_id
        params, chunks = compare_run(i, sizes)
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        for chunk in chunks:
            client.log_batch(run_id, metrics=[Metric(*p) for p in chunk])
            deadline_check(deadline, "logging the compare runs to keel")
        client.set_terminated(run_id, end_time=T0 + 100_000)
        data.compare_runs.append(run_id)


def mlflow_log(port: int, sizes: Sizes, data: Data) -> None:
    """The same through MLflow's REST API (what MlflowClient.log_batch sends)."""
    client = MlflowHttp(port)
    deadline = time.monotonic() + SETUP_BOUND_S

    def metrics(chunk: list[tuple[str, float, int, int]]) -> list[dict[str, Any]]:
        return [{"key": k, "value": v, "timestamp": t, "step": s} for k, v, t, s in chunk]

    t0 = time.perf_counter()
    data.long_exp = client.post("experiments/create", {"name": "long-metric"})["experiment_id"]
    body = {"experiment_id": data.long_exp, "run_name": "long-run", "start_time": T0}
    data.long_run = client.post("runs/create", body)["run"]["info"]["run_id"]
    for chunk in long_metric_chunks(sizes):
        client.post("runs/log-batch", {"run_id": data.long_run, "metrics": metrics(chunk)})
        deadline_check(deadline, "logging the long metric to MLflow")
    client.post("runs/update", {"run_id": data.long_run, "status": "FINISHED", "end_time": T0 + sizes.points})
    data.setup_s["long_metric"] = time.perf_counter() - t0
    data.compare_exp = client.post("experiments/create", {"name": "compare-10"})["experiment_id"]
    for i in range(sizes.compare_runs):
        body = {"experiment_id": data.compare_exp, "run_name": f"cmp-{i}", "start_time": T0}
        run_id = client.post("runs/create", body)["run"]["info"]["run_id"]
        params, chunks = compare_run(i, sizes)
        client.post(
            "runs/log-batch",
            {"run_id": run_id, "params": [{"key": k, "value": v} for k, v in params.items()]},
        )
        for chunk in chunks:
            client.post("runs/log-batch", {"run_id": run_id, "metrics": metrics(chunk)})
            deadline_check(deadline, "logging the compare runs to MLflow")
        client.post("runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": T0 + 100_000})
        data.compare_runs.append(run_id)


def populate_mlflow3(work: Path, n_runs: int, name: str) -> str:
    """bench_tracking's MLFLOW_POPULATE run by the mlflow of build/venv-mlflow3 (its schema)."""
    out = subprocess.run(
        [str(MLFLOW_VENV / "bin" / "python"), "-c", MLFLOW_POPULATE, f"sqlite:///{work / 'mlflow.db'}", str(n_runs), name],
        capture_output=True, text=True, check=True, cwd=work, timeout=1200,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def keel_console(work: Path) -> Iterator[tuple[int, int]]:
    """``keel server`` (all services) with the console; yields (gRPC port, console port)."""
    grpc_port, ui_port = free_port(), free_port()
    env = {"KEEL_DB_URL": f"sqlite:///{work / 'keel.db'}", "KEEL_ARTIFACT_URI": f"file://{work / 'artifacts'}",
           "KEEL_LOG_LEVEL": "WARNING"}  # fmt: skip
    cmd = [sys.executable, "-m", "keel.cli", "server", "--port", str(grpc_port), "--ui-port", str(ui_port)]
    with process(cmd, r"keel console on http://[^:]+:(\d+)", env, timeout=180) as port:
        yield grpc_port, port


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------

# Each returns performance.now() in the first frame the page's main content is there, else false.
VISIBLE = "const visible = (e) => { const r = e && e.getBoundingClientRect(); return !!r && r.width > 0 && r.height > 0; };"
READY = {
    "keel-runs": "() => { "
    + VISIBLE
    + """ const t = document.querySelector('[data-testid="runs-table"]');
        const r = document.querySelector('[data-testid="run-row"]');
        return t && t.getAttribute('aria-busy') === 'false' && visible(r) ? performance.now() : false; }""",
    "keel-run": "() => { "
    + VISIBLE
    + """ const c = document.querySelector('[data-testid="metric-chart"][data-metric="loss"]');
        return c && c.dataset.state === 'ready' && visible(c) ? performance.now() : false; }""",
    "keel-compare": """(n) => { const c = [...document.querySelectorAll('[data-testid="compare-charts"] [data-testid="metric-chart"]')];
        return c.length >= n && c.every((x) => x.dataset.state === 'ready') ? performance.now() : false; }""",
    "mlflow-runs": "() => { "
    + VISIBLE
    + """ const a = document.querySelector('.ag-row a[href*="/runs/"]');
        return visible(a) ? performance.now() : false; }""",
    # a plotly line per run and chart, with its path drawn
    "mlflow-lines": """(n) => { const p = [...document.querySelectorAll('.js-plotly-plot path.js-line')]
        .filter((x) => (x.getAttribute('d') || '').length > 10);
        return p.length >= n ? performance.now() : false; }""",
    "mlflow-parcoords": "() => { "
    + VISIBLE
    + """ const p = document.querySelector('.js-plotly-plot .parcoords .axis-title');
        return visible(p) ? performance.now() : false; }""",
}
# keel's run page notes on each chart how long its request and its drawing took.
KEEL_CHART_MS = """() => { const d = document.querySelector('[data-testid="metric-chart"][data-metric="loss"]').dataset;
    return Number(d.fetchMs) + Number(d.drawMs); }"""
# What a page had drawn when it was not ready in time.
PROGRESS = """() => ({rows: document.querySelectorAll('[data-testid="run-row"], .ag-row').length,
    lines: document.querySelectorAll('.js-plotly-plot path.js-line, [data-testid="chart-line"], polyline').length})"""


@dataclass
class Page:
    system: str  # keel | mlflow
    name: str  # row label
    url: str
    ready: str  # key of READY
    arg: Any = None
    api: tuple[str, ...] = ("/api/",)
    main: str = ""  # substring of the page's main request
    chart: str = ""  # substring of the request whose points the chart draws
    chart_ms: str = ""  # JS: the chart's own time, request to drawn (keel's run page records it)


@dataclass
class Measured:
    page: Page
    cold_ms: float | None = None
    warm_ms: list[float] = field(default_factory=list)
    progress: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, float]] = field(default_factory=list)  # (method path, median ms)
    chart: dict[str, Any] = field(default_factory=dict)
    chart_ms: list[float] = field(default_factory=list)  # each load's chart request to drawn
    error: str = ""

    @property
    def sum_ms(self) -> float:
        return sum(ms for _, ms in self.requests)

    @property
    def slowest(self) -> tuple[str, float]:
        return max(self.requests, key=lambda r: r[1], default=("", 0.0))

    @property
    def main_ms(self) -> float | None:
        found = [ms for label, ms in self.requests if self.page.main and self.page.main in label]
        return max(found) if found else None


def load(context: Any, page: Page, out: Measured) -> tuple[float | None, Any, list[Any], list[Any]]:
    """Opens ``page.url`` in a new tab of ``context``: (paint ms or None, tab, API requests
    made before it was ready, responses of the chart's request)."""
    tab = context.new_page()
    requests: list[Any] = []
    responses: list[Any] = []
    tab.on("request", lambda r: requests.append(r) if any(a in r.url for a in page.api) else None)
    tab.on("response", lambda r: responses.append(r) if page.chart and page.chart in r.url else None)
    tab.goto(page.url, wait_until="commit", timeout=PAINT_BOUND_S * 1000)
    try:
        handle = tab.wait_for_function(
            READY[page.ready], arg=page.arg, polling="raf", timeout=PAINT_BOUND_S * 1000
        )
        painted: float | None = float(handle.json_value())
    except Exception as exc:  # playwright's TimeoutError: the page did not get there in time
        if "Timeout" not in type(exc).__name__:
            raise
        painted = None
    if painted is not None and page.chart_ms:
        out.chart_ms.append(float(tab.evaluate(page.chart_ms)))
    return painted, tab, list(requests), responses


def measure(browser: Any, page: Page, replay_port: int) -> Measured:
    out = Measured(page)
    context = browser.new_context(viewport=VIEWPORT)
    try:
        painted, tab, requests, responses = load(context, page, out)
        out.cold_ms = painted
        SHOTS.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", page.name.lower().replace(",", "")).strip("-")
        tab.screenshot(path=str(SHOTS / f"{page.system}-{slug}.png"))
        if painted is None:
            out.progress = tab.evaluate(PROGRESS)
            out.error = f"not drawn within {PAINT_BOUND_S:.0f} s"
        out.chart = chart_points(responses)
        tab.close()
        if painted is not None:
            for _ in range(WARM_LOADS):
                warm, tab, _r, _s = load(context, page, out)
                tab.close()
                if warm is None:
                    break
                out.warm_ms.append(warm)
        out.requests = replay(replay_port, requests)
    finally:
        context.close()
    return out


def chart_points(responses: list[Any]) -> dict[str, Any]:
    """How many points of the long metric reached the browser, and whether the spike did."""
    for r in responses:
        with contextlib.suppress(Exception):
            body = r.json()
            if "points" in body:  # keel: {"points": [[x, y]], "total", "downsampled"}
                ys = [p[1] for p in body["points"] if p[1] is not None]
                return {"points": len(body["points"]), "total": body.get("total"), "spike": SPIKE in ys}
            if "metrics" in body:  # MLflow: get-history-bulk-interval
                ys = [m.get("value") for m in body["metrics"]]
                return {"points": len(ys), "total": None, "spike": SPIKE in ys}
    return {}


def replay(port: int, requests: list[Any]) -> list[tuple[str, float]]:
    """Median wall time of each request, sent again on the warm server (loopback, keep-alive)."""
    conn = [http.client.HTTPConnection("127.0.0.1", port, timeout=PAINT_BOUND_S)]

    def send(method: str, target: str, body: bytes | None, headers: dict[str, str]) -> None:
        try:
            conn[0].request(method, target, body, headers)
            conn[0].getresponse().read()
        except (ConnectionError, http.client.HTTPException):
            # the server closed an idle keep-alive connection: once more on a new one
            conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=PAINT_BOUND_S)
            conn[0].request(method, target, body, headers)
            conn[0].getresponse().read()

    cache: dict[tuple[str, str, str], float] = {}
    out = []
    for r in requests:
        parts = urllib.parse.urlsplit(r.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        body = r.post_data or ""
        key = (r.method, target, body)
        if key not in cache:
            kept = ("content-type", "accept", "authorization")
            headers = {k: v for k, v in r.headers.items() if k.lower() in kept}
            args = (r.method, target, body.encode() if body else None, headers)
            cache[key] = statistics.median(
                timed(lambda args=args: send(*args), SERVER_REPEATS, SERVER_BUDGET_S)
            )
        out.append((f"{r.method} {parts.path}", cache[key]))
    conn[0].close()
    return out


def keel_runs_variants(port: int, experiment_id: str, pages: int) -> dict[str, tuple[float, float]]:
    """The runs page's request deeper in a large experiment, and sorted and filtered: (median,
    slowest) of SERVER_REPEATS calls each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PAINT_BOUND_S)

    def get(query: dict[str, str]) -> dict[str, Any]:
        conn.request("GET", "/api/runs?" + urllib.parse.urlencode(query))
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/api/runs {query}: {response.status} {body[:300]!r}")
        return dict(json.loads(body))

    def median(query: dict[str, str]) -> tuple[float, float]:
        samples = timed(lambda: get(query), SERVER_REPEATS, SERVER_BUDGET_S)
        return statistics.median(samples), max(samples)

    base = {"experiment_ids": experiment_id, "page_size": "50"}
    out: dict[str, tuple[float, float]] = {}
    token, deep = "", []
    for _ in range(pages):
        query = {**base, "page_token": token} if token else base
        deep.append(median(query))
        token = get(query)["next_page_token"]
        if not token:
            break
    out[f"pages 1-{len(deep)}, default order (the slowest page)"] = max(deep)
    out["sorted by metrics.rmse DESC"] = median({**base, "order_by": "metrics.rmse DESC"})
    out["sorted by params.model ASC"] = median({**base, "order_by": "params.model ASC"})
    out["filter `metrics.rmse < 0.5 OR params.model = 'cnn'`, sorted by metrics.acc"] = median(
        {**base, "filter": "metrics.rmse < 0.5 OR params.model = 'cnn'", "order_by": "metrics.acc DESC"}
    )
    conn.close()
    return out


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def keel_pages(ui: str, sizes: Sizes, data: Data) -> list[Page]:
    return [
        Page(
            "keel",
            f"runs page, {sizes.small:,} runs",
            f"{ui}/#/runs?e={data.small_exp}",
            "keel-runs",
            main="/api/runs",
        ),
        Page(
            "keel",
            f"runs page, {sizes.large:,} runs",
            f"{ui}/#/runs?e={data.large_exp}",
            "keel-runs",
            main="/api/runs",
        ),
        Page(
            "keel",
            f"run page, {sizes.points:,}-point metric",
            f"{ui}/#/run/{data.long_run}",
            "keel-run",
            main="/metrics/loss",
            chart=f"/api/runs/{data.long_run}/metrics/loss",
            chart_ms=KEEL_CHART_MS,
        ),
        Page(
            "keel",
            f"compare {sizes.compare_runs} runs",
            f"{ui}/#/compare?runs={','.join(data.compare_runs)}",
            "keel-compare",
            arg=len(sizes.compare_metrics),
            main="/api/metrics",
        ),
    ]


def mlflow_pages(ui: str, sizes: Sizes, data: Data) -> list[Page]:
    api = ("/ajax-api/", "/graphql", "/api/2.0/")
    runs = urllib.parse.quote(json.dumps(data.compare_runs))
    exps = urllib.parse.quote(json.dumps([data.compare_exp]))
    return [
        Page(
            "mlflow",
            f"runs page, {sizes.small:,} runs",
            f"{ui}/#/experiments/{data.small_exp}/runs",
            "mlflow-runs",
            api=api,
            main="runs/search",
        ),
        Page(
            "mlflow",
            f"runs page, {sizes.large:,} runs",
            f"{ui}/#/experiments/{data.large_exp}/runs",
            "mlflow-runs",
            api=api,
            main="runs/search",
        ),
        Page(
            "mlflow",
            f"run page, {sizes.points:,}-point metric",
            f"{ui}/#/experiments/{data.long_exp}/runs/{data.long_run}/model-metrics",
            "mlflow-lines",
            arg=1,
            api=api,
            main="get-history-bulk-interval",
            chart="get-history-bulk-interval",
        ),
        Page(
            "mlflow",
            f"compare {sizes.compare_runs} runs",
            f"{ui}/#/experiments/{data.compare_exp}/runs?compareRunsMode=CHART",
            "mlflow-lines",
            arg=sizes.compare_runs * len(sizes.compare_metrics),
            api=api,
            main="get-history-bulk-interval",
        ),
        Page(
            "mlflow",
            "compare-runs page (parallel coordinates)",
            f"{ui}/#/compare-runs?runs={runs}&experiments={exps}",
            "mlflow-parcoords",
            api=api,
            main="runs/search",
        ),
    ]


def run_keel(browser: Any, work: Path, sizes: Sizes) -> tuple[Data, list[Measured], dict[str, float]]:
    data = Data()
    url = f"sqlite:///{work / 'keel.db'}"
    t0 = time.perf_counter()
    data.small_exp = populate_keel(url, sizes.small, f"runs-{sizes.small}")
    data.large_exp = populate_keel(url, sizes.large, f"runs-{sizes.large}")
    data.setup_s["runs"] = time.perf_counter() - t0
    print(
        f"keel: populated {sizes.small:,} + {sizes.large:,} runs in {data.setup_s['runs']:.1f} s", flush=True
    )
    with keel_console(work) as (grpc_port, ui_port):
        keel_log(f"grpc://127.0.0.1:{grpc_port}", sizes, data)
        print(
            f"keel: logged the {sizes.points:,}-point metric in {data.setup_s['long_metric']:.1f} s",
            flush=True,
        )
        results = []
        for page in keel_pages(f"http://127.0.0.1:{ui_port}", sizes, data):
            results.append(measure(browser, page, ui_port))
            print(summary(results[-1]), flush=True)
        variants = keel_runs_variants(ui_port, data.large_exp, pages=10)
        for label, (ms, _slowest) in variants.items():
            print(f"keel /api/runs, {sizes.large:,} runs, {label}: {ms:.1f} ms", flush=True)
    return data, results, variants


def run_mlflow(browser: Any, work: Path, sizes: Sizes) -> tuple[Data, list[Measured]]:
    data = Data()
    t0 = time.perf_counter()
    data.small_exp = populate_mlflow3(work, sizes.small, f"runs-{sizes.small}")
    data.large_exp = populate_mlflow3(work, sizes.large, f"runs-{sizes.large}")
    data.setup_s["runs"] = time.perf_counter() - t0
    print(
        f"mlflow: populated {sizes.small:,} + {sizes.large:,} runs in {data.setup_s['runs']:.1f} s",
        flush=True,
    )
    with mlflow_server(work) as port:
        mlflow_log(port, sizes, data)
        print(
            f"mlflow: logged the {sizes.points:,}-point metric in {data.setup_s['long_metric']:.1f} s",
            flush=True,
        )
        results = []
        for page in mlflow_pages(f"http://127.0.0.1:{port}", sizes, data):
            results.append(measure(browser, page, port))
            print(summary(results[-1]), flush=True)
    return data, results


def summary(m: Measured) -> str:
    paint = f"{m.cold_ms:.0f} ms cold" if m.cold_ms is not None else m.error
    warm = f", {statistics.median(m.warm_ms):.0f} ms warm" if m.warm_ms else ""
    slow_label, slow_ms = m.slowest
    chart = f"; chart {m.chart}" if m.chart else ""
    return (f"{m.page.system} {m.page.name}: paint {paint}{warm}; server: {len(m.requests)} requests, "
            f"sum {m.sum_ms:.1f} ms, slowest {slow_label} {slow_ms:.1f} ms{chart}")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fmt_paint(m: Measured | None) -> str:
    if m is None:
        return "n/a"
    if m.cold_ms is None:
        drawn = ", ".join(f"{v} {k}" for k, v in m.progress.items() if v)
        return f"**not drawn in {PAINT_BOUND_S:.0f} s**" + (f" ({drawn} drawn)" if drawn else "")
    warm = f" / {statistics.median(m.warm_ms):,.0f}" if m.warm_ms else ""
    return f"{m.cold_ms:,.0f}{warm}"


def fmt_server(m: Measured | None) -> str:
    if m is None or not m.requests:
        return "n/a"
    main = m.main_ms
    main_part = f"{main:,.1f}" if main is not None else "—"
    return f"{main_part} / {m.slowest[1]:,.1f} / {m.sum_ms:,.1f} ({len(m.requests)})"


def fmt_chart(m: Measured | None) -> str:
    if m is None or not m.chart:
        return ""
    total = f" of {m.chart['total']:,}" if m.chart.get("total") else ""
    return f"{m.chart['points']:,}{total} points sent, spike {'kept' if m.chart['spike'] else '**lost**'}"


def report(keel_data: Data, keel: list[Measured], variants: dict[str, tuple[float, float]], ml_data: Data | None,
           mlflow: list[Measured], sizes: Sizes, loads: tuple[float, float], took: float) -> str:  # fmt: skip
    by_name = {m.page.name: m for m in mlflow}
    rows = [
        "| page | keel paint ms, cold / warm | keel server ms: main / slowest / sum (requests) | "
        "MLflow paint ms, cold / warm | MLflow server ms: main / slowest / sum (requests) | chart data |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in keel:
        other = by_name.get(m.page.name)
        chart = "; ".join(x for x in (f"keel {fmt_chart(m)}" if m.chart else "",
                                      f"MLflow {fmt_chart(other)}" if other and other.chart else "") if x)  # fmt: skip
        rows.append(
            f"| {m.page.name} | {fmt_paint(m)} | {fmt_server(m)} | {fmt_paint(other)} | {fmt_server(other)} | {chart} |"
        )
    for m in mlflow:
        if m.page.name not in {k.page.name for k in keel}:
            rows.append(f"| {m.page.name} | — | — | {fmt_paint(m)} | {fmt_server(m)} | |")

    run_page = next(m for m in keel if "point metric" in m.page.name)
    large = next(m for m in keel if f"{sizes.large:,} runs" in m.page.name)
    runs_ms = [v for v in [large.main_ms] if v is not None] + [median for median, _ in variants.values()]
    worst_runs = max(runs_ms) if runs_ms else float("inf")
    chart_ms = statistics.median(run_page.chart_ms) if run_page.chart_ms else float("inf")
    page_ms = [v for v in [run_page.cold_ms, *run_page.warm_ms] if v is not None]
    page_under = sum(v < CHART_MS for v in page_ms)
    ml_log = f", MLflow {ml_data.setup_s.get('long_metric', 0):.1f} s" if ml_data else ""
    lines = [
        SECTION,
        "",
        f"Machine: {machine()}. Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}. Load average "
        f"{loads[0]:.1f} before, {loads[1]:.1f} after (other work shares this machine); the run took {took / 60:.1f} min.",
        "",
        f"Loopback, SQLite for both, one server at a time: `keel server --ui-port` (all services) and `mlflow server` "
        f"{mlflow_version() if ml_data else '(not run)'} (build/venv-mlflow3, its defaults). Headless Debian Chromium "
        f"through Playwright, {VIEWPORT['width']}x{VIEWPORT['height']}. Data, the same in both: experiments of "
        f"{sizes.small:,} and {sizes.large:,} runs (2 metrics, a param, a tag each; bulk-inserted), a run whose "
        f"`loss` has {sizes.points:,} points with one spike of {SPIKE:g} at step {sizes.spike_step:,} (log_batch "
        f"of 1,000 through each server's API: keel {keel_data.setup_s.get('long_metric', 0):.1f} s{ml_log}), "
        f"and {sizes.compare_runs} runs with "
        f"{len(sizes.compare_metrics)} metrics of {sizes.compare_steps} steps.",
        "",
        "Paint: navigation start to the first frame with the page's main content drawn (`performance.now()`, polled "
        "each frame): the runs table's first row; the run's `loss` chart (MLflow: the run's Model metrics tab); for "
        "compare, every overlaid metric chart (keel's compare page; MLflow's equivalent is the chart view of the "
        "runs page, one line per run in each chart). Cold: a fresh browser context; warm: median of "
        f"{WARM_LOADS} reloads in it. Server: each API request the page made before it was drawn, replayed on the "
        f"warm server (loopback HTTP, keep-alive), median of {SERVER_REPEATS}; main = the page's data request "
        "(keel `/api/runs`, `/api/runs/{id}/metrics/loss`, `/api/metrics`; MLflow `runs/search`, "
        "`get-history-bulk-interval`). MLflow's pages also ask for server info, the current user, the "
        "assistant's config, datasets and logged models; all of them are in its sum.",
        "",
        *rows,
        "",
        f"keel's runs request over the {sizes.large:,} runs (pages of 50, {SERVER_REPEATS} calls each; the first row "
        "of the table above is page 1 in the default order):",
        "",
        f"| request | median ms | slowest of {SERVER_REPEATS} ms |",
        "| --- | --- | --- |",
        *[f"| {label} | {ms:.1f} | {slowest:.1f} |" for label, (ms, slowest) in variants.items()],
        "",
        f"- Target: a {sizes.points:,}-point metric draws in under a second: the chart's request to the chart "
        f"drawn, median of the {len(run_page.chart_ms)} loads, {chart_ms:,.0f} ms — "
        f"**{'met' if chart_ms < CHART_MS else 'MISSED'}**. The whole run page, navigation start to the chart drawn "
        f"(cold / warm): {fmt_paint(run_page)} ms, under a second in {page_under} of {len(page_ms)} loads.",
        f"- Target: the runs page of a {sizes.large:,}-run experiment answers in under {RUNS_PAGE_MS:.0f} ms of "
        f"server time per page: the largest median above {worst_runs:.1f} ms — "
        f"**{'met' if worst_runs < RUNS_PAGE_MS else 'MISSED'}**.",
    ]
    failed = [m for m in mlflow if m.cold_ms is None]
    if failed:
        lines.append(
            "- MLflow could not draw: " + "; ".join(f"{m.page.name} ({m.error})" for m in failed) + "."
        )
    lost = [m for m in mlflow if m.chart and not m.chart["spike"]]
    if lost:
        lines.append(f"- MLflow draws only part of the {sizes.points:,}-point metric: "
                     + "; ".join(fmt_chart(m) for m in lost)
                     + " (it samples steps evenly, so a one-step spike falls between samples).")  # fmt: skip
    lines.append(f"- Screenshots of each page as measured: `{SHOTS.relative_to(ROOT)}/` (not kept in git).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (a smoke run; RESULTS.md untouched)"
    )
    parser.add_argument("--skip-mlflow", action="store_true", help="keel only (RESULTS.md untouched)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    if not os.path.exists(CHROMIUM):
        sys.exit(f"{CHROMIUM} is missing: `make chromium` (or set KEEL_CHROMIUM)")
    if not args.skip_mlflow and not (MLFLOW_VENV / "bin" / "mlflow").exists():
        sys.exit("build/venv-mlflow3 is missing: run `make mlflow-venvs`")
    for name in ("KEEL_TRACKING_TOKEN", "KEEL_TRACKING_URI", "KEEL_REGISTRY_URI", "KEEL_ARTIFACTS_URI"):
        os.environ.pop(name, None)
    from playwright.sync_api import sync_playwright

    began, load_before = time.monotonic(), os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="keel-bench-console-"))
    ml_data, mlflow = None, []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
            try:
                (work / "keel").mkdir()
                keel_data, keel, variants = run_keel(browser, work / "keel", sizes)
                shutil.rmtree(work / "keel", ignore_errors=True)
                if not args.skip_mlflow:
                    (work / "mlflow").mkdir()
                    ml_data, mlflow = run_mlflow(browser, work / "mlflow", sizes)
            finally:
                browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(keel_data, keel, variants, ml_data, mlflow, sizes, (load_before, os.getloadavg()[0]),
                  time.monotonic() - began)  # fmt: skip
    print(text)
    if not args.quick and not args.skip_mlflow:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()
