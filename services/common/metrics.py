"""Prometheus metrics of a keel server: one latency histogram per RPC method and status code.

Exposed over HTTP on ``--metrics-port`` (off by default); recording is always on and cheap.
"""

from __future__ import annotations

import time

from prometheus_client import Histogram, start_http_server

RPC_SECONDS = Histogram(
    "keel_rpc_duration_seconds",
    "Server-side duration of keel RPCs, by full method name and status code.",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def observe(method: str, code: str, started: float) -> None:
    RPC_SECONDS.labels(method, code).observe(time.perf_counter() - started)


def serve_metrics(host: str, port: int) -> None:
    """Starts the /metrics HTTP endpoint in a daemon thread."""
    start_http_server(port, addr=host)
