"""The console's registry pages in a real browser against a real keel server: promoting a version
to Production with archive-existing, moving an alias with compare-and-set (and the conflict when
it moved underneath), and the deployments page."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from browser_helpers import browser_fixture, expect, open_console, page_fixture, seed_model, seed_model_run  # noqa: F401  (the browser and page fixtures)

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def data(console_server: Any, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    client = console_server.client()
    run_id = seed_model_run(client, "browser-registry", tmp_path_factory.mktemp("model"))
    seed_model(client, run_id, "stage-model", 2)
    client.transition_model_version_stage("stage-model", 1, "Production")
    seed_model(client, run_id, "alias-model", 3)
    client.set_registered_model_alias("alias-model", "champion", 1)
    return SimpleNamespace(client=client, run_id=run_id)


def test_transition_to_production_archives_the_existing_version(
    page: Any, console_server: Any, data: SimpleNamespace
) -> None:
    open_console(page, console_server, "/models")
    page.locator('[data-testid="model-row"][data-name="stage-model"] [data-testid="model-link"]').click()
    expect(page.locator('[data-testid="version-row"][data-version="1"]')).to_have_attribute(
        "data-stage", "Production"
    )
    page.locator('[data-testid="version-row"][data-version="2"] [data-testid="version-link"]').click()
    expect(page.get_by_test_id("version-title")).to_contain_text("stage-model · version 2")
    expect(page.get_by_test_id("source-run-link")).to_have_attribute("href", f"#/run/{data.run_id}")
    expect(page.get_by_test_id("signature-inputs")).to_contain_text("x1")

    page.get_by_test_id("stage-select").select_option("Production")
    page.get_by_test_id("archive-existing").check()
    page.get_by_test_id("transition-stage").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_contain_text("Also archives version 1")
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("version-stage")).to_have_text("Production")
    assert data.client.get_model_version("stage-model", 1).current_stage == "Archived"
    assert data.client.get_model_version("stage-model", 2).current_stage == "Production"

    page.get_by_test_id("model-link").click()
    expect(page.locator('[data-testid="version-row"][data-version="1"]')).to_have_attribute(
        "data-stage", "Archived"
    )
    expect(page.locator('[data-testid="version-row"][data-version="2"]')).to_have_attribute(
        "data-stage", "Production"
    )
    # the timeline has the promotion and the archiving
    events = page.locator('[data-testid="history-event"][data-kind="stage"]')
    expect(events.filter(has_text=re.compile(r"version 2 moved from None to\s*Production"))).to_have_count(1)
    expect(
        events.filter(has_text=re.compile(r"version 1 moved from Production to\s*Archived"))
    ).to_have_count(1)


def test_alias_move_detects_a_move_underneath(page: Any, console_server: Any, data: SimpleNamespace) -> None:
    open_console(page, console_server, "/models/alias-model/2")
    move = page.locator('[data-testid="move-alias"][data-alias="champion"]')
    expect(move).to_have_text("@champion (now v1)")

    # someone else moves the alias after the page loaded
    data.client.set_registered_model_alias("alias-model", "champion", 3)
    move.click()
    conflict = page.get_by_test_id("alias-conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("@champion was moved meanwhile")
    expect(conflict).to_have_attribute("data-now", "3")
    expect(page.get_by_test_id("alias-now-link")).to_have_text("version 3")
    assert data.client.get_model_version_by_alias("alias-model", "champion").version in (
        3,
        "3",
    )  # not overwritten

    # after a reload the page knows where it points, and the move goes through
    page.get_by_test_id("alias-reload").click()
    expect(move).to_have_text("@champion (now v3)")
    move.click()
    expect(page.locator('[data-testid="version-alias"][data-alias="champion"]')).to_be_visible()
    assert str(data.client.get_model_version_by_alias("alias-model", "champion").version) == "2"

    # a new alias: compare-and-set with "must not exist yet"
    page.get_by_test_id("alias-name").fill("challenger")
    page.get_by_test_id("set-alias").click()
    expect(page.locator('[data-testid="version-alias"][data-alias="challenger"]')).to_be_visible()
    assert str(data.client.get_model_version_by_alias("alias-model", "challenger").version) == "2"


def test_deployments_page_answers(page: Any, console_server: Any) -> None:
    open_console(page, console_server, "/deployments")
    table_or_notice = page.get_by_test_id("deployments-table").or_(
        page.get_by_test_id("deployments-unavailable")
    )
    expect(table_or_notice).to_be_visible()
