"""The Kafka side of a behaviour's cells: Faust topic, tables and agent, and the engine's ports.

The cell engine (:mod:`stream_app.engine.cells`) reads and writes its tables through the
:class:`~stream_app.engine.ports.TableStore` port and dead-letters through
:class:`~stream_app.engine.ports.DeadLetters`; this module fills them with Faust and RocksDB:

- :class:`CellTables` declares, for one behaviour, the input topic (subscribed through an agent
  that never receives a record: the batched input reads the topic, and the app's consumer
  leaves it alone), the three tables (Faust tables, so Faust assigns, recovers and standbys
  them), and follows the assignment of the input partitions.
- :class:`FaustTableStore` is one table as a :class:`TableStore`: reads and writes go straight
  to the partition's RocksDB database (one lookup, where Faust's ``Table.get`` makes several),
  and each write's changelog record into the unit of work it is made in. The batched input
  records the changelog offsets acknowledged in the databases at each commit
  (:meth:`BatchInput.track_changelog <stream_app.kafka.batch_input.BatchInput.track_changelog>`),
  so recovery replays the changelog only from there, as Faust does for its own writes.
- :class:`CellDeadLetters` produces dead letters into the unit of work of the record being
  processed (in its transaction under ``exactly_once``, so a record read again is not
  dead-lettered twice) and counts them with the worker's other dead letters.
- :class:`FaustWakes` sends the sweep's wake records with Faust's producer.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

from stream_app.core.dead_letters import DeadLetter
from stream_app.core.records import Headers
from stream_app.engine.ports import Outputs
from stream_app.errors import StreamAppError
from stream_app.kafka.app import StreamApp
from stream_app.kafka.batch_input import BatchInput
from stream_app.kafka.faust_patches import (
    FAUST_OFFSET_KEY,
    open_partition_db,
    partition_db,
    set_persisted_offset,
    share_rocksdb_memory,
    write_batch,
)
from stream_app.settings import Settings

__all__ = ["CellDeadLetters", "CellTables", "FaustTableStore", "FaustWakes"]

logger = logging.getLogger(__name__)

#: What the read cache answers for a key it does not hold (``None`` is a cached absence).
_ABSENT: Any = object()
#: What an entry of a table's read cache is counted beyond its key's and value's lengths (the
#: dict entry and two ``bytes`` objects' headers).
CACHE_ENTRY_BYTES = 100

_RAW_TOPIC: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


@dataclass(slots=True)
class _Pending:
    """The writes of one partition not yet in RocksDB nor produced: ``key -> value`` (``None``
    deletes), and the unit of work their changelog records go into."""

    work: Outputs
    writes: dict[bytes, bytes | None] = field(default_factory=dict)


class FaustTableStore:
    """One Faust table (RocksDB store) as the engine's ``TableStore`` port.

    Writes are kept in memory, partition by partition, until the batched input ends its batch
    (:meth:`flush`, registered with :meth:`BatchInput.at_batch_end
    <stream_app.kafka.batch_input.BatchInput.at_batch_end>`): then each partition's writes go
    to its database in one RocksDB ``WriteBatch``, and one changelog record per key written
    (its last value) into the unit of work the writes were made in. Reads see the pending
    writes first. A key written by several records of a batch costs one RocksDB write and one
    changelog record, not one per record, as Kafka Streams' and Quix Streams' caches do.

    Reads see the pending writes first, then a cache of the keys most recently read or written
    (up to ``cache_bytes`` of keys and values, emptied when full), then RocksDB: a cell read
    again soon after is not looked up in RocksDB, as with Kafka Streams' record cache. The
    cache holds only what the database holds (writes enter it once written), and it is dropped
    (:meth:`forget`) whenever the batched input's partitions change: while a partition is read
    here, this store is its only writer.

    Why it keeps every guarantee: the batched input commits only between batches, so every
    write of the input a commit covers is flushed (in RocksDB, its changelog record produced
    into its partition's unit of work, hence acknowledged or in the transaction) before the
    commit. A crash before the end of a batch loses only writes of input whose offsets are not
    committed, which is read again. An iteration of a partition (:meth:`keys`,
    :meth:`items_from`) flushes the partition first, so it sees every write.

    Args:
        table: The Faust table.
        changelog_topic: Its changelog topic.
        cache_bytes: Most the read cache holds: its keys' and values' lengths, plus
            :data:`CACHE_ENTRY_BYTES` an entry (0: no cache).
    """

    def __init__(self, table: Any, changelog_topic: str, *, cache_bytes: int = 0) -> None:
        self.table = table
        self.changelog_topic = changelog_topic
        self.cache_bytes = cache_bytes
        self._pending: dict[int, _Pending] = {}
        #: Partition -> key -> value (``None``: not in the database) as the database has it.
        self._cache: dict[int, dict[bytes, bytes | None]] = {}
        self._cached = 0

    @property
    def name(self) -> str:
        """The table's name."""
        name: str = self.table.name
        return name

    def _db(self, partition: int) -> Any:
        return partition_db(self.table, partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key`` in ``partition``: a pending write's, else the cache's, else one
        RocksDB lookup (remembered in the cache)."""
        pending = self._pending.get(partition)
        if pending is not None and key in pending.writes:
            return pending.writes[key]
        cache = self._cache.get(partition)
        if cache is not None:
            cached: bytes | None = cache.get(key, _ABSENT)
            if cached is not _ABSENT:
                return cached
        elif self.cache_bytes:
            cache = self._cache[partition] = {}
        found: bytes | None = self._db(partition).get(key)
        if cache is not None:
            cache[key] = found
            self._cached += len(key) + CACHE_ENTRY_BYTES + (0 if found is None else len(found))
            if self._cached > self.cache_bytes:
                self.forget()
        return found

    def forget(self) -> None:
        """Empty the read cache (the batched input calls it when its partitions change)."""
        self._cache.clear()
        self._cached = 0

    def put(self, work: Outputs, key: bytes, value: bytes) -> None:
        """Write ``key`` in the partition of ``work`` (in RocksDB, and its changelog record into
        ``work``, at the end of the batch)."""
        self._writes(work)[key] = value

    def delete(self, work: Outputs, key: bytes) -> None:
        """Delete ``key`` from the partition of ``work`` (a tombstone into ``work`` at the end of
        the batch), if there."""
        if self.get(work.partition, key) is not None:
            self._writes(work)[key] = None

    def _writes(self, work: Outputs) -> dict[bytes, bytes | None]:
        pending = self._pending.get(work.partition)
        if pending is None:
            pending = self._pending[work.partition] = _Pending(work)
        return pending.writes

    def flush(self) -> None:
        """Apply every pending write: per partition one ``WriteBatch``, then one changelog
        record per key into the unit of work the writes were made in."""
        for partition in list(self._pending):
            self._flush(partition)

    def _flush(self, partition: int) -> None:
        pending = self._pending.pop(partition, None)
        if pending is None:
            return
        batch = write_batch()
        for key, value in pending.writes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._db(partition).write(batch)
        if self.cache_bytes:
            self._remember(self._cache.setdefault(partition, {}), pending.writes)
        produce, topic = pending.work.produce, self.changelog_topic
        for key, value in pending.writes.items():
            produce(topic, key, value, partition)

    def _remember(
        self, cache: dict[bytes, bytes | None], writes: dict[bytes, bytes | None]
    ) -> None:
        """Put a partition's writes, just written, into its cache (emptied if it overflows)."""
        size = self._cached
        for key, value in writes.items():
            old = cache.get(key, _ABSENT)
            if old is _ABSENT:
                size += len(key) + CACHE_ENTRY_BYTES
            elif old is not None:
                size -= len(old)
            if value is not None:
                size += len(value)
        cache.update(writes)
        self._cached = size
        if size > self.cache_bytes:
            self.forget()

    def keys(self, partition: int) -> Iterator[bytes]:
        """The keys of ``partition``, in key order (its pending writes flushed first)."""
        self._flush(partition)
        # A RocksDB database (rocksdict), not a dict: keys() iterates it in key order.
        for key in self._db(partition).keys():  # noqa: SIM118
            if key != FAUST_OFFSET_KEY:
                yield key

    def count(self, partition: int) -> int:
        """The keys of ``partition`` in its database, as of the last batch end (writes still
        pending are not counted; nothing is flushed), or 0 if its store has not opened it (it
        is not opened for this). About half a microsecond per key."""
        db = open_partition_db(self.table, partition)
        if db is None:
            return 0
        return sum(1 for key in db.keys() if key != FAUST_OFFSET_KEY)  # noqa: SIM118

    def items_from(self, partition: int, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The items of ``partition`` from the first key at or after ``start`` (its pending
        writes flushed first)."""
        self._flush(partition)
        it = self._db(partition).iter()
        it.seek(start)
        while it.valid():
            key = it.key()
            if key != FAUST_OFFSET_KEY:
                yield key, it.value()
            it.next()

    def lookup(self, key: bytes) -> bytes | None:
        """The value of ``key`` in whichever local partition holds it (Faust's ``Table.get``,
        outside the processing of a record; a pending write first)."""
        for pending in self._pending.values():
            if key in pending.writes:
                return pending.writes[key]
        value: bytes | None = self.table.get(key)
        return value

    def local_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every item of every local partition (pending writes included)."""
        pending = {k: v for p in self._pending.values() for k, v in p.writes.items()}
        for key, value in self.table.items():
            if key != FAUST_OFFSET_KEY and key not in pending:
                yield key, value
        for key, found in pending.items():
            if found is not None:
                yield key, found

    def persist(self, partition: int, offset: int) -> None:
        """Record in ``partition``'s database that it has applied its changelog up to
        ``offset`` (called by the batched input at each commit, for acknowledged records)."""
        set_persisted_offset(self.table, self.changelog_topic, partition, offset)


class CellTables:
    """The Faust side of one behaviour's cells: input topic, agent, tables, assignment.

    Args:
        app: The app of ``create_app(settings)``.
        settings: The settings.
        behaviour: The behaviour's name.
        batch_input: The reader of the input topic; it records the tables' changelog offsets.

    Attributes:
        input: The raw-bytes Faust topic of the behaviour's input.
        cells: The table of the cells' records.
        timers: The table of pending timers, ordered by due time.
        parked: The table of parked cells and their waiting work.
    """

    def __init__(
        self, app: StreamApp, settings: Settings, behaviour: str, batch_input: BatchInput
    ) -> None:
        self.app = app
        self.topic_name = settings.input_topic(behaviour)
        self.input = app.topic(self.topic_name, partitions=settings.partitions, **_RAW_TOPIC)
        self.cells = self._table(app, settings, batch_input, behaviour, f"{behaviour} cells")
        self.timers = self._table(
            app,
            settings,
            batch_input,
            f"{behaviour}-timers",
            f"{behaviour} pending timers, ordered by due time",
        )
        self.parked = self._table(
            app,
            settings,
            batch_input,
            f"{behaviour}-parked",
            f"{behaviour} parked cells and their waiting work",
        )
        # The input topic stays subscribed through an agent, so Faust's assignor gives this
        # worker its partitions and recovers the co-partitioned tables; the app's consumer
        # never fetches it (StreamApp.take_input_topics), so the agent receives nothing.
        app.agent(self.input, name=f"stream_app.cells.{behaviour}")(self._never_fed)

    @staticmethod
    def _table(
        app: StreamApp, settings: Settings, batch_input: BatchInput, name: str, help: str
    ) -> FaustTableStore:
        table = app.Table(
            name, partitions=settings.partitions, help=help, key_type=bytes, value_type=bytes
        )
        share_rocksdb_memory(table, app.rocksdb_memory)
        store = FaustTableStore(
            table, settings.changelog_topic(name), cache_bytes=settings.state_cache_bytes
        )
        batch_input.track_changelog(store.changelog_topic, store.persist)
        batch_input.at_batch_end(store.flush)
        batch_input.at_assignment(store.forget)
        return store

    async def _never_fed(self, stream: Any) -> None:
        async for event in stream.events():
            raise StreamAppError(
                f"{self.topic_name}[{event.message.partition}]@{event.message.offset} reached "
                "Faust's agent: only the batched input may read a cell input topic"
            )

    def follow_assignment(self, assign: Callable[[Iterable[int]], None]) -> None:
        """Call ``assign(partitions)`` with the input partitions owned after each rebalance."""
        topic = self.topic_name

        async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
            assign(tp.partition for tp in assigned if tp.topic == topic)

        receiver: Any = on_assigned
        self.app.on_partitions_assigned.connect(receiver, weak=False)


class CellDeadLetters:
    """The engines' ``DeadLetters`` port: dead letters into the record's unit of work.

    Args:
        settings: The settings (dead-letter topic, app id, largest value kept whole).
        counts: The worker's dead letters by reason (served by the metrics view), counted here
            too.
    """

    def __init__(self, settings: Settings, counts: Counter[str]) -> None:
        self.settings = settings
        self.counts = counts

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
        """Produce the dead letter of a record into ``work``, to the dead-letter partition
        numbered like the record's input partition."""
        letter = DeadLetter.for_record(
            key=key,
            value=value,
            reason=reason,
            error=error,
            app=self.settings.app_id,
            behaviour=behaviour,
            topic=topic,
            partition=partition,
            offset=offset,
            max_bytes=self.settings.dead_letter_max_bytes,
        )
        headers: Headers = letter.headers()
        work.produce(
            self.settings.dead_letter_topic, letter.key, letter.value, work.partition, headers
        )
        self.counts[letter.reason] += 1


class FaustWakes:
    """The engines' ``WakeSender`` port: a plain send with Faust's producer.

    Args:
        app: The app whose producer sends.
    """

    def __init__(self, app: StreamApp) -> None:
        self.app = app

    async def send(
        self, topic: str, key: bytes, value: bytes, partition: int, headers: Headers
    ) -> None:
        """Hand the record to Faust's producer (not waiting for the acknowledgement)."""
        await self.app.producer.send(topic, key, value, partition, None, headers)
