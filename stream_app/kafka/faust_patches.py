"""Every change stream_app makes to faust-streaming's (and aiokafka's, mode's) internals.

stream_app runs on Faust but reads the cell input topics itself and makes ``exactly_once``
itself; for that it replaces a few private methods of Faust's consumer, consumer thread and
producer buffer, and overrides three private hooks of :class:`faust.App`. They are all here, so
that an upgrade of faust-streaming has one module to check: each patch says which Faust
behaviour it replaces and why. ``docs/internals.md`` lists them in a table, and
``tests/unit/test_faust_internals.py`` fails, naming the attribute, if an installed
faust-streaming lacks one of them.

Patches are instance attributes set on one object (shadowing the class's method for that object
only), never changes to Faust's classes, except the two subclasses: :class:`KeepingFlowControl`
and :class:`PatchedApp` (which :class:`~stream_app.kafka.app.StreamApp` extends with its public
lifecycle hooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import faust
from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from faust.assignor.client_assignment import ClientMetadata
from faust.exceptions import ConsumerNotStarted
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables import TableManager
from faust.types import TP, ProducerT
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent
from rocksdict import (
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    Options,
    WriteBatch,
    WriteBufferManager,
)

from stream_app.errors import ConfigError, FlushTimeoutError
from stream_app.kafka.reading import last_record_offsets
from stream_app.kafka.restore import RestoreJob, RestoreProgress, restore
from stream_app.logs import rdkafka_logger
from stream_app.settings import KafkaConnection

__all__ = [
    "CLEAN_MARKER",
    "FAUST_OFFSET_KEY",
    "FLUSH_TIMEOUT_S",
    "InputTaker",
    "KeepingFlowControl",
    "PatchedApp",
    "RocksDBMemory",
    "SendCounts",
    "TableManagerStartingAtOnce",
    "commit_offsets",
    "discard_unclean_tables",
    "drain_send_buffer",
    "hand_topics_to",
    "judge_recovery_from_its_start",
    "open_partition_db",
    "partition_db",
    "read_committed",
    "restore_changelogs_fast",
    "send_buffer_that_drains",
    "set_persisted_offset",
    "share_rocksdb_memory",
    "streams_flowing",
]

logger = logging.getLogger(__name__)

#: How long a commit waits for Faust's send buffer to drain before failing the worker.
FLUSH_TIMEOUT_S = 300.0


# -- flow control of the stream queues ----------------------------------------------------------


class KeepingFlowControl(FlowControlEvent):
    """Faust's flow control, except that resuming a flow that is already running keeps the
    records waiting in the stream queues.

    Replaces ``mode.utils.queues.FlowControlEvent.resume``, which always empties every stream
    queue. Faust's recovery calls it once more when it completes, after it has already resumed
    the flow (to read changelogs) and the input partitions: a record the consumer had just
    handed to an agent's queue was dropped there without being processed. Faust counts it as
    read, and its offset was later committed with the ones after it, so the record was lost
    (seen as one lost increment in about one restart in ten without committed offsets). Queues
    still empty when the flow resumes after a real suspension (a rebalance).
    """

    def resume(self) -> None:
        """Resume a suspended flow (emptying the queues); no-op if it is running."""
        if self.is_active():
            return
        super().resume()


# -- the consumer: topics another reader takes, watchdogs ---------------------------------------


class InputTaker(Protocol):
    """A reader that takes some subscribed topics off Faust's consumer (the batched input)."""

    @property
    def topics(self) -> frozenset[str]:
        """The topics it reads instead of the app's consumer."""
        ...

    def wanted(self, tps: frozenset[TP]) -> None:
        """The partitions of its topics the consumer would fetch now."""
        ...

    async def drain(self) -> None:
        """Finish, commit and let go of every partition it reads."""
        ...


