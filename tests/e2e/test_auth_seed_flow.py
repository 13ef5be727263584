"""The seed workflows pass against `keel server --auth` with a user's token (KEEL_TRACKING_TOKEN),
fail without one, and the HTTP scoring endpoint takes the same bearer token."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_fixtures import ServerHandle, free_port, server_process

from keel.auth.v1 import auth_pb2 as pb
from keel.auth.v1 import auth_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ADMIN_TOKEN = "bootstrap-" + secrets.token_hex(16)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, int, dict[str, str]]]:
    root = tmp_path_factory.mktemp("auth-seed")
    http_port = free_port()
    env = {
        "KEEL_DB_URL": f"sqlite:///{root}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{root}/artifacts",
        "KEEL_ADMIN_TOKEN": ADMIN_TOKEN,
        "KEEL_HTTP_PORT": str(http_port),
    }
    with server_process(args=["--auth", "--log-level", "WARNING"], env=env, cwd=root) as handle:
        channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        tokens = {}
        for user in ("scientist", "viewer"):
            auth.CreateUser(pb.CreateUserRequest(name=user), metadata=admin)
            tokens[user] = auth.CreateToken(pb.CreateTokenRequest(user=user), metadata=admin).secret
        channel.close()
        yield handle, http_port, tokens


def run_example(server: ServerHandle, script: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEEL_TRACKING_URI": server.uri}
    env.pop("KEEL_TRACKING_TOKEN", None)
    if token:
        env["KEEL_TRACKING_TOKEN"] = token
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )


def test_seed_flows_pass_with_a_token(secured: tuple[ServerHandle, int, dict[str, str]]) -> None:
    server, _, tokens = secured
    for script, expected in (
        ("sklearn_random_forest.py", "is now Archived"),
        ("registry_best_run.py", "is now in Production"),
        ("custom_pyfunc.py", "['junior', 'mid', 'senior']"),
    ):
        result = run_example(server, script, tokens["scientist"])
        assert result.returncode == 0, f"{script}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert expected in result.stdout


def test_seed_flow_without_a_token_is_refused(secured: tuple[ServerHandle, int, dict[str, str]]) -> None:
    server, _, _ = secured
    result = run_example(server, "registry_best_run.py", None)
    assert result.returncode != 0
    assert "UNAUTHENTICATED" in result.stderr or "requires authentication" in result.stderr


def test_http_scoring_takes_the_bearer_token(secured: tuple[ServerHandle, int, dict[str, str]]) -> None:
    """A deployment of the scientist's model: no token 401, a reader without USE 403, the owner 200."""
    server, http_port, tokens = secured
    env = {**os.environ, "KEEL_TRACKING_URI": server.uri, "KEEL_TRACKING_TOKEN": tokens["scientist"]}
    deploy = (
        "import keel\n"
        "client = keel.Client()\n"
        "client.create_deployment('scoring', 'models:/sk-learn-random-forest-reg-model/3')\n"
        "client.wait_deployment('scoring', timeout=120)\n"
    )
    result = subprocess.run([sys.executable, "-c", deploy], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    body = json.dumps({"inputs": [[0.0, 0.0, 0.0, 0.0]]}).encode()

    def post(token: str | None) -> tuple[int, dict[str, object]]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/deployments/scoring/invocations", data=body, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, answer = post(None)
    assert status == 401 and answer["error_code"] == "UNAUTHENTICATED"
    status, answer = post("keel_0000000000000000_" + "x" * 43)
    assert status == 401
    status, answer = post(tokens["viewer"])  # default READ: can see the model, not use it
    assert status == 403 and answer["error_code"] == "PERMISSION_DENIED"
    status, answer = post(tokens["scientist"])
    assert status == 200 and "predictions" in answer
