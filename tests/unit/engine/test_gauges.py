"""What the engine tells the metrics: control records read, parked cells, the next due timer."""

from __future__ import annotations

import asyncio

import pytest

from stream_app.core.partitioner import partition_for
from tests.unit.engine.fakes import PARTITIONS, Harness, now_ms
from tests.unit.engine.probe import Switch, probe


def test_control_records_are_counted_and_messages_are_not() -> None:
    harness = Harness(probe())
    harness.feed(harness.record("a", "add", {"by": 1}), harness.record("b", "add", {"by": 1}))
    assert harness.engine.control_records == 0
    harness.wake("a")
    harness.feed(harness.control(0, b"dance", b"a"))
    assert harness.engine.control_records == 2, "a wake and an unknown control record"


def test_parked_cells_are_those_of_the_booted_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_pause(seconds: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", no_pause)
    switch = Switch()
    harness = Harness(probe(switch))
    assert harness.engine.parked_cells() == 0
    harness.feed(harness.record("a", "boom"), harness.record("b", "boom"))
    assert harness.engine.parked_cells() == 2
    switch.failing = False
    harness.release("a")
    assert harness.engine.parked_cells() == 1
    harness.restart()
    assert harness.engine.parked_cells() == 0, "not known before the partitions boot again"
    harness.wake("b")
    assert harness.engine.parked_cells() == 1


def test_the_next_due_time_is_the_earliest_pending_timer_of_each_booted_partition() -> None:
    harness = Harness(probe())
    assert harness.engine.next_due() == {}, "no partition booted yet"
    later, sooner = now_ms() + 60_000, now_ms() + 30_000
    harness.feed(
        harness.record("a", "arm", {"at_ms": later}),
        harness.record("a", "arm", {"name": "u", "at_ms": sooner}),
    )
    home = partition_for(b"a", PARTITIONS)
    assert harness.engine.next_due() == {home: sooner}
