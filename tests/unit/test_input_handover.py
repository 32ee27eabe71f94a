"""The batched input hears which of its partitions Faust would fetch as soon as Faust pauses or
resumes them (recovery resumes the input partitions while Faust's own fetcher may be asleep
for a second)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from faust.types import TP

from stream_app.kafka.app import create_app
from stream_app.settings import Settings


class Taker:
    """An input taker reading ``orders.in``; keeps each set of partitions it is told of."""

    topics = frozenset({"orders.in"})

    def __init__(self) -> None:
        self.told: list[frozenset[TP]] = []

    def wanted(self, tps: frozenset[TP]) -> None:
        self.told.append(tps)

    async def drain(self) -> None:
        pass


@pytest.fixture
def handed() -> Iterator[tuple[Any, Taker]]:
    """An app's consumer (never started) whose input topic ``orders.in`` a taker reads."""
    app = create_app(Settings(app_id="handover", bootstrap_servers="127.0.0.1:9"))
    taker = Taker()
    app.take_input_topics(taker)
    consumer: Any = app.consumer
    try:
        yield consumer, taker
    finally:
        consumer._thread.thread_loop.close()
        app.loop.close()


def test_paused_and_resumed_input_partitions_reach_the_taker_at_once(
    handed: tuple[Any, Taker],
) -> None:
    consumer, taker = handed
    orders = {TP("orders.in", 0), TP("orders.in", 1)}
    consumer.pause_partitions(orders | {TP("effects", 0)})
    assert taker.told == [frozenset()], "recovery pauses everything: nothing to read"
    consumer.resume_partitions({TP("effects", 0)})
    assert taker.told[-1] == frozenset(), "Faust's own topics are not the taker's"
    consumer.resume_partitions(orders)
    assert taker.told[-1] == frozenset(orders)
    consumer.pause_partitions({TP("orders.in", 1)})
    assert taker.told[-1] == frozenset({TP("orders.in", 0)})
