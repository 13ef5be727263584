"""The ``keel`` command line. Each command group lives in its own module with a
``register(subparsers)`` function; output is a table by default and JSON with ``--json``."""

from __future__ import annotations

import argparse
import importlib
import sys

from keel.exceptions import KeelError

# Command-group modules, in help order. Each defines register(subparsers).
GROUPS = (
    "keel.cli.server",
    "keel.cli.ui",
    "keel.cli.tracking",
    "keel.cli.projects",
    "keel.cli.models",
    "keel.cli.artifacts",
    "keel.cli.auth",
    "keel.cli.importer",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keel", description="keel: model lifecycle platform (gRPC)")
    parser.add_argument(
        "--tracking-uri", help="grpc://host:port of the keel server (default: $KEEL_TRACKING_URI)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tracking_uri:
        import keel

        keel.set_tracking_uri(args.tracking_uri)
    try:
        return int(args.func(args) or 0)
    except KeelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