def hand_topics_to(consumer: Any, taker: InputTaker) -> None:
    """Let ``taker`` read ``taker.topics`` instead of Faust's ``consumer``.

    The topics stay subscribed, so Faust still assigns their partitions, recovers the tables
    co-partitioned with them and runs the rebalance hooks, but its consumer never fetches them.

    - ``Consumer._getmany`` fetches every assigned, active partition; here it leaves the taker's
      topics out and tells ``taker.wanted(tps)`` which of their partitions it would have fetched
      (assigned, recovered, not paused).
    - ``Consumer.wait_empty`` waits for Faust's streams to finish their records (a rebalance
      revoking partitions, the worker stopping, both before the tables close); here it awaits
      ``taker.drain()`` first, so the taker finishes, commits and lets go of its partitions
      while the group still accepts its commits.
    - ``Consumer.verify_event_path`` is Faust's stream watchdog: it knows only Faust's fetches
      and streams, so on the taker's partitions it saw none and logged an ERROR ("Stream has
      not started processing") about 70 times a minute on a healthy worker. Here it skips them.
      It also judges a partition's first fetch from the consumer's *start*, so a partition
      assigned by a rebalance, not fetched yet when the watchdog next ran, was logged as an
      ERROR ("Aiokafka has not sent fetch request ... since start") once the worker had been up
      longer than the timeout; here each partition of an assignment is judged only once the
      timeout has passed since the watchdog first saw it in that assignment.
    - ``Consumer.pause_partitions`` and ``Consumer.resume_partitions`` change which partitions
      Faust would fetch; here they also tell the taker at once. Faust's fetcher, which finds
      no partition to fetch while recovery has paused them all, sleeps a second before it
      looks again, so the taker learned of the partitions recovery resumes up to a second
      late: a second of every start, rebalance, failover and restart.
    """
    getmany, wait_empty = consumer._getmany, consumer.wait_empty
    verify_event_path = consumer.verify_event_path
    pause_partitions, resume_partitions = consumer.pause_partitions, consumer.resume_partitions

    def tell(active_partitions: Any) -> None:
        topics = taker.topics
        taker.wanted(frozenset(tp for tp in active_partitions if tp.topic in topics))

    def own_pause_partitions(tps: Any) -> None:
        pause_partitions(tps)
        tell(consumer._get_active_partitions())

    def own_resume_partitions(tps: Any) -> None:
        resume_partitions(tps)
        tell(consumer._get_active_partitions())

    async def own_getmany(active_partitions: Any, timeout: float) -> Any:
        topics = taker.topics
        if active_partitions:
            tell(active_partitions)
            active_partitions = {tp for tp in active_partitions if tp.topic not in topics}
            if not active_partitions:
                # Nothing of Faust's own to fetch: wait a little, as an empty fetch would.
                await asyncio.sleep(min(timeout, 0.05))
                return {}
        return await getmany(active_partitions=active_partitions, timeout=timeout)

    async def own_wait_empty() -> None:
        await taker.drain()
        await wait_empty()

    assignment: list[frozenset[TP]] = [frozenset()]
    first_asked: dict[TP, float] = {}

    def own_verify_event_path(now: float, tp: TP) -> None:
        if tp.topic in taker.topics:
            return
        try:
            current = frozenset(consumer.assignment())
        except ConsumerNotStarted:
            current = frozenset()
        if current != assignment[0]:
            assignment[0] = current
            first_asked.clear()
        timeout = consumer._thread.tp_fetch_request_timeout_secs
        if now - first_asked.setdefault(tp, now) < timeout:
            return
        verify_event_path(now, tp)

    consumer._getmany = own_getmany
    consumer.wait_empty = own_wait_empty
    consumer.verify_event_path = own_verify_event_path
    consumer.pause_partitions = own_pause_partitions
    consumer.resume_partitions = own_resume_partitions


