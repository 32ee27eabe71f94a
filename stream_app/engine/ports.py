"""The ports the engine talks through (the cell engine, the effect dispatcher, the reactor), and
the counters it keeps.

The engine (:mod:`stream_app.engine.cells`) decides what a record does to a cell; it does not
know Kafka, Faust or RocksDB. It reads and writes through these small protocols, which the
composition root (:mod:`stream_app.runtime`) fills with Kafka-side adapters
(:mod:`stream_app.kafka.cell_store`, :mod:`stream_app.kafka.batch_input`) and the unit tests
with in-memory fakes:

- :class:`Outputs`: the unit of work of one input partition. Everything a record read there
  causes (table changelog records, messages to cells, effects, events, replies, dead letters)
  is produced into it, and commits with the record's offset: acknowledged first under
  ``at_least_once``, in the partition's transaction under ``exactly_once``. The engine is
  handed the unit of the record it processes, with the record.
- :class:`TableStore`: one of a behaviour's tables, partition by partition. A write goes to the
  partition of the unit of work it is made in, and its changelog record into that unit.
- :class:`DeadLetters`: dead letters of the record being processed, into its unit of work.
- :class:`WakeSender`: a plain send, outside any unit of work, for the wake records of the
  sweep.
- :class:`RuntimeMetrics`: counters (a plain dataclass the engine increments), and
  :class:`LatencyHistogram`, a histogram as plain as they are (the Prometheus view reads both at
  scrape time, so the hot path pays an increment, not a metrics library's call).
- :class:`Clock`: the time: when timers are due and the ``now`` of each invocation. The
  :class:`SystemClock` of a worker reads the wall clock and the records' timestamps; a
  :class:`ManualClock`, for tests only, is moved by hand (or, in a worker with
  ``STREAM_APP_CLOCK=driven``, by the records of ``<app_id>.clock``), so a test can make days
  pass in a second.

The effect dispatcher and the reactor (:mod:`stream_app.engine.effects`,
:mod:`stream_app.engine.reactor`) are fed by Faust agents on the Kafka side
(:mod:`stream_app.kafka.agents`) and need less:

- :class:`DeadLetterPublisher`: an acknowledged dead letter (the worker's
  :class:`~stream_app.kafka.dead_letters.DeadLetterSink`).
- :class:`EffectCounters`: the effect counters of :class:`RuntimeMetrics`.
- :class:`SourceRecord`: the parts of a Kafka record a handler reads.
- :class:`Pauses`: the pauses between tries (``asyncio.sleep`` and a random factor; a unit
  test records them instead).
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from stream_app.core.records import Headers
from stream_app.core.retry import RetryPolicy

__all__ = [
    "Clock",
    "DeadLetterPublisher",
    "DeadLetters",
    "EffectCounters",
    "LatencyHistogram",
    "ManualClock",
    "Outputs",
    "Pauses",
    "RuntimeMetrics",
    "SourceRecord",
    "SystemClock",
    "TableStore",
    "WakeSender",
]

_LAG_SAMPLES = 200_000

#: Upper bounds (seconds) of :class:`LatencyHistogram` buckets for record processing.
PROCESSING_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Upper bounds (seconds) of :class:`LatencyHistogram` buckets for timer firing lags.
TIMER_LAG_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip


class Outputs(Protocol):
    """The unit of work of one input partition (the partition of the record being processed)."""

    @property
    def partition(self) -> int:
        """The input partition whose unit of work this is (also the partition of the cells,
        timers and parked work that the records read there concern)."""
        ...

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        headers: Headers = None,
    ) -> None:
        """Produce a record to ``topic[partition]`` as part of this unit of work."""
        ...


class TableStore(Protocol):
    """One table of a behaviour (cells, timers or parked work), partition by partition.

    Reads are of the local database of a partition; writes go to the partition of the unit of
    work they are made in, with their changelog record produced into that unit.
    """

    @property
    def name(self) -> str:
        """The table's name (``<behaviour>``, ``<behaviour>-timers``, ``<behaviour>-parked``)."""
        ...

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key`` in ``partition``, or ``None``."""
        ...

    def put(self, work: Outputs, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value`` in the partition of ``work``."""
        ...

    def delete(self, work: Outputs, key: bytes) -> None:
        """Delete ``key`` from the partition of ``work`` (nothing happens if it is absent)."""
        ...

    def keys(self, partition: int) -> Iterator[bytes]:
        """The keys of ``partition``, in key order."""
        ...

    def items_from(self, partition: int, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The items of ``partition`` from the first key at or after ``start``, in key order."""
        ...

    def lookup(self, key: bytes) -> bytes | None:
        """The value of ``key`` in whichever local partition holds it (for inspection)."""
        ...

    def local_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every item of every local partition (for inspection)."""
        ...


class DeadLetters(Protocol):
    """Where work that cannot be done goes, with the reason."""

    def publish(
        self,
        work: Outputs,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error: str,
        behaviour: str,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        """Dead-letter a record (``topic``/``partition``/``offset`` name its source; ``-1`` and
        a pseudo topic for work that came from no record) into the unit of work ``work``."""
        ...


class WakeSender(Protocol):
    """Sends a record outside any unit of work (the sweep's wake records)."""

    async def send(
        self, topic: str, key: bytes, value: bytes, partition: int, headers: Headers
    ) -> None:
        """Send the record; returns once it is handed to the client (not acknowledged)."""
        ...


class Clock(Protocol):
    """Where the engine reads the time (milliseconds since the epoch)."""

    def now_ms(self) -> int:
        """The time now: timers due at or before it fire, and a timer fires at it."""
        ...

    def invocation_ms(self, record_timestamp_ms: int | None) -> int:
        """The ``now`` of an invocation caused by a record with this timestamp (``None``: the
        record has none)."""
        ...


class SystemClock:
    """The worker's wall clock; a message is handled at its record's timestamp.

    Timers come due by the wall clock, and a timer's invocation runs at the wall-clock time it
    fired. A message's invocation runs at its record's timestamp (the wall clock when the record
    has none), so a replay of the record sees the same time.
    """

    def now_ms(self) -> int:
        """The wall clock."""
        return int(time.time() * 1000)

    def invocation_ms(self, record_timestamp_ms: int | None) -> int:
        """The record's timestamp, else the wall clock."""
        return record_timestamp_ms or self.now_ms()


class ManualClock:
    """A clock that moves only when told to, forward only: **for tests only**.

    Everything time-related in an engine reading it follows it: timers come due when it passes
    their due time, and every invocation (message, timer, boot) runs at its time, whatever the
    record's timestamp. A worker started with ``STREAM_APP_CLOCK=driven`` has one, moved by the
    records of its ``<app_id>.clock`` topic (:mod:`stream_app.kafka.clock`).

    Args:
        start_ms: Its time until it is first moved.
    """

    def __init__(self, start_ms: int) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        """The time it was last moved to."""
        return self._now_ms

    def invocation_ms(self, record_timestamp_ms: int | None) -> int:
        """The clock's time: under a driven clock the record's timestamp does not count."""
        return self._now_ms

    def set(self, now_ms: int) -> None:
        """Set the time to ``now_ms``, even backwards (to start it somewhere)."""
        self._now_ms = now_ms

    def move_to(self, now_ms: int) -> bool:
        """Move to ``now_ms`` if that is later; return whether it moved (it never goes back)."""
        if now_ms <= self._now_ms:
            return False
        self._now_ms = now_ms
        return True


class LatencyHistogram:
    """Durations counted into fixed buckets, as cheaply as a counter: one :meth:`observe` is a
    bisection and two additions. Whoever serves it reads :attr:`counts` and :attr:`total`.

    Args:
        bounds: The buckets' upper bounds in seconds, ascending; a last bucket, unbounded,
            takes what is above them.

    Attributes:
        bounds: The buckets' upper bounds.
        counts: Observations per bucket (not cumulative): ``counts[i]`` are those ``<=
            bounds[i]`` and above the bound before; ``counts[-1]`` those above every bound.
        total: The sum of the observed durations, in seconds.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = PROCESSING_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)`` per bucket, the last bound
        ``inf`` (the form Prometheus serves)."""
        running, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


@dataclass
class RuntimeMetrics:
    """Counters of one worker process, served at ``/stream-app/metrics/``.

    Attributes:
        timers_fired: Timer occurrences delivered to ``on_timeout``.
        timers_skipped: Due timers retired without firing (misfire policy ``skip``).
        effects_emitted: Effects produced by cells.
        effects_done: Effects whose handler succeeded.
        effect_failures: Failed effect handler attempts.
        effect_retries: Failed effect handler attempts that were tried again.
        parked: Cells parked by this worker.
        released: Parked cells released and all their work run again.
        booted: ``on_boot`` calls.
        misrouted: Records forwarded because they arrived on another partition than murmur2's.
        lags_ms: Recent timer firing lags (ms after the due time), for percentiles.
        timer_lag: Every timer firing lag, in seconds.
    """

    timers_fired: int = 0
    timers_skipped: int = 0
    effects_emitted: int = 0
    effects_done: int = 0
    effect_failures: int = 0
    effect_retries: int = 0
    parked: int = 0
    released: int = 0
    booted: int = 0
    misrouted: int = 0
    lags_ms: deque[int] = field(default_factory=lambda: deque(maxlen=_LAG_SAMPLES))
    timer_lag: LatencyHistogram = field(
        default_factory=lambda: LatencyHistogram(TIMER_LAG_BUCKETS_S)
    )

    def record_lag(self, lag_ms: int) -> None:
        """Note how late a timer fired."""
        lag_ms = max(0, lag_ms)
        self.lags_ms.append(lag_ms)
        self.timer_lag.observe(lag_ms / 1000)

    def lag_percentiles(self) -> dict[str, float | None]:
        """p50, p99 and max of the recorded firing lags (``None`` when there are none)."""
        if not self.lags_ms:
            return {"p50": None, "p99": None, "max": None, "count": 0}
        ordered = sorted(self.lags_ms)

        def pick(q: float) -> float:
            return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

        return {
            "p50": pick(0.5),
            "p99": pick(0.99),
            "max": float(ordered[-1]),
            "count": len(ordered),
        }


# -- the effect dispatcher's and the reactor's ports ----------------------------------------------


class DeadLetterPublisher(Protocol):
    """Sends a rejected record to the dead-letter topic (and counts it)."""

    async def publish_record(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error: str,
        behaviour: str,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        """Dead-letter the record; returns once the broker has acknowledged the dead letter."""
        ...


class EffectCounters(Protocol):
    """The counters the effect dispatcher keeps (served at ``/stream-app/metrics/``)."""

    effects_done: int
    effect_failures: int
    effect_retries: int


class SourceRecord(Protocol):
    """The parts of a consumed Kafka record the handling logic reads."""

    @property
    def topic(self) -> str:
        """Its topic."""
        ...

    @property
    def partition(self) -> int:
        """Its partition."""
        ...

    @property
    def offset(self) -> int:
        """Its offset."""
        ...

    @property
    def key(self) -> bytes | None:
        """Its key."""
        ...

    @property
    def value(self) -> bytes | None:
        """Its value."""
        ...


@dataclass(frozen=True, slots=True)
class Pauses:
    """How the pauses between tries are taken: the clock and the jitter's random source.

    Attributes:
        sleep: Waits the given seconds (:func:`asyncio.sleep`; a test records them instead).
        random_factor: A number in ``[0, 1)`` for :meth:`RetryPolicy.delay`'s jitter.
    """

    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    random_factor: Callable[[], float] = field(default=random.random)

    def before(self, policy: RetryPolicy, attempt: int) -> float:
        """The pause ``policy`` gives before try number ``attempt``."""
        return policy.delay(attempt, random_factor=self.random_factor)
