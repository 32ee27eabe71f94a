"""Event-sourced entities (stream_app.examples.ledger) run as a real worker on a real broker."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_app import CellClient, DeadLetter, EventRecord
from stream_app.examples.ledger import account, counter
from stream_app.testing import WorkerProcess, read_topic, settings_from_env, wait_for

pytestmark = pytest.mark.integration

MODULE = "stream_app.examples.ledger"


def cached(worker: WorkerProcess, entity: str, entity_id: str) -> dict[str, Any] | None:
    """The entity's cached cell data (``{"seq": n, "state": {...}}``) from the owning worker."""
    data: dict[str, Any] | None = worker.get_json(f"/stream-app/cells/{entity}/{entity_id}/")[
        "data"
    ]
    return data


def events_of(bootstrap: str, topic: str) -> dict[str, list[EventRecord]]:
    """Every event on ``topic``, by entity id, in log order."""
    found: dict[str, list[EventRecord]] = defaultdict(list)
    for record in read_topic(bootstrap, topic):
        event = EventRecord.model_validate_json(record.value or b"")
        assert record.key == event.id.encode(), "keyed by the entity id"
        found[event.id].append(event)
    return found


def test_counter_events_state_and_the_effect_at_ten(
    start_worker: Callable[..., WorkerProcess],
    cells_env: dict[str, str],
    bootstrap: str,
    tmp_path: Path,
) -> None:
    effects = tmp_path / "effects.log"
    env = {**cells_env, "LEDGER_EFFECT_LOG": str(effects)}
    worker = start_worker(MODULE, env)
    with CellClient(settings_from_env(env)) as client:
        for _ in range(12):
            client.send("counter", "c1", "increment", {"by": 1})
        client.send("counter", "c2", "increment", {"by": 3})
    wait_for(
        lambda: cached(worker, "counter", "c1"),
        lambda data: data is not None and data["seq"] == 12,
        timeout=60,
        what="counter c1 at sequence 12",
    )
    assert cached(worker, "counter", "c1") == {"seq": 12, "state": {"value": 12}}
    assert cached(worker, "counter", "c2") == {"seq": 1, "state": {"value": 3}}

    topic = f"{env['STREAM_APP_APP_ID']}.counter.events"
    log = events_of(bootstrap, topic)
    assert [e.seq for e in log["c1"]] == list(range(1, 13)), "one event per message, no gaps"
    assert {e.type for e in log["c1"]} == {"increased"}
    folded = counter.init()
    for event in log["c1"]:
        folded = counter.update(counter.event_types[event.type].model_validate(event.body), folded)
    assert folded.value == 12, "the cached state is the fold of the event log"

    lines = wait_for(
        lambda: effects.read_text().splitlines() if effects.exists() else [],
        lambda seen: len(seen) >= 1,
        timeout=60,
        what="the effect of reaching ten dispatched",
    )
    assert len(lines) == 1, lines
    _, entity_id, payload = lines[0].split(" ", 2)
    assert entity_id == "c1" and json.loads(payload) == {"value": 10}


def test_bank_account_rejects_an_overdraft_and_logs_only_what_it_accepted(
    start_worker: Callable[..., WorkerProcess], cells_env: dict[str, str], bootstrap: str
) -> None:
    worker = start_worker(MODULE, cells_env)
    with CellClient(settings_from_env(cells_env)) as client:
        client.send("account", "acc-1", "open", {"owner": "alice"})
        client.send("account", "acc-1", "deposit", {"amount": 500})
        client.send("account", "acc-1", "withdraw", {"amount": 800})  # overdraft
        client.send("account", "acc-1", "withdraw", {"amount": 200})
        client.send("account", "acc-2", "deposit", {"amount": 100})  # not open
    wait_for(
        lambda: cached(worker, "account", "acc-1"),
        lambda data: data is not None and data["seq"] == 3,
        timeout=60,
        what="acc-1 at sequence 3",
    )
    assert cached(worker, "account", "acc-1") == {
        "seq": 3,
        "state": {"owner": "alice", "balance": 300},
    }
    assert cached(worker, "account", "acc-2") is None, "no event, nothing cached"

    app_id = cells_env["STREAM_APP_APP_ID"]
    letters = wait_for(
        lambda: [
            DeadLetter.from_record(r.key, r.value, r.headers)
            for r in read_topic(bootstrap, f"{app_id}.dead-letters")
        ],
        lambda seen: len(seen) >= 2,
        timeout=60,
        what="two rejected messages dead-lettered",
    )
    reasons = sorted((letter.reason, letter.error) for letter in letters)
    assert reasons[0][0] == reasons[1][0] == "rejected"
    assert any("overdraft: balance 500, withdrawal 800" in error for _, error in reasons)
    assert any("not open" in error for _, error in reasons)

    log = events_of(bootstrap, f"{app_id}.account.events")
    assert [(e.seq, e.type, e.body) for e in log["acc-1"]] == [
        (1, "opened", {"owner": "alice"}),
        (2, "deposited", {"amount": 500}),
        (3, "withdrawn", {"amount": 200}),
    ]
    assert "acc-2" not in log
    assert account.name == "account"
