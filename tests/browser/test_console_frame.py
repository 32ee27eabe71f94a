"""The console's frame in a real browser: every page in the navigation opens on either worker,
with its scripts loaded and no CSP violation; the navigation works from the keyboard."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ConsoleDemo

pytestmark = pytest.mark.integration


def test_every_page_in_the_navigation_opens(console_demo: ConsoleDemo, page: Any) -> None:
    page.goto(console_demo.url("/console/", worker=1))
    links = page.get_by_role("navigation", name="Pages").get_by_role("link")
    titles = links.all_inner_texts()
    assert titles[0] == "Overview" and len(titles) >= 5, titles
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    for title, href in zip(titles, hrefs, strict=True):
        response = page.goto(console_demo.url(href or ""))
        assert response is not None and response.status == 200, (title, href)
        expect(page.get_by_role("link", name=title, exact=True)).to_have_attribute(
            "aria-current", "page"
        )
        expect(page.locator("h1")).not_to_be_empty()
        # htmx is loaded (from the package's own static files).
        assert page.evaluate("typeof window.htmx") == "object", href


def test_the_skip_link_and_navigation_work_from_the_keyboard(
    console_demo: ConsoleDemo, page: Any
) -> None:
    page.goto(console_demo.url("/console/"))
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
