"""The overview page in a real browser, on the two seeded workers of the console demo: both
workers with their partitions, the seeded dead letter and parked wallet, and the counts moving
as records arrive, without the page being reloaded."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from stream_app.clients.cells import CellClient
from tests.browser.conftest import PARTITIONS, ConsoleDemo

pytestmark = pytest.mark.integration


def number(text: str) -> float:
    """The first number in ``text`` (``1,234`` -> 1234)."""
    found = re.search(r"\d[\d,]*(\.\d+)?", text)
    assert found, f"no number in {text!r}"
    return float(found.group().replace(",", ""))


def partitions(cell_texts: list[str]) -> list[int]:
    """Every partition listed in the given table cells."""
    return sorted(int(p) for text in cell_texts for p in re.findall(r"\d+", text))


def test_the_overview_shows_both_workers_and_their_partitions(
    console_demo: ConsoleDemo, page: Any
) -> None:
    page.goto(console_demo.url("/console/", worker=1))
    workers = page.get_by_test_id("workers").get_by_test_id("worker")
    expect(workers).to_have_count(2)
    for proc in console_demo.workers:
        expect(page.get_by_test_id("workers")).to_contain_text(f"127.0.0.1:{proc.web_port}")
    expect(page.get_by_test_id("workers").get_by_text("this page")).to_have_count(1)
    active = page.get_by_test_id("active-partitions")
    assert partitions(active.all_inner_texts()) == list(range(PARTITIONS)), (
        "each partition is active on exactly one worker"
    )
    # One standby replica: every partition is also kept as a standby, on the other worker.
    standby = page.get_by_test_id("standby-partitions")
    expect(standby.first).to_contain_text("standby")
    expect(page.get_by_test_id("worker-count")).to_have_text("2")
    table = page.get_by_test_id("behaviours")
    for name in ("counter", "wallet", "account", "fitness", "jobs"):
        expect(table.get_by_role("rowheader", name=name, exact=True)).to_be_visible()


def test_a_focused_link_keeps_its_focus_across_the_refreshes(
    console_demo: ConsoleDemo, page: Any
) -> None:
    page.goto(console_demo.url("/console/"))
    link = page.get_by_test_id("workers").get_by_role("link").first
    link.focus()
    swapped = (
        "() => new Promise(done => document.body.addEventListener('htmx:afterSettle', done, "
        "{once: true}))"
    )
    page.evaluate(swapped)
    page.evaluate(swapped)
    expect(page.get_by_test_id("workers").get_by_role("link").first).to_be_focused()


def test_the_overview_shows_the_seeded_dead_letter_and_parked_wallet(
    console_demo: ConsoleDemo, page: Any
) -> None:
    page.goto(console_demo.url("/console/"))
    assert number(page.get_by_test_id("dead-letters").inner_text()) >= 1
    assert number(page.get_by_test_id("parked").inner_text()) >= 1
    wallet = page.get_by_test_id("behaviours").get_by_role("row").filter(has_text="wallet")
    expect(wallet.locator(".badge.warn")).to_be_visible()
    chart = page.get_by_role("figure", name="Dead letters by reason")
    expect(chart.get_by_role("img")).to_be_visible()
    expect(chart.get_by_role("listitem").filter(has_text="malformed")).to_be_visible()


def test_the_counts_move_as_records_arrive_without_a_reload(
    console_demo: ConsoleDemo, page: Any, shot: Callable[[Any, str], Path]
) -> None:
    page.goto(console_demo.url("/console/"))
    processed = page.get_by_test_id("records-processed")
    before = number(processed.inner_text())
    page.evaluate("window.notReloaded = true")
    with CellClient(console_demo.settings) as cells:
        for i in range(40):
            cells.send("counter", f"overview-{i}", "increment", {"by": 1})
    page.wait_for_function(
        "at => Number(document.querySelector('[data-testid=records-processed]')"
        ".textContent.replaceAll(',', '')) >= at",
        arg=before + 40,
        timeout=30_000,
    )
    page.wait_for_function(
        "() => parseFloat(document.querySelector('[data-testid=throughput]').textContent) > 0",
        timeout=30_000,
    )
    expect(page.get_by_test_id("latency")).not_to_have_text("—")
    assert page.evaluate("window.notReloaded") is True, "the page was reloaded"
    expect(page.get_by_role("figure", name="Records per second").get_by_role("img")).to_be_visible()
    shot(page, "overview")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_test_id("workers")).to_be_visible()
    shot(page, "overview-phone")
