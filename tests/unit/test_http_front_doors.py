"""The HTTP plumbing shared by the MLflow REST port and the console: routing, bodies, streaming,
errors, and how the port turns HTTP credentials into keel call metadata."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator

import pytest

from keel_server.common.errors import InvalidArgument, KeelError, NotFound
from keel_server.common.http import HTTPApp, MethodNotAllowed, Request, Response, Router, json_response
from keel_server.mlflow_port import core


def _router() -> Router:
    router = Router()

    @router.route("GET", "/api/runs/{run_id}/tags/{key}")
    def tag(request: Request) -> Response:
        return json_response({"run_id": request.params["run_id"], "key": request.params["key"], "q": request.arg("q")})

    @router.route("PUT", "/files/{path:path}")
    def put(request: Request) -> Response:
        size = sum(len(chunk) for chunk in request.stream(chunk_bytes=7))
        return json_response({"path": request.params["path"], "size": size})

    @router.route("GET", "/files/{path:path}")
    def get(request: Request) -> Response:
        def chunks() -> Iterator[bytes]:
            yield b"abc"
            yield b"defg"

        sized = request.arg("sized") == "1"
        return Response(200, chunks(), "application/octet-stream", length=7 if sized else None)

    @router.route("POST", "/echo")
    def echo(request: Request) -> Response:
        return json_response(request.json(limit=64))

    @router.route("GET", "/boom")
    def boom(request: Request) -> Response:
        raise RuntimeError("secret detail")

    return router


def test_router_matches_segments_and_tails_and_decodes_them() -> None:
    router = _router()
    handler, params = router.match("GET", "/api/runs/r%201/tags/a%2Fb")
    assert params == {"run_id": "r 1", "key": "a/b"}
    _, params = router.match("PUT", "/files/x/y/z.txt")
    assert params == {"path": "x/y/z.txt"}
    with pytest.raises(MethodNotAllowed, match="use GET"):
        router.match("DELETE", "/api/runs/r/tags/k")
    with pytest.raises(NotFound):
        router.match("GET", "/api/runs/r/tags")  # a segment parameter never matches empty


@pytest.fixture(scope="module")
def app() -> Iterator[HTTPApp]:
    def render(exc: Exception, request: Request | None) -> Response:
        if isinstance(exc, KeelError):
            return json_response({"reason": exc.reason, "message": exc.message}, 400)
        return json_response({"reason": "INTERNAL"}, 500)

    server = HTTPApp(("127.0.0.1", 0), _router(), render, name="test-http", max_body=1024).start()
    yield server
    server.stop()


def _request(app: HTTPApp, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read(), conn


def test_streams_upload_in_chunks_and_download_sized_or_chunked(app: HTTPApp) -> None:
    status, _, body, _ = _request(app, "PUT", "/files/a/b.bin", body=b"x" * 100)
    assert status == 200 and json.loads(body) == {"path": "a/b.bin", "size": 100}
    status, headers, body, _ = _request(app, "GET", "/files/a?sized=1")
    assert (status, headers.get("Content-Length"), body) == (200, "7", b"abcdefg")
    status, headers, body, _ = _request(app, "GET", "/files/a")
    assert (status, headers.get("Transfer-Encoding"), body) == (200, "chunked", b"abcdefg")


def test_errors_render_through_the_app_and_keep_the_connection_in_step(app: HTTPApp) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request("POST", "/echo", body=b"not json")
    first = conn.getresponse()
    assert first.status == 400 and json.loads(first.read())["reason"] == "MALFORMED_JSON"
    # The same keep-alive connection still works: the bad body was consumed.
    conn.request("POST", "/echo", body=b'{"a": 1}')
    second = conn.getresponse()
    assert second.status == 200 and json.loads(second.read()) == {"a": 1}
    status, _, body, _ = _request(app, "POST", "/echo", body=b"[1]")
    assert status == 400 and json.loads(body)["reason"] == "MALFORMED_JSON"
    status, _, body, _ = _request(app, "POST", "/echo", body=b"x" * 2000)
    assert status == 400 and json.loads(body)["reason"] == "PAYLOAD_TOO_LARGE"
    status, _, body, _ = _request(app, "GET", "/boom")
    assert status == 500 and b"secret" not in body
    status, _, _, _ = _request(app, "HEAD", "/files/a?sized=1")
    assert status == 200


class _FakeRequest:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


def test_port_forwards_bearer_and_basic_credentials_as_keel_tokens() -> None:
    bearer = core.caller_metadata(_FakeRequest({"Authorization": "Bearer keel_abc"}))  # type: ignore[arg-type]
    assert ("authorization", "Bearer keel_abc") in bearer
    basic = base64.b64encode(b"alice:keel_tok").decode()
    forwarded = core.caller_metadata(_FakeRequest({"Authorization": f"Basic {basic}", "X-Request-Id": "r1"}))  # type: ignore[arg-type]
    assert forwarded == [("authorization", "Bearer keel_tok"), ("x-request-id", "r1")]
    assert core.caller_metadata(_FakeRequest({})) == []  # type: ignore[arg-type]
    with pytest.raises(KeelError, match="base64"):
        core.caller_metadata(_FakeRequest({"Authorization": "Basic !!!"}))  # type: ignore[arg-type]


def test_port_arguments_are_typed_with_mlflow_messages() -> None:
    assert core.typed("max_results", "10", int) == 10
    assert core.typed("archive", "true", bool) is True
    with pytest.raises(InvalidArgument, match="parameter 'step'"):
        core.typed("step", 1.5, int)
    with pytest.raises(InvalidArgument, match="Missing value for required parameter 'run_id'"):
        core.required({}, "run_id")
    assert core.parse_proxy_path("1/abc/artifacts/model/MLmodel") == core.ProxyPath("1", "abc", "model/MLmodel")
    assert core.parse_proxy_path("1/abc/artifacts") == core.ProxyPath("1", "abc", "")
    with pytest.raises(InvalidArgument, match="not under a run"):
        core.parse_proxy_path("1/models/m-1/artifacts")


def test_a_loopback_server_refuses_other_host_names(app: HTTPApp) -> None:
    """DNS rebinding: a page whose own name resolves to 127.0.0.1 sends its own Host header."""
    for host in ("localhost", f"127.0.0.1:{app.port}", "[::1]", f"localhost:{app.port}"):
        status, _, _, _ = _request(app, "GET", "/api/runs/r/tags/k", headers={"Host": host})
        assert status == 200, host
    status, _, body, _ = _request(app, "GET", "/api/runs/r/tags/k", headers={"Host": "evil.example:80"})
    assert status == 400 and json.loads(body)["reason"] == "HOST_NOT_ALLOWED"
