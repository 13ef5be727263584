"""Issue #13, proven with real parts: the services apart, as deploy/ runs them.

Two replicas each of tracking and registry, one artifacts and one inference server, each a
separate ``keel server --services X`` process, on one PostgreSQL database and one SeaweedFS S3
store. The SDK holds one URI (the two tracking replicas). The seed flow runs end to end; then 8
threads log metrics and register versions while one tracking and one registry replica are
killed with SIGKILL: every acknowledged write is in the database exactly once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from backends import make_database_url, make_s3_bucket
from server_fixtures import ServerHandle, free_port, server_process

import keel
import keel._routing as routing
from keel.entities import Metric
from keel.exceptions import KeelError

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

WRITERS = 8
OPS_PER_WRITER = 30
VERSION_EVERY = 6  # each writer registers a version every 6th operation


@dataclass
class Topology:
    processes: dict[str, ServerHandle]
    uri: str


def _grpc_list(ports: list[int]) -> str:
    return "grpc://" + ",".join(f"127.0.0.1:{p}" for p in ports)


@contextlib.contextmanager
def _topology(tmp_path: Path) -> Iterator[Topology]:
    layout = {"tracking-1": "tracking", "tracking-2": "tracking", "registry-1": "registry",
              "registry-2": "registry", "artifacts": "artifacts", "inference": "inference"}  # fmt: skip
    ports = {name: free_port() for name in layout}
    addresses = {
        f"KEEL_{service.upper()}_ADDRESS": _grpc_list([ports[n] for n, s in layout.items() if s == service])
        for service in ("tracking", "registry", "artifacts", "inference")
    }
    with make_database_url("postgres") as db_url, make_s3_bucket() as s3, contextlib.ExitStack() as stack:
        env = {
            "KEEL_DB_URL": db_url,
            "KEEL_ARTIFACT_URI": s3["artifact_uri"],
            "KEEL_S3_ENDPOINT_URL": s3["endpoint_url"],
            "KEEL_S3_ACCESS_KEY": s3["access_key"],
            "KEEL_S3_SECRET_KEY": s3["secret_key"],
            "KEEL_REGISTRATION_TIMEOUT_SECONDS": "2",
            "KEEL_GRACE_SECONDS": "2",
            "KEEL_REGISTRY_POLL_SECONDS": "0.5",
            **addresses,
        }
        processes = {
            name: stack.enter_context(
                server_process(["--services", service, "--port", str(ports[name])], env=env, cwd=tmp_path)
            )
            for name, service in layout.items()
        }
        routing.forget_discovered()
        yield Topology(processes, _grpc_list([ports["tracking-1"], ports["tracking-2"]]))
        routing.forget_discovered()


@dataclass
class Ledger:
    """What the writers were told succeeded, and what failed."""

    points: dict[str, list[int]] = field(default_factory=dict)  # metric key -> acknowledged steps
    versions: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _writer(client: keel.Client, run_id: str, model: str, source: str, index: int, ledger: Ledger) -> None:
    key = f"w{index}"
    for step in range(OPS_PER_WRITER):
        try:
            if step % VERSION_EVERY == VERSION_EVERY - 1:
                version = int(client.create_model_version(model, source, run_id=run_id).version)
                with ledger.lock:
                    ledger.versions.append(version)
            else:
                client.log_batch(run_id, metrics=[Metric(key, float(step), int(time.time() * 1000), step)])
                with ledger.lock:
                    ledger.points.setdefault(key, []).append(step)
        except KeelError as exc:
            with ledger.lock:
                ledger.errors.append(f"{key} step {step}: {exc}")
        with ledger.lock:
            ledger.done += 1


def test_services_apart_on_postgres_and_s3_survive_replica_kills(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    with _topology(tmp_path) as topo:
        # ---- the seed flow, through one URI ----------------------------------------------
        keel.set_tracking_uri(topo.uri)
        client = keel.Client(topo.uri)
        keel.set_experiment(f"topology-{uuid.uuid4().hex[:8]}")
        X = np.random.default_rng(0).normal(size=(40, 4))
        y = (X[:, 0] > 0).astype(int)
        model = LogisticRegression().fit(X, y)
        name = f"topology-{uuid.uuid4().hex[:8]}"
        with keel.start_run() as run:
            keel.log_param("C", 1.0)
            for step in range(5):
                keel.log_metric("loss", 1 / (step + 1), step=step)
            keel.sklearn.log_model(model, "model", registered_model_name=name)
        client.transition_model_version_stage(name, 1, "Production")
        client.create_deployment("topology", f"models:/{name}/Production", wait_ready=True, timeout=120)
        predicted = client.predict("topology", X[:5]).predictions
        assert np.asarray(predicted).ravel().tolist() == model.predict(X[:5]).tolist()
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 5

        # ---- 8 writers while a tracking and a registry replica die --------------------------
        run_id = client.create_run(run.info.experiment_id).info.run_id
        source = f"runs:/{run.info.run_id}/model"
        ledger = Ledger()
        threads = [
            threading.Thread(target=_writer, args=(keel.Client(topo.uri), run_id, name, source, i, ledger))
            for i in range(WRITERS)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while ledger.done < WRITERS * OPS_PER_WRITER // 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        for victim in ("tracking-1", "registry-1"):
            process = topo.processes[victim].process
            assert process is not None
            process.send_signal(signal.SIGKILL)
        for t in threads:
            t.join(timeout=180)
        assert not any(t.is_alive() for t in threads)
        assert ledger.errors == []  # every write was retried onto the surviving replicas

        # ---- every acknowledged write exactly once ------------------------------------------
        for key, steps in ledger.points.items():
            stored = sorted(m.step for m in client.get_metric_history(run_id, key))
            assert stored == sorted(steps), key  # none lost, none twice
        numbers = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        assert numbers == list(range(1, len(numbers) + 1))  # distinct, no gaps
        assert set(ledger.versions) <= set(numbers)
        assert len(numbers) == 1 + len(ledger.versions)  # the seed version + one per acknowledged call
        # Versions whose copy the killed replica was making are finished by the survivor's sweeper.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            statuses = {int(v.version): v.status for v in client.search_model_versions(f"name = '{name}'")}
            if "PENDING_REGISTRATION" not in statuses.values():
                break
            time.sleep(0.2)
        assert set(statuses.values()) == {"READY"}, statuses