def list_offsets_in_one_request(consumer: Any, app: PatchedApp) -> None:
    """Answer the consumer's ``highwaters`` and ``earliest_offsets`` with confluent-kafka
    ``ListOffsets`` requests.

    Faust's recovery asks for both at every rebalance (``Recovery._build_highwaters`` and
    ``_build_offsets``), through the aiokafka consumer's thread, in the middle of the group's
    rebalance: each answer took about 1.5 s there (a standalone aiokafka consumer answers the
    same question in a millisecond), so every worker start and every rebalance waited 3 s
    before its tables were even looked at. The admin client asks the partition leaders
    directly.

    The earliest offsets are aiokafka's. The ends are those recovery can reach: it counts a
    changelog partition done when the last record it received has the end offset minus one.
    Under ``at_least_once`` that is the high watermark. Under stream_app's ``exactly_once``
    (``read_committed``) every changelog partition ends with a transaction marker, which is
    never received, so the end of the partition as the consumer reads it (the last stable
    offset) is never reached (Faust's own ``exactly_once`` gives up waiting after 10 s without
    records, and by then may have skipped records still queued): the end given is the offset
    after the last committed record before the last stable offset (:func:`_committed_record_ends`).
    The last stable offset is read once it has caught up with the high watermark, for at most
    :data:`TXN_SETTLE_S`: a transaction the previous owner has just committed has its markers
    written after its commit returned, and until then its records are past the last stable
    offset while the persisted offset of the tables already counts them (recovery would stop
    with a ``ConsistencyError``). A transaction left open by a crashed owner keeps it behind;
    after the bound, its records are not counted, as they are not committed.
    """
    admin: list[AdminClient] = []

    async def offsets(
        spec: OffsetSpec, partitions: tuple[TP, ...], isolation: IsolationLevel
    ) -> dict[TP, int]:
        if not partitions:
            return {}
        request = {TopicPartition(tp.topic, tp.partition): spec for tp in partitions}
        deadline = time.monotonic() + LEADER_WAIT_S
        # Each try is bounded on its own: a request to a leader that has just died waits for
        # its time-out (Faust's broker_request_timeout is 90 s), and recovery with it.
        try_s = min(float(app.conf.broker_request_timeout), LIST_OFFSETS_TRY_S)
        while True:
            if not admin:
                config: dict[str, Any] = {**app.kafka_config, "logger": rdkafka_logger()}
                admin.append(AdminClient(config))
            answers = admin[0].list_offsets(
                request, isolation_level=isolation, request_timeout=try_s
            )
            try:
                found = {}
                for asked, future in answers.items():
                    info = await asyncio.wrap_future(future)
                    found[TP(asked.topic, asked.partition)] = info.offset
            except KafkaException as exc:
                # A partition's leader moving, not elected yet (a topic just created, a broker
                # restarting) or dead without the client knowing yet (the try timed out):
                # asked again, the client finds the new leader.
                error = exc.args[0] if exc.args else None
                if not _leader_moving(error) or time.monotonic() >= deadline:
                    raise
                logger.info(
                    "recovery: asking again for the offsets of %d partition(s) after %s",
                    len(request),
                    error,
                )
            else:
                unknown = ", ".join(
                    f"{tp.topic}[{tp.partition}]" for tp, offset in found.items() if offset < 0
                )
                if not unknown:
                    return found
                # -1: the request to the partition's leader timed out (librdkafka answers -1,
                # not an error). The client's metadata may still name a leader that died (it
                # does not refresh it for such answers): asked again with a new client, which
                # reads the cluster's metadata afresh.
                if time.monotonic() >= deadline:
                    raise KafkaException(
                        KafkaError(
                            KafkaError.OFFSET_NOT_AVAILABLE,
                            f"no offset known for {unknown} after {LEADER_WAIT_S:.0f}s",
                        )
                    )
                logger.info("recovery: no offset known yet for %s; asking again", unknown)
            admin.clear()  # a new client: fresh metadata
            await asyncio.sleep(0.2)

    latest: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    earliest: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]

    async def highwaters(*partitions: TP) -> dict[TP, int]:
        high = await offsets(latest, partitions, IsolationLevel.READ_UNCOMMITTED)
        if not app.exactly_once:
            return high
        deadline = time.monotonic() + TXN_SETTLE_S
        while True:
            stable = await offsets(latest, partitions, IsolationLevel.READ_COMMITTED)
            settled = all(stable[tp] >= high[tp] for tp in stable)
            if settled or time.monotonic() >= deadline:
                if not settled:
                    behind = {tp: (stable[tp], high[tp]) for tp in stable if stable[tp] < high[tp]}
                    logger.info(
                        "recovery: last stable offsets behind the high watermarks after %.0fs "
                        "(an open transaction's records are not counted): %s",
                        TXN_SETTLE_S,
                        behind,
                    )
                return await _committed_record_ends(app.kafka_config, stable)
            await asyncio.sleep(0.05)

    async def earliest_offsets(*partitions: TP) -> dict[TP, int]:
        return await offsets(earliest, partitions, IsolationLevel.READ_UNCOMMITTED)

    consumer.highwaters = highwaters
    consumer.earliest_offsets = earliest_offsets


def judge_recovery_from_its_start(consumer: Any, app: faust.App) -> None:
    """Make Faust's recovery watchdog count from the recovery's start, not the consumer's.

    ``Consumer.verify_recovery_event_path`` asks whether a changelog partition was fetched
    since the *consumer* started: on a worker up for longer than ``stream_processing_timeout``,
    every recovery still waiting for its first fetch after 5 s (a rebalance under load) logged
    "Aiokafka has not sent fetch request … since start" as an ERROR. Here it judges a recovery
    only once the recovery itself (``Recovery._recovery_started_at``) has run that long.
    """
    verify_recovery_event_path = consumer.verify_recovery_event_path

    def own_verify_recovery_event_path(now: float, tp: TP) -> None:
        recovery: Any = getattr(app.tables, "recovery", None)
        started = getattr(recovery, "_recovery_started_at", None)
        if started is None or now - started >= app.conf.stream_processing_timeout:
            verify_recovery_event_path(now, tp)

    consumer.verify_recovery_event_path = own_verify_recovery_event_path


def read_committed(thread: Any) -> None:
    """Make Faust's aiokafka consumer ``thread`` read ``read_committed`` while Faust commits
    offsets the ``at_least_once`` way.

    ``AIOKafkaConsumerThread._create_worker_consumer`` makes an aiokafka consumer that reads
    ``read_uncommitted`` unless Faust runs its own transactions; here the consumer's
    ``_isolation_level`` is set to ``read_committed`` before its fetcher starts. (The ends that
    table recovery waits for are :func:`list_offsets_in_one_request`'s.)
    """
    create = thread._create_worker_consumer

    def create_read_committed(transport: Any) -> Any:
        consumer = create(transport)
        # Read by the fetcher aiokafka makes when the consumer starts, after this.
        consumer._isolation_level = "read_committed"
        return consumer

    thread._create_worker_consumer = create_read_committed


