"""In-memory fakes of the cell engine's ports, and a harness that drives one engine.

The fakes keep what the engine writes and produces in plain lists and dicts, so a test reads
exactly what a record caused and into which unit of work it went:

- :class:`FakeUnit` is the unit of work of one input partition (``Outputs``); every record
  produced into it lands in the shared :attr:`Harness.produced` list, tagged with the unit's
  partition.
- :class:`FakeStore` is one table (``TableStore``): a sorted dict per partition; each write
  produces its changelog record into the unit it is made in, as the Kafka-side store does.
- :class:`FakeDeadLetters` and :class:`FakeWakes` record what they are given.

:class:`Harness` builds a :class:`CellEngine` on these and feeds it records as the batched input
would (a record and the unit of work of its partition). ``restart()`` makes a new engine on the
same tables: a worker that crashed and took its partitions again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stream_app.api.behaviour import Behaviour
from stream_app.core.envelope import envelope_bytes
from stream_app.core.partitioner import partition_for
from stream_app.core.records import Headers, InputRecord
from stream_app.core.retry import CELL_RETRY, RetryPolicy
from stream_app.engine.cells import CONTROL_HEADER, CellEngine, CellRecord, EngineSettings
from stream_app.engine.ports import Clock, Outputs, RuntimeMetrics

APP = "unit"
PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class Produced:
    """One record produced into a unit of work.

    Attributes:
        unit: The input partition of the unit of work it was produced into.
        topic: Where it goes.
        key: Its key.
        value: Its value (``None`` for a tombstone).
        partition: The partition of ``topic`` it goes to.
        headers: Its headers.
    """

    unit: int
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int
    headers: Headers


class FakeUnit:
    """The unit of work of one input partition; appends what is produced to ``log``."""

    def __init__(self, partition: int, log: list[Produced]) -> None:
        self.partition = partition
        self.log = log

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        headers: Headers = None,
    ) -> None:
        """Record the produced record."""
        self.log.append(Produced(self.partition, topic, key, value, partition, headers))


class FakeStore:
    """One table, partition by partition, in memory."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.changelog_topic = f"{APP}-{name}-changelog"
        self.partitions: dict[int, dict[bytes, bytes]] = {}

    @property
    def name(self) -> str:
        """The table's name."""
        return self._name

    def _part(self, partition: int) -> dict[bytes, bytes]:
        return self.partitions.setdefault(partition, {})

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key`` in ``partition``."""
        return self._part(partition).get(key)

    def put(self, work: Outputs, key: bytes, value: bytes) -> None:
        """Write, with the changelog record into ``work``."""
        self._part(work.partition)[key] = value
        work.produce(self.changelog_topic, key, value, work.partition)

    def delete(self, work: Outputs, key: bytes) -> None:
        """Delete if present, with a tombstone into ``work``."""
        if self._part(work.partition).pop(key, None) is not None:
            work.produce(self.changelog_topic, key, None, work.partition)

    def keys(self, partition: int) -> Iterator[bytes]:
        """The keys of ``partition`` in order."""
        yield from sorted(self._part(partition))

    def items_from(self, partition: int, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The items of ``partition`` from ``start`` on, in key order."""
        part = self._part(partition)
        for key in sorted(k for k in part if k >= start):
            yield key, part[key]

    def lookup(self, key: bytes) -> bytes | None:
        """The value of ``key`` in any partition."""
        for part in self.partitions.values():
            if key in part:
                return part[key]
        return None

    def local_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every item of every partition."""
        for part in self.partitions.values():
            yield from part.items()

    def snapshot(self) -> dict[int, dict[bytes, bytes]]:
        """A copy of every partition."""
        return {p: dict(part) for p, part in self.partitions.items()}


@dataclass
class FakeDeadLetters:
    """Records each dead letter with the unit of work it went into."""

    letters: list[dict[str, Any]] = field(default_factory=list)

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
        """Record the dead letter."""
        self.letters.append(
            {
                "unit": work.partition,
                "key": key,
                "value": value,
                "reason": reason,
                "error": error,
                "behaviour": behaviour,
                "topic": topic,
                "partition": partition,
                "offset": offset,
            }
        )


@dataclass
class FakeDeadLetterPublisher:
    """The effect dispatcher's and the reactor's dead-letter port: records what it is given."""

    calls: list[dict[str, Any]] = field(default_factory=list)

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
        """Record the dead letter."""
        self.calls.append(
            {
                "key": key,
                "value": value,
                "reason": reason,
                "error": error,
                "behaviour": behaviour,
                "topic": topic,
                "partition": partition,
                "offset": offset,
            }
        )


@dataclass
class FakeWakes:
    """Records the wake records sent."""

    sent: list[tuple[str, int]] = field(default_factory=list)

    async def send(
        self, topic: str, key: bytes, value: bytes, partition: int, headers: Headers
    ) -> None:
        """Record the wake."""
        self.sent.append((topic, partition))


def now_ms() -> int:
    """The wall clock in milliseconds (the engine fires timers by it)."""
    return int(time.time() * 1000)


class Harness:
    """One engine on fake ports, fed records as the batched input would.

    Args:
        behaviour: The behaviour to run.
        cell_retry: The settings' retry policy for a behaviour that names none.
        clock: The engine's clock (default: the system clock).
    """

    def __init__(
        self,
        behaviour: Behaviour[Any],
        cell_retry: RetryPolicy = CELL_RETRY,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.clock = clock
        self.settings = EngineSettings(
            app_id=APP,
            partitions=PARTITIONS,
            max_message_bytes=4096,
            effects_topic=f"{APP}.effects",
            replies_topic=f"{APP}.replies",
            input_topic=lambda name: f"{APP}.{name}.in",
            cell_retry=cell_retry,
        )
        self.cells = FakeStore(behaviour.name)
        self.timers = FakeStore(f"{behaviour.name}-timers")
        self.parked = FakeStore(f"{behaviour.name}-parked")
        self.dead_letters = FakeDeadLetters()
        self.wakes = FakeWakes()
        self.metrics = RuntimeMetrics()
        self.produced: list[Produced] = []
        self.topic = f"{APP}.{behaviour.name}.in"
        self._offsets: dict[int, int] = {}
        self.engine = self._engine()

    def _engine(self) -> CellEngine:
        engine = CellEngine(
            self.behaviour,
            self.settings,
            cells=self.cells,
            timers=self.timers,
            parked=self.parked,
            dead_letters=self.dead_letters,
            wakes=self.wakes,
            metrics=self.metrics,
            clock=self.clock,
        )
        engine.assign(range(PARTITIONS))
        return engine

    def restart(self) -> None:
        """A new engine on the same tables, owning every partition again (a worker that
        crashed and started again: its partitions boot afresh)."""
        self.engine = self._engine()

    def unit(self, partition: int) -> FakeUnit:
        """The unit of work of input ``partition``."""
        return FakeUnit(partition, self.produced)

    def record(
        self,
        cell_id: str,
        type: str,
        body: dict[str, Any] | None = None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        reply_to: str | None = None,
        id: str | None = None,
        value: bytes | None = None,
    ) -> InputRecord:
        """An input record for ``cell_id`` (on its home partition unless told), at the next
        offset of its partition."""
        key = cell_id.encode()
        p = partition_for(key, PARTITIONS) if partition is None else partition
        offset = self._offsets.get(p, 0)
        self._offsets[p] = offset + 1
        if value is None:
            value = envelope_bytes(type, body or {}, id=id or f"m-{p}-{offset}", reply_to=reply_to)
        return InputRecord(
            topic=self.topic,
            partition=p,
            offset=offset,
            key=key,
            value=value,
            headers=None,
            timestamp_ms=now_ms() if timestamp_ms is None else timestamp_ms,
        )

    def control(self, partition: int, kind: bytes, key: bytes, value: bytes = b"") -> InputRecord:
        """A control record (``wake`` or ``release``) on ``partition``."""
        offset = self._offsets.get(partition, 0)
        self._offsets[partition] = offset + 1
        return InputRecord(
            topic=self.topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            headers=[(CONTROL_HEADER, kind)],
            timestamp_ms=now_ms(),
        )

    def feed(self, *records: InputRecord) -> None:
        """Hand each record to the engine with its partition's unit of work, in order."""

        async def run() -> None:
            for record in records:
                pending = self.engine.take(record, self.unit(record.partition))
                if pending is not None:
                    await pending

        asyncio.run(run())

    def wake(self, cell_id: str) -> None:
        """Feed a wake record to the partition of ``cell_id``."""
        p = partition_for(cell_id.encode(), PARTITIONS)
        self.feed(self.control(p, b"wake", b"\x00stream_app.wake"))

    def release(self, cell_id: str, skip: int = 0) -> None:
        """Feed a release record for ``cell_id`` to its partition."""
        p = partition_for(cell_id.encode(), PARTITIONS)
        value = json.dumps({"skip": skip}).encode() if skip else b""
        self.feed(self.control(p, b"release", cell_id.encode(), value))

    def data(self, cell_id: str) -> dict[str, Any] | None:
        """The stored data of ``cell_id`` (``None`` when dead)."""
        raw = self.cells.lookup(cell_id.encode())
        return CellRecord.decode(raw).data if raw is not None else None

    def outputs(self, topic: str) -> list[Produced]:
        """What was produced to ``topic``, in order."""
        return [p for p in self.produced if p.topic == topic]

    def parked_items(self, cell_id: str) -> list[dict[str, Any]]:
        """The parked work of ``cell_id`` (empty when not parked)."""
        raw = self.parked.lookup(cell_id.encode())
        if raw is None:
            return []
        items: list[dict[str, Any]] = json.loads(raw)["items"]
        return items
