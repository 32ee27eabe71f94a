"""Timer firing through wake records, recurring timers, and the misfire policies.

A timer due while the worker owned its partition fires at the next wake. One that came due
while no worker owned the partition (here: before ``restart()``, which takes the partitions
again now) follows its misfire policy.
"""

from __future__ import annotations

import asyncio

from stream_app.core.timers import Misfire
from tests.unit.engine.fakes import Harness, now_ms
from tests.unit.engine.probe import probe


def test_a_due_timer_fires_at_the_next_wake_and_leaves_the_tables() -> None:
    harness = Harness(probe())
    due = now_ms() - 1
    record = harness.record("a", "arm", {"at_ms": due})
    harness.feed(record)
    harness.wake("a")
    data = harness.data("a")
    assert data is not None and data["fired"] == [["t", due, 0]]
    assert list(harness.timers.keys(record.partition)) == []
    assert harness.metrics.timers_fired == 1
    harness.wake("a")
    assert harness.data("a") == data, "fired once"


def test_a_timer_not_due_does_not_fire() -> None:
    harness = Harness(probe())
    harness.feed(harness.record("a", "arm", {"at_ms": now_ms() + 60_000}))
    harness.wake("a")
    assert harness.data("a") == {"count": 0, "boots": 0, "fired": []}


def test_a_recurring_timer_fires_and_arms_its_successor() -> None:
    harness = Harness(probe())
    first = now_ms() - 1
    record = harness.record("a", "arm", {"at_ms": first, "every_ms": 60_000})
    harness.feed(record)
    harness.wake("a")
    data = harness.data("a")
    assert data is not None and data["fired"] == [["t", first, 0]]
    assert len(list(harness.timers.keys(record.partition))) == 1
    [timer] = harness.engine.describe("a")["timers"]
    assert (timer["due_ms"], timer["every_ms"]) == (first + 60_000, 60_000)


def test_sweep_wakes_a_partition_with_a_due_timer() -> None:
    harness = Harness(probe())
    record = harness.record("a", "arm", {"at_ms": now_ms() - 1})
    harness.feed(record)
    harness.wakes.sent.clear()
    asyncio.run(harness.engine.sweep())
    assert (harness.topic, record.partition) in harness.wakes.sent


def missed_while_away(misfire: Misfire, *, every_ms: int | None, max_catch_up: int = 1) -> Harness:
    """A harness whose cell ``a`` has a timer that came due while its partition was not owned:
    armed in the past, then the worker restarted (and booted the partition) and woke it."""
    harness = Harness(probe())
    body = {"at_ms": now_ms() - 10_500, "misfire": misfire.value, "max_catch_up": max_catch_up}
    if every_ms is not None:
        body["every_ms"] = every_ms
    harness.feed(harness.record("a", "arm", body))
    harness.restart()
    harness.wake("a")
    return harness


def test_misfire_fire_once_fires_once_for_all_it_missed() -> None:
    harness = missed_while_away(Misfire.FIRE_ONCE, every_ms=1_000)
    data = harness.data("a")
    assert data is not None and len(data["fired"]) == 1
    assert data["fired"][0][2] >= 9, "the others are counted as missed"
    [timer] = harness.engine.describe("a")["timers"]
    assert timer["due_ms"] > now_ms() - 1_000, "re-armed at its next occurrence"


def test_misfire_skip_drops_what_was_missed() -> None:
    harness = missed_while_away(Misfire.SKIP, every_ms=None)
    data = harness.data("a")
    assert data is not None and data["fired"] == []
    assert harness.metrics.timers_skipped == 1
    assert harness.engine.describe("a")["timers"] == []


def test_misfire_catch_up_fires_the_latest_occurrences() -> None:
    harness = missed_while_away(Misfire.CATCH_UP, every_ms=1_000, max_catch_up=3)
    data = harness.data("a")
    assert data is not None and len(data["fired"]) == 3
    dues = [fired[1] for fired in data["fired"]]
    assert dues == sorted(dues) and dues[1] - dues[0] == 1_000
    assert data["fired"][-1][2] >= 7, "the last firing counts what was not delivered"
    assert data["boots"] == 1, "the restart booted the cell first"


def test_a_backlog_message_is_not_overtaken_by_a_timer_due_after_it_was_sent() -> None:
    # The worker is behind: it reads, a minute late, a timer set for 1 s later and the
    # message, sent right after, that cancels it. The cancel comes first; nothing fires.
    harness = Harness(probe())
    sent = now_ms() - 60_000
    harness.feed(
        harness.record("a", "arm", {"at_ms": sent + 1_000}, timestamp_ms=sent),
        harness.record("a", "disarm", {}, timestamp_ms=sent + 1),
    )
    harness.wake("a")
    assert harness.data("a") == {"count": 0, "boots": 0, "fired": []}


def test_a_message_sent_after_a_timer_came_due_fires_the_timer_first() -> None:
    harness = Harness(probe())
    sent = now_ms() - 60_000
    harness.feed(
        harness.record("a", "arm", {"at_ms": sent + 1_000}, timestamp_ms=sent),
        harness.record("a", "disarm", {}, timestamp_ms=sent + 2_000),
    )
    data = harness.data("a")
    assert data is not None and data["fired"] == [["t", sent + 1_000, 0]]
