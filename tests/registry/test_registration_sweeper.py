"""Issue #13: a registration that outlives a crash.

A server killed while it copies a new version's files leaves the version PENDING_REGISTRATION;
the registration sweeper (on every registry replica) finishes it, or marks it
FAILED_REGISTRATION with a message, within about the timeout plus one sweep interval.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest
from backends import make_database_url, make_s3_bucket
from server_fixtures import running_server, server_process

import keel
from keel_server.common import db as dbmod
from keel_server.registry.store import RegistryStore

TIMEOUT_S = 0.5
# The sweeper looks every max(TIMEOUT_S / 4, 1 s); the version must settle well within this.
SETTLE_WITHIN_S = 20.0


def _wait_for_status(client: keel.Client, name: str, version: int, within: float) -> str:
    """Polls the version (bounded) until it leaves PENDING_REGISTRATION; returns its status."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = client.get_model_version(name, version).status
        if status != "PENDING_REGISTRATION":
            return str(status)
        time.sleep(0.1)
    raise AssertionError(f"version {version} of {name} still PENDING_REGISTRATION after {within} s")


def test_pending_version_left_by_a_dead_server_is_finished_or_failed(tmp_path: Path) -> None:
    with make_database_url("sqlite", tmp_path) as db_url:
        with running_server(db_url, f"file://{tmp_path}/artifacts", registration_timeout_seconds=TIMEOUT_S) as handle:
            assert handle.running is not None
            root = handle.running.app.artifact_store.root_uri
            keel.set_tracking_uri(handle.uri)
            client = keel.Client(handle.uri)
            keel.set_experiment(f"sweep-{uuid.uuid4().hex[:8]}")
            with keel.start_run() as run:
                keel.log_text("weights", "model/weights.txt")
            run_id = run.info.run_id

            good = _pending_row(client, root, f"sweep-ok-{uuid.uuid4().hex[:6]}", f"runs:/{run_id}/model", run_id)
            gone = _pending_row(client, root, f"sweep-gone-{uuid.uuid4().hex[:6]}", f"runs:/{run_id}/missing", run_id)

            assert _wait_for_status(client, good, 1, SETTLE_WITHIN_S) == "READY"
            uri = client.resolve_model_uri(f"models:/{good}/1")
            assert keel.artifacts.load_text(f"{uri}/weights.txt", tracking_uri=handle.uri) == "weights"
            assert _wait_for_status(client, gone, 1, SETTLE_WITHIN_S) == "FAILED_REGISTRATION"
            message = client.get_model_version(gone, 1).status_message
            assert "stopped mid-copy" in message and "holds no files" in message


def _pending_row(client: keel.Client, root: str, name: str, source: str, run_id: str) -> str:
    client.create_registered_model(name)
    model = dbmod.RegisteredModel.get(dbmod.RegisteredModel.name == name)
    dbmod.RegisteredModel.update(last_version=1).where(dbmod.RegisteredModel.id == model.id).execute()
    stale = dbmod.now_ms() - 60_000
    dbmod.ModelVersion.create(
        model=model.id,
        version=1,
        creation_time=stale,
        last_updated_time=stale,
        source=source,
        run_id=run_id,
        status="PENDING_REGISTRATION",
        storage_location=f"{root}/_registry/{model.id}/1",
    )
    return name


def test_concurrent_sweepers_copy_each_version_once(tmp_path: Path) -> None:
    with make_database_url("sqlite", tmp_path) as db_url:
        # A long timeout: the server's own sweeper stays out of the way; the test sweeps itself.
        with running_server(db_url, f"file://{tmp_path}/artifacts", registration_timeout_seconds=3600) as handle:
            assert handle.running is not None
            root = handle.running.app.artifact_store.root_uri
            keel.set_tracking_uri(handle.uri)
            client = keel.Client(handle.uri)
            keel.set_experiment(f"sweep-{uuid.uuid4().hex[:8]}")
            with keel.start_run() as run:
                keel.log_text("weights", "model/weights.txt")
            names = [
                _pending_row(client, root, f"race-{i}-{uuid.uuid4().hex[:6]}", f"runs:/{run.info.run_id}/model", run.info.run_id)
                for i in range(3)
            ]
            store = RegistryStore(handle.running.app)
            results: list[tuple[int, int]] = []
            barrier = threading.Barrier(4)

            def sweep() -> None:
                barrier.wait(timeout=10)
                results.append(store.sweep_registrations(stale_after_ms=1_000))

            threads = [threading.Thread(target=sweep) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert sum(f for f, _ in results) == 3 and sum(x for _, x in results) == 0
            assert {client.get_model_version(n, 1).status for n in names} == {"READY"}


@pytest.mark.e2e
@pytest.mark.s3
@pytest.mark.slow
def test_server_killed_mid_snapshot_ends_ready_or_failed_after_restart(tmp_path: Path) -> None:
    """A real crash: SIGKILL while a large model's files are copied on S3, then a restart."""
    with make_s3_bucket() as s3:
        env = {
            "KEEL_DB_URL": f"sqlite:///{tmp_path}/keel.db",
            "KEEL_ARTIFACT_URI": s3["artifact_uri"],
            "KEEL_S3_ENDPOINT_URL": s3["endpoint_url"],
            "KEEL_S3_ACCESS_KEY": s3["access_key"],
            "KEEL_S3_SECRET_KEY": s3["secret_key"],
            "KEEL_REGISTRATION_TIMEOUT_SECONDS": str(TIMEOUT_S),
        }
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        for i in range(24):  # many objects: the snapshot copies them one by one
            (model_dir / f"part-{i:02d}.bin").write_bytes(bytes([i]) * (4 * 1024 * 1024))
        name = f"crash-{uuid.uuid4().hex[:8]}"
        with server_process(env=env) as first:
            assert first.process is not None
            client = keel.Client(first.uri)
            experiment = client.create_experiment(f"crash-{uuid.uuid4().hex[:8]}")
            run_id = client.create_run(experiment).info.run_id
            client.log_artifacts(run_id, str(model_dir), "model")
            client.create_registered_model(name)
            register = threading.Thread(
                target=lambda: _ignore_errors(lambda: client.create_model_version(name, f"runs:/{run_id}/model")),
                daemon=True,
            )
            register.start()
            assert _wait_for_pending_row(tmp_path / "keel.db", name, within=30.0)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
            register.join(timeout=30)
        assert _status_in_db(tmp_path / "keel.db", name) == "PENDING_REGISTRATION"  # what the crash left
        with server_process(env=env) as second:
            client = keel.Client(second.uri)
            status = _wait_for_status(client, name, 1, SETTLE_WITHIN_S)
            assert status in ("READY", "FAILED_REGISTRATION")
            if status == "READY":
                listed = client.list_artifacts_under(artifact_uri=client.resolve_model_uri(f"models:/{name}/1"), recursive=True)
                assert len(listed) == 24


def _ignore_errors(call) -> None:  # type: ignore[no-untyped-def]
    try:
        call()
    except Exception:  # noqa: BLE001 - the server is killed under it on purpose
        pass


def _status_in_db(path: Path, name: str) -> str | None:
    with sqlite3.connect(path, timeout=10) as conn:
        row = conn.execute(
            "SELECT v.status FROM model_version v JOIN registered_model m ON v.model_id = m.id WHERE m.name = ?",
            (name,),
        ).fetchone()
    return row[0] if row else None


def _wait_for_pending_row(path: Path, name: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _status_in_db(path, name) == "PENDING_REGISTRATION":
            return True
        time.sleep(0.005)
    return False
