"""``keel import mlflow --from URL``: copies an MLflow server's data into keel (docs/mlflow-import.md)."""

from __future__ import annotations

import argparse
import json
import sys

from keel.client import Client


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("import", help="copy another tracking server's data into keel")
    sources = parser.add_subparsers(dest="import_source", metavar="SOURCE")
    sources.required = True
    mlflow = sources.add_parser(
        "mlflow",
        help="copy experiments, runs, artifacts and registered models from a running mlflow server",
        description=(
            "Copies experiments (name, tags, lifecycle), runs (params, every metric point, tags, status, "
            "times, artifacts) and registered models (description, tags, aliases, versions with their "
            "stages) from a running mlflow server, over its REST API, into the keel server of "
            "--tracking-uri / $KEEL_TRACKING_URI. Safe to run again: what is there is skipped, and an "
            "interrupted import is finished. Credentials for MLflow: MLFLOW_TRACKING_TOKEN, or "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."
        ),
    )
    mlflow.add_argument("--from", dest="source_url", required=True, metavar="URL", help="http://mlflow-host:5000")
    mlflow.add_argument(
        "--experiments", nargs="+", metavar="NAME_OR_ID", help="only these experiments (default: all, unless --models)"
    )
    mlflow.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="only these registered models, with the runs their versions come from (default: all, unless --experiments)",
    )
    mlflow.add_argument(
        "--include-deleted",
        action="store_true",
        help="also the experiments and runs deleted in MLflow (copied, then deleted in keel)",
    )
    mlflow.add_argument("--dry-run", action="store_true", help="count what would be copied; write nothing")
    mlflow.add_argument(
        "--workers", type=int, default=4, metavar="N", help="runs copied at once (default 4; 1: one after another)"
    )
    mlflow.add_argument("--json", action="store_true", help="print the summary as JSON")
    mlflow.add_argument("--no-progress", action="store_true", help="no progress bar (none either when not on a terminal)")
    mlflow.set_defaults(func=_import_mlflow)


def _import_mlflow(args: argparse.Namespace) -> int:
    from keel.importers.mlflow import import_from

    summary = import_from(
        args.source_url,
        experiments=args.experiments,
        models=args.models,
        include_deleted=args.include_deleted,
        dry_run=args.dry_run,
        client=Client(),
        progress=not args.no_progress,
        workers=args.workers,
    )
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.describe())
    sys.stdout.flush()
    return 0
