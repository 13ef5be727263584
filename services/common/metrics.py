"""Prometheus metrics of a keel server.

Exposed over HTTP on ``--metrics-port`` (off by default); recording is always on and cheap. The
families (all in the process-global default registry):

- ``keel_rpc_duration_seconds{method,code}``: histogram, server-side duration of every RPC by
  full method name and status code (the interceptor records it).
- ``keel_db_connections_in_use``: gauge, computed at scrape time: the connections checked out
  of the pool of a pooled database (PostgreSQL, MySQL); always 0 for SQLite, whose per-thread
  connections peewee cannot count from another thread.
- ``keel_artifact_bytes_total{direction}``: counter, artifact bytes through ``ArtifactService``:
  ``in`` = bytes of committed uploads, ``out`` = bytes sent by downloads (counted once a call).
- ``keel_model_load_seconds{deployment}``: histogram, download + load + warm-up of a model for a
  deployment (successful loads).
- ``keel_predict_seconds{deployment}`` and ``keel_predict_batch_rows{deployment}``: histograms
  of the model's answer time (micro-batch wait included; decoding and encoding are in the RPC
  histogram) and the rows of each successful request, whichever protocol it came by.
- ``keel_sweeper_actions_total{sweeper,action}``: counter of what the background sweepers did:
  ``uploads``/``removed`` (dead upload leftovers), ``registrations``/``finished`` and
  ``registrations``/``failed`` (pending model versions settled).

Labels are bounded: deployment names (few, and a deleted deployment's series are dropped), never
model URIs or request data.
"""

from __future__ import annotations

import socketserver
import ssl
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app, start_http_server

from keel_server.common import db as dbmod
from keel_server.common.tls import TLSServerMixin, listening_family

RPC_SECONDS = Histogram(
    "keel_rpc_duration_seconds",
    "Server-side duration of keel RPCs, by full method name and status code.",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

DB_CONNECTIONS_IN_USE = Gauge(
    "keel_db_connections_in_use",
    "Database connections checked out of the pool (pooled PostgreSQL/MySQL; 0 for SQLite).",
)

ARTIFACT_BYTES = Counter(
    "keel_artifact_bytes_total",
    "Artifact bytes through ArtifactService: in = committed uploads, out = sent by downloads.",
    ["direction"],
)

MODEL_LOAD_SECONDS = Histogram(
    "keel_model_load_seconds",
    "Seconds to download, load and warm up a model for a deployment (successful loads).",
    ["deployment"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)

PREDICT_SECONDS = Histogram(
    "keel_predict_seconds",
    "Seconds a deployment's model took to answer a request (successful requests, micro-batch wait included).",
    ["deployment"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

PREDICT_BATCH_ROWS = Histogram(
    "keel_predict_batch_rows",
    "Rows (first dimension) of each successful predict request to a deployment.",
    ["deployment"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536),
)

SWEEPER_ACTIONS = Counter(
    "keel_sweeper_actions_total",
    "What background sweepers did: uploads/removed (dead upload leftovers), "
    "registrations/finished and registrations/failed (pending model versions settled).",
    ["sweeper", "action"],
)
# Present (at 0) from the start, so dashboards and alerts see the family before the first action.
SWEEPER_LABELS = (("uploads", "removed"), ("registrations", "finished"), ("registrations", "failed"))
for _sweeper, _action in SWEEPER_LABELS:
    SWEEPER_ACTIONS.labels(_sweeper, _action)
for _direction in ("in", "out"):
    ARTIFACT_BYTES.labels(_direction)


def db_connections_in_use() -> int:
    """Connections checked out of the current database's pool; 0 when it is not pooled (SQLite)
    or not opened yet. Read at scrape time (a dict length: no lock needed)."""
    in_use = getattr(dbmod.db.obj, "_in_use", None)
    return len(in_use) if in_use is not None else 0


DB_CONNECTIONS_IN_USE.set_function(db_connections_in_use)


def observe(method: str, code: str, started: float) -> None:
    RPC_SECONDS.labels(method, code).observe(time.perf_counter() - started)


def artifact_bytes(direction: str, count: int) -> None:
    """Adds ``count`` bytes of artifacts moved in (``"in"``) or out (``"out"``)."""
    if count > 0:
        ARTIFACT_BYTES.labels(direction).inc(count)


def model_loaded(deployment: str, seconds: float) -> None:
    MODEL_LOAD_SECONDS.labels(deployment).observe(seconds)


def predicted(deployment: str, seconds: float, rows: int) -> None:
    PREDICT_SECONDS.labels(deployment).observe(seconds)
    PREDICT_BATCH_ROWS.labels(deployment).observe(rows)


def forget_deployment(deployment: str) -> None:
    """Drops a deleted deployment's series, so the label sets stay as few as the deployments."""
    for family in (MODEL_LOAD_SECONDS, PREDICT_SECONDS, PREDICT_BATCH_ROWS):
        try:
            family.remove(deployment)
        except KeyError:
            pass


def sweeper_action(sweeper: str, action: str, count: int = 1) -> None:
    """Counts ``count`` actions of a background sweeper (``"uploads"``/``"removed"``,
    ``"registrations"``/``"finished"`` or ``"failed"``)."""
    if count > 0:
        SWEEPER_ACTIONS.labels(sweeper, action).inc(count)


def row_count(data: Any) -> int:
    """The rows of a model input, cheaply: the first dimension of a table, array or tensor, the
    length of a list, the common length of a dict of columns; 1 for anything else (one record)."""
    array = getattr(data, "array", None)  # a ColumnBlock
    if array is not None and hasattr(array, "shape"):
        data = array
    shape = getattr(data, "shape", None)
    if shape is not None:
        try:
            return int(shape[0]) if len(shape) else 1
        except (TypeError, IndexError, ValueError):
            return 1
    if isinstance(data, dict) and data:
        return row_count(next(iter(data.values())))
    if isinstance(data, list | tuple):
        return len(data)
    return 1


def serve_metrics(host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
    """Starts the /metrics HTTP endpoint in a daemon thread; https with ``ssl_context`` (the
    server's TLS settings, client certificates required under mutual TLS)."""
    if ssl_context is None:
        start_http_server(port, addr=host)
        return

    # prometheus_client's own TLS wraps the listening socket, where one client that never sends
    # its handshake stalls every scrape; TLSServerMixin shakes hands in each connection's thread.
    class TLSMetricsServer(TLSServerMixin, socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = listening_family(host)

    server = TLSMetricsServer((host, port), _QuietHandler)
    server.set_app(make_wsgi_app())
    server.ssl_context = ssl_context
    threading.Thread(target=server.serve_forever, name="keel-metrics", daemon=True).start()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # scrapes are not worth a log line each
