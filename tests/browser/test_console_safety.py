"""The console is safe by default: actions turned off are refused (and not offered), and with
a token an action needs the operator to log in first. Each case runs its own one-worker demo
with the setting (the pages' CSRF token is sent, so only the setting refuses)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from stream_app.console.guard import CSRF_HEADER
from stream_app.examples.console_demo import runtime
from tests.browser.conftest import ConsoleDemo, start_demo, stop_demo

pytestmark = pytest.mark.integration

TOKEN = "browser-test-console-token-0123456789"


def action_paths() -> list[str]:
    """Every action the console registers, its parameters filled with a placeholder."""
    assert runtime.console is not None
    paths = [re.sub(r"\{[^}]+\}", "x", path) for path in runtime.console.actions]
    assert paths, "the console registers no action"
    return paths


def post_action(page: Any, demo: ConsoleDemo, path: str) -> Any:
    """POST ``path`` as the console's own pages do (with the page's CSRF token)."""
    csrf = page.locator('meta[name="console-csrf"]').get_attribute("content")
    return page.request.post(demo.url(path), headers={CSRF_HEADER: csrf}, form={"x": "1"})


@pytest.fixture(scope="module")
def read_only(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDemo]:
    demo = start_demo(
        bootstrap,
        tmp_path_factory.mktemp("console-read-only"),
        workers=1,
        extra={"STREAM_APP_CONSOLE_ACTIONS": "false"},
        seeded=False,
    )
    yield demo
    stop_demo(demo)


@pytest.fixture(scope="module")
def with_token(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDemo]:
    demo = start_demo(
        bootstrap,
        tmp_path_factory.mktemp("console-token"),
        workers=1,
        extra={"STREAM_APP_CONSOLE_TOKEN": TOKEN},
        seeded=False,
    )
    yield demo
    stop_demo(demo)


def test_actions_turned_off_are_refused_and_not_offered(read_only: ConsoleDemo, page: Any) -> None:
    page.goto(read_only.url("/console/"))
    expect(page.get_by_test_id("read-only")).to_have_text("read-only")
    hrefs = [href for _, href in runtime.console.nav] if runtime.console else []
    for href in hrefs:
        page.goto(read_only.url(href))
        assert page.locator("[hx-post], form[method=post]").count() == 0, href
    for path in action_paths():
        answer = post_action(page, read_only, path)
        assert answer.status == 403, (path, answer.status, answer.text())
        assert "turned off" in answer.text(), path


def test_with_a_token_actions_need_a_login(with_token: ConsoleDemo, page: Any) -> None:
    page.goto(with_token.url("/console/"))
    login = page.get_by_role("link", name="Log in")
    expect(login).to_be_visible()
    path = action_paths()[0]
    refused = post_action(page, with_token, path)
    assert refused.status == 401 and "log in" in refused.text(), refused.text()

    login.click()
    page.get_by_label("Console token").fill("not-the-console-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not the console token")

    page.get_by_label("Console token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    # Past the guard: what answers now is the action itself (its placeholder arguments).
    accepted = post_action(page, with_token, path)
    assert accepted.status not in (401, 403), (path, accepted.status, accepted.text())
    # The cookie is the browser's only: scripts cannot read it.
    assert "stream_app_console_token" not in page.evaluate("document.cookie")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    assert post_action(page, with_token, path).status == 401