async def _committed_record_ends(kafka: KafkaConnection, stable: dict[TP, int]) -> dict[TP, int]:
    """The offset after the last committed record before each partition's last stable offset
    (``stable``), read by :func:`~stream_app.kafka.reading.last_record_offsets` off the loop."""
    loop = asyncio.get_running_loop()
    last = await loop.run_in_executor(
        None,
        last_record_offsets,
        kafka,
        {(tp.topic, tp.partition): offset or 0 for tp, offset in stable.items()},
    )
    ends = {}
    for tp in stable:
        offset = last.get((tp.topic, tp.partition))
        ends[tp] = 0 if offset is None else offset + 1
    return ends


# -- the producer's send buffer -----------------------------------------------------------------


@dataclass(slots=True)
class SendCounts:
    """How many messages entered Faust's send buffer, and how many left it, in order.

    Attributes:
        queued: Messages put into the buffer so far.
        sent: Messages the buffer has handed to the Kafka client so far (it sends in FIFO
            order, so the first ``sent`` of the ``queued`` are gone).
    """

    queued: int = 0
    sent: int = 0


async def drain_send_buffer(
    buffer: Any, counts: SendCounts, *, timeout: float = FLUSH_TIMEOUT_S
) -> None:
    """Wait until every message queued in Faust's send buffer before this call has left it.

    Faust's own ``ProducerBuffer.flush()`` gives up as soon as no message leaves the buffer for
    100 ms, so the flush that precedes an offset commit can return with changelog records still
    queued. The offset is then committed ahead of the state it covers; a crash before those
    records are sent loses the update (recovery replays an older changelog value over RocksDB,
    and the input is not replayed). This drains for real, but only what the commit covers:

    1. Note how many messages were queued when the flush started: the records of every event
       whose offset is being committed. Records queued later belong to later events; waiting
       for them too would hold the commit for as long as the agent keeps writing.
    2. While fewer than that have left the buffer, wait for its ``message_sent`` signal (100 ms
       slices), without giving up while the sender makes progress.
    3. If the buffer stops running first, raise: those messages can never be sent.
    4. If ``timeout`` passes, raise :class:`~stream_app.errors.FlushTimeoutError`; the commit
       fails, the worker stops, and the uncommitted input is replayed (at least once).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    target = counts.queued
    while counts.sent < target:
        unsent = target - counts.sent
        if buffer.state != "running":
            raise FlushTimeoutError(
                f"producer buffer is {buffer.state!r} with {unsent} message(s) unsent"
            )
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise FlushTimeoutError(
                f"{unsent} message(s) still unsent after {timeout:.0f}s; refusing to "
                "commit offsets ahead of them"
            )
        buffer.message_sent.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(buffer.message_sent.wait(), timeout=min(0.1, remaining))


def send_buffer_that_drains(buffer: Any) -> None:
    """Make Faust's producer ``buffer`` (a ``ProducerBuffer``) drain for real before a commit.

    ``ProducerBuffer.put`` and ``ProducerBuffer._send_pending`` are wrapped to count what
    enters and leaves the buffer (:class:`SendCounts`), and ``ProducerBuffer.flush``, which
    Faust awaits before committing offsets, becomes :func:`drain_send_buffer`. The buffer's
    sender task looks up ``_send_pending`` when it starts, after this.
    """
    counts = SendCounts()
    put, send_pending = buffer.put, buffer._send_pending

    def counted_put(fut: Any) -> None:
        put(fut)
        counts.queued += 1

    async def counted_send(fut: Any) -> None:
        await send_pending(fut)
        counts.sent += 1

    async def flush() -> None:
        await drain_send_buffer(buffer, counts)

    buffer.put = counted_put
    buffer._send_pending = counted_send
    buffer.flush = flush


# -- table databases after an unclean stop ------------------------------------------------------


#: Written in the table directory by a clean shutdown.
CLEAN_MARKER = ".stream_app-clean-shutdown"


def discard_unclean_tables(tabledir: Path) -> list[Path]:
    """Delete the table databases under ``tabledir`` unless the last worker stopped cleanly.

    Relies on Faust's table store layout (one RocksDB database folder per table and partition
    under ``App.conf.tabledir``) and on Faust's recovery rebuilding a missing database from its
    changelog topic.

    A batch's table writes reach RocksDB at its end, while their changelog records are still
    on their way to the broker (``at_least_once``) or wait for the transaction
    (``exactly_once``): a worker killed then leaves writes in RocksDB that the changelog does not
    have, so the database is ahead of the changelog (and the input that made those writes is
    read again). Recovery replays the changelog from the offset the database recorded, over
    those writes, and the result can be neither state: under ``at_least_once`` a timer that
    fired in the lost batch was gone from the timers table while the cell's record, replayed
    from an earlier record of the changelog, still counted it pending, so it never fired (the
    worker chaos test, once in many runs). As Kafka Streams does after an unclean shutdown
    under exactly-once, the databases are then rebuilt from the changelog (which the app's
    consumer reads ``read_committed`` under ``exactly_once``), under either guarantee. A clean
    shutdown leaves :data:`CLEAN_MARKER`, which this consumes.

    Returns the databases deleted.
    """
    marker = tabledir / CLEAN_MARKER
    if marker.exists():
        marker.unlink()
        return []
    if not tabledir.is_dir():
        return []
    doomed = sorted(p for p in tabledir.iterdir() if p.is_dir())
    for path in doomed:
        shutil.rmtree(path)
    if doomed:
        logger.warning(
            "the last worker did not stop cleanly; rebuilding %d table "
            "database(s) from their changelogs",
            len(doomed),
        )
    return doomed


# -- the batched input's use of Faust's consumer ------------------------------------------------


def streams_flowing(consumer: Any) -> bool:
    """Whether Faust lets its streams take records now.

    Faust internal: ``Consumer.flow_active`` is off while Faust suspends its streams (a
    rebalance, table recovery). Faust's own fetch waits on it; the batched input, which reads
    the cell input topics in Faust's stead, reads only while it is on.
    """
    return bool(consumer.flow_active)


async def commit_offsets(consumer: Any, offsets: dict[TP, int]) -> bool:
    """Commit ``offsets`` through Faust's consumer, the group member; ``False`` if it refused.

    Faust internal: ``Consumer._commit(offsets)`` commits the offsets Faust's streams
    acknowledged (Faust calls it from its commit loop). The batched input's records never pass
    through Faust's streams, so it calls the same method with the offsets it processed: the
    commit goes to the group with the member's generation, and fails on a stale one.
    """
    return bool(await consumer._commit(offsets))


# -- table store internals ----------------------------------------------------------------------

#: Faust internal: Faust's RocksDB store keeps the changelog offset a partition's database has
#: applied in that database, under this key (``rocksdb.Store.offset_key``); it is no key of the
#: table, and the cells store skips it when it iterates a partition.
FAUST_OFFSET_KEY = b"__faust\0offset__"


def partition_db(table: Any, partition: int) -> Any:
    """The rocksdict database of one partition of the Faust ``table``.

    Faust internal: ``rocksdb.Store._db_for_partition`` opens (once) and returns it. Faust
    reaches it through ``Table.__getitem__``/``__setitem__`` and several layers per access (and
    a ``contains`` before each ``get``); the cells store reads and writes it directly, one
    RocksDB call per access, and produces the changelog record itself.
    """
    return table.data._db_for_partition(partition)


def open_partition_db(table: Any, partition: int) -> Any | None:
    """The rocksdict database of one partition of the Faust ``table`` if its store has it open,
    else ``None`` (never opens one: for readers outside the processing of a record, which may
    run while a rebalance revokes the partition). Faust internal: ``rocksdb.Store._dbs``."""
    return table.data._dbs.get(partition)


def write_batch() -> Any:
    """An empty RocksDB ``WriteBatch`` for a database of :func:`partition_db`.

    Faust internal: Faust's store opens its rocksdict databases in raw mode (keys and values
    are bytes, no pickling; ``rocksdb.Store._options``), and a write batch must be in the same
    mode as its database.
    """
    return WriteBatch(raw_mode=True)


def set_persisted_offset(table: Any, changelog_topic: str, partition: int, offset: int) -> None:
    """Record that ``partition`` of ``table`` has applied its changelog up to ``offset``.

    Faust internal: ``rocksdb.Store.set_persisted_offset`` records the changelog offset that
    Faust's own sends reached, and recovery replays the changelog only after it. The cells
    store's writes bypass Faust's producer, so the batched input reports the offsets its
    producer reached at each commit.
    """
    table.data.set_persisted_offset(TP(changelog_topic, partition), offset)


# -- one RocksDB memory budget per worker ------------------------------------------------------


class RocksDBMemory:
    """The memory every RocksDB database of a worker shares: one block cache, and one write
    buffer manager that charges the memtables to it (at most half of it).

    Faust gives each database (one per table and partition) a block cache of its own (2 GiB)
    and memtables of up to 3 x 64 MiB, so a worker's memory grew with what it wrote, up to
    about 2 GiB per table partition: a backlog drained at once filled the memtables (about
    60 bytes per cell write), and the more partitions a worker owned the higher its ceiling.
    Kafka Streams bounds its stores the same way (a shared cache and write buffer manager,
    ``BoundedMemoryRocksDBConfig``).

    The bound is RocksDB's, and soft: when the memtables are over their share, the write
    buffer manager flushes the database that is writing; a database that takes no more writes
    (a partition without traffic) keeps its memtable until its next write, so the usage can
    stay above the budget by what such databases hold (seen up to 1.3 times a 16 MiB budget
    with six databases written one after the other; about half of it when written in turn, as
    a worker's partitions are).

    Args:
        total_bytes: The budget (``Settings.rocksdb_memory_bytes``): block cache and memtables
            together. A memtable that reaches its share is flushed to disk sooner; reads beyond
            the cache go to the files (and the OS page cache).
    """

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.cache = Cache(total_bytes)
        self.write_buffers = WriteBufferManager.new_write_buffer_manager_with_cache(
            total_bytes // 2, False, self.cache
        )

    def usage(self) -> int:
        """Bytes of the budget in use now (cached blocks and memtables)."""
        return int(self.cache.get_usage())


def share_rocksdb_memory(table: Any, memory: RocksDBMemory) -> None:
    """Open every database of the Faust ``table`` within ``memory`` (:class:`RocksDBMemory`).

    Faust internal: ``rocksdb.Store.rocksdb_options`` (a ``RocksDBOptions``) makes the options
    of each partition database its store opens, in ``as_options``, with a new block cache each
    time. This replaces that method on the table's options object with the same options (raw
    mode, the bloom filter, the index type, the write buffer and file sizes Faust sets) around
    the shared cache and write buffer manager. Call it before the table opens a database.

    The table makes its store lazily (``Collection._new_store``, on first use of
    ``table.data``), and a RocksDB store makes folders when it is made; so the options are
    replaced when the store is made, not here: a worker that stops before its tables are used
    (refused credentials) leaves no folder behind.
    """
    new_store = table._new_store

    def shared_store() -> Any:
        store = new_store()
        _share_options(store.rocksdb_options, memory)
        return store

    table._new_store = shared_store


def _share_options(options: Any, memory: RocksDBMemory) -> None:
    """Replace ``options.as_options`` (a Faust ``RocksDBOptions``) by the same options around
    ``memory``'s cache and write buffer manager."""

    def as_options() -> Options:
        db_options = Options(raw_mode=True)
        db_options.create_if_missing(True)
        db_options.set_max_open_files(options.max_open_files)
        db_options.set_write_buffer_size(options.write_buffer_size)
        db_options.set_target_file_size_base(options.target_file_size_base)
        db_options.set_max_write_buffer_number(options.max_write_buffer_number)
        db_options.set_write_buffer_manager(memory.write_buffers)
        table_options = BlockBasedOptions()
        table_options.set_bloom_filter(options.bloom_filter_size, block_based=True)
        table_options.set_block_cache(memory.cache)
        table_options.set_index_type(BlockBasedIndexType.binary_search())
        db_options.set_block_based_table_factory(table_options)
        return db_options

    options.as_options = as_options


