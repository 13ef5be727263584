"""The console's JSON API and static files against a real keel server (in-process, SQLite) with
the console on its own port: every endpoint of the contract (docs/console.md), error bodies,
auth on and off, paging, previews, downloads and the paths it must refuse."""

from __future__ import annotations

import http.client
import io
import json
import math
import secrets
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
from server_fixtures import free_port

import keel
import keel.pyfunc
from keel.entities import Metric
from keel.models import infer_signature

pytestmark = pytest.mark.server
# tests/console/conftest.py's ConsoleServer (conftest modules are not importable by name)
ConsoleServer = Any

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2"
    "21bc330000000049454e44ae426082"
)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def call(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> Answer:
    """One HTTP request as the front end makes it (JSON body with its content type)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    sent = dict(headers or {})
    data = None
    if body is not None or method in ("POST", "PUT", "PATCH"):
        data = json.dumps(body if body is not None else {}).encode()
        sent.setdefault("Content-Type", "application/json")
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if params:
        path += ("&" if "?" in path else "?") + urlencode(params)
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def ok(answer: Answer, status: int = 200) -> Any:
    assert answer.status == status, (answer.status, answer.body[:2000])
    return answer.json if answer.headers.get("content-type", "").startswith("application/json") else answer.body


def error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, (answer.status, answer.body[:2000])
    body = answer.json
    assert body["error_code"] == code, body
    assert body["message"] and "Traceback" not in body["message"], body
    return body  # type: ignore[no-any-return]


@dataclass
class World:
    server: ConsoleServer
    experiment_id: str
    runs: list[str]  # 30 runs: run i has params.i = i, metric m = i (last), tags.team
    parent: str
    child: str
    spiky: str  # 5000 points of metric loss with a spike at step 3333
    model: str

    def get(self, endpoint: str, **params: Any) -> Any:
        return ok(call(self.server.ui_url, "GET", endpoint, params=params or None))


@pytest.fixture(scope="module")
def world(console_server: ConsoleServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    client = console_server.client()
    experiment_id = client.create_experiment("console-api")
    runs = []
    for i in range(30):
        run = client.create_run(experiment_id, run_name=f"r{i:02d}", tags={"team": "vision" if i % 2 else "nlp"})
        run_id = run.info.run_id
        client.log_param(run_id, "i", i)
        client.log_param(run_id, "lr", 0.1 if i < 15 else 0.01)
        # m goes up to 100 + i, then down to i: last i, min i, max 100 + i
        client.log_batch(run_id, metrics=[Metric("m", 100.0 + i, 1, 0), Metric("m", float(i), 2, 1)])
        client.set_terminated(run_id)
        runs.append(run_id)
    nan_run = runs[0]
    client.log_metric(nan_run, "odd", math.nan, step=0)
    parent = client.create_run(experiment_id, run_name="parent").info.run_id
    child = client.create_run(experiment_id, run_name="child", parent_run_id=parent).info.run_id
    spiky = client.create_run(experiment_id, run_name="spiky").info.run_id
    points = [Metric("loss", 1.0 / (1 + s), 1_000 + s, s) for s in range(5000)]
    points[3333] = Metric("loss", 50.0, 1_000 + 3333, 3333)
    client.log_batch(spiky, metrics=points)
    # artifacts of the spiky run
    client.log_text(spiky, "hello console", "notes/readme.txt")
    client.log_dict(spiky, {"a": 1, "b": [1, 2]}, "notes/config.json")
    client.log_text(spiky, "x,y\n1,2\n3,4\n", "data/table.csv")
    client.log_text(spiky, "<script>alert(1)</script>", "data/page.html")
    big = tmp_path_factory.mktemp("big") / "big.log"
    big.write_bytes(b"0123456789abcdef" * (1024 * 1024 // 16 + 4096))  # 1 MiB + 64 KiB
    client.log_artifact(spiky, str(big), "logs")
    image = tmp_path_factory.mktemp("img") / "pixel.png"
    image.write_bytes(PNG)
    client.log_artifact(spiky, str(image), "images")

    # a registered model with a signature, from a logged pyfunc model
    class Doubler(keel.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input * 2

    import pandas as pd

    frame = pd.DataFrame({"x": [1.0, 2.0]})
    keel.set_tracking_uri(console_server.grpc_uri)
    with keel.start_run(experiment_id=experiment_id, run_name="model-run") as model_run:
        keel.pyfunc.log_model("model", python_model=Doubler(), signature=infer_signature(frame, frame))
    world = World(console_server, experiment_id, runs, parent, child, spiky, "")
    world.model = model_run.info.run_id
    yield world


# -- static files -------------------------------------------------------------------------------
def test_index_and_assets_are_served_with_types_and_caching(console_server: ConsoleServer) -> None:
    base = console_server.ui_url
    page = call(base, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    again = call(base, "GET", "/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status == 304 and again.body == b""
    assert call(base, "HEAD", "/").status == 200
    script = call(base, "GET", "/static/app.js")
    assert script.status == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
    css = call(base, "GET", "/static/style.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    versioned = call(base, "GET", f"/static/app.js?v={keel.__version__}")
    assert "immutable" in versioned.headers["cache-control"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/",
        "/static",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2f%2e%2e%2fapi.py",
        "/static/./app.js",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/.hidden",
        "/static/app.js%00.png",
        "/static/..\\app.py",
        "/static/missing.js",
        "/../services/console/app.py",
    ],
)
def test_static_paths_outside_the_folder_and_listings_are_refused(console_server: ConsoleServer, path: str) -> None:
    answer = call(console_server.ui_url, "GET", path)
    assert answer.status == 404, (path, answer.status, answer.body[:300])
    assert b"def " not in answer.body and b"import" not in answer.body


def test_unknown_endpoints_and_methods(console_server: ConsoleServer) -> None:
    error(call(console_server.ui_url, "GET", "/api/nothing"), 404, "RESOURCE_DOES_NOT_EXIST")
    error(call(console_server.ui_url, "PUT", "/api/session"), 405, "BAD_REQUEST")


# -- session and experiments --------------------------------------------------------------------
def test_session_without_auth(console_server: ConsoleServer) -> None:
    body = ok(call(console_server.ui_url, "GET", "/api/session"))
    assert body == {"auth": False, "user": None, "keel_version": keel.__version__, "identity_source": "none"}


def test_experiments_create_list_rename_delete_restore(console_server: ConsoleServer) -> None:
    base = console_server.ui_url
    created = ok(call(base, "POST", "/api/experiments", {"name": "exp-crud"}))
    eid = created["experiment_id"]
    assert created["name"] == "exp-crud" and created["lifecycle_stage"] == "active" and created["permission"] is None
    error(call(base, "POST", "/api/experiments", {"name": "exp-crud"}), 400, "RESOURCE_ALREADY_EXISTS")
    error(call(base, "POST", "/api/experiments", {}), 400, "INVALID_PARAMETER_VALUE")
    found = ok(call(base, "GET", "/api/experiments", params={"filter": "name LIKE 'exp-c%'"}))
    assert [e["experiment_id"] for e in found["experiments"]] == [eid]
    assert ok(call(base, "GET", f"/api/experiments/{eid}"))["name"] == "exp-crud"
    renamed = ok(call(base, "PATCH", f"/api/experiments/{eid}", {"name": "exp-crud-2"}))
    assert renamed["name"] == "exp-crud-2"
    assert ok(call(base, "DELETE", f"/api/experiments/{eid}")) == {}
    active = ok(call(base, "GET", "/api/experiments", params={"filter": "name = 'exp-crud-2'"}))
    assert active["experiments"] == []
    deleted = ok(call(base, "GET", "/api/experiments", params={"filter": "name = 'exp-crud-2'", "view": "deleted"}))
    assert [e["lifecycle_stage"] for e in deleted["experiments"]] == ["deleted"]
    restored = ok(call(base, "POST", f"/api/experiments/{eid}/restore"))
    assert restored["lifecycle_stage"] == "active"
    error(call(base, "GET", "/api/experiments", params={"view": "sideways"}), 400, "INVALID_PARAMETER_VALUE")
    error(call(base, "GET", "/api/experiments/987654"), 404, "RESOURCE_DOES_NOT_EXIST")


def test_experiment_paging(console_server: ConsoleServer) -> None:
    base = console_server.ui_url
    for i in range(7):
        ok(call(base, "POST", "/api/experiments", {"name": f"paged-{i}"}))
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = ok(call(base, "GET", "/api/experiments", params={"filter": "name LIKE 'paged-%'", "page_size": 3, "page_token": token}))
        assert len(page["experiments"]) <= 3
        seen.extend(e["name"] for e in page["experiments"])
        token = page["next_page_token"]
        if not token:
            break
    assert sorted(seen) == [f"paged-{i}" for i in range(7)]
    error(call(base, "GET", "/api/experiments", params={"page_size": "-1"}), 400, "INVALID_PARAMETER_VALUE")
    error(call(base, "GET", "/api/experiments", params={"page_size": "x"}), 400, "INVALID_PARAMETER_VALUE")


def test_changes_need_json_from_the_same_origin(console_server: ConsoleServer) -> None:
    base = console_server.ui_url
    plain = call(base, "POST", "/api/experiments", headers={"Content-Type": "text/plain"}, body={"name": "csrf-1"})
    error(plain, 400, "INVALID_PARAMETER_VALUE")
    assert plain.json["reason"] == "JSON_REQUIRED"
    opaque = call(base, "POST", "/api/experiments", {"name": "csrf-2"}, headers={"Origin": "null"})
    assert error(opaque, 403, "PERMISSION_DENIED")["reason"] == "CROSS_ORIGIN"
    # no CORS: a cross-site page's preflight is never granted, so its JSON POST is never sent
    preflight = call(base, "OPTIONS", "/api/experiments", headers={"Origin": "http://evil.example"})
    assert preflight.status >= 400 and "access-control-allow-origin" not in preflight.headers
    no_cors = call(base, "GET", "/api/experiments", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in no_cors.headers
    host = urlsplit(base).netloc
    same = call(base, "POST", "/api/experiments", {"name": "csrf-3"}, headers={"Origin": f"http://{host}"})
    assert same.status == 200
    names = [e["name"] for e in ok(call(base, "GET", "/api/experiments", params={"filter": "name LIKE 'csrf-%'"}))["experiments"]]
    assert names == ["csrf-3"]


# -- runs ---------------------------------------------------------------------------------------
def test_runs_rows_have_last_min_max_and_columns(world: World) -> None:
    page = world.get("/api/runs", experiment_ids=world.experiment_id, filter="params.i = '7'")
    (row,) = page["runs"]
    assert row["run_name"] == "r07" and row["status"] == "FINISHED" and row["lifecycle_stage"] == "active"
    assert row["params"] == {"i": "7", "lr": "0.1"} and row["tags"]["team"] == "vision"
    assert row["metrics"]["m"] == {"last": 7.0, "min": 7.0, "max": 107.0, "step": 1, "timestamp": 2, "count": 2}
    assert isinstance(row["start_time"], int) and isinstance(row["end_time"], int)
    columns = page["columns"]
    assert {"i", "lr"} <= set(columns["params"]) and {"m", "odd", "loss"} <= set(columns["metrics"])
    assert "team" in columns["tags"]
    nan_row = world.get("/api/runs", experiment_ids=world.experiment_id, filter="params.i = '0'")["runs"][0]
    assert nan_row["metrics"]["odd"] == {"last": "NaN", "min": "NaN", "max": "NaN", "step": 0, "timestamp": nan_row["metrics"]["odd"]["timestamp"], "count": 1}


def test_runs_paging_sorting_and_or_filters(world: World) -> None:
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = world.get(
            "/api/runs", experiment_ids=world.experiment_id, filter="params.lr = '0.1' OR params.lr = '0.01'",
            order_by="metrics.m DESC", page_size=7, page_token=token,
        )  # fmt: skip
        seen.extend(r["run_id"] for r in page["runs"])
        token = page["next_page_token"]
        if not token:
            break
    assert len(seen) == 30 and len(set(seen)) == 30
    assert seen == list(reversed(world.runs)), "metrics.m DESC is r29 .. r00"
    grouped = world.get(
        "/api/runs", experiment_ids=world.experiment_id,
        filter="(params.i = '3' OR params.i = '4') AND tags.team = 'vision'", order_by="params.i ASC",
    )  # fmt: skip
    assert [r["run_name"] for r in grouped["runs"]] == ["r03"]
    by_name = world.get("/api/runs", experiment_ids=world.experiment_id, filter="attributes.run_name LIKE 'r1%'", order_by="attributes.run_name DESC")
    assert [r["run_name"] for r in by_name["runs"]] == [f"r{i}" for i in range(19, 9, -1)]


def test_filter_errors_carry_the_position(world: World) -> None:
    base = world.server.ui_url
    text = "metrics.m > 1 AND (params.lr = "
    body = error(call(base, "GET", "/api/runs", params={"experiment_ids": world.experiment_id, "filter": text}), 400, "INVALID_PARAMETER_VALUE")
    assert body["reason"] == "INVALID_FILTER" and body["field"] == "filter"
    assert body["position"] == len(text), body
    body = error(call(base, "GET", "/api/runs", params={"experiment_ids": world.experiment_id, "filter": "metrix.m > 1"}), 400, "INVALID_PARAMETER_VALUE")
    assert body["position"] == 0, body
    order = error(call(base, "GET", "/api/runs", params={"experiment_ids": world.experiment_id, "order_by": "nonsense DESC"}), 400, "INVALID_PARAMETER_VALUE")
    assert "position" not in order
    error(call(base, "GET", "/api/runs"), 400, "INVALID_PARAMETER_VALUE")
    error(call(base, "GET", "/api/runs", params={"experiment_ids": "abc"}), 400, "INVALID_PARAMETER_VALUE")


def test_run_page_children_source_and_tags(world: World) -> None:
    base = world.server.ui_url
    parent = world.get(f"/api/runs/{world.parent}")
    assert [c["run_id"] for c in parent["children"]] == [world.child]
    assert parent["parent_run_id"] is None and parent["permission"] is None
    assert set(parent["source"]) == {"name", "type", "git_commit"}
    child = world.get(f"/api/runs/{world.child}")
    assert child["parent_run_id"] == world.parent and child["children"] == []
    finished = world.get(f"/api/runs/{world.runs[3]}")
    assert finished["duration_ms"] is not None and finished["duration_ms"] >= 0
    assert finished["artifact_uri"].endswith("/artifacts")
    assert ok(call(base, "PUT", f"/api/runs/{world.child}/tags/note", {"value": "checked"})) == {}
    assert world.get(f"/api/runs/{world.child}")["tags"]["note"] == "checked"
    assert ok(call(base, "DELETE", f"/api/runs/{world.child}/tags/note")) == {}
    assert "note" not in world.get(f"/api/runs/{world.child}")["tags"]
    error(call(base, "PUT", f"/api/runs/{world.child}/tags/note", {"value": 3}), 400, "INVALID_PARAMETER_VALUE")
    error(call(base, "GET", f"/api/runs/{'0' * 32}"), 404, "RESOURCE_DOES_NOT_EXIST")


def test_metric_history_is_downsampled_keeping_the_spike(world: World) -> None:
    full = world.get(f"/api/runs/{world.spiky}/metrics/loss", max_points=10000)
    assert full["total"] == 5000 and full["downsampled"] is False and len(full["points"]) == 5000
    small = world.get(f"/api/runs/{world.spiky}/metrics/loss", max_points=200)
    assert small["total"] == 5000 and small["downsampled"] is True and len(small["points"]) <= 200
    assert [3333, 50.0] in small["points"], "the spike survives downsampling"
    assert small["points"][0][0] == 0 and small["points"][-1][0] == 4999
    by_time = world.get(f"/api/runs/{world.spiky}/metrics/loss", x="time", max_points=200)
    assert by_time["points"][0][0] == 1_000 and [1_000 + 3333, 50.0] in by_time["points"]
    assert world.get(f"/api/runs/{world.runs[0]}/metrics/odd")["points"] == [[0, None]]
    nothing = world.get(f"/api/runs/{world.spiky}/metrics/absent")
    assert nothing == {"key": "absent", "points": [], "total": 0, "downsampled": False}
    error(call(world.server.ui_url, "GET", f"/api/runs/{world.spiky}/metrics/loss?x=epoch"), 400, "INVALID_PARAMETER_VALUE")


def test_several_runs_charts_at_once(world: World) -> None:
    both = world.get("/api/metrics", run_ids=f"{world.runs[1]},{world.runs[2]}", key="m")
    assert [s["run_id"] for s in both["series"]] == [world.runs[1], world.runs[2]]
    assert both["series"][1]["points"] == [[0, 102.0], [1, 2.0]]


def test_delete_and_restore_runs(world: World) -> None:
    base = world.server.ui_url
    target = world.child
    assert ok(call(base, "POST", "/api/runs/delete", {"run_ids": [target]})) == {"deleted": 1}
    deleted = world.get("/api/runs", experiment_ids=world.experiment_id, view="deleted")
    assert [r["run_id"] for r in deleted["runs"]] == [target]
    assert ok(call(base, "POST", "/api/runs/restore", {"run_ids": [target]})) == {"restored": 1}
    error(call(base, "POST", "/api/runs/delete", {"run_ids": []}), 400, "INVALID_PARAMETER_VALUE")
    error(call(base, "POST", "/api/runs/delete", {"run_ids": "abc"}), 400, "INVALID_PARAMETER_VALUE")
    error(call(base, "POST", "/api/runs/delete", {"run_ids": ["f" * 32]}), 404, "RESOURCE_DOES_NOT_EXIST")


def test_compare_takes_two_to_ten_runs(world: World) -> None:
    base = world.server.ui_url
    body = world.get("/api/compare", run_ids=",".join(world.runs[:3]))
    assert [r["run_id"] for r in body["runs"]] == world.runs[:3]
    assert body["runs"][2]["metrics"]["m"]["max"] == 102.0
    error(call(base, "GET", "/api/compare", params={"run_ids": world.runs[0]}), 400, "INVALID_PARAMETER_VALUE")
    error(call(base, "GET", "/api/compare", params={"run_ids": ",".join(world.runs[:11])}), 400, "INVALID_PARAMETER_VALUE")


# -- artifacts ----------------------------------------------------------------------------------
def test_artifact_listing(world: World) -> None:
    root = world.get(f"/api/runs/{world.spiky}/artifacts")
    assert {(f["path"], f["is_dir"]) for f in root["files"]} == {
        ("notes", True), ("data", True), ("logs", True), ("images", True)
    }
    notes = world.get(f"/api/runs/{world.spiky}/artifacts", path="notes")
    assert {f["path"]: f["file_size"] for f in notes["files"]} == {"notes/config.json": len(json.dumps({"a": 1, "b": [1, 2]}, indent=2)), "notes/readme.txt": 13}


def test_previews_with_content_types_and_truncation(world: World) -> None:
    base, run = world.server.ui_url, world.spiky
    text = call(base, "GET", f"/api/runs/{run}/artifact?path=notes/readme.txt&preview=1")
    assert text.status == 200 and text.body == b"hello console" and text.headers["content-type"] == "text/plain"
    assert "x-keel-truncated" not in text.headers
    assert text.headers["x-content-type-options"] == "nosniff" and "sandbox" in text.headers["content-security-policy"]
    as_json = call(base, "GET", f"/api/runs/{run}/artifact?path=notes/config.json")
    assert as_json.headers["content-type"] == "application/json" and json.loads(as_json.body) == {"a": 1, "b": [1, 2]}
    assert call(base, "GET", f"/api/runs/{run}/artifact?path=data/table.csv").headers["content-type"] == "text/csv"
    html = call(base, "GET", f"/api/runs/{run}/artifact?path=data/page.html")
    assert html.headers["content-type"] == "text/plain", "user HTML is never served as HTML"
    png = call(base, "GET", f"/api/runs/{run}/artifact?path=images/pixel.png&preview=1")
    assert png.headers["content-type"] == "image/png" and png.body == PNG
    big = call(base, "GET", f"/api/runs/{run}/artifact?path=logs/big.log&preview=1")
    assert big.status == 200 and len(big.body) == 1024 * 1024 and big.headers["x-keel-truncated"] == "1"
    assert int(big.headers["x-keel-file-size"]) == 1024 * 1024 + 65536
    whole = call(base, "GET", f"/api/runs/{run}/artifact?path=logs/big.log")
    assert len(whole.body) == 1024 * 1024 + 65536 and "x-keel-truncated" not in whole.headers
    mlmodel = call(base, "GET", f"/api/runs/{world.model}/artifact?path=model/MLmodel&preview=1")
    assert mlmodel.headers["content-type"] == "application/yaml" and b"signature" in mlmodel.body


def test_downloads_of_a_file_and_of_folders(world: World) -> None:
    base, run = world.server.ui_url, world.spiky
    one = call(base, "GET", f"/api/runs/{run}/download?path=notes/readme.txt")
    assert one.status == 200 and one.body == b"hello console"
    assert one.headers["content-disposition"].startswith('attachment; filename="readme.txt"')
    folder = call(base, "GET", f"/api/runs/{run}/download?path=notes")
    assert folder.status == 200 and folder.headers["content-type"] == "application/zip"
    assert 'filename="notes.zip"' in folder.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(folder.body)) as archive:
        assert sorted(archive.namelist()) == ["config.json", "readme.txt"]
        assert archive.read("readme.txt") == b"hello console"
    everything = call(base, "GET", f"/api/runs/{run}/download")
    with zipfile.ZipFile(io.BytesIO(everything.body)) as archive:
        names = set(archive.namelist())
        assert {"notes/readme.txt", "data/table.csv", "images/pixel.png", "logs/big.log"} <= names
        assert len(archive.read("logs/big.log")) == 1024 * 1024 + 65536


@pytest.mark.parametrize("path", ["../x", "notes/../../x", "/etc/passwd", "notes/./readme.txt", "a\\b", "notes//readme.txt"])
def test_artifact_paths_that_climb_are_refused(world: World, path: str) -> None:
    base, run = world.server.ui_url, world.spiky
    for endpoint in ("artifact", "download", "artifacts"):
        answer = call(base, "GET", f"/api/runs/{run}/{endpoint}?path={quote(path)}")
        error(answer, 400, "INVALID_PARAMETER_VALUE")


def test_missing_artifacts(world: World) -> None:
    base, run = world.server.ui_url, world.spiky
    error(call(base, "GET", f"/api/runs/{run}/artifact?path=nope.txt"), 404, "RESOURCE_DOES_NOT_EXIST")
    error(call(base, "GET", f"/api/runs/{run}/download?path=nope.txt"), 404, "RESOURCE_DOES_NOT_EXIST")
    error(call(base, "GET", f"/api/runs/{run}/artifact"), 400, "INVALID_PARAMETER_VALUE")


# -- registry and deployments -------------------------------------------------------------------
def test_registry_pages_transitions_and_alias_compare_and_set(world: World) -> None:
    base = world.server.ui_url
    v1 = ok(call(base, "POST", "/api/models", {"name": "console-model", "run_id": world.model, "path": "model"}))
    assert v1["version"] == 1 and v1["run_id"] == world.model and v1["source"] == f"runs:/{world.model}/model"
    v2 = ok(call(base, "POST", "/api/models", {"name": "console-model", "run_id": world.model, "path": "model"}))
    assert v2["version"] == 2
    listed = ok(call(base, "GET", "/api/models", params={"filter": "name = 'console-model'"}))
    assert [m["name"] for m in listed["models"]] == ["console-model"]

    page = ok(call(base, "GET", f"/api/runs/{world.model}"))
    assert page["run_id"] == world.model
    version = ok(call(base, "GET", "/api/models/console-model/versions/1"))
    assert version["signature"]["inputs"] == [{"type": "double", "name": "x", "required": True}], version["signature"]
    assert version["status"] == "READY" and version["permission"] is None

    to_prod = ok(call(base, "POST", "/api/models/console-model/versions/1/stage", {"stage": "Production"}))
    assert to_prod["stage"] == "Production"
    moved = ok(call(base, "POST", "/api/models/console-model/versions/2/stage", {"stage": "Production", "archive_existing": True}))
    assert moved["stage"] == "Production"
    assert ok(call(base, "GET", "/api/models/console-model/versions/1"))["stage"] == "Archived"
    error(call(base, "POST", "/api/models/console-model/versions/1/stage", {"stage": "Sideways"}), 400, "INVALID_PARAMETER_VALUE")
    error(call(base, "POST", "/api/models/console-model/versions/1/stage", {"stage": "Staging", "archive_existing": "yes"}), 400, "INVALID_PARAMETER_VALUE")
    error(call(base, "GET", "/api/models/console-model/versions/99"), 404, "RESOURCE_DOES_NOT_EXIST")
    error(call(base, "GET", "/api/models/console-model/versions/abc"), 400, "INVALID_PARAMETER_VALUE")

    set_new = ok(call(base, "PUT", "/api/models/console-model/aliases/champion", {"version": 1, "expected_version": 0}))
    assert "champion" in set_new["aliases"] and set_new["version"] == 1
    ok(call(base, "PUT", "/api/models/console-model/aliases/champion", {"version": 2, "expected_version": 1}))
    # someone else's page still believes champion is at 1: compare-and-set refuses
    conflict = error(
        call(base, "PUT", "/api/models/console-model/aliases/champion", {"version": 1, "expected_version": 1}), 409, "ABORTED"
    )
    assert conflict["current_version"] == 2 and "2" in conflict["message"], conflict
    ok(call(base, "PUT", "/api/models/console-model/aliases/champion", {"version": 1, "expected_version": None}))
    error(call(base, "PUT", "/api/models/console-model/aliases/champion", {"version": "1"}), 400, "INVALID_PARAMETER_VALUE")

    model = ok(call(base, "GET", "/api/models/console-model"))
    assert model["aliases"] == {"champion": 1} and [v["version"] for v in model["versions"]] == [2, 1]
    assert {v["stage"] for v in model["versions"]} == {"Production", "Archived"} and model["permission"] is None
    kinds = [(e["kind"], e["version"]) for e in model["history"]]
    assert ("stage", 2) in kinds and ("alias", 1) in kinds
    stage_event = next(e for e in model["history"] if e["kind"] == "stage" and e["version"] == 2)
    assert stage_event["to"] == "Production"

    assert ok(call(base, "DELETE", "/api/models/console-model/aliases/champion")) == {}
    assert ok(call(base, "GET", "/api/models/console-model"))["aliases"] == {}
    assert ok(call(base, "PATCH", "/api/models/console-model", {"description": "d"}))["description"] == "d"
    assert ok(call(base, "PATCH", "/api/models/console-model/versions/2", {"description": "v2"}))["description"] == "v2"
    error(call(base, "GET", "/api/models/absent-model"), 404, "RESOURCE_DOES_NOT_EXIST")
    error(call(base, "POST", "/api/models", {"name": "console-model", "run_id": world.model, "path": "nothing-here"}), 404, "RESOURCE_DOES_NOT_EXIST")


def test_deployments_say_what_they_follow(world: World) -> None:
    base = world.server.ui_url
    ok(call(base, "POST", "/api/models", {"name": "served-model", "run_id": world.model, "path": "model"}))
    ok(call(base, "POST", "/api/models/served-model/versions/1/stage", {"stage": "Production"}))
    client = world.server.client()
    client.create_deployment("console-dep", "models:/served-model/Production")
    body = ok(call(base, "GET", "/api/deployments"))
    (row,) = [d for d in body["deployments"] if d["name"] == "console-dep"]
    assert row["follows"] == "stage:Production" and row["model_name"] == "served-model" and row["version"] == 1
    assert row["state"] == "READY", row


def test_deployments_without_an_inference_service(console_server_factory: Any) -> None:
    server = console_server_factory(services=("tracking", "registry", "artifacts"))
    body = error(call(server.ui_url, "GET", "/api/deployments"), 503, "TEMPORARILY_UNAVAILABLE")
    assert "inference" in body["message"]


# -- auth ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secured(console_server_factory: Any) -> Iterator[tuple[ConsoleServer, dict[str, str], str]]:
    """A server with auth; users reader (READ on everything through the default permission) and
    owner (creates the experiment and model, so MANAGE); returns (server, tokens, experiment id)."""
    server = console_server_factory(auth=True, default_permission="READ")
    tokens = {name: server.make_user(name) for name in ("reader", "owner")}
    owner = server.client(tokens["owner"])
    experiment_id = owner.create_experiment("secured")
    run_id = owner.create_run(experiment_id).info.run_id
    owner.log_text(run_id, "x", "model/file.txt")
    owner.create_registered_model("secured-model")
    owner.create_model_version("secured-model", f"runs:/{run_id}/model", run_id=run_id)
    keel.set_tracking_token(None)
    yield server, tokens, experiment_id


def test_auth_session_and_401_bodies(secured: tuple[ConsoleServer, dict[str, str], str]) -> None:
    server, tokens, _ = secured
    base = server.ui_url
    anonymous = ok(call(base, "GET", "/api/session"))
    assert anonymous == {"auth": True, "user": None, "keel_version": keel.__version__, "identity_source": "none"}
    bad = call(base, "GET", "/api/session", token="not-a-token")
    assert error(bad, 401, "UNAUTHENTICATED")["reason"] == "INVALID_TOKEN"
    assert "Bearer" in bad.headers["www-authenticate"]
    me = ok(call(base, "GET", "/api/session", token=tokens["reader"]))
    assert me["user"] == {"name": "reader", "is_admin": False} and me["identity_source"] == "token"
    admin = ok(call(base, "GET", "/api/session", token=server.admin_token))
    assert admin["user"]["is_admin"] is True
    error(call(base, "GET", "/api/experiments"), 401, "UNAUTHENTICATED")
    error(call(base, "GET", "/api/experiments", headers={"Authorization": "Basic abc"}), 401, "UNAUTHENTICATED")


def test_permissions_show_and_refusals_carry_the_servers_message(secured: tuple[ConsoleServer, dict[str, str], str]) -> None:
    server, tokens, experiment_id = secured
    base = server.ui_url
    listed = ok(call(base, "GET", "/api/experiments", token=tokens["reader"], params={"filter": "name = 'secured'"}))
    assert [e["permission"] for e in listed["experiments"]] == ["READ"]
    owned = ok(call(base, "GET", "/api/experiments", token=tokens["owner"], params={"filter": "name = 'secured'"}))
    assert [e["permission"] for e in owned["experiments"]] == ["MANAGE"]
    assert ok(call(base, "GET", "/api/models/secured-model/versions/1", token=tokens["reader"]))["permission"] == "READ"
    assert ok(call(base, "GET", "/api/models/secured-model", token=tokens["owner"]))["permission"] == "MANAGE"
    assert ok(call(base, "GET", "/api/models/secured-model", token=server.admin_token))["permission"] == "MANAGE"
    refused = error(
        call(base, "POST", "/api/models/secured-model/versions/1/stage", {"stage": "Production"}, token=tokens["reader"]),
        403,
        "PERMISSION_DENIED",
    )
    assert "reader" in refused["message"] and "MANAGE" in refused["message"], refused
    error(call(base, "PATCH", f"/api/experiments/{experiment_id}", {"name": "x"}, token=tokens["reader"]), 403, "PERMISSION_DENIED")
    moved = ok(call(base, "POST", "/api/models/secured-model/versions/1/stage", {"stage": "Staging"}, token=tokens["owner"]))
    assert moved["stage"] == "Staging"
    history = ok(call(base, "GET", "/api/models/secured-model", token=tokens["owner"]))["history"]
    assert history[0]["user"] == "owner", history[0]
    run_page = ok(call(base, "GET", "/api/runs", token=tokens["reader"], params={"experiment_ids": experiment_id}))
    assert len(run_page["runs"]) == 1 and run_page["columns"]["params"] == []
    assert run_page["runs"][0]["permission"] == "READ"
    owner_page = ok(call(base, "GET", "/api/runs", token=tokens["owner"], params={"experiment_ids": experiment_id}))
    assert owner_page["runs"][0]["permission"] == "MANAGE"


def test_proxy_identity_header(secured: tuple[ConsoleServer, dict[str, str], str]) -> None:
    """``keel ui`` behind a proxy: the console calls as an admin service account acting for the
    user the proxy names; without the header it falls back to the browser's token."""
    from keel_server.common.gateway import Gateway
    from keel_server.console.app import start_console

    server, tokens, _ = secured
    sa_token = server.make_user("console-sa", admin=True, service_account=True)
    settings = replace(
        server.settings, ui_port=free_port(), ui_identity_header="X-Forwarded-User", ui_token=sa_token
    )
    gateway = Gateway.for_uri(server.grpc_uri)
    app = start_console(settings, gateway, None)
    try:
        base = f"http://127.0.0.1:{app.port}"
        me = ok(call(base, "GET", "/api/session", headers={"X-Forwarded-User": "reader"}))
        assert me["user"] == {"name": "reader", "is_admin": False} and me["identity_source"] == "proxy-header"
        refused = error(
            call(base, "POST", "/api/models/secured-model/versions/1/stage", {"stage": "Production"}, headers={"X-Forwarded-User": "reader"}),
            403,
            "PERMISSION_DENIED",
        )
        assert "reader" in refused["message"]
        unknown = error(call(base, "GET", "/api/experiments", headers={"X-Forwarded-User": "mallory"}), 403, "PERMISSION_DENIED")
        assert unknown["reason"] == "ACT_AS_UNKNOWN_USER"
        owner = ok(call(base, "GET", "/api/models/secured-model", headers={"X-Forwarded-User": "owner"}))
        assert owner["permission"] == "MANAGE"
        assert ok(call(base, "GET", "/api/session", token=tokens["owner"]))["identity_source"] == "token"
        error(call(base, "GET", "/api/session", headers={"X-Forwarded-User": "é" * 3}), 400, "INVALID_PARAMETER_VALUE")
    finally:
        app.stop()
        gateway.close()


def test_identity_header_needs_a_token(console_server: ConsoleServer) -> None:
    from keel_server.common.gateway import Gateway
    from keel_server.console.app import start_console

    settings = replace(console_server.settings, ui_port=free_port(), ui_identity_header="X-Forwarded-User", ui_token="")
    with pytest.raises(ValueError, match="KEEL_UI_TOKEN"):
        start_console(settings, Gateway.for_uri(console_server.grpc_uri), None)


def test_random_tokens_never_reach_other_users(secured: tuple[ConsoleServer, dict[str, str], str]) -> None:
    server, _, _ = secured
    error(call(server.ui_url, "GET", "/api/models", token=secrets.token_hex(16)), 401, "UNAUTHENTICATED")


# -- keel ui ------------------------------------------------------------------------------------
def test_keel_ui_runs_the_console_in_its_own_process(world: World) -> None:
    """`keel ui` is a plain gRPC client of the keel at KEEL_TRACKING_URI."""
    import os
    import re
    import signal
    import subprocess
    import sys

    env = {**os.environ, "KEEL_TRACKING_URI": world.server.grpc_uri}
    env.pop("KEEL_UI_IDENTITY_HEADER", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "ui", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"keel console on (http://127\.0\.0\.1:\d+)", line)
        assert match, (line, process.poll(), process.stderr.read() if process.poll() is not None else "")
        base = match.group(1)
        assert ok(call(base, "GET", "/api/session"))["auth"] is False
        found = ok(call(base, "GET", "/api/experiments", params={"filter": "name = 'console-api'"}))
        assert [e["experiment_id"] for e in found["experiments"]] == [world.experiment_id]
        assert call(base, "GET", "/").status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
