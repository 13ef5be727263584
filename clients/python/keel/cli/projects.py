"""``keel run URI -e ENTRY -P name=value ...``: run an MLflow project (see docs/projects.md).

The exit status is 0 when the run FINISHED, 1 when it FAILED (or could not start), and
128 + the signal number when Ctrl-C or SIGTERM stopped it (the run is then KILLED).
"""

from __future__ import annotations

import argparse
import sys

from keel.exceptions import InvalidArgument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an MLflow project (MLproject) from a folder or git URI")
    p.add_argument(
        "uri", help="a local folder or a git URI (https://, file://, ...), optionally with #subdirectory"
    )
    p.add_argument("-e", "--entry-point", default="main", help="entry point of MLproject, or a .py/.sh file")
    p.add_argument("-P", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter (repeatable); undeclared ones are passed as --NAME VALUE")  # fmt: skip
    p.add_argument("--experiment-name", default=None, help="experiment to log to (created if missing)")
    p.add_argument("--experiment-id", default=None)
    p.add_argument("--run-name", default=None)
    p.add_argument(
        "--env-manager", default="local", help="local (default) or virtualenv (from python_env.yaml)"
    )
    p.add_argument(
        "--build-only", action="store_true", help="fetch the project and build its environment only"
    )
    p.add_argument("-v", "--version", default=None, help="git commit or branch to run (git URIs only)")
    p.set_defaults(func=_run)


def _parameters(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidArgument(f"-P {pair!r} must be NAME=VALUE", reason="BAD_PARAMETER")
        out[name] = value
    return out


def _run(args: argparse.Namespace) -> int:
    from keel import projects

    try:
        finished = projects.run(
            args.uri,
            entry_point=args.entry_point,
            parameters=_parameters(args.param),
            experiment_name=args.experiment_name,
            experiment_id=args.experiment_id,
            run_name=args.run_name,
            env_manager=args.env_manager,
            build_only=args.build_only,
            version=args.version,
        )
    except projects.RunInterrupted as stopped:
        print(f"keel run {stopped.run.info.run_id}: {stopped.run.info.status}", file=sys.stderr)
        return 128 + stopped.signum
    if finished is None:
        print("keel run: environment built (--build-only)", file=sys.stderr)
        return 0
    print(f"keel run {finished.info.run_id}: {finished.info.status}", file=sys.stderr)
    return 0 if finished.info.status == "FINISHED" else 1
