"""A read-only client of an ``mlflow server``'s REST API (``/api/2.0/mlflow/...``), for the importer.

Plain HTTP through urllib3 (a core dependency): the ``mlflow`` package is not needed, and the
server may run any MLflow version from 2.x on (MLflow 3's logged-model endpoints are used only
when the server has them). Lists are paged; artifact bytes are opened as streams, never read
whole. Authentication as the ``mlflow`` client does it: ``MLFLOW_TRACKING_TOKEN`` (bearer) or
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (basic).
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3

from keel.exceptions import (
    FailedPrecondition,
    InvalidArgument,
    KeelError,
    NotFound,
    Unauthenticated,
    Unavailable,
)

API = "/api/2.0/mlflow"
# Page sizes within every MLflow release's limits (runs and experiments: 50,000; registered
# models: 1,000; versions: 200,000; one metric's history page: 25,000).
PAGE = 1000
HISTORY_PAGE = 25_000


@dataclass(frozen=True)
class SourceFile:
    """An artifact file: ``path`` relative to its root (a run's or a logged model's)."""

    path: str
    size: int


class _Stream:
    """A response body read in chunks; its connection goes back to the pool when read to the
    end, and is dropped when the reader stopped early (an error)."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        self._done = False

    def read(self, size: int = -1) -> bytes:
        data = self._response.read(size if size >= 0 else None)
        if not data:
            self._done = True
        return data

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._done:
            self._response.release_conn()
        else:
            self._response.close()


