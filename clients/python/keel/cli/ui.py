"""``keel ui``: the web console in its own process, a gRPC client of the keel services at
``KEEL_TRACKING_URI`` (``grpc://`` or ``grpcs://`` with ``KEEL_TLS_CA``/``KEEL_TLS_CLIENT_*``), so it
works with services apart, TLS and auth like any other client. Imports keel_server lazily."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def register(sub: argparse._SubParsersAction) -> None:
    ui = sub.add_parser("ui", help="run the web console (talks to $KEEL_TRACKING_URI)")
    ui.add_argument("--port", type=int, default=5000, help="HTTP port (default 5000; 0 picks a free one)")
    ui.add_argument("--host", help="address to bind (default 127.0.0.1 or $KEEL_HOST)")
    ui.add_argument(
        "--identity-header",
        dest="ui_identity_header",
        help="behind a trusted proxy: the header naming the signed-in user (default $KEEL_UI_IDENTITY_HEADER; "
        "needs $KEEL_UI_TOKEN; docs/console.md)",
    )
    ui.set_defaults(func=run_ui)


def run_ui(args: argparse.Namespace) -> int:
    import keel
    from keel_server.common import logs
    from keel_server.common.config import Settings
    from keel_server.common.gateway import Gateway
    from keel_server.common.tls import ssl_context
    from keel_server.console.app import start_console

    overrides = {"host": args.host, "ui_port": args.port, "ui_identity_header": args.ui_identity_header}
    try:
        settings = Settings.load(overrides)
        context = ssl_context(settings)
    except ValueError as exc:
        print(f"keel ui: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_json)
    uri = keel.get_tracking_uri()
    gateway = Gateway.for_uri(uri)
    try:
        app = start_console(settings, gateway, context)
    except (OSError, ValueError) as exc:
        print(f"keel ui: cannot start: {exc}", file=sys.stderr)
        gateway.close()
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    scheme = "https" if context is not None else "http"
    print(f"keel console on {scheme}://{settings.host}:{app.port} (keel at {uri})", flush=True)
    stop.wait()
    app.stop()
    gateway.close()
    return 0
