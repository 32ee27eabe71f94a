"""Faust's watchdogs judge only what Faust does: not the partitions the batched input reads,
and a recovery only once it has itself run for ``stream_processing_timeout``."""

from __future__ import annotations

from collections.abc import Iterator
from time import monotonic
from typing import Any

import pytest
from faust.types import TP

from stream_app.kafka.app import create_app
from stream_app.settings import Settings


class Taker:
    """An input taker reading ``orders.in`` (what :class:`BatchInput` tells the app)."""

    topics = frozenset({"orders.in"})

    def wanted(self, tps: frozenset[TP]) -> None:
        pass

    async def drain(self) -> None:
        pass


@pytest.fixture
def watched() -> Iterator[tuple[Any, Any, list[tuple[str, TP]]]]:
    """An app, its consumer (never started), and the watchdog checks that reach Faust."""
    app = create_app(
        Settings(app_id="watchdogs", bootstrap_servers="127.0.0.1:9"),
        stream_processing_timeout=300.0,
    )
    app.take_input_topics(Taker())
    consumer: Any = app.consumer
    checked: list[tuple[str, TP]] = []
    thread = consumer._thread
    thread.verify_event_path = lambda now, tp: checked.append(("stream", tp))
    thread.verify_recovery_event_path = lambda now, tp: checked.append(("recovery", tp))
    try:
        yield app, consumer, checked
    finally:
        thread.thread_loop.close()
        app.loop.close()


def test_the_stream_watchdog_skips_the_partitions_the_batched_input_reads(
    watched: tuple[Any, Any, list[tuple[str, TP]]],
) -> None:
    _app, consumer, checked = watched
    now = monotonic()
    consumer.verify_event_path(now, TP("orders.in", 0))
    consumer.verify_event_path(now + 301, TP("orders.in", 0))
    consumer.verify_event_path(now, TP("effects", 0))
    consumer.verify_event_path(now + 301, TP("effects", 0))
    assert checked == [("stream", TP("effects", 0))]


def test_the_stream_watchdog_judges_a_partition_from_its_assignment_not_the_worker_start(
    watched: tuple[Any, Any, list[tuple[str, TP]]],
) -> None:
    """A worker up for an hour gets a partition in a rebalance: the watchdog's first look at it
    comes before its first fetch; Faust would log "has not sent fetch request since start"."""
    _app, consumer, checked = watched
    now = monotonic()
    consumer.verify_event_path(now, TP("effects", 1))
    consumer.verify_event_path(now + 10, TP("effects", 1))
    assert checked == []
    consumer.verify_event_path(now + 301, TP("effects", 1))
    assert checked == [("stream", TP("effects", 1))]


def test_the_recovery_watchdog_waits_for_the_recovery_not_the_worker(
    watched: tuple[Any, Any, list[tuple[str, TP]]],
) -> None:
    app, consumer, checked = watched
    changelog = TP("watchdogs-orders-changelog", 2)
    now = monotonic()
    # A worker up for an hour starts a recovery: 10 s in, its first fetch is still pending.
    app.tables.recovery._recovery_started_at = now - 10
    consumer.verify_recovery_event_path(now, changelog)
    assert checked == []
    # The same recovery 301 s in: now it is Faust's to judge.
    app.tables.recovery._recovery_started_at = now - 301
    consumer.verify_recovery_event_path(now, changelog)
    assert checked == [("recovery", changelog)]