def _safe_path(path: str) -> str:
    """Refuses a listed path that could leave the artifact root on the keel side."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise FailedPrecondition(
            f"the MLflow server listed an artifact path keel does not accept: {path!r}",
            reason="MLFLOW_UNSAFE_ARTIFACT_PATH",
        )
    return path


class MlflowRest:
    """Reads one MLflow server. Every error is a ``keel.exceptions.KeelError`` with a message that
    names the server: ``Unavailable`` (unreachable), ``FailedPrecondition`` (not an MLflow server),
    ``Unauthenticated``, ``NotFound``, or the type MLflow's ``error_code`` maps to."""

    def __init__(self, url: str, *, timeout: float = 120.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(
                f"--from must be the http(s):// address of an MLflow server, such as http://mlflow-host:5000; got {url!r}",
                reason="INVALID_MLFLOW_URL",
                field="from",
            )
        self.url = url.rstrip("/")
        headers = {"User-Agent": "keel-import-mlflow"}
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user and password is not None:
            headers.update(urllib3.make_headers(basic_auth=f"{user}:{password}"))
        # Reads only (the POSTs are searches): every request may be retried on a dropped connection.
        retries = urllib3.Retry(
            total=4, connect=3, read=2, backoff_factor=0.5, status_forcelist=(429, 502, 503, 504), allowed_methods=None
        )
        self._http = urllib3.PoolManager(
            num_pools=2,
            maxsize=8,
            headers=headers,
            retries=retries,
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
        )
        self._logged_models_api: bool | None = None

    # ---- plumbing ----------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, fields: dict[str, Any] | None = None, body: Any = None,
                 stream: bool = False) -> urllib3.BaseHTTPResponse:
        url = self.url + path
        try:
            if body is not None:
                response = self._http.request(
                    method, url, body=json.dumps(body).encode(), headers={**self._http.headers, "Content-Type": "application/json"},
                    preload_content=not stream,
                )
            else:
                response = self._http.request(method, url, fields=fields, preload_content=not stream)
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise Unavailable(
                f"cannot reach the MLflow server at {self.url}: {reason}", reason="MLFLOW_UNREACHABLE"
            ) from None
        if response.status >= 400:
            data = response.read() if stream else response.data
            if stream:
                response.release_conn()
            self._raise(method, path, response.status, data, response.headers.get("Content-Type", ""))
        return response

    def _raise(self, method: str, path: str, status: int, data: bytes, content_type: str) -> None:
        where = f"{method} {self.url}{path.split('?')[0]}"
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and "error_code" in payload:
            message = f"MLflow server {self.url}: {payload.get('message', '')} ({where})"
            if status == 401:
                raise Unauthenticated(
                    message + ": set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
                    reason="MLFLOW_UNAUTHENTICATED",
                )
            raise KeelError(message, error_code=str(payload["error_code"]), reason=f"MLFLOW_{payload['error_code']}")
        if status == 401:
            raise Unauthenticated(
                f"the MLflow server at {self.url} wants credentials ({where} answered 401): set "
                "MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
                reason="MLFLOW_UNAUTHENTICATED",
            )
        raise FailedPrecondition(
            f"{self.url} does not answer like an MLflow server: {where} answered HTTP {status} "
            f"({content_type or 'no content type'}, not MLflow's JSON error)",
            reason="NOT_AN_MLFLOW_SERVER",
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        try:
            payload = json.loads(response.data or b"{}")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise FailedPrecondition(
                f"{self.url} does not answer like an MLflow server: {method} {path.split('?')[0]} did not return a JSON object",
                reason="NOT_AN_MLFLOW_SERVER",
            )
        return payload

    def get(self, endpoint: str, /, **fields: Any) -> dict[str, Any]:
        """GET ``/api/2.0/mlflow<endpoint>`` with query ``fields`` (None ones left out)."""
        return self._json("GET", API + endpoint, fields={k: str(v) for k, v in fields.items() if v is not None})

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", API + endpoint, body=body)

    # ---- the server --------------------------------------------------------------------------
    def check(self) -> str:
        """Fails unless ``url`` is a reachable MLflow server; returns its version ('' if unknown)."""
        try:
            self.post("/experiments/search", {"max_results": 1, "view_type": "ALL"})
        except FailedPrecondition:
            raise
        except NotFound as exc:  # a 404 in MLflow's shape: an MLflow server with another prefix?
            raise FailedPrecondition(
                f"{self.url} does not serve MLflow's REST API at {API}: {exc.message}", reason="NOT_AN_MLFLOW_SERVER"
            ) from None
        try:
            response = self._request("GET", "/version")
            text = response.data.decode("utf-8", "replace").strip()
            return text if len(text) < 40 else ""
        except KeelError:
            return ""

    # ---- tracking ----------------------------------------------------------------------------
    def experiments(self, view_type: str) -> Iterator[dict[str, Any]]:
        token = None
        while True:
            body: dict[str, Any] = {"max_results": PAGE, "view_type": view_type}
            if token:
                body["page_token"] = token
            page = self.post("/experiments/search", body)
            yield from page.get("experiments", [])
            token = page.get("next_page_token")
            if not token:
                return

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        return dict(self.get("/experiments/get", experiment_id=experiment_id)["experiment"])

    def experiment_by_name_or_id(self, ref: str) -> dict[str, Any]:
        try:
            return dict(self.get("/experiments/get-by-name", experiment_name=ref)["experiment"])
        except NotFound:
            pass
        except KeelError as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
        if ref.isdigit():
            try:
                return self.experiment(ref)
            except KeelError as exc:
                if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise
        raise NotFound(
            f"the MLflow server at {self.url} has no experiment named or numbered {ref!r}",
            reason="MLFLOW_EXPERIMENT_NOT_FOUND",
            metadata={"experiment": ref},
        )

    def run_pages(self, experiment_id: str, view_type: str) -> Iterator[list[dict[str, Any]]]:
        """The runs of an experiment, a page at a time, oldest first (parents before children)."""
        token = None
        while True:
            body: dict[str, Any] = {
                "experiment_ids": [experiment_id],
                "run_view_type": view_type,
                "max_results": PAGE,
                "order_by": ["attributes.start_time ASC"],
            }
            if token:
                body["page_token"] = token
            page = self.post("/runs/search", body)
            yield page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                return

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.get("/runs/get", run_id=run_id)["run"])

    def metric_history(self, run_id: str, key: str) -> Iterator[list[dict[str, Any]]]:
        token = None
        while True:
            page = self.get("/metrics/get-history", run_id=run_id, metric_key=key, max_results=HISTORY_PAGE, page_token=token)
            yield page.get("metrics", [])
            token = page.get("next_page_token")
            if not token:
                return

    # ---- artifacts ---------------------------------------------------------------------------
    def _walk(self, endpoint: str, params: dict[str, str], directory_field: str, root: str = "") -> Iterator[SourceFile]:
        stack = [root]
        while stack:
            folder = stack.pop()
            fields = dict(params)
            if folder:
                fields[directory_field] = folder
            listing = self.get(endpoint, **fields)
            for f in listing.get("files", []):
                # Paths come relative to the root; some servers answer with the folder's basename only.
                rel = f["path"] if not folder or f["path"].startswith(folder + "/") else posixpath.join(folder, f["path"])
                _safe_path(rel)
                if f.get("is_dir"):
                    stack.append(rel)
                else:
                    yield SourceFile(rel, int(f.get("file_size") or 0))

    def _stream(self, path: str, fields: dict[str, str]) -> _Stream:
        return _Stream(self._request("GET", path, fields=fields, stream=True))

    def run_files(self, run_id: str) -> Iterator[SourceFile]:
        """Every artifact file of a run (recursive)."""
        return self._walk("/artifacts/list", {"run_id": run_id}, "path")

    def open_run_file(self, run_id: str, path: str) -> _Stream:
        """The bytes of one run artifact, as a stream (use it in a ``with``)."""
        return self._stream("/get-artifact", {"run_id": run_id, "path": path})

    # ---- MLflow 3 logged models (absent on MLflow 2: then nothing) -----------------------------
    def logged_models(self, experiment_id: str) -> Iterator[dict[str, Any]]:
        if self._logged_models_api is False:
            return
        token = None
        while True:
            body: dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": 100}
            if token:
                body["page_token"] = token
            try:
                page = self.post("/logged-models/search", body)
            except (FailedPrecondition, NotFound):
                self._logged_models_api = False  # an MLflow 2 server: no such endpoint
                return
            self._logged_models_api = True
            for model in page.get("models", []):
                yield dict(model.get("info", {}))
            token = page.get("next_page_token")
            if not token:
                return

    def logged_model(self, model_id: str) -> dict[str, Any]:
        return dict(self.get(f"/logged-models/{quote(model_id, safe='')}")["model"].get("info", {}))

    def logged_model_files(self, model_id: str) -> Iterator[SourceFile]:
        return self._walk(
            f"/logged-models/{quote(model_id, safe='')}/artifacts/directories", {}, "artifact_directory_path"
        )

    def open_logged_model_file(self, model_id: str, path: str) -> _Stream:
        # MLflow serves a logged model's files on its UI's prefix only (ajax-api).
        return self._stream(
            f"/ajax-api/2.0/mlflow/logged-models/{quote(model_id, safe='')}/artifacts/files",
            {"artifact_file_path": path},
        )

    # ---- registry ----------------------------------------------------------------------------
    def registered_models(self) -> Iterator[dict[str, Any]]:
        token = None
        while True:
            page = self.get("/registered-models/search", max_results=PAGE, page_token=token)
            yield from page.get("registered_models", [])
            token = page.get("next_page_token")
            if not token:
                return

    def registered_model(self, name: str) -> dict[str, Any]:
        try:
            return dict(self.get("/registered-models/get", name=name)["registered_model"])
        except KeelError as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        raise NotFound(
            f"the MLflow server at {self.url} has no registered model {name!r}",
            reason="MLFLOW_MODEL_NOT_FOUND",
            metadata={"model": name},
        )

    def model_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of a model (MLflow keeps no deleted ones), by number."""
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        versions: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.get("/model-versions/search", filter=f"name = '{quoted}'", max_results=PAGE, page_token=token)
            versions.extend(v for v in page.get("model_versions", []) if v.get("name") == name)
            token = page.get("next_page_token")
            if not token:
                return sorted(versions, key=lambda v: int(v["version"]))

    def model_version(self, name: str, version: str) -> dict[str, Any]:
        return dict(self.get("/model-versions/get", name=name, version=version)["model_version"])


def tags_of(entity: dict[str, Any]) -> dict[str, str]:
    """MLflow's ``[{"key", "value"}]`` lists as a dict (a missing value is '')."""
    return {t["key"]: t.get("value", "") for t in entity.get("tags", []) or []}
