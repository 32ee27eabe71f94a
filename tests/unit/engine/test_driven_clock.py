"""The engine under a ManualClock: the time of every invocation and of timers is the clock's.

A message is handled at the clock's time whatever its record's timestamp; timers come due when
the clock passes them and fire at its time; a cron timer re-arms at its next occurrence after
the clock and is delivered as recurring; the sweep asks the clock whether a timer is due.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState
from stream_app.core.partitioner import partition_for
from stream_app.engine.ports import ManualClock
from tests.unit.engine.fakes import PARTITIONS, Harness

NEW_YORK = ZoneInfo("America/New_York")


class Log(BaseModel):
    """What happened to a cell."""

    noted: list[int] = []
    fired: list[list[Any]] = []


class Arm(BaseModel):
    """Set a timer: a cron one if ``cron`` is given, else one ``after_ms`` from now."""

    cron: str | None = None
    tz: str | None = None
    after_ms: int | None = None


class Note(BaseModel):
    """Record the invocation's ``now``."""


def clocked() -> Behaviour[Log]:
    def handle(state: CellState[Log]) -> None:
        assert state.message is not None
        data = state.data or Log()
        body: Any = state.message.body
        if isinstance(body, Arm) and body.cron is not None:
            state.set_timer("t", cron=body.cron, tz=body.tz)
        elif isinstance(body, Arm):
            state.set_timer("t", after=(body.after_ms or 0) / 1000)
        else:
            data.noted.append(state.now_ms)
        state.data = data

    def timeout(state: CellState[Log]) -> None:
        assert state.data is not None and state.timer is not None
        timer = state.timer
        state.data.fired.append([timer.due_ms, state.now_ms, timer.missed, timer.recurring])

    return Behaviour(
        "clocked",
        messages={"arm": Arm, "note": Note},
        data=Log,
        handle_message=handle,
        on_timeout=timeout,
    )


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def test_a_message_is_handled_at_the_clock_time_not_its_record_timestamp() -> None:
    clock = ManualClock(1_000_000)
    harness = Harness(clocked(), clock=clock)
    harness.feed(harness.record("a", "note", timestamp_ms=5))
    clock.move_to(2_000_000)
    harness.feed(harness.record("a", "note", timestamp_ms=9_999_999))
    assert harness.data("a") == {"noted": [1_000_000, 2_000_000], "fired": []}


def test_a_cron_timer_fires_when_the_clock_passes_it_and_re_arms() -> None:
    start = ms(datetime(2027, 11, 6, 12, tzinfo=NEW_YORK))
    clock = ManualClock(start)
    harness = Harness(clocked(), clock=clock)
    harness.feed(harness.record("a", "arm", {"cron": "30 1 * * *", "tz": "America/New_York"}))
    first = ms(datetime(2027, 11, 7, 1, 30, tzinfo=NEW_YORK))  # EDT: the first 01:30
    assert [t["due_ms"] for t in harness.engine.describe("a")["timers"]] == [first]
    harness.wake("a")
    assert harness.data("a")["fired"] == [], "not due while the clock is before it"

    clock.move_to(first + 90 * 60_000)  # past both 01:30s of the fall-back night
    harness.wake("a")
    assert harness.data("a")["fired"] == [[first, first + 90 * 60_000, 0, True]]
    [timer] = harness.engine.describe("a")["timers"]
    assert (timer["due_ms"], timer["cron"], timer["tz"]) == (
        ms(datetime(2027, 11, 8, 1, 30, tzinfo=NEW_YORK)),
        "30 1 * * *",
        "America/New_York",
    )


def test_the_sweep_asks_the_clock_whether_a_timer_is_due() -> None:
    clock = ManualClock(1_000_000)
    harness = Harness(clocked(), clock=clock)
    harness.feed(harness.record("a", "arm", {"after_ms": 60_000}))
    partition = partition_for(b"a", PARTITIONS)
    harness.wakes.sent.clear()
    asyncio.run(harness.engine.sweep())
    assert (harness.topic, partition) not in harness.wakes.sent
    clock.move_to(1_060_000)
    asyncio.run(harness.engine.sweep())
    assert (harness.topic, partition) in harness.wakes.sent
    harness.wake("a")
    assert harness.data("a")["fired"] == [[1_060_000, 1_060_000, 0, False]]


def test_the_manual_clock_never_goes_back_unless_set() -> None:
    clock = ManualClock(100)
    assert clock.move_to(50) is False and clock.now_ms() == 100
    assert clock.move_to(150) is True and clock.invocation_ms(7) == 150
    clock.set(20)
    assert clock.now_ms() == 20
