"""``keel server`` and ``keel db upgrade``: the server side of the CLI (imports keel_server lazily)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    server = sub.add_parser("server", help="run keel services (all by default) on one port")
    server.add_argument(
        "--services", help="comma list of tracking,registry,artifacts,inference (default: all)"
    )
    server.add_argument("--host", help="address to bind (default 127.0.0.1 or $KEEL_HOST)")
    server.add_argument("--port", type=int, help="port (default 50051 or $KEEL_PORT; 0 picks a free one)")
    server.add_argument("--db-url", help="metadata DB URL (default sqlite:///keel.db or $KEEL_DB_URL)")
    server.add_argument(
        "--artifact-uri", help="artifact root (default file://./keel-artifacts or $KEEL_ARTIFACT_URI)"
    )
    server.add_argument("--workers", type=int, dest="max_workers", help="gRPC worker threads (default 16)")
    server.add_argument(
        "--http-port", type=int, help="inference: MLflow-compatible HTTP scoring port (0 = off)"
    )
    server.add_argument("--metrics-port", type=int, help="Prometheus metrics port (0 = off)")
    server.add_argument(
        "--mlflow-port",
        type=int,
        help="serve MLflow's REST API here for the unmodified mlflow client (0 = off; $KEEL_MLFLOW_PORT; "
        "docs/mlflow-port.md)",
    )
    server.add_argument("--ui-port", type=int, help="serve the web console here (0 = off; $KEEL_UI_PORT)")
    server.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    for service in ("tracking", "registry", "artifacts", "inference"):
        server.add_argument(
            f"--{service}-address",
            help=f"where the {service} service runs when this process does not run it, handed to clients "
            f"by discovery: grpc://host:port or grpc://h1:p1,h2:p2 (default ${'KEEL_' + service.upper() + '_ADDRESS'})",
        )
    server.add_argument(
        "--auth",
        action="store_const",
        const=True,
        default=None,
        help="require a bearer token (or client certificate) on every call and keep the audit log "
        "(default $KEEL_AUTH; bootstrap with $KEEL_ADMIN_TOKEN; see docs/auth.md)",
    )
    server.add_argument("--tls-cert", help="PEM certificate: serve gRPC and HTTP over TLS (default $KEEL_TLS_CERT)")
    server.add_argument("--tls-key", help="PEM private key of --tls-cert (default $KEEL_TLS_KEY)")
    server.add_argument(
        "--tls-client-ca",
        help="PEM CA bundle: require client certificates signed by it, mutual TLS (default $KEEL_TLS_CLIENT_CA)",
    )
    server.set_defaults(func=run_server)

    db = sub.add_parser("db", help="metadata database maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND")
    db_sub.required = True
    upgrade = db_sub.add_parser("upgrade", help="migrate the database to this keel's schema")
    upgrade.add_argument("--db-url", help="metadata DB URL (default $KEEL_DB_URL or sqlite:///keel.db)")
    upgrade.set_defaults(func=run_db_upgrade)


def _settings(args: argparse.Namespace):  # -> Settings (kept lazy: keel_server is server-side)
    from keel_server.common.config import Settings

    overrides = {
        key: getattr(args, key, None)
        for key in (
            "host",
            "port",
            "db_url",
            "artifact_uri",
            "max_workers",
            "http_port",
            "metrics_port",
            "mlflow_port",
            "ui_port",
            "log_level",
            "tracking_address",
            "registry_address",
            "artifacts_address",
            "inference_address",
            "auth",
            "tls_cert",
            "tls_key",
            "tls_client_ca",
        )
    }
    if getattr(args, "services", None):
        overrides["services"] = args.services
    return Settings.load(overrides)


def run_server(args: argparse.Namespace) -> int:
    import peewee

    from keel.exceptions import MissingExtra
    from keel.extras import require_db_driver
    from keel_server.common import logs
    from keel_server.common.migrations import SchemaOutdated
    from keel_server.common.server import serve

    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"keel server: {exc}", file=sys.stderr)
        return 2
    try:  # one clear line ("... pip install 'keel-ml[postgres]'") instead of a traceback at connect
        require_db_driver(settings.db_url)
    except MissingExtra as exc:
        print(f"keel server: cannot start: {exc.message}", file=sys.stderr)
        return 1
    logs.configure(settings.log_level, settings.log_json)
    try:
        serve(settings)
    except SchemaOutdated as exc:
        print(f"keel server: {exc}", file=sys.stderr)
        return 1
    except (peewee.PeeweeException, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"keel server: cannot start: {first_line}", file=sys.stderr)
        return 1
    return 0


def run_db_upgrade(args: argparse.Namespace) -> int:
    import peewee

    from keel.exceptions import MissingExtra
    from keel.extras import require_db_driver
    from keel_server.common import db as dbmod
    from keel_server.common.migrations import LATEST_VERSION, upgrade

    try:
        settings = _settings(args)
        require_db_driver(settings.db_url)
        database = dbmod.open_database(settings.db_url)
        applied = upgrade(database)
    except MissingExtra as exc:
        print(f"keel db upgrade: {exc.message}", file=sys.stderr)
        return 1
    except (ValueError, peewee.PeeweeException) as exc:
        print(f"keel db upgrade: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))}; schema is at version {LATEST_VERSION}")
    else:
        print(f"schema already at version {LATEST_VERSION}; nothing to do")
    return 0
