"""The console with auth on, in a real browser: the sign-in form takes a token, the header shows
who is signed in, a READ user sees no stage-transition or alias controls, the server refuses the
same change when sent directly, and a denied action in the UI shows the server's message."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from browser_helpers import (  # noqa: F401  (the browser and page fixtures)
    browser_fixture,
    expect,
    open_console,
    page_fixture,
    seed_model,
    seed_model_run,
    sign_in,
)

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def secured(console_server_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    server = console_server_factory(auth=True)
    admin = server.client()
    run_id = seed_model_run(admin, "auth-experiment", tmp_path_factory.mktemp("model"))
    seed_model(admin, run_id, "guarded-model", 1)
    reader = server.make_user("reader")
    server.grant("reader", "registered_model", "guarded-model", "READ")
    experiment_id = admin.get_experiment_by_name("auth-experiment").experiment_id
    server.grant("reader", "experiment", str(experiment_id), "READ")
    return SimpleNamespace(server=server, admin=admin, run_id=run_id, reader=reader)


def test_sign_in_and_out(page: Any, secured: SimpleNamespace) -> None:
    server = secured.server
    open_console(page, server, "/models")
    expect(page.get_by_test_id("sign-in-form")).to_be_visible()
    page.get_by_test_id("token-input").fill("not-a-token")
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("sign-in-error")).to_contain_text("not accepted")

    page.get_by_test_id("token-input").fill(secured.reader)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("signed-in-user")).to_have_text("reader")
    expect(page.locator('[data-testid="model-row"][data-name="guarded-model"]')).to_be_visible()
    # the token lives in this tab's sessionStorage and goes along as a bearer token
    assert page.evaluate("Object.values(sessionStorage)") == [secured.reader]

    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("sign-in-form")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_read_user_sees_no_transition_and_a_direct_attempt_is_refused(
    page: Any, secured: SimpleNamespace
) -> None:
    server = secured.server
    sign_in(page, server, secured.reader, "/models/guarded-model/1")
    expect(page.get_by_test_id("version-title")).to_contain_text("guarded-model · version 1")
    expect(page.get_by_test_id("no-manage-note")).to_contain_text("READ")
    expect(page.get_by_test_id("transition-stage")).to_have_count(0)
    expect(page.get_by_test_id("stage-select")).to_have_count(0)
    expect(page.get_by_test_id("alias-panel")).to_have_count(0)

    # the same change sent straight to the API with the reader's token is refused by the server
    answer = page.evaluate(
        """async () => {
            const r = await fetch('/api/models/guarded-model/versions/1/stage', {
                method: 'POST',
                headers: {'Content-Type': 'application/json',
                          'Authorization': 'Bearer ' + Object.values(sessionStorage)[0]},
                body: JSON.stringify({stage: 'Production', archive_existing: true}),
            });
            return {status: r.status, body: await r.json()};
        }"""
    )
    assert answer["status"] == 403, answer
    assert answer["body"]["error_code"] == "PERMISSION_DENIED" and answer["body"]["message"]
    assert secured.admin.get_model_version("guarded-model", 1).current_stage == "None"


def test_denied_action_shows_the_servers_message(page: Any, secured: SimpleNamespace) -> None:
    """The reader may read the run, so the artifact browser offers registering its model; the
    server refuses a new version of a model the reader only reads, and the page says why."""
    server = secured.server
    sign_in(page, server, secured.reader, f"/run/{secured.run_id}")
    expect(page.get_by_test_id("tag-add")).to_have_count(0)  # READ on the experiment: tags are read-only
    page.locator('[data-testid="artifact-entry"][data-path="model"]').click()
    page.get_by_test_id("register-model").click()
    page.get_by_test_id("register-model-name").fill("guarded-model")
    page.get_by_test_id("register-model-submit").click()
    banner = page.get_by_test_id("error-banner")
    expect(banner).to_contain_text("Permission denied:")
    message = banner.get_by_test_id("error-message").inner_text()
    assert len(message) > len("Permission denied: ")
    assert len(secured.admin.search_model_versions("name = 'guarded-model'")) == 1
