"""``keel models ...``: the registry from the shell (tables by default, ``--json`` for scripts).

keel models list
keel models versions NAME
keel models describe NAME [VERSION]
keel models transition NAME VERSION STAGE [--archive-existing]
keel models alias set NAME ALIAS VERSION [--expected-version N]
keel models alias delete NAME ALIAS
keel models history NAME
keel models compare NAME V1 V2 [V3 ...] [--differences] [--json]
keel models set-policy NAME (--require-approval Production[,Staging] | --no-approval)
keel models request-transition NAME VERSION STAGE [--archive-existing] [--comment TEXT]
keel models requests NAME [--status STATUS] [--version N]
keel models approve|reject|cancel-request REQUEST_ID [--comment TEXT]
keel models predict -m MODEL_URI --input FILE (JSON or CSV)
keel models predict -m MODEL_URI --input data.{csv,parquet,jsonl} --output out.{parquet,csv,jsonl}
    [--batch-size N] [--id-column COL]     (streamed in chunks: keel.batch)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from typing import Any

from keel.cli.output import emit

try:  # `keel models serve` and friends, added by the inference service's CLI module
    from keel.cli import serving
except ModuleNotFoundError:
    serving = None  # type: ignore[assignment]

MODEL_COLUMNS = ("name", "latest_version", "stages", "aliases", "description")
VERSION_COLUMNS = ("version", "stage", "status", "aliases", "run_id", "created", "description")
HISTORY_COLUMNS = ("time", "event", "version", "from", "to", "alias", "actor")
REQUEST_COLUMNS = (
    "id", "version", "from", "to", "status", "requester", "created", "comment", "decided_by", "decision_comment",
)  # fmt: skip
# History rows of transition request events, as the history table names them.
_REQUEST_EVENTS = {
    "TRANSITION_REQUESTED": "requested",
    "TRANSITION_APPROVED": "approved",
    "TRANSITION_REJECTED": "rejected",
    "TRANSITION_CANCELLED": "cancelled",
}


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser(
        "models", help="registered models: list, versions, stages, aliases, history, predict"
    )
    msub = models.add_subparsers(dest="models_command", metavar="COMMAND")
    msub.required = True

    p = msub.add_parser("list", help="list registered models with their latest version and stages")
    p.add_argument("--filter", default="", help="e.g. \"name LIKE 'fraud%%'\" or \"tags.team = 'risk'\"")
    p.add_argument("--max-results", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_list)

    p = msub.add_parser("versions", help="list the versions of a registered model, newest first")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_versions)

    p = msub.add_parser("describe", help="show a registered model, or one of its versions")
    p.add_argument("name")
    p.add_argument("version", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_describe)

    p = msub.add_parser("transition", help="move a version to None, Staging, Production or Archived")
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("stage", help="None, Staging, Production or Archived (any case)")
    p.add_argument("--archive-existing", action="store_true", help="archive the versions now in that stage")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_transition)

    alias = msub.add_parser("alias", help="set or delete an alias of a version")
    asub = alias.add_subparsers(dest="alias_command", metavar="COMMAND")
    asub.required = True
    p = asub.add_parser("set", help="point ALIAS at VERSION (moving it if it exists)")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version")
    p.add_argument("--expected-version", help="only move if the alias points here now (0: must not exist)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_alias_set)
    p = asub.add_parser("delete", help="delete an alias")
    p.add_argument("name")
    p.add_argument("alias")
    p.set_defaults(func=_alias_delete)

    p = msub.add_parser("history", help="stage changes and alias moves of a model, newest first")
    p.add_argument("name")
    p.add_argument("--max-results", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_history)

    p = msub.add_parser(
        "compare", help="versions side by side: source run params, metrics and evaluation results"
    )
    p.add_argument("name")
    p.add_argument("versions", nargs="+", metavar="VERSION", help="two or more version numbers")
    p.add_argument("--differences", action="store_true", help="show only the rows whose values differ")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_compare)

    _register_approvals(msub)

    p = msub.add_parser("predict", help="load a model and predict on a JSON or CSV file")
    p.add_argument(
        "-m", "--model-uri", required=True, help="models:/name/1, models:/name@alias, runs:/..., a path"
    )
    p.add_argument(
        "-i",
        "--input",
        required=True,
        help="JSON (dataframe_split, dataframe_records, instances, inputs) or CSV",
    )
    p.add_argument("--content-type", choices=("json", "csv"), help="default: from the file extension")
    p.add_argument("--json", action="store_true", help="(predictions are always printed as JSON)")
    p.add_argument(
        "-o",
        "--output",
        help="score in chunks into out.parquet, out.csv or out.jsonl (input: .csv, .parquet or .jsonl)",
    )
    p.add_argument("--batch-size", type=int, default=10_000, help="rows per chunk with --output")
    p.add_argument("--id-column", help="with --output: an input column copied next to the predictions")
    p.add_argument("--no-progress", action="store_true", help="with --output: no progress bar on stderr")
    p.set_defaults(func=_predict)

    if serving is not None:
        serving.register(msub)


def _register_approvals(msub: argparse._SubParsersAction) -> None:
    """Review and approval: the policy, transition requests and their decisions."""
    p = msub.add_parser(
        "set-policy", help="set the stages a version enters only through an approved transition request"
    )
    p.add_argument("name")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--require-approval", metavar="STAGES", help="comma-separated: Production, Staging or both (any case)"
    )
    which.add_argument("--no-approval", action="store_true", help="lift every approval requirement")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_set_policy)

    p = msub.add_parser("request-transition", help="ask for a version to be moved to a stage (for approval)")
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("stage", help="None, Staging, Production or Archived (any case)")
    p.add_argument(
        "--archive-existing", action="store_true", help="on approval, archive the versions then in that stage"
    )
    p.add_argument("--comment", default="", help="why; shown to the reviewers and in the history")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_request_transition)

    p = msub.add_parser("requests", help="list the transition requests of a model, newest first")
    p.add_argument("name")
    p.add_argument("--status", help="PENDING, APPROVED, REJECTED or CANCELLED (any case)")
    p.add_argument("--version", help="only the requests of this version")
    p.add_argument("--max-results", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_requests)

    for command, verb, help_text in (
        ("approve", "approve", "approve a pending request: the version moves at once"),
        ("reject", "reject", "reject a pending request (nothing moves)"),
        ("cancel-request", "cancel", "withdraw a pending request (its requester, or MANAGE on the model)"),
    ):
        p = msub.add_parser(command, help=help_text)
        p.add_argument("request_id")
        p.add_argument("--comment", default="", help="shown to the requester and in the history")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_decide, verb=verb)


def _client() -> Any:
    from keel.client import Client

    return Client()


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else ""


def _asdict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def _model_row(m: Any) -> dict[str, Any]:
    latest = max((int(v.version) for v in m.latest_versions), default=None)
    return {
        "name": m.name,
        "latest_version": latest,
        "stages": {v.current_stage: v.version for v in m.latest_versions},
        "aliases": {a: v for a, v in m.aliases.items()},
        "description": m.description,
    }


def _version_row(v: Any) -> dict[str, Any]:
    return {
        "version": v.version,
        "stage": v.current_stage,
        "status": v.status,
        "aliases": v.aliases,
        "run_id": v.run_id,
        "created": _time(v.creation_timestamp),
        "description": v.description,
    }


def _list(args: argparse.Namespace) -> int:
    models = _client().search_registered_models(
        filter_string=args.filter or None, max_results=args.max_results
    )
    if args.json:
        emit([_asdict(m) for m in models], MODEL_COLUMNS, as_json=True)
    else:
        emit([_model_row(m) for m in models], MODEL_COLUMNS, as_json=False)
    return 0


def _versions(args: argparse.Namespace) -> int:
    client = _client()
    client.get_registered_model(args.name)  # NOT_FOUND for an unknown model, not an empty table
    name = args.name.replace("'", "''")
    versions = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"])
    if args.json:
        emit([_asdict(v) for v in versions], VERSION_COLUMNS, as_json=True)
    else:
        emit([_version_row(v) for v in versions], VERSION_COLUMNS, as_json=False)
    return 0


def _describe(args: argparse.Namespace) -> int:
    client = _client()
    if args.version is None:
        model = client.get_registered_model(args.name)
        if args.json:
            print(json.dumps(_asdict(model), indent=2))
            return 0
        row = _model_row(model)
        for key in ("name", "description", "latest_version", "stages", "aliases"):
            print(f"{key + ':':<16}{_flat(row[key])}")
        print(f"{'tags:':<16}{_flat(model.tags)}")
        if model.approval_required_stages:
            print(f"{'approval for:':<16}{_flat(model.approval_required_stages)}")
        print(f"{'created:':<16}{_time(model.creation_timestamp)}")
        print(f"{'updated:':<16}{_time(model.last_updated_timestamp)}")
        return 0
    version = client.get_model_version(args.name, args.version)
    if args.json:
        print(json.dumps(_asdict(version), indent=2))
        return 0
    _print_version(version)
    return 0


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def _print_version(v: Any) -> None:
    for key, value in (
        ("name", v.name),
        ("version", v.version),
        ("stage", v.current_stage),
        ("status", v.status + (f" ({v.status_message})" if v.status_message else "")),
        ("aliases", _flat(v.aliases)),
        ("description", v.description),
        ("source", v.source),
        ("run_id", v.run_id),
        ("stored at", v.storage_location),
        ("tags", _flat(v.tags)),
        ("registered by", v.user_id),
        ("created", _time(v.creation_timestamp)),
        ("updated", _time(v.last_updated_timestamp)),
    ):
        print(f"{key + ':':<16}{value}")


def _transition(args: argparse.Namespace) -> int:
    version = _client().transition_model_version_stage(
        args.name, args.version, args.stage, archive_existing_versions=args.archive_existing
    )
    if args.json:
        print(json.dumps(_asdict(version), indent=2))
    else:
        print(f"version {version.version} of {version.name} is now in stage {version.current_stage}")
    return 0


def _alias_set(args: argparse.Namespace) -> int:
    version = _client().set_registered_model_alias(
        args.name, args.alias, args.version, expected_version=args.expected_version
    )
    if args.json:
        print(json.dumps(_asdict(version), indent=2))
    else:
        print(f"alias {args.alias} of {version.name} now points at version {version.version}")
    return 0


def _alias_delete(args: argparse.Namespace) -> int:
    _client().delete_registered_model_alias(args.name, args.alias)
    print(f"alias {args.alias} of {args.name} deleted")
    return 0


def _history(args: argparse.Namespace) -> int:
    events = _client().list_model_history(args.name, max_results=args.max_results)
    if args.json:
        emit([_asdict(e) for e in events], HISTORY_COLUMNS, as_json=True)
        return 0
    rows = []
    for e in events:
        if e.event_type in _REQUEST_EVENTS:
            event = f"{_REQUEST_EVENTS[e.event_type]} #{e.transition_request_id}"
            row = {"event": event, "version": e.version, "from": e.from_stage, "to": e.to_stage}
        elif e.event_type == "STAGE_TRANSITION":
            row = {"event": "stage", "version": e.version, "from": e.from_stage, "to": e.to_stage}
        elif e.event_type == "ALIAS_SET":
            row = {
                "event": "alias set",
                "version": e.version,
                "from": e.from_version or "-",
                "to": e.version,
                "alias": e.alias,
            }
        else:
            row = {
                "event": "alias deleted",
                "version": e.from_version,
                "from": e.from_version,
                "to": "-",
                "alias": e.alias,
            }
        rows.append({"time": _time(e.timestamp), "actor": e.actor, **row})
    emit(rows, HISTORY_COLUMNS, as_json=False)
    return 0


def _set_policy(args: argparse.Namespace) -> int:
    stages = [] if args.no_approval else [s.strip() for s in args.require_approval.split(",") if s.strip()]
    model = _client().set_registered_model_policy(args.name, stages)
    if args.json:
        print(json.dumps(_asdict(model), indent=2))
    elif model.approval_required_stages:
        stages_text = " and ".join(model.approval_required_stages)
        print(f"{model.name}: versions enter {stages_text} only through an approved transition request")
    else:
        print(f"{model.name}: no stage needs approval")
    return 0


def _request_transition(args: argparse.Namespace) -> int:
    request = _client().create_transition_request(
        args.name,
        args.version,
        args.stage,
        archive_existing_versions=args.archive_existing,
        comment=args.comment,
    )
    if args.json:
        print(json.dumps(_asdict(request), indent=2))
    else:
        print(
            f"transition request {request.id}: version {request.version} of {request.name} "
            f"{request.from_stage} -> {request.stage}, pending approval"
        )
    return 0


def _request_row(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "version": r.version,
        "from": r.from_stage,
        "to": r.stage + (" (archive existing)" if r.archive_existing_versions else ""),
        "status": r.status,
        "requester": r.requester,
        "created": _time(r.creation_timestamp),
        "comment": r.comment,
        "decided_by": r.decided_by,
        "decision_comment": r.decision_comment,
    }


def _requests(args: argparse.Namespace) -> int:
    requests = _client().list_transition_requests(
        args.name, status=args.status, version=args.version, max_results=args.max_results
    )
    if args.json:
        emit([_asdict(r) for r in requests], REQUEST_COLUMNS, as_json=True)
    else:
        emit([_request_row(r) for r in requests], REQUEST_COLUMNS, as_json=False)
    return 0


def _decide(args: argparse.Namespace) -> int:
    client = _client()
    decide = {
        "approve": client.approve_transition_request,
        "reject": client.reject_transition_request,
        "cancel": client.cancel_transition_request,
    }[args.verb]
    request = decide(args.request_id, comment=args.comment)
    if args.json:
        print(json.dumps(_asdict(request), indent=2))
    elif request.status == "APPROVED":
        print(
            f"transition request {request.id} approved: version {request.version} of {request.name} "
            f"is now in {request.stage}"
        )
    else:
        print(f"transition request {request.id} {request.status.lower()}: nothing moved")
    return 0


def _read_input(path: str, content_type: str | None) -> Any:
    """A DataFrame (CSV, dataframe_split/records) or the tensor(s) of ``instances``/``inputs``."""
    import pandas as pd

    kind = content_type or ("csv" if path.lower().endswith(".csv") else "json")
    if kind == "csv":
        return pd.read_csv(path)
    with open(path, encoding="utf-8") as f:
        payload = json.load(f)
    if isinstance(payload, dict):
        formats = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in payload]
        if len(formats) > 1:
            raise ValueError(f"the input holds {', '.join(formats)}: give exactly one of them")
        if formats == ["dataframe_split"]:
            split = payload["dataframe_split"]
            return pd.DataFrame(data=split["data"], columns=split.get("columns"), index=split.get("index"))
        if formats == ["dataframe_records"]:
            return pd.DataFrame.from_records(payload["dataframe_records"])
        if formats:
            import numpy as np

            data = payload[formats[0]]
            if isinstance(data, dict):
                return {k: np.asarray(v) for k, v in data.items()}
            return np.asarray(data)
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        return pd.DataFrame.from_records(payload)
    return pd.DataFrame(payload)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict") and hasattr(value, "columns"):
        return value.to_dict(orient="records")
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _compare(args: argparse.Namespace) -> int:
    from keel.evaluation.comparison import format_text

    comparison = _client().compare_model_versions(args.name, args.versions)
    if args.json:
        print(json.dumps(comparison.to_dict(), indent=2, default=str))
    else:
        print(format_text(comparison, only_differences=args.differences))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from keel import pyfunc

    if args.output:
        return _predict_batch(args)
    try:
        data = _read_input(args.input, args.content_type)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot read input {args.input}: {exc}", file=sys.stderr)
        return 2
    model = pyfunc.load_model(args.model_uri)
    predictions = model.predict(data)
    print(json.dumps({"predictions": _jsonable(predictions)}, default=str))
    return 0


def _predict_batch(args: argparse.Namespace) -> int:
    from keel.batch import predict_file

    try:
        result = predict_file(
            args.model_uri,
            args.input,
            args.output,
            batch_size=args.batch_size,
            id_column=args.id_column,
            progress=not args.no_progress,
        )
    except (OSError, ValueError, TypeError) as exc:  # the model's own errors (KeelError: main says it)
        print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"{result.rows} predictions in {result.chunks} chunks -> {result.output}", file=sys.stderr)
    return 0
