"""The SDK reaches a restarted server: a ``keel server`` process stopped and started again on the
same port (same database and artifact folder) answers the same ``keel.Client`` at once, and a
server that stays down fails idempotent calls with UNAVAILABLE within a bound."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_fixtures import ServerHandle, free_port, server_process

import keel
from keel import _transport
from keel.exceptions import Unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A call to a server that stays down gives up after the retry budget, plus one attempt.
DOWN_BOUND_S = 10.0
assert _transport.RETRY_BUDGET_S < DOWN_BOUND_S
# How long the outage lasts (a redeploy's worth), whatever the SDK's retries take. With gRPC's
# default reconnect backoff (1 s, 1.6 s, 2.6 s, 4.1 s, 6.6 s, ...) a channel would then not try
# again until seconds after the server is back, as clients saw in real outages.
OUTAGE_S = 10.0


class _Server:
    """``keel server`` on a fixed port over one database and artifact folder, restartable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.env = {
            "KEEL_DB_URL": f"sqlite:///{root}/keel.db",
            "KEEL_ARTIFACT_URI": f"file://{root}/artifacts",
        }
        self.uri = f"grpc://127.0.0.1:{self.port}"

    def run(self) -> contextlib.AbstractContextManager[ServerHandle]:
        # server_process puts "--port 0" first; the later --port wins. It returns once the
        # server printed its listening line, and stops it with SIGTERM (and waits) on exit.
        return server_process(args=["--port", str(self.port)], env=self.env, cwd=self.root)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[_Server]:
    yield _Server(tmp_path)


def _seed(client: keel.Client) -> tuple[str, str]:
    experiment_id = client.create_experiment("reconnect")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_text(run_id, "still here", "notes.txt")
    return experiment_id, run_id


def _fail_while_down(client: keel.Client, experiment_id: str) -> None:
    """With the server gone: an idempotent call fails UNAVAILABLE within the bound (after its
    retries, which leave the channel backing off its reconnects), and a non-idempotent call is
    not retried (it fails at once). Returns when the outage has lasted ``OUTAGE_S``."""
    down_since = time.monotonic()
    with pytest.raises(Unavailable):
        client.get_experiment(experiment_id)
    elapsed = time.monotonic() - down_since
    assert elapsed < DOWN_BOUND_S, elapsed

    started = time.monotonic()
    with pytest.raises(Unavailable):
        client.create_experiment("while-down")
    assert time.monotonic() - started < 2.0  # one attempt, no retry budget spent

    # The outage's length is part of the scenario, not a wait for something to happen.
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_since)))


def test_idempotent_call_right_after_a_restart_succeeds(server: _Server) -> None:
    with server.run() as first:
        assert first.port == server.port
        client = keel.Client(server.uri)
        experiment_id, _ = _seed(client)
        assert client.get_experiment(experiment_id).name == "reconnect"
    _fail_while_down(client, experiment_id)
    with server.run() as second:
        assert second.port == server.port
        # Immediately, with the same client (and channel): no UNAVAILABLE although the channel
        # saw its server go away and failed to reconnect for seconds.
        assert client.get_experiment(experiment_id).name == "reconnect"
        assert [e.name for e in client.search_experiments()] == ["reconnect"]


def test_download_right_after_a_restart_succeeds(server: _Server) -> None:
    """The SDK's retried streams (downloads) reach the restarted server too."""
    with server.run():
        client = keel.Client(server.uri)
        experiment_id, run_id = _seed(client)
    _fail_while_down(client, experiment_id)
    with server.run():
        text = keel.artifacts.load_text(f"runs:/{run_id}/notes.txt", tracking_uri=server.uri)
        assert text == "still here"
