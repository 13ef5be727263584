"""``keel models serve``: serve one model over gRPC (keel + KServe v2) and MLflow's HTTP scoring.

    keel models serve -m models:/fraud/Production --port 8500 --http-port 8080 --workers 4

The server side (keel_server) is imported only when the command runs. ``python -m
keel.cli.serving ...`` runs the same command (model workers are started that way).
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m",
        "--model-uri",
        required=True,
        help="models:/name/Stage, models:/name@alias, runs:/id/path or a path",
    )
    parser.add_argument("--name", help="deployment name (KServe model_name); default: from the URI")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8500, help="gRPC port: keel Predict and KServe v2 (default 8500)"
    )
    parser.add_argument(
        "--http-port", type=int, default=8080, help="MLflow-compatible HTTP port (default 8080; 0 = off)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="model worker processes sharing the ports (default 1)"
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=0, help="merge concurrent small requests up to N rows (0 = off)"
    )
    parser.add_argument(
        "--max-batch-delay-ms",
        type=float,
        default=0.0,
        help="micro-batching window in ms (default 2 when on)",
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=2.0, help="how often stage/alias moves are checked (default 2)"
    )
    parser.add_argument(
        "--grpc-threads", type=int, default=16, help="gRPC worker threads per process (default 16)"
    )
    parser.add_argument(
        "--env-manager",
        choices=["local"],
        default="local",
        help="accepted for MLflow compatibility (only local)",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    parser.set_defaults(func=run_serve)


def register(models_subparsers: argparse._SubParsersAction) -> None:
    """Adds ``serve`` to the ``keel models`` group."""
    add_arguments(models_subparsers.add_parser("serve", help="serve one model over gRPC, KServe v2 and HTTP"))


def run_serve(args: argparse.Namespace) -> int:
    from keel_server.common import logs
    from keel_server.inference.standalone import ServeOptions, serve

    if args.workers < 1:
        print("keel models serve: --workers must be >= 1", file=sys.stderr)
        return 2
    tracking_uri = getattr(args, "tracking_uri", None) or os.environ.get("KEEL_TRACKING_URI") or None
    logs.configure(os.environ.get("KEEL_LOG_LEVEL", "WARNING"), True)
    options = ServeOptions(
        model_uri=args.model_uri,
        name=args.name or "",
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        workers=args.workers,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        tracking_uri=tracking_uri,
        poll_seconds=args.poll_seconds,
        reuse_port=args.reuse_port,
        grpc_threads=args.grpc_threads,
    )
    from keel_server.common.errors import KeelError as ServerError

    try:
        return serve(options)
    except ServerError as exc:
        print(f"keel models serve: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"keel models serve: cannot start: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"keel models serve: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    from keel.exceptions import KeelError
    from keel_server.common.errors import KeelError as ServerError

    parser = argparse.ArgumentParser(prog="keel models serve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (KeelError, ServerError) as exc:
        print(f"keel models serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