# -- table recovery at the speed of reading --------------------------------------------------


def _fast_restorable(table: Any) -> bool:
    """Whether recovery may fill ``table`` without Faust's per-record path: a RocksDB store,
    and no ``on_changelog_event`` callback, which wants every record as a Faust event."""
    return isinstance(table.data, RocksDBStore) and table._on_changelog_event is None


def restore_changelogs_fast(app: PatchedApp) -> None:
    """Let :func:`stream_app.kafka.restore.restore` read changelog partitions before Faust's
    recovery does, so that Faust's recovery finds them up to date.

    Faust's recovery (``faust.tables.recovery.Recovery._restart_recovery``) seeks its consumer
    to the offset each changelog partition's database records, then reads the rest record by
    record (a few thousand per second). It seeks the active partitions before it reads them,
    and the standby partitions after the actives are recovered, each through
    ``Recovery._seek_offsets(consumer, tps, offsets, title)``. Here that method first restores
    ``tps`` of every RocksDB table (:func:`_fast_restorable`) from ``offsets[tp] + 1`` (Faust's
    offsets are the last offset applied: the persisted offset or the earliest one) into the
    partition's database (``rocksdb.Store._db_for_partition``), then moves ``offsets[tp]`` to
    the last offset read, and Faust seeks there: an active partition has nothing left to read
    (``Recovery.need_recovery`` is false), a standby continues from there as Faust's own.

    ``Recovery._wait``, which runs each step of the recovery until a rebalance or a stop, also
    bounds each step by ``broker_request_timeout`` and treats running out as the service
    stopping: for this step it waits without that bound (a restore takes as long as the
    changelog is long). A rebalance or a stop cancels the step; the restore then stops at the
    end of its batch (and a partition the store closed is dropped at once). Partition
    assignment, the offsets Faust starts from and everything after are Faust's.
    """
    tables: Any = app.tables
    recovery: Any = tables.recovery
    seek_offsets, wait = recovery._seek_offsets, recovery._wait

    async def own_seek_offsets(consumer: Any, tps: set[TP], offsets: Any, title: str) -> None:
        await _restore_before_seek(app, recovery, tps, offsets, title)
        await seek_offsets(consumer, tps, offsets, title)

    async def own_wait(coro: Any, timeout: Any = None) -> None:
        if getattr(coro, "cr_code", None) is own_seek_offsets.__code__:
            timeout = None
        await wait(coro, timeout=timeout)

    recovery._seek_offsets = own_seek_offsets
    recovery._wait = own_wait


