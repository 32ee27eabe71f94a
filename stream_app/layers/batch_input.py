"""Batched input for the cell engines: cell input topics read with confluent-kafka, in batches.

Faust delivers a record to an agent through a per-record path (the aiokafka fetch, a task pair
per record in the consumer's drain loop, the stream, the ack bookkeeping) that costs several
hundred microseconds of CPU per record. Under ``at_least_once`` the runtime takes that path out
of the way for the cell input topics, keeping everything else Faust does:

- **Faust decides what this worker reads.** The input topics stay subscribed through the
  engines' agents, so Faust's assignor, table recovery and standbys work as before. The app's
  consumer is told (:meth:`StreamApp.take_input_topics`) not to fetch those topics itself; the
  partitions Faust would have fetched (assigned, recovered, resumed, flow running) are the ones
  :class:`BatchInput` reads.
- **confluent-kafka reads them.** One consumer, manually assigned those partitions at their
  committed offsets (it never joins the group), takes up to :data:`BATCH_MAX` records at a time.
- **The engines process them** one by one, as the agent would; table writes go straight to
  RocksDB and their changelog records to a confluent-kafka producer (:meth:`changelog`).
- **Offsets are committed through Faust's consumer** (a group member), every
  ``broker_commit_interval`` and whenever a rebalance or shutdown takes the partitions, and only
  after every changelog record and every other record produced for the committed input has been
  acknowledged. The changelog offset each partition's database has applied is persisted at the
  same time, so recovery replays the changelog from there.

A crash loses nothing acknowledged: input whose offset was not committed is read again (at
least once), exactly as with Faust's own commit. ``exactly_once`` keeps Faust's path, whose
transactions cover the input offsets.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, Message, Producer, TopicPartition
from faust.types import TP

from stream_app.errors import StreamAppError

if TYPE_CHECKING:
    from stream_app.runtime import Runtime

__all__ = ["BATCH_MAX", "BatchInput", "InputRecord", "batch_partition"]

logger = logging.getLogger(__name__)

#: Most records taken from the consumer in one batch.
BATCH_MAX = 500
#: Longest a fetch waits for the first record of a batch, in seconds.
POLL_TIMEOUT_S = 0.02
#: Longest a flush of the changelog producer may take before the commit fails.
FLUSH_TIMEOUT_S = 60.0

#: The partition whose record the batch loop is processing, in the loop's own task (an engine
#: reads and writes the tables of that partition). Other tasks (web views, sweeps) see ``None``.
_partition: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "stream_app_batch_partition", default=None
)


def batch_partition() -> int | None:
    """The partition of the input record being processed by the batch loop, in its task."""
    return _partition.get()


class ChangelogError(StreamAppError):
    """A changelog record was not acknowledged; the input it covers is not committed."""

    reason = "changelog"


@dataclass(slots=True)
class InputRecord:
    """One input record, with the attributes of a Faust message an engine reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any
    #: Seconds since the epoch (as Faust's ``Message.timestamp``), or ``None``.
    timestamp: float | None

    @classmethod
    def of(cls, message: Message) -> InputRecord:
        """The record carried by a confluent-kafka message."""
        kind, ms = message.timestamp()
        return cls(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=message.key(),
            value=message.value(),
            headers=message.headers(),
            timestamp=ms / 1000.0 if kind != 0 and ms > 0 else None,
        )


Handler = Callable[[InputRecord], Awaitable[None]]


