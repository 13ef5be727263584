"""What the filter limits cost (issue #20): the limit checks against the whole parse and against
a SearchRuns call.

Run with ``make bench-filters`` (or ``.venv/bin/python bench/bench_filter_limits.py``).

The limits are enforced by one pass over the tokens (nesting depth, ``_nesting``) plus counters
the parser keeps (comparisons, values) and a length check. This script times, for a typical
filter, a 50-comparison filter and one at the 1,000-comparison limit: tokenising, the nesting
pass alone, and the whole ``parse_filter``; then SearchRuns p50 over 5,000 runs (SQLite, an
in-process server, through the SDK) with the first two. The limits' cost is the nesting pass
(the counters are two additions per comparison), reported in microseconds and as a share of the
parse and of the search. Bounded: fixed call counts, each loop capped in time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The tracking benchmark's timing helpers (latencies in ms, percentiles).
from bench_tracking import machine, percentile, timed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Filter limits (bench/bench_filter_limits.py)"
RUNS = 5_000
PARSE_CALLS, SEARCH_CALLS = 2_000, 200

FILTERS = {
    "typical (2 comparisons)": "metrics.rmse < 0.8 and params.model = 'cnn'",
    "50 comparisons (OR chain)": " OR ".join(f"params.model = 'm{i}'" for i in range(50)),
    "1,000 comparisons (the limit)": " OR ".join(f"metrics.rmse < {i}" for i in range(1000)),
}


def _best_us(fn: Callable[[], object], calls: int, budget_s: float = 10.0) -> float:
    """Median time per call in microseconds over up to ``calls`` calls (capped at ``budget_s``)."""
    return percentile(timed(fn, calls, budget_s), 0.5) * 1000


def parse_costs() -> list[tuple[str, float, float, float]]:
    from keel_server.common import filters

    rows = []
    for label, text in FILTERS.items():
        calls = PARSE_CALLS if len(text) < 5_000 else PARSE_CALLS // 20
        tokens = filters._tokenize(text)
        tokenize = _best_us(lambda text=text: filters._tokenize(text), calls)
        nesting = _best_us(lambda tokens=tokens: filters._nesting(tokens), calls)
        parse = _best_us(lambda text=text: filters.parse_filter(text), calls)
        rows.append((label, tokenize, nesting, parse))
    return rows


@contextlib.contextmanager
def keel_server(folder: Path) -> Iterator[str]:
    from keel_server.common.config import Settings
    from keel_server.common.server import build_server

    settings = dataclasses.replace(
        Settings(), db_url=f"sqlite:///{folder}/keel.db", artifact_uri=f"file://{folder}/artifacts", port=0
    )
    running = build_server(settings)
    try:
        yield f"grpc://127.0.0.1:{running.port}"
    finally:
        running.stop(grace=1.0)


def populate(client: object, experiment_id: str) -> None:
    """5,000 runs with a param and a latest metric each, inserted straight into the tables."""
    from keel_server.common import db as dbmod

    now = dbmod.now_ms()
    runs, params, metrics = [], [], []
    for i in range(RUNS):
        run_id = uuid.uuid4().hex
        runs.append({"run_id": run_id, "experiment": int(experiment_id), "run_name": f"r{i}", "start_time": now + i,
                     "artifact_uri": f"file:///tmp/{run_id}", "status": "FINISHED"})  # fmt: skip
        params.append({"run": run_id, "key": "model", "value": f"m{i % 100}"})
        metrics.append({"run": run_id, "key": "rmse", "value": (i % 1000) / 1000, "timestamp": now, "step": 0})
    with dbmod.db.atomic():
        for start in range(0, RUNS, 500):
            dbmod.Run.insert_many(runs[start : start + 500]).execute()
            dbmod.Param.insert_many(params[start : start + 500]).execute()
            dbmod.LatestMetric.insert_many(metrics[start : start + 500]).execute()


def search_costs() -> list[tuple[str, float]]:
    import keel

    rows = []
    with tempfile.TemporaryDirectory(prefix="keel-bench-filters-") as tmp, keel_server(Path(tmp)) as uri:
        client = keel.Client(uri)
        experiment_id = client.create_experiment("filter-limits")
        populate(client, experiment_id)
        for label, text in list(FILTERS.items())[:2]:
            def search(text: str = text) -> object:
                return client.search_runs([experiment_id], text, max_results=100, order_by=["metrics.rmse ASC"])
            search()  # warm
            rows.append((label, _best_us(search, SEARCH_CALLS, 30.0) / 1000))
    return rows


def main() -> None:
    parses = parse_costs()
    searches = dict(search_costs())
    lines = [
        SECTION,
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}. Medians; the limits' cost is the",
        "nesting pass over the tokens (`_nesting`); the comparison and value limits are counters the parser",
        "keeps anyway. SearchRuns: 5,000 runs on SQLite, in-process server, through the SDK, 100 results",
        "ordered by `metrics.rmse`.",
        "",
        "| filter | tokenise µs | limit checks µs | whole parse µs | limits / parse | SearchRuns p50 ms | limits / search |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, tokenize, nesting, parse in parses:
        search = searches.get(label)
        share = f"{nesting / (search * 1000):.3%}" if search else "(at the limit: parse only)"
        lines.append(
            f"| {label} | {tokenize:.1f} | {nesting:.1f} | {parse:.1f} | {nesting / parse:.1%} | "
            f"{f'{search:.2f}' if search else '—'} | {share} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    RESULTS.write_text(pattern.sub(lambda _: text + "\n", existing) if pattern.search(existing)
                       else existing.rstrip("\n") + "\n\n" + text)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
