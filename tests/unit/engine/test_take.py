"""What the batched input calls per record: :meth:`CellEngine.take` handles a cell message at
once, and returns an awaitable only for work that must wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from stream_app.core.partitioner import partition_for
from tests.unit.engine.fakes import PARTITIONS, Harness
from tests.unit.engine.probe import Switch, probe


def finish(pending: Awaitable[None] | None) -> None:
    """Await what :meth:`CellEngine.take` returned (nothing for ``None``)."""
    if pending is not None:

        async def wait() -> None:
            await pending

        asyncio.run(wait())


def booted(harness: Harness, cell_id: str) -> None:
    """Boot the partition of ``cell_id`` (its first record boots it)."""
    harness.feed(harness.record(cell_id, "add", {"by": 1}))


def test_a_message_to_a_booted_partition_is_handled_at_once() -> None:
    harness = Harness(probe())
    booted(harness, "a")
    record = harness.record("a", "add", {"by": 2})
    pending = harness.engine.take(record, harness.unit(record.partition))
    assert pending is None, "no coroutine for a message whose first try succeeds"
    assert harness.data("a") == {"count": 3, "fired": [], "boots": 0}


def test_the_first_record_of_a_partition_waits_for_its_boot() -> None:
    harness = Harness(probe())
    booted(harness, "a")
    harness.restart()  # a new engine: every partition boots again
    record = harness.record("a", "add", {"by": 2})
    pending = harness.engine.take(record, harness.unit(record.partition))
    assert pending is not None
    assert harness.data("a") == {"count": 1, "fired": [], "boots": 0}, "nothing before the await"
    finish(pending)
    assert harness.data("a") == {"count": 3, "fired": [], "boots": 1}, "booted, then the message"


def test_a_failed_first_try_returns_the_tries_after_it() -> None:
    switch = Switch()
    harness = Harness(probe(switch))
    booted(harness, "a")
    record = harness.record("a", "boom")
    pending = harness.engine.take(record, harness.unit(record.partition))
    assert pending is not None and switch.calls == 1
    switch.failing = False
    finish(pending)
    assert switch.calls == 2 and harness.parked_items("a") == []
    assert harness.data("a") == {"count": 101, "fired": [], "boots": 0}


def test_a_message_that_fails_every_try_is_parked_once_awaited() -> None:
    switch = Switch()
    harness = Harness(probe(switch))
    booted(harness, "a")
    record = harness.record("a", "boom")
    pending = harness.engine.take(record, harness.unit(record.partition))
    assert harness.parked_items("a") == []
    finish(pending)
    assert switch.calls == 3
    [item] = harness.parked_items("a")
    assert item["kind"] == "message"


def test_a_control_record_is_awaited() -> None:
    harness = Harness(probe())
    booted(harness, "a")
    p = partition_for(b"a", PARTITIONS)
    pending = harness.engine.take(harness.control(p, b"release", b"a"), harness.unit(p))
    assert pending is not None
    finish(pending)
    assert harness.engine.control_records == 1
