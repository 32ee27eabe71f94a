"""The example apps of docs/cells.md, each run as a real `faust worker` on a real broker."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stream_app import CellClient, DeadLetter
from stream_app.core.cell import effect_id
from stream_app.testing import WorkerProcess, read_topic, settings_from_env, wait_for

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none when it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cell(worker: WorkerProcess, behaviour: str, cell_id: str) -> dict[str, Any]:
    """A cell as the worker describes it (also when it is dead: ``alive`` is false)."""
    described: dict[str, Any] = worker.get_json(f"/stream-app/cells/{behaviour}/{cell_id}/")
    return described


def whole_second_ms(after_s: int) -> int:
    """A due time ``after_s`` seconds from now, on a whole second, so that the worker's
    ``int(at.timestamp() * 1000)`` is exactly this number."""
    return (math.ceil(time.time()) + after_s) * 1000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def test_reminders_fire_through_the_effect_handler(
    start_worker: StartWorker, cells_env: dict[str, str], tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.jsonl"
    env = {**cells_env, "REMINDERS_OUTBOX": str(outbox)}
    settings = settings_from_env(env)
    worker = start_worker("stream_app.examples.reminders", env)

    first, tea = whole_second_ms(3), whole_second_ms(4)
    gym, later = whole_second_ms(3), whole_second_ms(5)
    nap = whole_second_ms(6)
    with CellClient(settings) as client:
        # alice: the second "set" of a name replaces the first.
        client.send("reminder", "alice", "set", {"name": "tea", "text": "Tea", "at": iso(first)})
        client.send("reminder", "alice", "set", {"name": "tea", "text": "Green", "at": iso(tea)})
        # bob: a cancelled reminder due before one that fires.
        client.send("reminder", "bob", "set", {"name": "gym", "text": "Gym", "at": iso(gym)})
        client.send("reminder", "bob", "cancel", {"name": "gym"})
        client.send("reminder", "bob", "set", {"name": "later", "text": "Later", "at": iso(later)})
        # carol: snoozed by two seconds.
        client.send("reminder", "carol", "set", {"name": "nap", "text": "Nap", "at": iso(nap)})
        client.send("reminder", "carol", "snooze", {"name": "nap", "by_s": 2})
        # erin: a recurring digest, with one reminder far away.
        client.send("reminder", "erin", "set", {"name": "far", "text": "Far", "after_s": 3600})
        client.send("reminder", "erin", "digest", {"every_s": 0.5})

    carol = wait_for(
        lambda: cell(worker, "reminder", "carol"),
        lambda c: [t["due_ms"] for t in c["timers"]] == [nap + 2000],
        timeout=30,
        what="carol's nap snoozed to two seconds later",
    )
    assert carol["data"] == {"pending": {"nap": "Nap"}, "digest_every_s": None}
    assert carol["version"] == 2

    def ids(to: str, name: str) -> list[str]:
        return [n["id"] for n in jsonl(outbox) if n["to"] == to and n.get("reminder") == name]

    def expected_id(cell_id: str, name: str, due: int) -> str:
        origin = f"timer/reminder:{name}/{due}"
        return effect_id(settings.app_id, "reminder", cell_id, origin, 0)

    wait_for(
        lambda: [ids("alice", "tea"), ids("bob", "later"), ids("carol", "nap")],
        lambda seen: all(seen),
        timeout=60,
        what="alice's tea, bob's later and carol's nap notified",
    )
    # The handler got each effect with the id derived from the timer that fired.
    assert ids("alice", "tea") == [expected_id("alice", "tea", tea)]
    assert ids("bob", "later") == [expected_id("bob", "later", later)]
    assert ids("carol", "nap") == [expected_id("carol", "nap", nap + 2000)]
    texts = {(n["to"], n.get("reminder")): n.get("text") for n in jsonl(outbox)}
    assert texts[("alice", "tea")] == "Green"
    # bob's gym was due two seconds before "later" fired on the same partition: cancelled.
    assert ids("bob", "gym") == []
    # Nothing left to remind of: the cells are dead (key deleted) and have no timers.
    for person in ("alice", "bob", "carol"):
        described = cell(worker, "reminder", person)
        assert described["alive"] is False and described["timers"] == [], described

    digests = wait_for(
        lambda: [n for n in jsonl(outbox) if n["to"] == "erin" and "digest" in n],
        lambda found: len(found) >= 3,
        timeout=30,
        what="three digests for erin",
    )
    assert all(d["digest"] == ["far"] for d in digests)
    assert len({d["id"] for d in digests}) == len(digests)
    metrics = worker.get_json("/stream-app/metrics/")
    assert metrics["timers_fired"] >= 6 and metrics["effects_done"] >= 6, metrics
    assert metrics["timer_lag_ms"]["count"] >= 6, metrics
    print(f"timer firing lag (ms): {metrics['timer_lag_ms']}")
    erin = cell(worker, "reminder", "erin")
    assert {t["name"]: t["every_ms"] for t in erin["timers"]} == {
        "digest": 500,
        "reminder:far": None,
    }


def test_tickets_move_reject_and_keep_workloads(
    start_worker: StartWorker, cells_env: dict[str, str], bootstrap: str
) -> None:
    settings = settings_from_env(cells_env)
    worker = start_worker("stream_app.examples.tickets", cells_env)

    with CellClient(settings) as client:
        client.send("ticket", "00000001", "open", {"title": "Printer on fire"})
        client.send("ticket", "00000001", "assign", {"to": "alice"})
        client.send("ticket", "00000001", "resolve", {"close_after_s": 1})
        client.send("ticket", "00000002", "open", {"title": "Coffee machine"})
        client.send("ticket", "00000002", "close")  # open -> closed is not a transition
        client.send("ticket", "00000003", "open", {"title": "Wi-Fi"})
        client.send("ticket", "00000003", "assign", {"to": "bob"})
        client.send("ticket", "00000003", "assign", {"to": "alice"})

    first = wait_for(
        lambda: cell(worker, "ticket", "00000001"),
        lambda c: c["alive"] and c["data"]["status"] == "closed",
        timeout=60,
        what="ticket #1 closed by its auto-close timer",
    )
    assert first["data"]["history"] == [
        "open",
        "assigned to alice",
        "resolved",
        "closed automatically",
    ]
    assert first["timers"] == []

    # The tickets' send() kept the workloads: #1 went and #3 moved from bob to alice.
    alice = wait_for(
        lambda: cell(worker, "assignee", "alice"),
        lambda c: c["alive"] and c["data"] == {"tickets": ["00000003"]},
        timeout=30,
        what="alice's workload = [#3]",
    )
    assert alice["data"] == {"tickets": ["00000003"]}
    assert cell(worker, "assignee", "bob")["alive"] is False

    def rejected() -> list[DeadLetter]:
        return [
            letter
            for r in read_topic(bootstrap, settings.dead_letter_topic)
            if (letter := DeadLetter.from_record(r.key, r.value, r.headers)).reason == "rejected"
        ]

    letters = wait_for(rejected, bool, timeout=30, what="a rejected dead letter")
    assert [(x.key, x.behaviour) for x in letters] == [(b"00000002", "ticket")]
    assert "ticket #2: is open, must be resolved" in letters[0].error
    assert json.loads(letters[0].value or b"")["type"] == "close"
    record = next(
        r for r in read_topic(bootstrap, settings.dead_letter_topic) if r.key == b"00000002"
    )
    assert ("stream_app.dlq.reason", b"rejected") in record.headers
    # A rejected message changes nothing.
    assert cell(worker, "ticket", "00000002")["data"]["status"] == "open"
    # around() logged the transitions with the display id.
    log = worker.log_text()
    assert "ticket/#1: new -> open" in log, log[-3000:]
    assert "ticket/#1: resolved -> closed" in log, log[-3000:]
    assert "ticket/#2: rejected: is open, must be resolved" in log, log[-3000:]


def test_audit_handlers_see_every_record(
    start_worker: StartWorker, cells_env: dict[str, str], tmp_path: Path
) -> None:
    trail = tmp_path / "trail.jsonl"
    env = {**cells_env, "AUDIT_TRAIL": str(trail)}
    settings = settings_from_env(env)
    worker = start_worker("stream_app.examples.audit", env)
    topic = f"{settings.app_id}.audit"

    events = [
        json.dumps({"action": f"action-{i}", "severity": "high" if i % 10 == 0 else "low"})
        for i in range(40)
    ]
    with CellClient(settings) as client:
        for i, event in enumerate(events):
            client.produce_raw(topic, f"user-{i % 7}", event.encode())
        client.produce_raw(topic, "user-x", b"not json")

    lines = wait_for(
        lambda: jsonl(trail),
        lambda found: len(found) >= len(events) + 1,
        timeout=60,
        what=f"{len(events) + 1} trail lines",
    )
    assert sorted(line["event"] for line in lines) == sorted([*events, "not json"])
    # Each line names its record, so a reader can drop the repeats of a redelivery.
    assert len({line["source"] for line in lines}) == len(lines)
    alarms = wait_for(
        lambda: [x for x in worker.log_text().splitlines() if "ALARM" in x],
        lambda found: len(found) >= 4,
        timeout=30,
        what="four alarms in the worker log",
    )
    assert sorted(a.split("ALARM ")[1].split(" by ")[0] for a in alarms) == [
        "action-0",
        "action-10",
        "action-20",
        "action-30",
    ]
