"""The batched input's wait for records or partitions (:meth:`BatchInput._wait`): what ends it.

No broker: the reader is made and never started; its wait is driven directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from faust.types import TP

from stream_app.kafka.batch_input import BatchInput
from stream_app.settings import Settings
from tests.unit.offline_input import offline_batch_input

INPUT = TP("wait.counter.in", 0)


@pytest.fixture
def reader() -> Iterator[BatchInput]:
    with offline_batch_input(Settings(app_id="wait", bootstrap_servers="127.0.0.1:9")) as reader:
        yield reader


def test_a_wake_ends_the_wait_at_once(reader: BatchInput) -> None:
    async def scenario() -> tuple[bool, float]:
        began = time.monotonic()
        asyncio.get_running_loop().call_soon(reader._wake)
        woken = await reader._wait(60)
        return woken, time.monotonic() - began

    woken, took = asyncio.run(scenario())
    assert woken is True
    assert took < 30


def test_a_wake_before_the_wait_is_not_lost(reader: BatchInput) -> None:
    async def scenario() -> tuple[bool, float]:
        reader._wake()
        began = time.monotonic()
        woken = await reader._wait(60)
        return woken, time.monotonic() - began

    woken, took = asyncio.run(scenario())
    assert woken is True
    assert took < 30


def test_the_wait_ends_at_its_time_out(reader: BatchInput) -> None:
    async def scenario() -> tuple[bool, bool]:
        woken = await reader._wait(0.01)
        return woken, reader._woken

    assert asyncio.run(scenario()) == (False, False)


def test_new_partitions_to_read_and_a_drain_wake_the_loop(reader: BatchInput) -> None:
    reader.wanted(frozenset())
    assert reader._woken is False  # nothing changed: the loop keeps waiting
    reader.wanted(frozenset({INPUT}))
    assert reader._woken is True

    async def drain() -> bool:
        reader._woken = False
        await reader.drain()
        return reader._woken

    assert asyncio.run(drain()) is True
