"""Entity timers and the "replace the whole state" style, with a real worker and Kafka.

One app (``tests.apps.entity_timers``) under its default settings (entities: exactly-once)
and a driven clock: reminders set by messages fire once through ``handle`` and leave their
events in the log under the timer's origin, a cancelled one never fires, an entity without
events keeps the timer it set, and a timer pending when the worker is SIGKILLed fires after a
restart. The same worker replaces a profile whole, twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from stream_app import CellClient, EventRecord
from stream_app.ops.fold import fold_log
from stream_app.testing import (
    DrivenClock,
    WorkerProcess,
    committed_to_end,
    read_topic,
    settings_from_env,
    wait_for,
)
from tests.apps.entity_timers import profile, reminder

pytestmark = pytest.mark.integration

MODULE = "tests.apps.entity_timers"
HOUR = 3_600_000


def view(worker: WorkerProcess, entity: str, entity_id: str) -> dict[str, Any]:
    """The entity's cell as its owner describes it: ``data`` (``{"seq", "state"}``), ``timers``."""
    described: dict[str, Any] = worker.get_json(f"/stream-app/cells/{entity}/{entity_id}/")
    return described


def fired(worker: WorkerProcess, entity_id: str) -> list[str]:
    data = view(worker, "reminder", entity_id)["data"]
    return [] if data is None else list(data["state"]["fired"])


def pending_timers(described: dict[str, Any]) -> dict[str, int]:
    return {timer["name"]: timer["due_ms"] for timer in described["timers"]}


def events_of(bootstrap: str, topic: str) -> dict[str, list[EventRecord]]:
    """Every committed event on ``topic``, by entity id, in log order."""
    found: dict[str, list[EventRecord]] = defaultdict(list)
    for record in read_topic(bootstrap, topic):
        event = EventRecord.model_validate_json(record.value or b"")
        found[event.id].append(event)
    return found


def test_entity_timers_fire_once_through_handle_across_a_restart_and_replacing_the_state(
    cells_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    bootstrap: str,
) -> None:
    env = {**cells_env, "STREAM_APP_CLOCK": "driven"}
    settings = settings_from_env(env)
    clock = DrivenClock(bootstrap, settings.app_id)
    start = clock.set(datetime(2030, 1, 1, 9, tzinfo=UTC))
    worker = start_worker(MODULE, env)
    metrics = worker.get_json("/stream-app/metrics/")
    assert metrics["batch_input"]["exactly_once"] is True, "entities: exactly-once by default"

    with CellClient(settings) as client:
        client.send("reminder", "r1", "remind", {"name": "a", "text": "call", "after_s": 3600})
        client.send("reminder", "r1", "remind", {"name": "b", "text": "write", "after_s": 7200})
        client.send("reminder", "r1", "remind", {"name": "c", "text": "never", "after_s": 3600})
        client.send("reminder", "r1", "cancel", {"name": "c"})
        client.send("reminder", "r2", "arm", {"name": "x", "after_s": 1800})
        client.send("profile", "p1", "replace", {"name": "Ada", "email": "ada@example.com"})
        client.send("profile", "p1", "replace", {"name": "Ada L."})

    r1 = wait_for(
        lambda: view(worker, "reminder", "r1"),
        lambda described: (described["data"] or {}).get("seq") == 4,
        timeout=60,
        what="r1's four events",
    )
    # Messages are handled at the driven time, so the timers are due an hour and two after it.
    assert pending_timers(r1) == {"a": start + HOUR, "b": start + 2 * HOUR}, "c was cancelled"
    r2 = wait_for(
        lambda: view(worker, "reminder", "r2"),
        lambda described: bool(described["timers"]),
        timeout=60,
        what="r2's timer",
    )
    assert pending_timers(r2) == {"x": start + HOUR // 2}
    assert r2["data"] == {"seq": 0, "state": {"pending": {}, "fired": []}}, "no events yet"
    p1 = wait_for(
        lambda: view(worker, "profile", "p1")["data"],
        lambda data: (data or {}).get("seq") == 2,
        timeout=60,
        what="p1 replaced twice",
    )
    assert p1["state"] == {"name": "Ada L.", "email": ""}, "replaced whole, not merged"

    # An hour later: a, x (and the cancelled c) are due.
    clock.set(start + HOUR)
    wait_for(
        lambda: (fired(worker, "r1"), fired(worker, "r2")),
        lambda seen: seen == (["a"], ["x"]),
        timeout=60,
        what="a and x fired",
    )
    assert pending_timers(view(worker, "reminder", "r1")) == {"b": start + 2 * HOUR}
    input_topic = settings.input_topic("reminder")
    wait_for(
        lambda: committed_to_end(bootstrap, settings.app_id, input_topic),
        lambda done: done,
        timeout=60,
        what="the firings committed",
    )

    # b is pending when the worker dies; it comes due while no worker runs.
    worker.kill()
    clock.set(start + 3 * HOUR)
    worker = start_worker(MODULE, env, name="restarted")
    clock.wait_seen(worker)
    wait_for(
        lambda: fired(worker, "r1"),
        lambda seen: seen == ["a", "b"],
        timeout=60,
        what="b fired after the restart",
    )

    events_topic = settings.events_topic("reminder")
    log = wait_for(
        lambda: events_of(bootstrap, events_topic),
        lambda found: len(found["r1"]) >= 6 and len(found["r2"]) >= 1,
        timeout=60,
        what="the reminders' events committed",
    )
    assert [(e.seq, e.type, e.body["name"]) for e in log["r1"]] == [
        (1, "scheduled", "a"),
        (2, "scheduled", "b"),
        (3, "scheduled", "c"),
        (4, "cancelled", "c"),
        (5, "reminded", "a"),
        (6, "reminded", "b"),
    ], "each timer fired once; the cancelled one never"
    for event, name, due in [
        (log["r1"][4], "a", start + HOUR),
        (log["r1"][5], "b", start + 2 * HOUR),
    ]:
        assert event.message_id == event.origin == f"timer/{name}/{due}"
        assert event.at_ms == due
    [x] = log["r2"]
    assert (x.seq, x.type, x.origin) == (1, "reminded", f"timer/x/{start + HOUR // 2}")

    replaced = events_of(bootstrap, settings.events_topic("profile"))["p1"]
    assert [(e.seq, e.type, e.body) for e in replaced] == [
        (1, "replaced", {"name": "Ada", "email": "ada@example.com"}),
        (2, "replaced", {"name": "Ada L.", "email": ""}),
    ]
    for entity in (reminder, profile):
        report = fold_log(entity, settings)
        assert report.ok, (report.duplicates, report.gaps, report.mismatched)
