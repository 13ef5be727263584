"""The console's JSON API (the contract in docs/console.md, "API").

Every route turns one HTTP request into the gRPC calls any keel client would make, with the
browser's identity as call metadata: its ``Authorization: Bearer`` token, or, behind a trusted
proxy (``ui_identity_header`` + ``ui_token``), the console's admin service account acting for the
user the proxy names (``x-keel-act-as``; docs/auth.md). Permissions, validation and the audit
log are therefore exactly the services' own; the console never touches a store.

Requests that change something must come from the console's own pages: a cross-site page cannot
send ``Content-Type: application/json`` without a CORS preflight (which is never granted), so a
proxy's cookie cannot be ridden from elsewhere.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

import keel
import keel.exceptions as sdk_errors
from keel.artifacts.v1 import artifacts_pb2 as apb
from keel.auth.v1 import auth_pb2 as aupb
from keel.inference.v1 import inference_pb2 as ipb
from keel.registry.v1 import registry_pb2 as rpb
from keel.tracking.v1 import tracking_pb2 as tpb
from keel_server.common.config import Settings
from keel_server.common.errors import InvalidArgument, PermissionDenied, Unavailable
from keel_server.common.gateway import Gateway
from keel_server.common.http import Request, Response, Router, json_response
from keel_server.console import files, rows

ACT_AS_METADATA = "x-keel-act-as"
MAX_JSON_BODY = 1024 * 1024
RUNS_PAGE_DEFAULT, RUNS_PAGE_MAX = 50, 1000
LIST_PAGE_DEFAULT, LIST_PAGE_MAX = 100, 1000
CHART_POINTS_DEFAULT, CHART_POINTS_MAX = 1000, 20_000
COMPARE_MIN, COMPARE_MAX = 2, 10
# How long the column keys of a set of experiments are reused (per identity): the runs table
# asks for them with every page.
COLUMNS_TTL_S = 15.0
VIEWS = {"active": tpb.VIEW_TYPE_ACTIVE_ONLY, "deleted": tpb.VIEW_TYPE_DELETED_ONLY, "all": tpb.VIEW_TYPE_ALL, "": 0}
LEVELS = {
    aupb.PERMISSION_LEVEL_NONE: "NONE",
    aupb.PERMISSION_LEVEL_READ: "READ",
    aupb.PERMISSION_LEVEL_USE: "USE",
    aupb.PERMISSION_LEVEL_EDIT: "EDIT",
    aupb.PERMISSION_LEVEL_MANAGE: "MANAGE",
}
NO_STORE = {"Cache-Control": "no-store"}


@dataclass
class Console:
    """The console's shared state, handed to every route."""

    gateway: Gateway
    settings: Settings
    _columns: dict[tuple[str, tuple[str, ...]], tuple[float, dict[str, list[str]]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- identity ------------------------------------------------------------------------------
    def proxy_user(self, request: Request) -> str:
        """The user a trusted proxy names ('' when the console takes no proxy header, or it is absent)."""
        header = self.settings.ui_identity_header
        if not header:
            return ""
        user = request.headers.get(header, "").strip()
        if user and (len(user) > 256 or not user.isascii() or not user.isprintable()):
            raise InvalidArgument(
                f"the {header} header must be a printable ASCII user name of at most 256 characters",
                reason="INVALID_PROXY_USER",
            )
        return user

    def metadata(self, request: Request) -> list[tuple[str, str]]:
        """The caller's identity as keel call metadata."""
        metadata: list[tuple[str, str]] = []
        user = self.proxy_user(request)
        if user:
            metadata += [("authorization", f"Bearer {self.settings.ui_token}"), (ACT_AS_METADATA, user)]
        else:
            header = request.headers.get("Authorization", "").strip()
            if header:
                # Passed as is: the server says what is wrong with a malformed one.
                metadata.append(("authorization", header))
        request_id = request.headers.get("X-Request-Id", "").strip()
        if request_id and request_id.isascii() and request_id.isprintable():
            metadata.append(("x-request-id", request_id[:128]))
        return metadata

    def identity_source(self, request: Request) -> str:
        if self.proxy_user(request):
            return "proxy-header"
        return "token" if request.headers.get("Authorization", "").strip() else "none"

    # -- calls ---------------------------------------------------------------------------------
    def call(self, request: Request, service: str, method: str, message: Any) -> Any:
        return self.gateway.call(service, method, message, self.metadata(request))

    def stream(self, request: Request, service: str, method: str, message: Any) -> Iterator[Any]:
        return self.gateway.stream(service, method, message, self.metadata(request))

    def levels(self, request: Request, resources: list[aupb.Resource]) -> list[str | None]:
        """The caller's level on each resource; None for each when auth is off."""
        if not resources:
            return []
        answer = self.call(request, "auth", "GetCallerPermissions", aupb.GetCallerPermissionsRequest(resources=resources))
        if not answer.auth_enabled:
            return [None] * len(resources)
        return [LEVELS.get(level) for level in answer.levels]

    def columns(self, request: Request, experiment_ids: list[str]) -> dict[str, list[str]]:
        credential = hashlib.sha256(repr(self.metadata(request)[:2]).encode()).hexdigest()
        key = (credential, tuple(experiment_ids))
        now = time.monotonic()
        with self._lock:
            cached = self._columns.get(key)
        if cached is not None and now - cached[0] < COLUMNS_TTL_S:
            return cached[1]
        answer = self.call(
            request, "tracking", "ListRunDataKeys", tpb.ListRunDataKeysRequest(experiment_ids=experiment_ids)
        )
        found = {"params": list(answer.param_keys), "metrics": list(answer.metric_keys), "tags": list(answer.tag_keys)}
        with self._lock:
            if len(self._columns) > 1000:
                self._columns.clear()
            self._columns[key] = (now, found)
        return found

    def forget_columns(self) -> None:
        with self._lock:
            self._columns.clear()

    def acting_user(self, request: Request) -> str:
        """The signed-in user's name for the ``user_id`` fields the registry records ('' unknown)."""
        try:
            identity = self.call(request, "auth", "WhoAmI", aupb.WhoAmIRequest())
        except sdk_errors.KeelError:
            return ""
        return "" if identity.name == "anonymous" and not identity.auth_enabled else str(identity.name)


Route = Callable[[Console, Request], Response]
_ROUTES: list[tuple[str, str, Route]] = []


def route(method: str, path: str) -> Callable[[Route], Route]:
    def decorate(handler: Route) -> Route:
        _ROUTES.append((method, path, handler))
        return handler

    return decorate


def register(router: Router, console: Console) -> None:
    for method, path, handler in _ROUTES:
        router.add(method, path, _bind(console, handler, method))


def _bind(console: Console, handler: Route, method: str) -> Callable[[Request], Response]:
    def bound(request: Request) -> Response:
        if method != "GET":
            _check_origin(request)
        response = handler(console, request)
        for key, value in NO_STORE.items():
            response.headers.setdefault(key, value)
        return response

    return bound


def _check_origin(request: Request) -> None:
    """A change must come from the console's own pages (see the module docstring). The Origin
    header is not compared with Host: proxies rewrite Host, and the JSON rule already needs a
    CORS preflight that is never granted."""
    if request.headers.get("Origin", "") == "null":
        raise PermissionDenied("a request from an opaque origin (a sandboxed page) is refused", reason="CROSS_ORIGIN")
    if request.method in ("POST", "PUT", "PATCH"):
        kind = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise InvalidArgument(
                "send the request with Content-Type: application/json (also when it has no body)",
                reason="JSON_REQUIRED",
            )


# -- argument helpers ---------------------------------------------------------------------------
def _ids(request: Request, name: str) -> list[str]:
    """A list argument given as ``a,b`` and/or repeated."""
    out: list[str] = []
    for value in request.args(name):
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return list(dict.fromkeys(out))


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.arg(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {raw[:40]!r}", reason="INVALID_ARGUMENT", field=name) from None
    if value < low:
        raise InvalidArgument(f"{name} must be >= {low}, got {value}", reason="INVALID_ARGUMENT", field=name)
    return min(value, high)


def _view(request: Request) -> int:
    view = request.arg("view", "").strip().lower()
    if view not in VIEWS:
        raise InvalidArgument(f"view must be active, deleted or all, got {view[:40]!r}", reason="INVALID_VIEW", field="view")
    return VIEWS[view]


def _body(request: Request) -> dict[str, Any]:
    return request.json(MAX_JSON_BODY)


def _str(body: dict[str, Any], name: str, required: bool = True) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise InvalidArgument(f"{name} is required", reason="MISSING_PARAMETER", field=name)
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string", reason="INVALID_ARGUMENT", field=name)
    return value


def _version_number(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidArgument(f"version must be a positive integer, got {raw[:40]!r}", reason="INVALID_VERSION", field="version")
    return int(raw)


def _quote(value: str) -> str:
    """A string literal of keel's filter syntax."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- session ------------------------------------------------------------------------------------
@route("GET", "/api/session")
def session(c: Console, request: Request) -> Response:
    source = c.identity_source(request)
    try:
        identity = c.call(request, "auth", "WhoAmI", aupb.WhoAmIRequest())
    except sdk_errors.Unauthenticated:
        if source != "none":
            raise  # a bad token: 401, the front end asks again
        return json_response({"auth": True, "user": None, "keel_version": keel.__version__, "identity_source": "none"})
    auth = bool(identity.auth_enabled)
    user = {"name": identity.name, "is_admin": bool(identity.admin)} if auth else None
    return json_response(
        {"auth": auth, "user": user, "keel_version": keel.__version__, "identity_source": source if auth else "none"}
    )


# -- experiments --------------------------------------------------------------------------------
def _experiment_levels(c: Console, request: Request, ids: list[str]) -> list[str | None]:
    return c.levels(request, [aupb.Resource(experiment_id=i) for i in ids])


@route("GET", "/api/experiments")
def list_experiments(c: Console, request: Request) -> Response:
    answer = c.call(
        request,
        "tracking",
        "SearchExperiments",
        tpb.SearchExperimentsRequest(
            filter=request.arg("filter"),
            view_type=_view(request),  # type: ignore[arg-type]
            page_size=_int(request, "page_size", LIST_PAGE_DEFAULT, 1, LIST_PAGE_MAX),
            page_token=request.arg("page_token"),
            order_by=request.args("order_by"),
        ),
    )
    levels = _experiment_levels(c, request, [e.experiment_id for e in answer.experiments])
    return json_response(
        {
            "experiments": [rows.experiment(e, level) for e, level in zip(answer.experiments, levels, strict=True)],
            "next_page_token": answer.next_page_token,
        }
    )


@route("GET", "/api/experiments/{experiment_id}")
def get_experiment(c: Console, request: Request) -> Response:
    experiment_id = request.params["experiment_id"]
    e = c.call(request, "tracking", "GetExperiment", tpb.GetExperimentRequest(experiment_id=experiment_id))
    return json_response(rows.experiment(e, _experiment_levels(c, request, [e.experiment_id])[0]))


@route("POST", "/api/experiments")
def create_experiment(c: Console, request: Request) -> Response:
    name = _str(_body(request), "name")
    e = c.call(request, "tracking", "CreateExperiment", tpb.CreateExperimentRequest(name=name))
    return json_response(rows.experiment(e, _experiment_levels(c, request, [e.experiment_id])[0]))


@route("PATCH", "/api/experiments/{experiment_id}")
def rename_experiment(c: Console, request: Request) -> Response:
    name = _str(_body(request), "name")
    e = c.call(
        request,
        "tracking",
        "UpdateExperiment",
        tpb.UpdateExperimentRequest(experiment_id=request.params["experiment_id"], new_name=name),
    )
    return json_response(rows.experiment(e, _experiment_levels(c, request, [e.experiment_id])[0]))


@route("DELETE", "/api/experiments/{experiment_id}")
def delete_experiment(c: Console, request: Request) -> Response:
    c.call(request, "tracking", "DeleteExperiment", tpb.DeleteExperimentRequest(experiment_id=request.params["experiment_id"]))
    return json_response({})


@route("POST", "/api/experiments/{experiment_id}/restore")
def restore_experiment(c: Console, request: Request) -> Response:
    e = c.call(
        request, "tracking", "RestoreExperiment", tpb.RestoreExperimentRequest(experiment_id=request.params["experiment_id"])
    )
    return json_response(rows.experiment(e, _experiment_levels(c, request, [e.experiment_id])[0]))


# -- runs ---------------------------------------------------------------------------------------
def _ranges(c: Console, request: Request, run_ids: list[str]) -> dict[str, dict[str, tpb.MetricRange]]:
    if not run_ids:
        return {}
    answer = c.call(request, "tracking", "GetMetricRanges", tpb.GetMetricRangesRequest(run_ids=run_ids))
    return rows.ranges_by_run(answer.ranges)


@route("GET", "/api/runs")
def search_runs(c: Console, request: Request) -> Response:
    experiment_ids = _ids(request, "experiment_ids")
    if not experiment_ids:
        raise InvalidArgument("experiment_ids is required (e.g. experiment_ids=1,2)", reason="MISSING_PARAMETER", field="experiment_ids")
    answer = c.call(
        request,
        "tracking",
        "SearchRuns",
        tpb.SearchRunsRequest(
            experiment_ids=experiment_ids,
            filter=request.arg("filter"),
            run_view_type=_view(request),  # type: ignore[arg-type]
            page_size=_int(request, "page_size", RUNS_PAGE_DEFAULT, 1, RUNS_PAGE_MAX),
            order_by=[o for o in request.args("order_by") if o.strip()],
            page_token=request.arg("page_token"),
        ),
    )
    ranges = _ranges(c, request, [r.info.run_id for r in answer.runs])
    page_experiments = sorted({r.info.experiment_id for r in answer.runs})
    levels = dict(zip(page_experiments, _experiment_levels(c, request, page_experiments), strict=True))
    out = []
    for run in answer.runs:
        row = rows.run_row(run, ranges.get(run.info.run_id, {}))
        row["permission"] = levels[run.info.experiment_id]
        out.append(row)
    return json_response(
        {"runs": out, "next_page_token": answer.next_page_token, "columns": c.columns(request, experiment_ids)}
    )


@route("POST", "/api/runs/delete")
def delete_runs(c: Console, request: Request) -> Response:
    return _each_run(c, request, "DeleteRun", tpb.DeleteRunRequest, "deleted")


@route("POST", "/api/runs/restore")
def restore_runs(c: Console, request: Request) -> Response:
    return _each_run(c, request, "RestoreRun", tpb.RestoreRunRequest, "restored")


def _each_run(c: Console, request: Request, method: str, message: Any, counted: str) -> Response:
    run_ids = _body(request).get("run_ids")
    if not isinstance(run_ids, list) or not run_ids or not all(isinstance(r, str) for r in run_ids):
        raise InvalidArgument("run_ids must be a non-empty list of run ids", reason="INVALID_RUN_IDS", field="run_ids")
    if len(run_ids) > RUNS_PAGE_MAX:
        raise InvalidArgument(f"at most {RUNS_PAGE_MAX} runs at once", reason="INVALID_RUN_IDS", field="run_ids")
    done = 0
    for run_id in dict.fromkeys(run_ids):
        c.call(request, "tracking", method, message(run_id=run_id))
        done += 1
    c.forget_columns()
    return json_response({counted: done})


@route("GET", "/api/runs/{run_id}")
def get_run(c: Console, request: Request) -> Response:
    run_id = request.params["run_id"]
    run = c.call(request, "tracking", "GetRun", tpb.GetRunRequest(run_id=run_id))
    children = c.call(
        request,
        "tracking",
        "SearchRuns",
        tpb.SearchRunsRequest(
            experiment_ids=[run.info.experiment_id],
            filter=f"attributes.parent_run_id = {_quote(run_id)}",
            run_view_type=tpb.VIEW_TYPE_ALL,
            page_size=RUNS_PAGE_MAX,
        ),
    ).runs
    detail = rows.run_detail(run, _ranges(c, request, [run_id]).get(run_id, {}), list(children))
    detail["permission"] = _experiment_levels(c, request, [run.info.experiment_id])[0]
    return json_response(detail)


@route("PUT", "/api/runs/{run_id}/tags/{key}")
def set_run_tag(c: Console, request: Request) -> Response:
    value = _body(request).get("value")
    if not isinstance(value, str):
        raise InvalidArgument("value must be a string", reason="INVALID_ARGUMENT", field="value")
    c.call(
        request, "tracking", "SetTag", tpb.SetTagRequest(run_id=request.params["run_id"], key=request.params["key"], value=value)
    )
    return json_response({})


@route("DELETE", "/api/runs/{run_id}/tags/{key}")
def delete_run_tag(c: Console, request: Request) -> Response:
    c.call(request, "tracking", "DeleteTag", tpb.DeleteTagRequest(run_id=request.params["run_id"], key=request.params["key"]))
    return json_response({})


def _x_axis(request: Request) -> str:
    x = request.arg("x", "step").strip().lower() or "step"
    if x not in ("step", "time"):
        raise InvalidArgument(f"x must be step or time, got {x[:40]!r}", reason="INVALID_ARGUMENT", field="x")
    return x


def _series(c: Console, request: Request, run_ids: list[str], key: str) -> dict[str, dict[str, Any]]:
    """Each run's chart points of ``key``, downsampled by the tracking service."""
    x = _x_axis(request)
    max_points = _int(request, "max_points", CHART_POINTS_DEFAULT, 3, CHART_POINTS_MAX)
    answer = c.call(
        request,
        "tracking",
        "GetMetricHistoryBulk",
        tpb.GetMetricHistoryBulkRequest(run_ids=run_ids, metric_keys=[key], max_points_per_series=max_points),
    )
    points: dict[str, list[list[Any]]] = {run_id: [] for run_id in run_ids}
    for m in answer.metrics:
        points[m.run_id].append([int(m.step) if x == "step" else int(m.timestamp), rows.point(m.value)])
    totals = {s.run_id: int(s.total_points) for s in answer.series_sizes}
    out: dict[str, dict[str, Any]] = {}
    for run_id in run_ids:
        drawn = points[run_id]
        if x == "time":
            drawn.sort(key=lambda p: p[0])
        total = totals.get(run_id, 0)
        out[run_id] = {"key": key, "points": drawn, "total": total, "downsampled": total > len(drawn)}
    return out


@route("GET", "/api/runs/{run_id}/metrics/{key:path}")
def metric_history(c: Console, request: Request) -> Response:
    run_id = request.params["run_id"]
    return json_response(_series(c, request, [run_id], request.params["key"])[run_id])


@route("GET", "/api/metrics")
def metric_histories(c: Console, request: Request) -> Response:
    """Several runs' charts of one metric at once (the compare page)."""
    run_ids = _ids(request, "run_ids")
    key = request.arg("key")
    if not run_ids or len(run_ids) > 100 or not key:
        raise InvalidArgument("give run_ids (1..100) and key", reason="INVALID_ARGUMENT", field="run_ids")
    series = _series(c, request, run_ids, key)
    return json_response({"key": key, "series": [{"run_id": r, **series[r]} for r in run_ids]})


# -- artifacts ----------------------------------------------------------------------------------
@route("GET", "/api/runs/{run_id}/artifacts")
def list_artifacts(c: Console, request: Request) -> Response:
    run_id = request.params["run_id"]
    path = files.clean_path(request.arg("path"))
    return json_response(files.listing(lambda m, msg: c.call(request, "artifacts", m, msg), run_id, path))


@route("GET", "/api/runs/{run_id}/artifact")
def get_artifact(c: Console, request: Request) -> Response:
    path = files.clean_path(request.arg("path"))
    if not path:
        raise InvalidArgument("path is required", reason="MISSING_PARAMETER", field="path")
    ref = apb.ArtifactRef(run_id=request.params["run_id"], path=path)
    preview = request.arg("preview") in ("1", "true")
    return files.file_response(lambda m, msg: c.stream(request, "artifacts", m, msg), ref, preview=preview, attachment=False)


@route("GET", "/api/runs/{run_id}/download")
def download(c: Console, request: Request) -> Response:
    run_id = request.params["run_id"]
    path = files.clean_path(request.arg("path"))
    is_dir = True
    if path:
        info = c.call(request, "artifacts", "StatArtifact", apb.StatArtifactRequest(ref=apb.ArtifactRef(run_id=run_id, path=path)))
        is_dir = bool(info.is_dir)
    if not is_dir:
        ref = apb.ArtifactRef(run_id=run_id, path=path)
        return files.file_response(lambda m, msg: c.stream(request, "artifacts", m, msg), ref, preview=False, attachment=True)
    return files.zip_response(
        lambda m, msg: c.call(request, "artifacts", m, msg),
        lambda m, msg: c.stream(request, "artifacts", m, msg),
        run_id,
        path,
    )


# -- compare ------------------------------------------------------------------------------------
@route("GET", "/api/compare")
def compare(c: Console, request: Request) -> Response:
    run_ids = _ids(request, "run_ids")
    if not COMPARE_MIN <= len(run_ids) <= COMPARE_MAX:
        raise InvalidArgument(
            f"compare takes {COMPARE_MIN}..{COMPARE_MAX} runs, got {len(run_ids)}", reason="INVALID_RUN_IDS", field="run_ids"
        )
    runs = [c.call(request, "tracking", "GetRun", tpb.GetRunRequest(run_id=run_id)) for run_id in run_ids]
    ranges = _ranges(c, request, run_ids)
    return json_response({"runs": [rows.run_row(r, ranges.get(r.info.run_id, {})) for r in runs]})


# -- registry -----------------------------------------------------------------------------------
@route("GET", "/api/models")
def list_models(c: Console, request: Request) -> Response:
    answer = c.call(
        request,
        "registry",
        "SearchRegisteredModels",
        rpb.SearchRegisteredModelsRequest(
            filter=request.arg("filter"),
            page_size=_int(request, "page_size", LIST_PAGE_DEFAULT, 1, LIST_PAGE_MAX),
            page_token=request.arg("page_token"),
            order_by=request.args("order_by"),
        ),
    )
    return json_response(
        {"models": [rows.model(m) for m in answer.registered_models], "next_page_token": answer.next_page_token}
    )


@route("POST", "/api/models")
def register_model(c: Console, request: Request) -> Response:
    body = _body(request)
    name, run_id, path = _str(body, "name"), _str(body, "run_id"), files.clean_path(_str(body, "path", required=False))
    try:
        c.call(request, "registry", "CreateRegisteredModel", rpb.CreateRegisteredModelRequest(name=name))
    except sdk_errors.AlreadyExists:
        pass
    source = f"runs:/{run_id}/{path}" if path else f"runs:/{run_id}"
    v = c.call(
        request,
        "registry",
        "CreateModelVersion",
        rpb.CreateModelVersionRequest(name=name, source=source, run_id=run_id, user_id=c.acting_user(request)),
    )
    return json_response(rows.version(v))


@route("GET", "/api/models/{name}")
def get_model(c: Console, request: Request) -> Response:
    name = request.params["name"]
    m = c.call(request, "registry", "GetRegisteredModel", rpb.GetRegisteredModelRequest(name=name))
    versions: list[Any] = []
    token = ""
    while len(versions) < 10_000:
        answer = c.call(
            request,
            "registry",
            "SearchModelVersions",
            rpb.SearchModelVersionsRequest(
                filter=f"name = {_quote(name)}", order_by=["version_number DESC"], page_size=1000, page_token=token
            ),
        )
        versions.extend(answer.model_versions)
        token = answer.next_page_token
        if not token:
            break
    history = c.call(
        request, "registry", "ListModelHistory", rpb.ListModelHistoryRequest(name=name, page_size=1000)
    ).events
    body = rows.model(m)
    body["versions"] = [rows.version(v) for v in versions]
    body["history"] = [rows.history_event(e) for e in history]
    body["permission"] = c.levels(request, [aupb.Resource(model_name=name)])[0]
    return json_response(body)


@route("PATCH", "/api/models/{name}")
def update_model(c: Console, request: Request) -> Response:
    name = request.params["name"]
    description = _body(request).get("description")
    if not isinstance(description, str):
        raise InvalidArgument("description must be a string", reason="INVALID_ARGUMENT", field="description")
    m = c.call(
        request, "registry", "UpdateRegisteredModel", rpb.UpdateRegisteredModelRequest(name=name, description=description)
    )
    return json_response(rows.model(m))


def _signature(c: Console, request: Request, v: rpb.ModelVersion) -> dict[str, Any] | None:
    """The signature in the version's MLmodel file (None when it has none or it cannot be read)."""
    location = v.storage_location or v.source
    if not location:
        return None
    try:
        response = files.file_response(
            lambda m, msg: c.stream(request, "artifacts", m, msg),
            apb.ArtifactRef(artifact_uri=location, path="MLmodel"),
            preview=True,
            attachment=False,
        )
        text = b"".join(response.body).decode("utf-8", "replace")  # type: ignore[arg-type]
        meta = yaml.safe_load(text)
    except (sdk_errors.KeelError, yaml.YAMLError, StopIteration):
        return None
    signature = meta.get("signature") if isinstance(meta, dict) else None
    if not isinstance(signature, dict):
        return None
    out: dict[str, Any] = {}
    for part in ("inputs", "outputs", "params"):
        raw = signature.get(part)
        try:
            out[part] = yaml.safe_load(raw) if isinstance(raw, str) else raw
        except yaml.YAMLError:
            out[part] = raw
    return out


@route("GET", "/api/models/{name}/versions/{version}")
def get_version(c: Console, request: Request) -> Response:
    name = request.params["name"]
    number = _version_number(request.params["version"])
    v = c.call(request, "registry", "GetModelVersion", rpb.GetModelVersionRequest(name=name, version=number))
    body = rows.version(v, _signature(c, request, v))
    body["permission"] = c.levels(request, [aupb.Resource(model_name=name)])[0]
    return json_response(body)


@route("PATCH", "/api/models/{name}/versions/{version}")
def update_version(c: Console, request: Request) -> Response:
    description = _body(request).get("description")
    if not isinstance(description, str):
        raise InvalidArgument("description must be a string", reason="INVALID_ARGUMENT", field="description")
    v = c.call(
        request,
        "registry",
        "UpdateModelVersion",
        rpb.UpdateModelVersionRequest(
            name=request.params["name"], version=_version_number(request.params["version"]), description=description
        ),
    )
    return json_response(rows.version(v))


@route("POST", "/api/models/{name}/versions/{version}/stage")
def transition(c: Console, request: Request) -> Response:
    body = _body(request)
    stage = _str(body, "stage")
    archive = body.get("archive_existing", False)
    if not isinstance(archive, bool):
        raise InvalidArgument("archive_existing must be true or false", reason="INVALID_ARGUMENT", field="archive_existing")
    v = c.call(
        request,
        "registry",
        "TransitionModelVersionStage",
        rpb.TransitionModelVersionStageRequest(
            name=request.params["name"],
            version=_version_number(request.params["version"]),
            stage=stage,
            archive_existing_versions=archive,
            user_id=c.acting_user(request),
        ),
    )
    return json_response(rows.version(v))


@route("PUT", "/api/models/{name}/aliases/{alias}")
def set_alias(c: Console, request: Request) -> Response:
    body = _body(request)
    version, expected = body.get("version"), body.get("expected_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidArgument("version must be a positive integer", reason="INVALID_VERSION", field="version")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int) or expected < 0):
        raise InvalidArgument(
            "expected_version must be null (no check), 0 (the alias must not exist) or a version",
            reason="INVALID_VERSION",
            field="expected_version",
        )
    message = rpb.SetRegisteredModelAliasRequest(
        name=request.params["name"], alias=request.params["alias"], version=version, user_id=c.acting_user(request)
    )
    if expected is not None:
        message.expected_version = expected
    v = c.call(request, "registry", "SetRegisteredModelAlias", message)
    return json_response(rows.version(v))


@route("DELETE", "/api/models/{name}/aliases/{alias}")
def delete_alias(c: Console, request: Request) -> Response:
    c.call(
        request,
        "registry",
        "DeleteRegisteredModelAlias",
        rpb.DeleteRegisteredModelAliasRequest(
            name=request.params["name"], alias=request.params["alias"], user_id=c.acting_user(request)
        ),
    )
    return json_response({})


# -- deployments --------------------------------------------------------------------------------
@route("GET", "/api/deployments")
def list_deployments(c: Console, request: Request) -> Response:
    found: list[Any] = []
    token = ""
    try:
        while len(found) < 10_000:
            answer = c.call(
                request, "inference", "ListDeployments", ipb.ListDeploymentsRequest(page_size=1000, page_token=token)
            )
            found.extend(answer.deployments)
            token = answer.next_page_token
            if not token:
                break
    except (sdk_errors.Unavailable, sdk_errors.Unimplemented) as exc:
        raise Unavailable(
            f"no inference service is reachable from the console ({exc.message}); start one with "
            "`keel server` (all services) or set KEEL_INFERENCE_ADDRESS",
            reason="INFERENCE_UNAVAILABLE",
        ) from None
    return json_response({"deployments": [rows.deployment(d) for d in found]})