async def _restore_before_seek(
    app: PatchedApp, recovery: Any, tps: set[TP], offsets: Any, title: str
) -> None:
    jobs = []
    for tp in sorted(tps):
        table = recovery.tp_to_table.get(tp)
        if table is None or not _fast_restorable(table):
            continue
        applied = offsets.get(tp)
        db = partition_db(table, tp.partition)
        jobs.append(
            RestoreJob(
                topic=tp.topic,
                partition=tp.partition,
                start=0 if applied is None or applied < 0 else applied + 1,
                db=db,
                offset_key=FAUST_OFFSET_KEY,
                still_ours=_still_open(table, tp.partition, db),
            )
        )
    if not jobs:
        return
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(
            None,
            functools.partial(
                restore,
                app.kafka_config,
                jobs,
                read_committed=app.exactly_once,
                stop=stop,
                title=title,
                progress=app.restore_progress,
            ),
        )
    finally:
        # Cancelled by a rebalance or a stop: the thread ends after its current batch.
        stop.set()
    for job in jobs:
        tp = TP(job.topic, job.partition)
        if job.covered is not None and (offsets.get(tp) is None or job.covered > offsets[tp]):
            offsets[tp] = job.covered


def _still_open(table: Any, partition: int, db: Any) -> Callable[[], bool]:
    """Whether Faust's RocksDB store of ``table`` still has ``db`` open for ``partition``
    (``rocksdb.Store._dbs``; revoking a partition removes it)."""
    dbs = table.data._dbs
    return lambda: dbs.get(partition) is db


