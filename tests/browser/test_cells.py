"""The cells and entities pages in a real browser: search a cell, read it on any worker, send
it a message (checked in the page, and again on the server), an entity's events, and a cell id
and data that carry markup shown as text."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from stream_app.clients.cells import CellClient
from stream_app.console.when import at_ms
from stream_app.testing import wait_for
from tests.browser.conftest import ConsoleDemo

pytestmark = pytest.mark.integration

#: How long a change sent from a test takes, at most, to show on the page.
SEEN_MS = 20_000


def cell_url(demo: ConsoleDemo, behaviour: str, cell_id: str, *, worker: int = 0) -> str:
    """The console page of a cell on one worker."""
    return demo.url(f"/console/cells/{behaviour}/{quote(cell_id, safe='')}", worker=worker)


def send_messages(demo: ConsoleDemo, behaviour: str, cell_id: str, *messages: Any) -> None:
    """Send ``(type, body)`` messages to a cell through Kafka."""
    with CellClient(demo.settings) as client:
        for type_, body in messages:
            client.send(behaviour, cell_id, type_, body)


def test_search_a_counter_cell_from_the_form(
    console_demo: ConsoleDemo, page: Any, shot: Callable[[Any, str], Path]
) -> None:
    page.goto(console_demo.url("/console/cells", worker=1))
    page.get_by_label("Behaviour").select_option("counter")
    page.get_by_role("button", name="Open").click()
    listed = page.get_by_test_id("cells-list")
    expect(listed.get_by_role("link", name="alice", exact=True)).to_be_visible()
    expect(listed.get_by_role("link", name="bob", exact=True)).to_be_visible()
    expect(page.get_by_test_id("cells-count")).to_contain_text("live cells")
    shot(page, "cells-search")

    page.get_by_label("Cell id").fill("bob")
    page.get_by_role("button", name="Open").click()
    expect(page).to_have_url(re.compile(r"/console/cells/counter/bob$"))
    expect(page.get_by_test_id("cell-id")).to_have_text("bob")
    count = console_demo.get_json("/stream-app/cells/counter/bob/")["data"]["count"]
    expect(page.get_by_test_id("cell-data")).to_contain_text(f'"count": {count}')
    expect(page.get_by_test_id("cell-version")).not_to_be_empty()


def test_a_missing_cell_and_an_unknown_behaviour_say_so(
    console_demo: ConsoleDemo, page: Any
) -> None:
    page.goto(cell_url(console_demo, "counter", f"never-{uuid.uuid4().hex}"))
    expect(page.get_by_test_id("cell-missing")).to_contain_text("No live cell")
    # Through the request API: a page that loads a 404 logs it as a console error.
    response = page.request.get(console_demo.url("/console/cells/no-such-behaviour/x"))
    assert response.status == 404 and "no behaviour named" in response.text()
    for path, reason in (
        ("/console/cells/counter/alice?part=events", "for a cell of counter"),
        ("/console/cells/counter/alice?part=nope", "no part"),
        (f"/console/cells/counter/{'x' * 1001}", "at most 1000 characters"),
        (f"/console/cells?behaviour=counter&id={'x' * 1001}", "at most 1000 characters"),
    ):
        refused = page.request.get(console_demo.url(path))
        assert refused.status == 400 and reason in refused.text(), path


def test_send_an_increment_from_the_page_and_see_the_count_change(
    console_demo: ConsoleDemo, page: Any, shot: Callable[[Any, str], Path]
) -> None:
    cell_id = f"sent-{uuid.uuid4().hex[:8]}"
    send_messages(console_demo, "counter", cell_id, ("increment", {"by": 1}))
    wait_for(
        lambda: console_demo.get_json("/stream-app/cells/counter/").get(cell_id, {}).get("count"),
        lambda count: count == 1,
        timeout=30,
        what=f"counter {cell_id} created",
    )
    for worker in (0, 1):
        page.goto(cell_url(console_demo, "counter", cell_id, worker=worker))
        expect(page.get_by_test_id("cell-data")).to_contain_text('"count": 1')
    page.get_by_label("Message type").select_option("increment")
    page.get_by_label("Body (JSON object)").fill('{"by": 41}')
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_test_id("action-result")).to_contain_text(
        f"increment sent to counter/{cell_id}"
    )
    expect(page.get_by_test_id("cell-data")).to_contain_text('"count": 42', timeout=SEEN_MS)
    shot(page, "cell")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "cell-phone")


def test_a_parked_cell_shows_its_error_and_its_waiting_messages(
    console_demo: ConsoleDemo, page: Any, shot: Callable[[Any, str], Path]
) -> None:
    wallet = f"wallet-{uuid.uuid4().hex[:8]}"
    send_messages(
        console_demo, "wallet", wallet, ("deposit", {"amount": 10}), ("withdraw", {"amount": 99})
    )
    wait_for(
        lambda: console_demo.get_json("/stream-app/parked/wallet/"),
        lambda parked: wallet in parked,
        timeout=60,
        what=f"wallet {wallet} parked",
    )
    page.goto(cell_url(console_demo, "wallet", wallet, worker=1))
    expect(page.get_by_test_id("cell-data")).to_contain_text('"balance": 10')
    parked = page.get_by_test_id("cell-parked")
    expect(parked).to_contain_text("InsufficientFunds: withdraw 99 from a balance of 10")
    expect(parked.locator("tbody tr")).to_have_count(1)
    expect(parked.locator("tbody tr")).to_contain_text('"amount":99')
    shot(page, "cell-parked")
    parked.get_by_role("link", name=re.compile("parked cells page")).click()
    expect(page).to_have_url(re.compile(rf"/console/parked/cell\?behaviour=wallet&id={wallet}$"))
    expect(page.locator("main")).to_contain_text("InsufficientFunds")


def test_pending_timers_show_their_due_times(console_demo: ConsoleDemo, page: Any) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    send_messages(console_demo, "fitness", user, ("add_quest", {"quest": "three_workouts"}))
    path = f"/stream-app/cells/fitness/{user}/"
    wait_for(
        lambda: console_demo.get_json("/stream-app/cells/fitness/"),
        lambda contexts: user in contexts,
        timeout=30,
        what=f"the fitness context {user}",
    )
    timers = console_demo.get_json(path)["timers"]
    page.goto(cell_url(console_demo, "fitness", user))
    rows = page.get_by_test_id("cell-timers").locator("tbody tr")
    expect(rows).to_have_count(len(timers))
    deadline = next(t for t in timers if t["name"].endswith(":deadline"))
    row = rows.filter(has_text=deadline["name"])
    expect(row).to_contain_text(str(deadline["due_ms"]))
    # UTC to the millisecond, as every console page writes times, and 7 days less the seconds
    # since the quest was added.
    expect(row).to_contain_text(f"{at_ms(deadline['due_ms'])} (in 6 d 23 h)")
    expect(rows.filter(has_text=":cron:")).to_contain_text("cron 0 18 */2 * *")


def test_the_page_blocks_a_bad_body_and_the_server_refuses_a_forged_one(
    console_demo: ConsoleDemo, page: Any
) -> None:
    cell_id = f"bad-{uuid.uuid4().hex[:8]}"
    page.goto(cell_url(console_demo, "counter", cell_id))
    body, errors = page.get_by_label("Body (JSON object)"), page.get_by_test_id("send-errors")
    send = page.get_by_role("button", name="Send")
    expect(body).to_have_value(re.compile(r'"by": 1'))
    expect(send).to_be_enabled()
    for bad, reason in (
        ('{"by": 0}', "by: must be at least 1"),
        ('{"by": "2"}', "by: must be integer, not string"),
        ('{"by": 1, "extra": true}', "extra: is not allowed (known: by)"),
        ('{"by": 1', "body: not JSON"),
        ("[1]", "body: must be a JSON object, not array"),
    ):
        body.fill(bad)
        expect(errors).to_contain_text(reason)
        expect(send).to_be_disabled()
        expect(body).to_have_attribute("aria-invalid", "true")
    body.fill('{"by": 5}')
    expect(errors).to_be_empty()
    expect(send).to_be_enabled()

    token = page.locator('meta[name="console-csrf"]').get_attribute("content")
    assert token
    forged = page.request.post(
        console_demo.url("/console/cells/send"),
        form={"behaviour": "counter", "cell_id": cell_id, "type": "increment", "body": '{"by": 0}'},
        headers={"X-Console-CSRF": token},
    )
    assert forged.status == 400
    assert "by: Input should be greater than or equal to 1" in forged.text()
    unknown = page.request.post(
        console_demo.url("/console/cells/send"),
        form={"behaviour": "counter", "cell_id": cell_id, "type": "explode", "body": "{}"},
        headers={"X-Console-CSRF": token},
    )
    assert unknown.status == 400 and "no message type" in unknown.text()
    no_token = page.request.post(
        console_demo.url("/console/cells/send"),
        form={"behaviour": "counter", "cell_id": cell_id, "type": "increment", "body": "{}"},
    )
    assert no_token.status == 403


def test_the_validator_covers_the_schema_pydantic_emits(
    console_demo: ConsoleDemo, page: Any
) -> None:
    page.goto(cell_url(console_demo, "account", f"schema-{uuid.uuid4().hex[:8]}"))
    page.get_by_label("Message type").select_option("open")
    errors = page.get_by_test_id("send-errors")
    expect(page.get_by_label("Body (JSON object)")).to_have_value(re.compile(r'"owner": ""'))
    expect(errors).to_contain_text("owner: must have at least 1 character")
    page.get_by_label("Body (JSON object)").fill("{}")
    expect(errors).to_contain_text("owner: is required")
    page.get_by_label("Message type").select_option("deposit")
    page.get_by_label("Body (JSON object)").fill('{"amount": 0}')
    expect(errors).to_contain_text("amount: must be more than 0")

    schema = {
        "$defs": {
            "Env": {
                "properties": {"type": {"const": "t"}, "body": {"$ref": "#/$defs/Body"}},
            },
            "Body": {
                "type": "object",
                "additionalProperties": False,
                "required": ["kind"],
                "properties": {
                    "kind": {"enum": ["a", "b"]},
                    "note": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                    "inner": {"$ref": "#/$defs/Inner"},
                    "ratio": {"type": "number", "maximum": 1},
                },
            },
            "Inner": {"type": "object", "properties": {"n": {"type": "integer"}}},
        }
    }
    cases = {
        '{"kind": "a", "note": null, "tags": ["x"], "inner": {"n": 2}, "ratio": 0.5}': [],
        '{"kind": "c"}': ['kind: must be one of "a", "b"'],
        '{"kind": "a", "note": "long"}': ["note: must have at most 3 character(s)"],
        '{"kind": "a", "tags": ["x", 1, "z"]}': [
            "tags: must have at most 2 item(s)",
            "tags[1]: must be string, not integer",
        ],
        '{"kind": "a", "inner": {"n": 1.5}}': ["inner.n: must be integer, not number"],
        '{"kind": "a", "ratio": 2}': ["ratio: must be at most 1"],
        '{"kind": "a", "ratio": true}': ["ratio: must be number, not boolean"],
    }
    for text, expected in cases.items():
        found = page.evaluate("([s, t]) => window.streamApp.bodyErrors(s, 't', t)", [schema, text])
        assert found == expected, text


def test_an_entity_shows_its_state_and_its_events_with_their_seqs(
    console_demo: ConsoleDemo, page: Any, shot: Callable[[Any, str], Path]
) -> None:
    account = f"acc-{uuid.uuid4().hex[:8]}"
    send_messages(
        console_demo,
        "account",
        account,
        ("open", {"owner": "ann"}),
        ("deposit", {"amount": 100}),
        ("withdraw", {"amount": 30}),
    )
    wait_for(
        lambda: console_demo.get_json(f"/stream-app/entities/account/{account}/")["seq"],
        lambda seq: seq == 3,
        timeout=30,
        what=f"account {account} at seq 3",
    )
    page.goto(cell_url(console_demo, "account", account, worker=1))
    expect(page.get_by_test_id("entity-seq")).to_have_text("3")
    expect(page.get_by_test_id("entity-state")).to_contain_text('"balance": 70')
    events = page.get_by_test_id("entity-events").locator("tbody tr")
    expect(events).to_have_count(3)
    for row, (seq, type_, body) in enumerate(
        ((3, "withdrawn", '"amount": 30'), (2, "deposited", '"amount": 100'), (1, "opened", "ann"))
    ):
        cells = events.nth(row).locator("td")
        expect(cells.nth(0)).to_have_text(str(seq))
        expect(cells.nth(1)).to_have_text(type_)
        expect(cells.nth(2)).to_contain_text(body)

    page.get_by_label("Message type").select_option("deposit")
    page.get_by_label("Body (JSON object)").fill('{"amount": 5}')
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_test_id("entity-seq")).to_have_text("4", timeout=SEEN_MS)
    expect(events).to_have_count(4, timeout=SEEN_MS)
    expect(events.first.locator("td").nth(1)).to_have_text("deposited")
    shot(page, "entity")


def test_a_cell_id_and_data_with_markup_show_as_text(console_demo: ConsoleDemo, page: Any) -> None:
    counter_id = "<script>window.__xss=1</script>"
    account_id = f"<script>window.__xss=2</script>{uuid.uuid4().hex[:6]}"
    owner = "<img src=x onerror=window.__xss=3><script>window.__xss=4</script>"
    send_messages(console_demo, "counter", counter_id, ("increment", {"by": 1}))
    send_messages(console_demo, "account", account_id, ("open", {"owner": owner}))
    wait_for(
        lambda: console_demo.get_json(
            f"/stream-app/entities/account/{quote(account_id, safe='')}/"
        ),
        lambda entity: entity["seq"] == 1,
        timeout=30,
        what="the account with markup opened",
    )
    wait_for(
        lambda: console_demo.get_json("/stream-app/cells/counter/"),
        lambda cells: counter_id in cells,
        timeout=30,
        what="the counter with markup in its id",
    )

    page.goto(console_demo.url("/console/cells?behaviour=counter"))
    link = page.get_by_role("link", name=counter_id, exact=True)
    expect(link).to_be_visible()
    link.click()
    expect(page.get_by_test_id("cell-id")).to_have_text(counter_id)
    expect(page.get_by_test_id("cell-data")).to_contain_text('"count"')
    assert page.evaluate("window.__xss") is None

    page.goto(cell_url(console_demo, "account", account_id))
    expect(page.get_by_test_id("cell-id")).to_have_text(account_id)
    expect(page.get_by_test_id("entity-state")).to_contain_text(owner)
    expect(page.get_by_test_id("entity-events")).to_contain_text(owner)
    page.get_by_role("button", name="Refresh events").click()
    expect(page.get_by_test_id("entity-events")).to_contain_text(owner)
    assert page.evaluate("window.__xss") is None
    assert page.locator("main script:not([type='application/json'])").count() == 0
