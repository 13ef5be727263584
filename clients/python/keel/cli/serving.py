"""``keel models serve``: serve one model over MLflow's HTTP scoring and gRPC (keel + KServe v2).

    keel models serve -m models:/fraud/Production --port 5000 --grpc-port 8500 --workers 4

``--port`` is the HTTP scoring port, as in ``mlflow models serve`` (default 5000); gRPC listens
on ``--grpc-port`` (default: the first free port after the HTTP port). The old form, ``--port``
for gRPC with ``--http-port`` for HTTP, keeps working for one release with a deprecation warning.

The server side (keel_server) is imported only when the command runs. ``python -m
keel.cli.serving ...`` runs the same command (model workers are started that way).
"""

from __future__ import annotations

import argparse
import os
import socket
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
        "-p",
        "--port",
        type=int,
        default=None,
        help=f"HTTP scoring port, as mlflow models serve (default {DEFAULT_HTTP_PORT}; 0 = any free port). "
        "Deprecated: with --http-port, the gRPC port",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="gRPC port: keel Predict and KServe v2 (default: the first free port after the HTTP port; 0 = any)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="deprecated: the HTTP port of the old form (--port for gRPC, --http-port for HTTP; 0 = no HTTP)",
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


DEFAULT_HTTP_PORT = 5000  # mlflow models serve's
# How far past the HTTP port the default gRPC port is looked for.
GRPC_PORT_SEARCH = 100


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _any_free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def resolve_ports(args: argparse.Namespace) -> tuple[int, int]:
    """(gRPC port, HTTP port) from the flags; 0 for gRPC lets the server pick, 0 for HTTP is off.

    MLflow's form: ``--port`` is HTTP, gRPC is ``--grpc-port`` or the first free port after it.
    The old form (``--http-port`` given): ``--port`` is gRPC, with a deprecation warning.
    """
    if args.http_port is not None:
        if args.port is not None and args.grpc_port is not None:
            raise ValueError("--port and --grpc-port both name the gRPC port when --http-port is given: drop --port")
        if args.port is not None and not args.reuse_port:  # model workers are started this way
            print(
                "keel models serve: warning: --port with --http-port is deprecated: --port now means the "
                "HTTP port, as in mlflow models serve; use --port HTTP_PORT --grpc-port GRPC_PORT",
                file=sys.stderr,
                flush=True,
            )
        grpc_port = args.grpc_port if args.grpc_port is not None else args.port
        if grpc_port is None:
            grpc_port = 0
        return grpc_port, args.http_port
    http_port = DEFAULT_HTTP_PORT if args.port is None else args.port
    if http_port == 0:
        http_port = _any_free_port(args.host)
    if args.grpc_port is not None:
        return args.grpc_port, http_port
    for candidate in range(http_port + 1, min(http_port + 1 + GRPC_PORT_SEARCH, 65536)):
        if _port_is_free(args.host, candidate):
            return candidate, http_port
    return 0, http_port  # none free nearby: any


def register(models_subparsers: argparse._SubParsersAction) -> None:
    """Adds ``serve`` to the ``keel models`` group."""
    add_arguments(models_subparsers.add_parser("serve", help="serve one model over HTTP (MLflow scoring), gRPC and KServe v2"))


def run_serve(args: argparse.Namespace) -> int:
    from keel_server.common import logs
    from keel_server.inference.standalone import ServeOptions, serve

    if args.workers < 1:
        print("keel models serve: --workers must be >= 1", file=sys.stderr)
        return 2
    tracking_uri = getattr(args, "tracking_uri", None) or os.environ.get("KEEL_TRACKING_URI") or None
    logs.configure(os.environ.get("KEEL_LOG_LEVEL", "WARNING"), True)
    try:
        grpc_port, http_port = resolve_ports(args)
    except ValueError as exc:
        print(f"keel models serve: {exc}", file=sys.stderr)
        return 2
    options = ServeOptions(
        model_uri=args.model_uri,
        name=args.name or "",
        host=args.host,
        port=grpc_port,
        http_port=http_port,
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