# -- topics -------------------------------------------------------------------------------------


class DeclaredOnceTopic(faust.Topic):
    """A Faust topic that is not declared again when it is known to exist.

    Faust declares a topic each time a part of it starts using it: a table's changelog when the
    table starts and again when recovery starts, every subscribed topic when the conductor
    subscribes, the leader-assignor topic. Each declaration is a metadata round trip and a
    create request through the admin client, about half a second on a busy machine, so a
    worker with three tables spent some 5 s of its start declaring topics that the runtime had
    created (or found) a moment before. ``maybe_declare`` promises to create a topic "only if
    it does not exist": this one asks the app's :attr:`PatchedApp.existing_topics` first, and
    adds what it declared to it. A declaration never changed an existing topic's
    configuration, so skipping it changes nothing else.
    """

    async def maybe_declare(self) -> None:
        """Declare the topic unless every one of its names is known to exist."""
        known: set[str] = getattr(self.app, "existing_topics", set())
        if all(name in known for name in self.topics):
            await self._track()
            return
        await super().maybe_declare()
        known.update(self.topics)

    async def _track(self) -> None:
        """Have the producer's metadata cover the topic, as a declaration would (Faust's
        ``Producer.create_topic`` ends with a metadata update, and routing a table key to its
        partition, ``Producer.key_partition``, reads the producer's metadata)."""
        producer: Any = await self.app.maybe_start_producer()
        client = producer._ensure_producer().client
        for name in self.topics:
            await client.add_topic(name)


# -- tables ----------------------------------------------------------------------------------


class TableManagerStartingAtOnce(TableManager):
    """Faust's table manager without the second it sleeps as it starts.

    ``TableManager.on_start`` sleeps one second before it registers the tables' changelog
    channels and starts recovery, giving parts that start alongside it time to add tables:
    a second of every worker's start, also when every table was defined at import, as the
    runtime's are (a behaviour's tables are made when it is registered). A table added once
    the channels are registered still fails loudly (Faust's ``RuntimeError``, "Too late to
    add tables at this point"), so a late table cannot go unnoticed.
    """

    async def on_start(self) -> None:
        """Register the changelog channels and start recovery, as Faust does after its sleep."""
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


#: Longest recovery waits for the last stable offset of a changelog partition to catch up
#: with its high watermark (:func:`list_offsets_in_one_request`), in seconds.
TXN_SETTLE_S = 2.0

#: Longest recovery asks again for offsets a partition's leader could not answer yet (a topic
#: just created, a leader moving), in seconds.
LEADER_WAIT_S = 30.0

#: Longest one ``ListOffsets`` try of recovery waits for its answer, in seconds (then it is
#: asked again, until :data:`LEADER_WAIT_S`).
LIST_OFFSETS_TRY_S = 5.0