class BatchInput:
    """Reads the cell input topics this worker owns and hands their records to the engines.

    Made by the :class:`~stream_app.runtime.Runtime` when the guarantee is ``at_least_once``
    and ``Settings.batch_input`` is on. See the module documentation for how it fits Faust.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app: Any = runtime.app
        self._handlers: dict[str, Handler] = {}
        self._stores: dict[str, Any] = {}
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        #: Partitions Faust last asked to fetch (set by the app's consumer on each fetch).
        self._wanted: frozenset[TP] = frozenset()
        self._assigned: frozenset[TP] = frozenset()
        #: Next offset to commit for each assigned partition (processed, not yet committed).
        self._processed: dict[TP, int] = {}
        self._delivered: dict[tuple[str, int], int] = {}
        self._failed: list[KafkaError] = []
        self._lock = asyncio.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="stream_app-input")
        self._last_commit = time.monotonic()
        self.records = 0
        self.batches = 0
        self.commits = 0
        self.app.take_input_topics(self)
        self.app.task(self._run)

    def stats(self) -> dict[str, Any]:
        """Records and batches processed, commits made, partitions read (for the metrics)."""
        return {
            "records": self.records,
            "batches": self.batches,
            "commits": self.commits,
            "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in self._assigned),
        }

    # -- registration and Faust's side -----------------------------------------------------

    def register(self, topic: str, handler: Handler) -> None:
        """Hand the records of ``topic`` to ``handler`` (an engine's per-record entry)."""
        self._handlers[topic] = handler

    @property
    def topics(self) -> frozenset[str]:
        """The input topics read here rather than by Faust's consumer."""
        return frozenset(self._handlers)

    def wanted(self, tps: frozenset[TP]) -> None:
        """Faust's consumer would fetch ``tps`` of our topics now (called on every fetch)."""
        self._wanted = tps

    async def drain(self) -> None:
        """Finish the batch in flight, commit everything processed, and give up the partitions.

        Called by the app's consumer when Faust waits for its streams to empty: when a
        rebalance revokes partitions and when the worker stops, before the tables close.
        Reading starts again, from the committed offsets, once Faust fetches again.
        """
        async with self._lock:
            self._wanted = frozenset()
            if self._assigned:
                await self._commit()
                await self._assign(frozenset())

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Bad input never gets here (the engines dead-letter or park it); this is the
            # infrastructure failing (a changelog record refused, RocksDB). Stop the worker, as
            # Faust does when a commit fails: what was not committed is read again on restart.
            logger.exception("batch input failed; stopping the worker")
            await self.app.crash(exc)
        finally:
            await self.close()

    async def _loop(self) -> None:
        consumer = self.app.consumer
        loop = asyncio.get_running_loop()
        while not self.app.should_stop:
            wanted = self._wanted if consumer.flow_active else frozenset()
            if not wanted and not self._assigned:
                await asyncio.sleep(POLL_TIMEOUT_S)
                continue
            async with self._lock:
                if wanted != self._assigned:
                    if self._assigned:
                        await self._commit()
                    await self._assign(wanted)
                    continue
                messages = await loop.run_in_executor(self._pool, self._take)
                if messages and consumer.flow_active and self._wanted == self._assigned:
                    await self._process(messages)
                elif messages:
                    # A rebalance began while the batch was fetched: drop it unprocessed, commit
                    # what was processed before it, and let go. The partitions are read again
                    # from their committed offsets when they return.
                    await self._commit()
                    await self._assign(frozenset())
                    continue
                if time.monotonic() - self._last_commit >= self.app.conf.broker_commit_interval:
                    await self._commit()

    def _take(self) -> list[Message]:
        consumer = self._consumer
        if consumer is None:
            return []
        first = consumer.poll(POLL_TIMEOUT_S)
        if first is None:
            return []
        return [first, *consumer.consume(BATCH_MAX - 1, 0)]

    async def _process(self, messages: list[Message]) -> None:
        processed = self._processed
        handlers = self._handlers
        token = None
        try:
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        logger.warning("input: %s", error)
                    continue
                record = InputRecord.of(message)
                handler = handlers.get(record.topic)
                if handler is None:
                    continue
                if token is None:
                    token = _partition.set(record.partition)
                else:
                    _partition.set(record.partition)
                await handler(record)
                processed[TP(record.topic, record.partition)] = record.offset + 1
                self.records += 1
        finally:
            if token is not None:
                _partition.reset(token)
        self.batches += 1
        if self._producer is not None:
            self._producer.poll(0)

    # -- assignment ------------------------------------------------------------------------

    async def _assign(self, tps: frozenset[TP]) -> None:
        """Read exactly ``tps``, each from its committed offset (the group's)."""
        loop = asyncio.get_running_loop()
        if self._consumer is None and tps:
            self._consumer = Consumer(self._consumer_config())
        if self._consumer is not None:
            consumer = self._consumer
            assignment = [TopicPartition(tp.topic, tp.partition, OFFSET_STORED) for tp in tps]
            await loop.run_in_executor(self._pool, consumer.assign, assignment)
        self._assigned = tps
        self._processed = {tp: off for tp, off in self._processed.items() if tp in tps}
        if tps:
            logger.info(
                "batch input reads %s", ", ".join(f"{t.topic}[{t.partition}]" for t in sorted(tps))
            )

    def _consumer_config(self) -> dict[str, Any]:
        settings = self.runtime.settings
        return {
            "bootstrap.servers": settings.bootstrap_servers,
            # Only for reading the group's committed offsets: this consumer never subscribes,
            # so it never joins the group, and it commits nothing itself.
            "group.id": self.app.conf.id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "queued.max.messages.kbytes": 16384,
            "client.id": f"{self.app.conf.id}-batch-input",
        }

    # -- changelog -------------------------------------------------------------------------

    def changelog(
        self, store: Any, topic: str, partition: int, key: bytes, value: bytes | None
    ) -> None:
        """Produce a changelog record for a write made straight to ``store``'s database."""
        self._stores[topic] = store
        self._send(topic, key, value, partition, self._on_delivery)

    def produce(self, topic: str, key: bytes, value: bytes, partition: int) -> None:
        """Produce an output of the record being processed (an event, a reply, an effect) with
        the changelog producer: acknowledged before the input offset is committed, like the
        changelog records, without Faust's per-record send path."""
        self._send(topic, key, value, partition, self._on_output)

    def _send(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        producer = self._producer
        if producer is None:
            producer = self._producer = Producer(self._producer_config())
        while True:
            try:
                producer.produce(topic, value, key, partition, on_delivery=on_delivery)
                return
            except BufferError:
                producer.poll(0.05)

    def _on_output(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            logger.warning("output to %s not delivered: %s", message.topic(), error)
            self._failed.append(error)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed.append(error)
            return
        tp = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        if offset > self._delivered.get(tp, -1):
            self._delivered[tp] = offset

    def _producer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.runtime.settings.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": self.app.conf.producer_max_request_size,
            "client.id": f"{self.app.conf.id}-changelog",
        }

    # -- commit ----------------------------------------------------------------------------

    async def _commit(self) -> None:
        """Commit the input processed so far, once everything it produced is acknowledged."""
        self._last_commit = time.monotonic()
        offsets = dict(self._processed)
        loop = asyncio.get_running_loop()
        producer = self._producer
        if producer is not None:
            left = await loop.run_in_executor(self._pool, producer.flush, FLUSH_TIMEOUT_S)
            if left:
                raise ChangelogError(f"{left} changelog records not acknowledged in time")
        if self._failed:
            errors, self._failed = self._failed, []
            raise ChangelogError(f"changelog records failed: {errors[:3]}")
        # Effects, sends to other cells, wake records and dead letters of the same input.
        await self.app.producer.flush()
        for (topic, partition), offset in self._delivered.items():
            self._stores[topic].set_persisted_offset(TP(topic, partition), offset)
        self._delivered.clear()
        if not offsets:
            return
        if await self.app.consumer._commit(offsets):
            self.commits += 1
            for tp, offset in offsets.items():
                if self._processed.get(tp) == offset:
                    del self._processed[tp]

    async def close(self) -> None:
        """Close the Kafka clients (after :meth:`drain`)."""
        loop = asyncio.get_running_loop()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await loop.run_in_executor(self._pool, consumer.close)
        producer, self._producer = self._producer, None
        if producer is not None:
            await loop.run_in_executor(self._pool, producer.flush, FLUSH_TIMEOUT_S)
