"""``keel experiments ...`` and ``keel runs ...``: tables by default, ``--json`` for scripts."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from keel.cli.output import emit

EXPERIMENT_COLUMNS = ("experiment_id", "name", "lifecycle_stage", "artifact_location", "created")
RUN_COLUMNS = ("run_id", "run_name", "status", "start", "metrics", "params")


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("experiments", help="list, create, rename and delete experiments")
    exp_sub = exp.add_subparsers(dest="experiments_command", metavar="COMMAND")
    exp_sub.required = True

    p = exp_sub.add_parser("list", help="list experiments")
    p.add_argument("--filter", default="", help="e.g. \"name LIKE 'vision-%%'\"")
    p.add_argument("--view", default="ACTIVE_ONLY", help="ACTIVE_ONLY, DELETED_ONLY or ALL")
    p.add_argument("--max-results", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_experiments_list)

    p = exp_sub.add_parser("create", help="create an experiment and print its id")
    p.add_argument("name")
    p.add_argument("--artifact-location", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_experiments_create)

    p = exp_sub.add_parser("rename", help="rename an experiment")
    p.add_argument("experiment_id")
    p.add_argument("new_name")
    p.set_defaults(func=_experiments_rename)

    p = exp_sub.add_parser("delete", help="soft-delete an experiment (and its runs)")
    p.add_argument("experiment_id")
    p.set_defaults(func=_experiments_delete)

    runs = sub.add_parser("runs", help="list, describe and search runs")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="COMMAND")
    runs_sub.required = True
    for name, help_text in (("list", "list the runs of an experiment"), ("search", "search runs with a filter")):
        p = runs_sub.add_parser(name, help=help_text)
        p.add_argument("--experiment-id", action="append", dest="experiment_ids", required=True,
                       help="experiment to search (repeat for several)")  # fmt: skip
        p.add_argument("--filter", default="", help="e.g. \"metrics.rmse < 0.8 and params.model = 'cnn'\"")
        p.add_argument("--order-by", action="append", default=[], help="e.g. 'metrics.rmse ASC' (repeatable)")
        p.add_argument("--view", default="ACTIVE_ONLY", help="ACTIVE_ONLY, DELETED_ONLY or ALL")
        p.add_argument("--max-results", type=int, default=100)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_runs_search)

    p = runs_sub.add_parser("describe", help="show one run with its params, metrics and tags")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_runs_describe)


def _client() -> Any:
    import keel

    return keel.Client()


def _time(ms: int | None) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _experiment_row(e: Any) -> dict[str, Any]:
    return {
        "experiment_id": e.experiment_id,
        "name": e.name,
        "lifecycle_stage": e.lifecycle_stage,
        "artifact_location": e.artifact_location,
        "created": _time(e.creation_time),
        "creation_time": e.creation_time,
        "last_update_time": e.last_update_time,
        "tags": e.tags,
    }


def _run_row(r: Any) -> dict[str, Any]:
    i = r.info
    return {
        "run_id": i.run_id,
        "run_name": i.run_name,
        "experiment_id": i.experiment_id,
        "status": i.status,
        "start": _time(i.start_time),
        "start_time": i.start_time,
        "end_time": i.end_time,
        "lifecycle_stage": i.lifecycle_stage,
        "artifact_uri": i.artifact_uri,
        "parent_run_id": i.parent_run_id,
        "metrics": r.data.metrics,
        "params": r.data.params,
        "tags": r.data.tags,
    }


def _experiments_list(args: argparse.Namespace) -> int:
    page = _client().search_experiments(view_type=args.view, max_results=args.max_results, filter_string=args.filter)
    emit([_experiment_row(e) for e in page], EXPERIMENT_COLUMNS, args.json)
    return 0


def _experiments_create(args: argparse.Namespace) -> int:
    experiment_id = _client().create_experiment(args.name, artifact_location=args.artifact_location)
    if args.json:
        emit([{"experiment_id": experiment_id, "name": args.name}], ("experiment_id", "name"), True)
    else:
        print(experiment_id)
    return 0


def _experiments_rename(args: argparse.Namespace) -> int:
    _client().rename_experiment(args.experiment_id, args.new_name)
    print(f"experiment {args.experiment_id} renamed to '{args.new_name}'")
    return 0


def _experiments_delete(args: argparse.Namespace) -> int:
    _client().delete_experiment(args.experiment_id)
    print(f"experiment {args.experiment_id} deleted")
    return 0


def _runs_search(args: argparse.Namespace) -> int:
    page = _client().search_runs(
        args.experiment_ids,
        filter_string=args.filter,
        run_view_type=args.view,
        max_results=args.max_results,
        order_by=args.order_by,
    )
    emit([_run_row(r) for r in page], RUN_COLUMNS, args.json)
    return 0


def _runs_describe(args: argparse.Namespace) -> int:
    run = _client().get_run(args.run_id)
    row = _run_row(run)
    if args.json:
        emit([row], list(row), True)
        return 0
    for key in ("run_id", "run_name", "experiment_id", "status", "start", "end_time", "lifecycle_stage",
                "artifact_uri", "parent_run_id"):  # fmt: skip
        print(f"{key:16} {row[key] if row[key] is not None else ''}")
    for section in ("params", "metrics", "tags"):
        print(f"{section}:")
        for k, v in row[section].items():
            print(f"  {k} = {v}")
    return 0