_LEADER_MOVING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
    }
)


def _leader_moving(error: Any) -> bool:
    """Whether a Kafka error says a partition has no leader that answers yet."""
    if not isinstance(error, KafkaError):
        return False
    return error.code() in _LEADER_MOVING or bool(error.retriable())


# -- the app's private hooks --------------------------------------------------------------------


def refuse_assignments_for_another_address(app: PatchedApp) -> None:
    """Crash a static group member that is handed an assignment made for another address.

    A member that joins with a ``group.instance.id`` the group already has takes that
    member's place, and its assignment, without a rebalance. Faust's assignor carries each
    member's web address in the assignment (the address other workers route a partition's
    views to) and asserts it is its own; when it is not (the worker came back at another host
    or port, or a second live worker was started with an id in use), the assertion ends
    aiokafka's coordinator routine and leaves the worker running without partitions, never
    ready. Here the worker crashes instead, with a :class:`~stream_app.errors.ConfigError`
    that says why, so its supervisor sees it; once the stale member's session has expired a
    restart joins afresh.
    """
    assignor: Any = app.assignor
    on_assignment = assignor.on_assignment

    def own_on_assignment(assignment: Any) -> None:
        made_for = ClientMetadata.loads(assignor._decompress(assignment.user_data)).url
        mine = str(assignor._url)
        if made_for != mine:
            error = ConfigError(
                f"the consumer group gave group instance id "
                f"{app.conf.consumer_group_instance_id!r} an assignment made for a worker at "
                f"{made_for}, and this worker is at {mine}: a static member must come back at "
                "the same STREAM_APP_WEB_HOST and STREAM_APP_WEB_PORT, and no two live workers "
                "may share an id (STREAM_APP_GROUP_INSTANCE_ID). The group forgets the other "
                "address when that member's session times out (STREAM_APP_SESSION_TIMEOUT_S)."
            )
            # The assignor runs on the consumer's thread; the app crashes on its own loop.
            app.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(app.crash(error)))
            raise error
        on_assignment(assignment)

    assignor.on_assignment = own_on_assignment


class PatchedApp(faust.App):
    """A :class:`faust.App` whose consumer, producer and flow control carry the patches above.

    Overrides three private hooks of ``faust.App``: ``flow_control`` (a cached property),
    ``_new_consumer`` and ``_new_producer``, each of which calls Faust's and patches the object
    it returns; its ``on_start`` patches the table recovery (:func:`restore_changelogs_fast`).
    :class:`~stream_app.kafka.app.StreamApp` builds on it.

    Attributes:
        exactly_once: stream_app's ``exactly_once`` is in force: the consumer reads
            ``read_committed`` (:func:`read_committed`).
        kafka_config: The brokers and the security properties of the confluent-kafka clients
            that read beside Faust's (offsets and tails for table recovery, the restore of
            changelogs).
        existing_topics: Topics known to exist on the cluster, which :class:`DeclaredOnceTopic`
            does not declare again (filled as topics are found, created or declared).
        restore_progress: The changelog partitions restored by :func:`restore_changelogs_fast`
            (records restored and remaining), for the metrics.
    """

    exactly_once: bool = False
    kafka_config: Mapping[str, Any] = {}
    _input_taker: InputTaker | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("Topic", DeclaredOnceTopic)
        kwargs.setdefault("TableManager", TableManagerStartingAtOnce)
        super().__init__(*args, **kwargs)
        self.existing_topics: set[str] = set()
        self.restore_progress = RestoreProgress()

    def take_input_topics(self, taker: InputTaker) -> None:
        """Let ``taker`` read ``taker.topics`` instead of this app's consumer (see
        :func:`hand_topics_to`); call it before the consumer is made (before the app starts)."""
        self._input_taker = taker

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        """Faust's flow control of the stream queues, as :class:`KeepingFlowControl`."""
        return KeepingFlowControl(loop=self.loop)

    async def on_start(self) -> None:
        """Faust's start, with table recovery reading changelogs in bulk first
        (:func:`restore_changelogs_fast`) and, for a static group member, assignments made for
        another address refused (:func:`refuse_assignments_for_another_address`); before the
        consumer joins, so from the first rebalance on."""
        await super().on_start()
        restore_changelogs_fast(self)
        if self.conf.consumer_group_instance_id:
            refuse_assignments_for_another_address(self)

    def _new_consumer(self) -> Any:
        consumer: Any = super()._new_consumer()
        if self.exactly_once:
            read_committed(consumer._thread)
        judge_recovery_from_its_start(consumer, self)
        list_offsets_in_one_request(consumer, self)
        if self._input_taker is not None:
            hand_topics_to(consumer, self._input_taker)
        return consumer

    def _new_producer(self) -> ProducerT:
        producer = super()._new_producer()
        send_buffer_that_drains(producer.buffer)
        return producer
