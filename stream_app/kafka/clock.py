"""The driven clock of a test worker: the records of ``<app_id>.clock`` moving a ManualClock.

Under ``STREAM_APP_CLOCK=driven`` (tests only) a worker's time is not the wall clock but the
latest ``{"now_ms": N}`` record of the app's clock topic (one partition), so a test can make days
pass in a second, across worker processes and restarts:

- every worker reads the whole topic, with a consumer that joins no group (``assign``, not
  ``subscribe``): a grouped consumer, Faust's included, would give the one partition to one
  worker of the group only;
- before the worker joins its group (a :meth:`StreamApp.before_start
  <stream_app.kafka.app.StreamApp.before_start>` hook, so before any partition is assigned or
  timer fired), it reads the topic to its end and takes the latest time; a restarted worker
  so has its time back before it fires anything. An empty topic leaves the clock at the wall
  clock of the start (set the clock before starting the worker to start it elsewhere: a
  record behind the wall clock written after the start would be ignored);
- then, as a Faust task, it follows the topic: each later time moves the clock forward; a
  record behind the clock is ignored (with a WARNING: the clock never goes back). The sweep
  (every 20 ms) sees the new time and wakes the partitions whose timers it made due.

A test writes the records with :class:`stream_app.testing.DrivenClock`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from stream_app.engine.ports import ManualClock
from stream_app.kafka.topics import TopicDefinition
from stream_app.logs import rdkafka_logger
from stream_app.settings import Settings

__all__ = ["CLOCK_KEY", "ClockFeed", "clock_topic_definition", "clock_value", "parse_clock_value"]

logger = logging.getLogger(__name__)

#: The key of every record of the clock topic (a compacted topic keeps the latest).
CLOCK_KEY = b"now"
#: Longest the start of a worker waits to read the clock topic to its end (seconds).
CATCH_UP_TIMEOUT_S = 30.0
#: How long one poll of the clock topic waits for a record (seconds).
POLL_S = 0.1


def clock_topic_definition(name: str, replication_factor: int) -> TopicDefinition:
    """The clock topic ``name``: one partition (one order of the times a test sets),
    compacted (its latest time stays)."""
    return TopicDefinition(
        name=name,
        partitions=1,
        replication_factor=replication_factor,
        config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
        source=Path("<runtime>"),
    )


def clock_value(now_ms: int) -> bytes:
    """The value of a clock record setting the time to ``now_ms``: ``{"now_ms": N}``."""
    return json.dumps({"now_ms": now_ms}).encode()


def parse_clock_value(value: bytes | None) -> int | None:
    """The time a clock record sets, or ``None`` if it is not ``{"now_ms": <int>}``."""
    try:
        now_ms = json.loads(value or b"")["now_ms"]
    except (ValueError, TypeError, KeyError):
        return None
    return now_ms if isinstance(now_ms, int) and not isinstance(now_ms, bool) else None


class ClockFeed:
    """Reads ``<app_id>.clock`` into a :class:`~stream_app.engine.ports.ManualClock`.

    Args:
        settings: The worker's settings (bootstrap servers, :attr:`Settings.clock_topic`).

    Attributes:
        clock: The clock it moves; it starts at the wall clock of the feed's creation.
    """

    def __init__(self, settings: Settings) -> None:
        self.clock = ManualClock(int(time.time() * 1000))
        self._settings = settings
        self._topic = settings.clock_topic
        # One thread for every call on the consumer: confluent-kafka's consumer is not to be
        # used from two threads at once, and its polls must not block the event loop.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="stream_app-clock")
        self._consumer: Consumer | None = None

    async def catch_up(self) -> None:
        """Read the clock topic to its end and take its latest time (a ``before_start`` hook).

        Raises:
            TimeoutError: The end was not reached within :data:`CATCH_UP_TIMEOUT_S`.
        """
        logger.warning(
            "the clock of this worker is DRIVEN by %s (STREAM_APP_CLOCK=driven): its time moves "
            "only when a test says so; never run a production worker this way",
            self._topic,
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._read_to_end)
        logger.info("driven clock starts at %s", _iso(self.clock.now_ms()))

    async def follow(self) -> None:
        """Move the clock with each record written after the start, until cancelled (a Faust
        task: cancelled when the worker stops)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await loop.run_in_executor(self._pool, self._poll)
                if message is not None:
                    self._apply(message)
        finally:
            # Queued behind a poll still running in the pool; the pool's thread then ends.
            self._pool.submit(self._close)
            self._pool.shutdown(wait=False)

    def _read_to_end(self) -> None:
        consumer = Consumer(
            {
                **self._settings.kafka_connection(),
                "group.id": f"stream-app-clock-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "logger": rdkafka_logger(),
            }
        )
        self._consumer = consumer
        partition = TopicPartition(self._topic, 0)
        _, end = consumer.get_watermark_offsets(partition, timeout=CATCH_UP_TIMEOUT_S)
        consumer.assign([TopicPartition(self._topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        latest: int | None = None
        while consumer.position([partition])[0].offset < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {self._topic} to its end ({end}) took too long")
            message = consumer.poll(POLL_S)
            now_ms = self._time_of(message) if message is not None else None
            if now_ms is not None:
                # The latest time the topic ever said: what a worker that ran all along has.
                latest = now_ms if latest is None else max(latest, now_ms)
        if latest is not None:
            self.clock.set(latest)

    def _poll(self) -> Message | None:
        assert self._consumer is not None, "catch_up() runs before follow()"
        return self._consumer.poll(POLL_S)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _time_of(self, message: Message) -> int | None:
        if message.error() is not None:
            logger.warning("reading %s: %s", self._topic, message.error())
            return None
        now_ms = parse_clock_value(message.value())
        if now_ms is None:
            logger.warning(
                '%s[%s]: ignoring %r, not {"now_ms": <int>}',
                self._topic,
                message.offset(),
                message.value(),
            )
        return now_ms

    def _apply(self, message: Message) -> None:
        now_ms = self._time_of(message)
        if now_ms is None:
            return
        if self.clock.move_to(now_ms):
            logger.info("driven clock moves to %s (%d)", _iso(now_ms), now_ms)
        elif now_ms < self.clock.now_ms():
            logger.warning(
                "driven clock: ignoring %s, behind its time %s (it never goes back)",
                _iso(now_ms),
                _iso(self.clock.now_ms()),
            )

    def describe(self) -> dict[str, Any]:
        """The clock as the metrics view shows it: ``{"kind", "now_ms", "now"}``."""
        now_ms = self.clock.now_ms()
        return {"kind": "driven", "now_ms": now_ms, "now": _iso(now_ms)}


def _iso(now_ms: int) -> str:
    return datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds")
