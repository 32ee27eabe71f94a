"""Parked cells and dead letters in a real browser: list and filter, open one (text, hex,
headers, source), release a parked wallet and redrive a dead letter after the confirmation,
and see across Kafka that it happened (the cell processes again; the redriven record is on its
source topic and the fixed cell applied it)."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from stream_app.clients.cells import CellClient
from stream_app.ops.redrive import REDRIVEN_FROM_HEADER
from stream_app.testing import read_topic, wait_for
from tests.browser.conftest import ConsoleDemo

pytestmark = pytest.mark.integration


def _dead_letter_at(
    demo: ConsoleDemo, key: str | None, reason: str, value: bytes | None = None
) -> tuple[int, int, Any]:
    """The position of the dead letter of ``key`` (and ``value``, if given) with ``reason``,
    and its record, once it is in the dead-letter topic."""
    settings = demo.settings

    def found() -> list[Any]:
        records = read_topic(settings.kafka_client_config(), settings.dead_letter_topic)
        return [
            r
            for r in records
            if r.key == (key.encode() if key is not None else None)
            and (value is None or r.value == value)
            and ("stream_app.dlq.reason", reason.encode()) in [(n, v) for n, v in r.headers]
        ]

    records = wait_for(found, bool, timeout=60, what=f"the dead letter of {key} ({reason})")
    return records[-1].partition, records[-1].offset, records[-1]


def _parked(demo: ConsoleDemo, wallet: str) -> Any:
    return wait_for(
        lambda: demo.get_json("/stream-app/parked/wallet/"),
        lambda parked: wallet in parked,
        timeout=60,
        what=f"wallet {wallet} parked",
    )


def _balance(demo: ConsoleDemo, wallet: str) -> Any:
    described = demo.get_json(f"/stream-app/cells/wallet/{quote(wallet, safe='')}/")
    return (described.get("data") or {}).get("balance")


def test_dead_letters_are_listed_filtered_by_reason_and_opened_whole(
    console_demo: ConsoleDemo, page: Any, shot: Any
) -> None:
    key = f"letters-{uuid.uuid4().hex[:8]}"
    settings = console_demo.settings
    with CellClient(settings) as client:
        client.produce_raw(settings.input_topic("counter"), key, b'{"<script>": \x00\xff')
        client.send("counter", key, "increment", {"by": -5})
        client.produce_raw(settings.input_topic("counter"), None, f"[{key}]".encode())
    broken = _dead_letter_at(console_demo, key, "malformed-json")
    invalid = _dead_letter_at(console_demo, key, "schema")
    keyless = _dead_letter_at(console_demo, None, "invalid-key", f"[{key}]".encode())
    broken_at, invalid_at = f"{broken[0]}:{broken[1]}", f"{invalid[0]}:{invalid[1]}"

    page.goto(console_demo.url("/console/dead-letters"))
    expect(page.locator(f'tr[data-position="{broken_at}"]')).to_be_visible()
    expect(page.locator(f'tr[data-position="{invalid_at}"]')).to_be_visible()
    expect(page.locator(f'tr[data-position="{broken_at}"]')).not_to_contain_text("cannot be")
    # A record without a key has no partition to go back to: the list says so.
    keyless_row = page.locator(f'tr[data-position="{keyless[0]}:{keyless[1]}"]')
    expect(keyless_row.get_by_test_id("not-redrivable")).to_have_attribute(
        "title", re.compile("had no key")
    )
    shot(page, "dead-letters")

    page.get_by_label("Reason").select_option("malformed-json")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"reason=malformed-json"))
    row = page.locator(f'tr[data-position="{broken_at}"]')
    expect(row).to_contain_text("malformed-json")
    expect(row).to_contain_text(key)
    expect(page.locator(f'tr[data-position="{invalid_at}"]')).to_have_count(0)
    reasons = page.locator("[data-testid=letter-row] .badge").all_inner_texts()
    assert reasons and set(reasons) == {"malformed-json"}, reasons

    row.get_by_role("link", name=broken_at).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(broken_at)
    expect(page.get_by_test_id("letter-reason")).to_have_text("malformed-json")
    # The original bytes: as text (the NUL shown as its picture, the markup as text) and hex.
    expect(page.get_by_test_id("letter-text")).to_have_text('{"<script>": \u2400\ufffd')
    expect(page.get_by_test_id("value-hex")).to_contain_text(
        "00000000  7b 22 3c 73 63 72 69 70 74 3e 22 3a 20 00 ff"
    )
    letter = broken[2]
    source = dict(letter.headers)
    expect(page.get_by_test_id("letter-source")).to_have_text(
        f"topic {settings.input_topic('counter')}, partition "
        f"{source['stream_app.dlq.source-partition'].decode()}, offset "
        f"{source['stream_app.dlq.source-offset'].decode()}"
    )
    headers = page.get_by_test_id("letter-headers")
    expect(headers.get_by_role("row", name="stream_app.dlq.reason")).to_contain_text(
        "malformed-json"
    )
    expect(headers.get_by_role("row", name="stream_app.dlq.source-topic")).to_contain_text(
        settings.input_topic("counter")
    )
    shot(page, "dead-letter")


def test_a_selected_dead_letter_is_redriven_after_the_confirmation(
    console_demo: ConsoleDemo, page: Any
) -> None:
    wallet = f"lw-{uuid.uuid4().hex[:8]}"
    settings = console_demo.settings
    with CellClient(settings) as client:
        client.send("wallet", wallet, "deposit", {"amount": 10})
        client.send("wallet", wallet, "withdraw", {"amount": 99})
    _parked(console_demo, wallet)
    with CellClient(settings) as client:
        client.release("wallet", wallet, skip=1)
    partition, offset, _ = _dead_letter_at(console_demo, wallet, "discarded")
    position = f"{partition}:{offset}"
    with CellClient(settings) as client:
        client.send("wallet", wallet, "deposit", {"amount": 100})
    wait_for(lambda: _balance(console_demo, wallet), lambda b: b == 110, timeout=60)

    page.goto(console_demo.url("/console/dead-letters?reason=discarded"))
    row = page.locator(f'tr[data-position="{position}"]')
    expect(row).to_contain_text(wallet)
    row.get_by_role("checkbox").check()
    expect(page.locator("#selected-count")).to_have_text("1 selected")
    dialogs: list[str] = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Redrive selected").click()
    result = page.get_by_test_id("action-result")
    expect(result).to_contain_text(f"Redriven 1: {position}")
    assert dialogs and "Redrive the selected dead letters" in dialogs[0]

    # The withdrawal went back to the wallet's input topic, and the wallet (now rich enough)
    # applied it.
    origin = f"{settings.dead_letter_topic}/{partition}/{offset}".encode()
    wait_for(
        lambda: [
            r
            for r in read_topic(settings.kafka_client_config(), settings.input_topic("wallet"))
            if (REDRIVEN_FROM_HEADER, origin) in list(r.headers)
        ],
        lambda found: len(found) == 1 and found[0].key == wallet.encode(),
        timeout=30,
        what="the redriven record on the wallet's input topic",
    )
    wait_for(lambda: _balance(console_demo, wallet), lambda b: b == 11, timeout=60)


def test_a_redrive_of_positions_not_in_the_topic_is_refused_by_the_server(
    console_demo: ConsoleDemo, page: Any
) -> None:
    page.goto(console_demo.url("/console/dead-letters"))
    box = page.locator("input.select-letter").first
    # A forged selection: the server checks every position against the topic.
    box.evaluate("(node) => { node.value = '99:999999'; }")
    box.check()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Redrive selected").click()
    result = page.get_by_test_id("action-result")
    expect(result).to_contain_text("Redriven 0")
    expect(result).to_contain_text("Missing 1")
    expect(result).to_contain_text("99:999999")


def test_a_parked_wallet_is_released_and_processes_again(
    console_demo: ConsoleDemo, page: Any, shot: Any
) -> None:
    wallet = f"lw-{uuid.uuid4().hex[:8]}-<b>&\"'"
    settings = console_demo.settings
    with CellClient(settings) as client:
        client.send("wallet", wallet, "deposit", {"amount": 10})
        client.send("wallet", wallet, "withdraw", {"amount": 99})
        client.send("wallet", wallet, "deposit", {"amount": 5})
    wait_for(
        lambda: _parked(console_demo, wallet)[wallet]["waiting"],
        lambda waiting: waiting == 2,
        timeout=60,
        what="both later items waiting",
    )

    page.goto(console_demo.url("/console/parked", worker=1))
    page.get_by_label("Behaviour").select_option("wallet")
    page.get_by_label("Reason").select_option("InsufficientFunds")
    page.get_by_role("button", name="Filter").click()
    row = page.get_by_test_id("parked-row").filter(has_text=wallet)
    expect(row).to_contain_text("withdraw 99 from a balance of 10")
    expect(row.locator("td").nth(5)).to_have_text("2")
    # The id's markup is shown as text, never made into elements.
    expect(row.get_by_role("link", name=wallet)).to_have_text(wallet)
    expect(page.locator("main b")).to_have_count(0)
    shot(page, "parked")

    row.get_by_role("link", name=wallet).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(wallet)
    items = page.get_by_test_id("parked-item")
    expect(items).to_have_count(2)
    expect(items.first.get_by_test_id("item-text")).to_contain_text('"amount":99')
    expect(items.first.get_by_test_id("item-source")).to_have_text(settings.input_topic("wallet"))
    items.first.locator("summary").click()
    expect(items.first.get_by_test_id("value-hex")).to_contain_text("00000000  7b 22 74 79 70 65")
    shot(page, "parked-cell")

    page.get_by_label(re.compile("Skip the first items")).select_option("1")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Release").click()
    expect(page.get_by_test_id("action-result")).to_contain_text(
        "1 waiting item(s) run again, the first 1 go to the dead-letter topic"
    )
    status = page.get_by_test_id("parked-status")
    expect(status).to_contain_text("not parked", timeout=30_000)
    expect(page.get_by_test_id("cell-data")).to_contain_text('"balance": 15')
    expect(page.locator("main b")).to_have_count(0)

    page.goto(console_demo.url("/console/parked?behaviour=wallet"))
    expect(page.get_by_test_id("parked-count")).to_be_visible()
    expect(page.get_by_test_id("parked-row").filter(has_text=wallet)).to_have_count(0)
    with CellClient(settings) as client:
        client.send("wallet", wallet, "withdraw", {"amount": 15})
    wait_for(lambda: _balance(console_demo, wallet), lambda b: b == 0, timeout=60)


def test_the_dead_letters_page_reads_on_a_phone(
    console_demo: ConsoleDemo, page: Any, shot: Any
) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(console_demo.url("/console/dead-letters"))
    expect(page.get_by_test_id("letters-table")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    shot(page, "dead-letters-phone")
