"""Batched input for the cell engines: cell input topics read with confluent-kafka, in batches.

Faust delivers a record to an agent through a per-record path (the aiokafka fetch, a task pair
per record in the consumer's drain loop, the stream, the ack bookkeeping) that costs several
hundred microseconds of CPU per record. The runtime takes that path out of the way for the cell
input topics (it is the only way records reach cells, under both guarantees), keeping
everything else Faust does:

- **Faust decides what this worker reads.** The input topics stay subscribed through the
  engines' agents, so Faust's assignor, table recovery and standbys work as before. The app's
  consumer is told (:meth:`StreamApp.take_input_topics`) not to fetch those topics itself; the
  partitions Faust would have fetched (assigned, recovered, resumed, flow running) are the ones
  :class:`BatchInput` reads.
- **confluent-kafka reads them.** One consumer, manually assigned those partitions at their
  committed offsets (it never joins the group), takes up to :data:`BATCH_MAX` records at a time,
  on the event loop's thread. While none are there the loop waits for librdkafka to signal that
  some arrived (its consumer queue's IO event: :mod:`stream_app.kafka.queue_wake`), so a record
  arriving alone costs no hop to another thread and an idle input costs nothing; where that
  signal cannot be had, a helper thread waits in ``poll`` instead.
- **The engines process them** one by one (the handler registered for the record's topic),
  each with the unit of work of its partition (:class:`PartitionWork`): table writes go straight
  to RocksDB, and their changelog records and every other output of the record are produced
  into that unit, to a confluent-kafka producer.
- **Offsets are committed through Faust's consumer** (a group member), every
  ``broker_commit_interval``, when a fetch finds the input drained (at most every
  :data:`IDLE_COMMIT_MIN_S`), and whenever a rebalance or shutdown takes the partitions, and only
  after every changelog record and every other record produced for the committed input has been
  acknowledged. The changelog offset each partition's database has applied is persisted at the
  same time, so recovery replays the changelog from there. The interval's commit sends the
  offsets to the group in the background, so input arriving during that round trip is not held
  (it set the tail of the end-to-end latency); the next commit, a rebalance or a stop waits for
  it first.

A crash loses nothing acknowledged: input whose offset was not committed is read again (at
least once), exactly as with Faust's own commit.

**What it counts** (served by the Prometheus view, :mod:`stream_app.web.prometheus`): the
records read from each topic and the time each took, from its batch being taken from the
consumer to the end of its handling (an increment and a bucket per record:
:class:`~stream_app.engine.ports.LatencyHistogram`), the outputs the broker acknowledged by
topic, offset commits, transactions committed and failed, and on demand the lag of each
partition read (:meth:`BatchInput.lags`).

**Under** ``exactly_once`` the same loop runs one Kafka transaction per input partition, as
Kafka Streams' per-task producers did (``exactly_once`` before KIP-447):

- Each input partition this worker reads has its own transactional producer, with the
  transactional id ``stream_app.<app_id>.<topic>.<partition>``. Taking a partition calls
  ``init_transactions()`` *before* its committed offset is read: the broker completes or aborts
  whatever the previous owner left open and fences that owner, so a zombie (a worker that lost
  the partition in a rebalance it did not see) can no longer commit anything for it.
- Everything a record causes goes into its partition's transaction: table changelog records,
  events, effects, replies, messages to other cells (on any partition) and dead letters.
- A commit sends each partition's next offset with ``send_offsets_to_transaction`` and commits
  the transactions, in parallel, between two batches. Outputs and offsets become visible
  together (consumers read ``read_committed``), or not at all.
- The RocksDB databases take writes at once, ahead of the commit. A worker that stops without
  committing (killed, fenced, or a transaction that fails) leaves them ahead of the changelog,
  so a worker that did not stop cleanly rebuilds its tables from the changelog on its next start
  (:func:`stream_app.kafka.faust_patches.discard_unclean_tables`), as Kafka Streams does under
  exactly-once; so does one under ``at_least_once``, whose last batch's writes are ahead of
  their changelog records until the broker acknowledges them.

**Broker outages.** Every blocking call of a commit (a flush, a transaction call) is bounded by
``Settings.kafka_call_timeout_s``; one that does not complete stops the worker loudly
(:class:`ChangelogError`, :class:`TransactionError`) instead of leaving it alive and idle.
Under ``exactly_once`` a commit waits while the cluster does not answer
(:meth:`BatchInput._broker_answers`): a transaction call started during an outage can wedge
librdkafka for good, while one an outage catches in flight fails retriably and completes on
retry once the broker is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from faust.types import TP

from stream_app.core.records import Headers, InputRecord
from stream_app.engine.ports import LatencyHistogram
from stream_app.errors import ChangelogError, StreamAppError, TransactionError
from stream_app.kafka.app import StreamApp
from stream_app.kafka.faust_patches import commit_offsets, streams_flowing
from stream_app.kafka.queue_wake import QueueWake
from stream_app.logs import rdkafka_logger
from stream_app.settings import Settings

__all__ = ["BATCH_MAX", "BatchInput", "Handler", "InputTopic", "PartitionWork"]

logger = logging.getLogger(__name__)

#: Most records taken from the consumer in one batch.
BATCH_MAX = 500
#: Longest a fetch waits for the first record of a batch, in seconds, while processed input is
#: uncommitted (a fetch that finds nothing in that time commits it: :data:`IDLE_COMMIT_MIN_S`).
POLL_TIMEOUT_S = 0.02
#: Longest the loop waits for records (or for partitions to read) with nothing to commit, in
#: seconds, when librdkafka signals arriving records (:mod:`stream_app.kafka.queue_wake`): a
#: record, a change of the partitions to read and a drain wake it at once, so this bounds only
#: how late an interval commit with nothing new in it runs. The helper thread's ``poll``, which
#: holds up a drain until it returns, keeps :data:`POLL_TIMEOUT_S`.
IDLE_WAIT_S = 0.25
#: A fetch that finds the input drained commits what was processed, if the last commit is at
#: least this old (seconds); otherwise commits wait for ``broker_commit_interval``.
IDLE_COMMIT_MIN_S = 0.1
#: With an input linger, the bytes of records that end a fetch before the linger does.
LINGER_FETCH_BYTES = 1_048_576
#: Threads that initialise and commit the partitions' transactions side by side.
TXN_THREADS = 8
#: First pause before a transaction call is tried again after a retriable error (seconds); it
#: doubles after each try, up to :data:`TXN_RETRY_PAUSE_MAX_S`.
TXN_RETRY_PAUSE_S = 0.1
#: Longest pause between two tries of a transaction call.
TXN_RETRY_PAUSE_MAX_S = 1.0
#: Seconds a blocking call is given beyond its own time-out before the loop stops waiting for
#: it (librdkafka does not always honour the time-out of ``send_offsets_to_transaction``).
CALL_GRACE_S = 5.0
#: Longest the metadata probe before an ``exactly_once`` commit waits for the broker.
PROBE_TIMEOUT_S = 2.0

T = TypeVar("T")


def _record(message: Message) -> InputRecord:
    """The record carried by a confluent-kafka message."""
    kind, ms = message.timestamp()
    headers: Any = message.headers()
    return InputRecord(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        headers=headers,
        timestamp_ms=ms if kind != 0 and ms > 0 else None,
    )


def _set_done(waiter: asyncio.Future[None]) -> None:
    """End a wait (:meth:`BatchInput._wait`) at its time-out."""
    if not waiter.done():
        waiter.set_result(None)


class PartitionWork:
    """The unit of work of one input partition read here (the engines' ``Outputs`` port).

    Made once per partition when it is assigned, and handed to the engine with each record
    read from it. What the engine produces into it goes out with the partition's other
    outputs: acknowledged before the partition's offset is committed (``at_least_once``), or
    in the partition's transaction (``exactly_once``).

    Attributes:
        tp: The input partition.
        partition: Its number.
    """

    __slots__ = ("_input", "partition", "tp")

    def __init__(self, batch_input: BatchInput, tp: TP) -> None:
        self._input = batch_input
        self.tp = tp
        self.partition = tp.partition

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        headers: Headers = None,
    ) -> None:
        """Produce a record to ``topic[partition]`` as an output of this partition's input."""
        self._input.send(self.tp, topic, key, value, partition, headers)


#: What the records of one input topic are handed to, each with its partition's unit of work:
#: it handles the record at once and returns ``None``, or returns an awaitable that finishes
#: it (awaited before the next record).
Handler = Callable[[InputRecord, PartitionWork], Awaitable[None] | None]


class InputTopic:
    """One input topic read here: its handler, and what its records have counted.

    Attributes:
        handler: What its records are handed to.
        records: Records read from it and handled.
        latency: For each record, the seconds from its batch being taken from the consumer to
            the end of its handling (the records before it in the batch included).
    """

    __slots__ = ("handler", "latency", "records")

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.records = 0
        self.latency = LatencyHistogram()


class BatchInput:
    """Reads the cell input topics this worker owns and hands their records to the engines.

    Made by the :class:`~stream_app.runtime.Runtime`. See the module documentation for how
    it fits Faust and how its transactions work.

    Args:
        settings: The settings (brokers, guarantee, call time-out).
        app: The app of ``create_app(settings)``, whose consumer leaves the registered topics
            to this reader.

    """

    def __init__(self, settings: Settings, app: StreamApp) -> None:
        self.settings = settings
        #: Faust's app (its consumer's commit and flow state, its producer, crash and stop).
        self.app: Any = app
        #: exactly_once: the transactional producer of each input partition read here.
        self._transactions: dict[TP, Producer] = {}
        #: exactly_once: the cause of each transactional producer's fatal error, once it had one.
        self._fatal: dict[TP, str] = {}
        #: exactly_once: partitions whose transaction has begun and not yet committed.
        self._open: set[TP] = set()
        #: The unit of work of each assigned partition.
        self._works: dict[tuple[str, int], PartitionWork] = {}
        self._txn_pool = ThreadPoolExecutor(TXN_THREADS, thread_name_prefix="stream_app-txn")
        #: The input topics read here, by name.
        self.inputs: dict[str, InputTopic] = {}
        #: Outputs the broker acknowledged, by topic.
        self.acknowledged: Counter[str] = Counter()
        #: Records the changelog offset a table partition's database has reached, by changelog
        #: topic: ``persist(partition, offset)``.
        self._changelogs: dict[str, Callable[[int, int], None]] = {}
        #: Called when a batch has been processed, before anything can commit it (the tables'
        #: write caches: :meth:`at_batch_end`).
        self._batch_ends: list[Callable[[], None]] = []
        #: Called when the partitions read here change (the tables' read caches:
        #: :meth:`at_assignment`).
        self._assignment_changed: list[Callable[[], None]] = []
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
        #: ``at_least_once``: the group commit of the last interval's offsets, made while the
        #: next batches are processed; awaited before the next commit (:meth:`_settle`).
        self._committing: asyncio.Future[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="stream_app-input")
        #: Signals records arriving in the consumer's queue (``None``: poll in ``_pool``).
        self._queue_wake: QueueWake | None = None
        #: What the loop awaits while it waits for records or partitions (:meth:`_wait`).
        self._waiter: asyncio.Future[None] | None = None
        #: Whether :meth:`_wake` was called since the loop last waited.
        self._woken = False
        self._last_commit = time.monotonic()
        #: Longest one blocking Kafka call of a commit may take (``Settings.kafka_call_timeout_s``).
        self.call_timeout = settings.kafka_call_timeout_s
        #: Longest the broker holds a fetch of the input for more records
        #: (``Settings.input_linger_ms``; 0: none).
        self.linger_ms = settings.input_linger_ms
        #: When the broker stopped answering the commit's probe (``exactly_once``), or ``None``.
        self._unanswered_since: float | None = None
        self.records = 0
        self.batches = 0
        self.commits = 0
        #: exactly_once: partition transactions committed, and those whose commit failed.
        self.transactions_committed = 0
        self.transactions_failed = 0
        #: Commits run (also those with nothing to commit), and the seconds the loop spent in
        #: them: in all, and the longest one.
        self.commit_calls = 0
        self.commit_seconds = 0.0
        self.commit_seconds_max = 0.0
        self.app.take_input_topics(self)
        self.app.task(self._run)

    @property
    def exactly_once(self) -> bool:
        """Whether each input partition's outputs and offsets commit in a Kafka transaction of
        its own: the app's guarantee (``StreamApp.exactly_once``), which the runtime may turn on
        when it registers an entity, before the app starts."""
        return bool(self.app.exactly_once)

    def stats(self) -> dict[str, Any]:
        """Records and batches processed, commits made and the time they held the input,
        transactional producers, partitions read (for the metrics)."""
        return {
            "exactly_once": self.exactly_once,
            "records": self.records,
            "batches": self.batches,
            "commits": self.commits,
            "commit_calls": self.commit_calls,
            "commit_seconds": round(self.commit_seconds, 6),
            "commit_seconds_max": round(self.commit_seconds_max, 6),
            "transactional_producers": len(self._transactions),
            "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in self._assigned),
        }

    # -- registration and Faust's side -----------------------------------------------------

    def register(self, topic: str, handler: Handler) -> None:
        """Hand the records of ``topic`` to ``handler`` (an engine's per-record entry)."""
        self.inputs[topic] = InputTopic(handler)

    def track_changelog(self, topic: str, persist: Callable[[int, int], None]) -> None:
        """Records produced to ``topic`` are a table's changelog: at each commit, call
        ``persist(partition, offset)`` with the last offset acknowledged on each partition."""
        self._changelogs[topic] = persist

    def at_batch_end(self, flush: Callable[[], None]) -> None:
        """Call ``flush()`` after each batch is processed, before the next commit, so that what
        it holds back from the batch's records (a table's pending writes and their changelog
        records) goes into the records' units of work before their offsets are committed."""
        self._batch_ends.append(flush)

    def at_assignment(self, changed: Callable[[], None]) -> None:
        """Call ``changed()`` whenever the partitions read here change (before the first record
        of the new set is read): what a table caches of a partition it stops reading may be
        out of date when it reads it again."""
        self._assignment_changed.append(changed)

    @property
    def topics(self) -> frozenset[str]:
        """The input topics read here rather than by Faust's consumer."""
        return frozenset(self.inputs)

    def wanted(self, tps: frozenset[TP]) -> None:
        """Faust's consumer would fetch ``tps`` of our topics now (called on every fetch)."""
        self._wanted = tps
        if tps != self._assigned:
            self._wake()

    def _wake(self) -> None:
        """End the loop's wait for records or partitions now (records arrived, the partitions to
        read changed, a drain waits for the loop)."""
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float) -> bool:
        """Wait until :meth:`_wake` is called (at once if it was since the last wait) or for
        ``timeout`` seconds; whether it was called."""
        if not self._woken:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _set_done, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        woken, self._woken = self._woken, False
        return woken

    async def drain(self) -> None:
        """Finish the batch in flight, commit everything processed, and give up the partitions.

        Called by the app's consumer when Faust waits for its streams to empty: when a
        rebalance revokes partitions and when the worker stops, before the tables close.
        Reading starts again, from the committed offsets, once Faust fetches again.
        """
        # The loop may be waiting for records, holding the lock: let it go round.
        self._wake()
        async with self._lock:
            self._wanted = frozenset()
            if self._assigned:
                try:
                    await self._commit()
                except (TransactionError, ChangelogError) as exc:
                    await self._stop_worker(exc)
                    return
                await self._assign(frozenset())

    async def _stop_worker(self, exc: TransactionError | ChangelogError) -> None:
        """Stop the worker loudly after a commit that could not be made.

        A fence (a newer owner took the partition while this worker was away), a transaction
        that had to be aborted, or outputs the broker did not take within the call time-out (an
        outage longer than it): nothing uncommitted is lost, it is read again by the next owner
        (under ``exactly_once`` after the tables are rebuilt from the changelog). The ERROR
        line and the exit status are for the supervisor that starts the worker again.
        """
        logger.error("batch input: %s; stopping the worker", exc)
        await self.app.crash(exc)

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except (TransactionError, ChangelogError) as exc:
            await self._stop_worker(exc)
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
        # Read once: a Faust setting costs several µs per read, and the loop reads it per batch.
        interval: float = self.app.conf.broker_commit_interval
        while not self.app.should_stop:
            wanted = self._wanted if streams_flowing(consumer) else frozenset()
            if not wanted and not self._assigned:
                # Faust's fetch tells the partitions to read (:meth:`wanted`), which ends this
                # wait; the time-out covers a flow that resumed with the same partitions.
                await self._wait(POLL_TIMEOUT_S if self._queue_wake is None else IDLE_WAIT_S)
                continue
            async with self._lock:
                if wanted != self._assigned:
                    if self._assigned:
                        await self._commit()
                    await self._assign(wanted)
                    continue
                messages = self._take_ready()
                if messages:
                    # Records were waiting: no thread hop to fetch them, but let the event
                    # loop run its other tasks between batches.
                    await asyncio.sleep(0)
                elif self._queue_wake is not None:
                    # Nothing there: wait for librdkafka to signal records (the queue was just
                    # found empty, so the next record will), then take them on this thread.
                    woken = await self._wait(
                        POLL_TIMEOUT_S if self._processed else self._idle_wait(interval)
                    )
                    messages = self._take_ready()
                    if woken and not messages:
                        # Woken with nothing to take (a signal for records already taken, a
                        # drain, new partitions): not a drained input, which is one that
                        # stayed empty for the whole wait.
                        continue
                else:
                    messages = await loop.run_in_executor(self._pool, self._take)
                if messages and streams_flowing(consumer) and self._wanted == self._assigned:
                    await self._process(messages)
                elif messages:
                    # A rebalance began while the batch was fetched: drop it unprocessed, commit
                    # what was processed before it, and let go. The partitions are read again
                    # from their committed offsets when they return.
                    await self._commit()
                    await self._assign(frozenset())
                    continue
                since = time.monotonic() - self._last_commit
                due = since >= interval
                # The input ran dry with processed records uncommitted: commit them now rather
                # than at the end of the interval (a drained backlog is durable at once, a quiet
                # partition's outputs are visible at once under exactly_once), at most once per
                # IDLE_COMMIT_MIN_S so that a trickle of records does not commit after each one.
                drained = not messages and bool(self._processed) and since >= IDLE_COMMIT_MIN_S
                if (due or drained) and await self._broker_answers():
                    await self._commit(wait=False)

    async def _broker_answers(self) -> bool:
        """Under ``exactly_once``, whether the cluster answers a transactional producer's
        metadata request now; a commit waits for it (postponed to the next interval).

        A transaction call made while the broker is away can leave librdkafka waiting on a
        coordinator request that never completes, even once the broker is back (seen as
        ``send_offsets_to_transaction`` timing out again on every try). A call made while it
        answers, and caught by an outage, fails with a retriable transport error instead, and
        its retry completes the commit when the broker returns. Postponing is bounded: once the
        broker has not answered for the call time-out, the commit is made anyway (and fails
        loudly if it cannot complete).
        """
        if not self.exactly_once or not self._transactions:
            return True
        tp, producer = next(iter(self._transactions.items()))
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self._txn_pool, lambda: producer.list_topics(tp.topic, timeout=PROBE_TIMEOUT_S)
            )
        except KafkaException:
            now = time.monotonic()
            if self._unanswered_since is None:
                self._unanswered_since = now
                logger.warning("exactly_once: the broker does not answer; commits wait for it")
            if now - self._unanswered_since < self.call_timeout:
                self._last_commit = now
                return False
        if self._unanswered_since is not None:
            logger.warning(
                "exactly_once: the broker answers again after %.1fs; committing",
                time.monotonic() - self._unanswered_since,
            )
            self._unanswered_since = None
        return True

    def _idle_wait(self, interval: float) -> float:
        """How long the loop may wait for records with nothing processed to commit: at most
        :data:`IDLE_WAIT_S`, and not past the due time of the commit every ``interval``
        seconds."""
        due = self._last_commit + interval - time.monotonic()
        return max(POLL_TIMEOUT_S, min(IDLE_WAIT_S, due))

    def _take_ready(self) -> list[Message]:
        """The records already fetched, up to a batch, without waiting (on the loop's thread:
        a batch that is there costs no hop to the input thread and back)."""
        consumer = self._consumer
        return consumer.consume(BATCH_MAX, 0) if consumer is not None else []

    def _take(self) -> list[Message]:
        """Wait up to :data:`POLL_TIMEOUT_S` for a record, then take the others already fetched
        (in the input thread). ``consume`` with a time-out would wait for a full batch."""
        consumer = self._consumer
        if consumer is None:
            return []
        first = consumer.poll(POLL_TIMEOUT_S)
        if first is None:
            return []
        return [first, *consumer.consume(BATCH_MAX - 1, 0)]

    async def _process(self, messages: list[Message]) -> None:
        """Hand each record to its engine, then end the batch (:meth:`at_batch_end`).

        The batch's offsets count as processed only once the batch has ended: a record whose
        handler raised, and the records before it in the batch, are never committed (their
        table writes may still wait in a write cache), so a stop after the failure reads them
        again.
        """
        processed: dict[TP, int] = {}
        inputs = self.inputs
        works = self._works
        clock = time.perf_counter
        taken = clock()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("input: %s", error)
                continue
            record = _record(message)
            topic = inputs.get(record.topic)
            if topic is None:
                continue
            work = works[record.topic, record.partition]
            pending = topic.handler(record, work)
            if pending is not None:
                await pending
            processed[work.tp] = record.offset + 1
            topic.records += 1
            topic.latency.observe(clock() - taken)
            self.records += 1
        for flush in self._batch_ends:
            flush()
        self._processed.update(processed)
        self.batches += 1
        if self._producer is not None:
            self._producer.poll(0)
        for producer in self._transactions.values():
            producer.poll(0)

    def lags(self) -> dict[TP, int]:
        """The records of each partition read here that the worker has not yet taken: the
        partition's end (the high watermark of the consumer's last fetch of it; under
        ``read_committed`` librdkafka moves the position past transaction markers, so a
        drained partition counts 0) less the consumer's position. Partitions not fetched
        since they were assigned are left out. Local to the client: no broker request."""
        consumer = self._consumer
        if consumer is None or not self._assigned:
            return {}
        tps = sorted(self._assigned)
        lags: dict[TP, int] = {}
        try:
            positions = consumer.position([TopicPartition(tp.topic, tp.partition) for tp in tps])
            for tp, position in zip(tps, positions, strict=True):
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), cached=True
                )
                if position.offset >= 0 and high >= 0:
                    lags[tp] = max(0, high - position.offset)
        except (KafkaException, RuntimeError):
            return {}  # the consumer is closing (a stop): no lag to tell
        return lags

    # -- assignment ------------------------------------------------------------------------

    async def _assign(self, tps: frozenset[TP]) -> None:
        """Read exactly ``tps``, each from its committed offset (the group's).

        Under ``exactly_once`` the transactions of partitions given up are closed (the caller
        has committed them) and those of new partitions initialised *before* their committed
        offsets are read, which fences the previous owner and settles its open transaction.
        """
        loop = asyncio.get_running_loop()
        if self.exactly_once:
            self._close_transactions(keep=tps)
            await self._init_transactions(tps)
        if self._consumer is None and tps:
            self._consumer = Consumer(self._consumer_config())
            self._queue_wake = QueueWake.attach(self._consumer, loop, self._wake)
        if self._consumer is not None:
            consumer = self._consumer
            assignment = [TopicPartition(tp.topic, tp.partition, OFFSET_STORED) for tp in tps]
            await loop.run_in_executor(self._pool, consumer.assign, assignment)
        self._assigned = tps
        for changed in self._assignment_changed:
            changed()
        self._works = {tp: self._works.get(tp) or PartitionWork(self, tp) for tp in tps}
        self._processed = {tp: off for tp, off in self._processed.items() if tp in tps}
        if tps:
            logger.info(
                "batch input reads %s", ", ".join(f"{t.topic}[{t.partition}]" for t in sorted(tps))
            )

    def _fetch_config(self) -> dict[str, Any]:
        """How long the broker holds a fetch of the input (``Settings.input_linger_ms``).

        With no linger a fetch returns as soon as one record is there (``fetch.min.bytes`` 1;
        ``fetch.wait.max.ms`` bounds only an empty fetch). With a linger the broker holds it
        for that long unless a large batch is there sooner: at low rates each fetch, each wake
        of the input and each pass through the engine then takes several records, instead of
        one at the full fixed cost of each.
        """
        if not self.linger_ms:
            return {"fetch.wait.max.ms": 100, "fetch.min.bytes": 1}
        return {"fetch.wait.max.ms": self.linger_ms, "fetch.min.bytes": LINGER_FETCH_BYTES}

    def _consumer_config(self) -> dict[str, Any]:
        settings = self.settings
        return {
            **settings.kafka_connection(),
            # Only for reading the group's committed offsets: this consumer never subscribes,
            # so it never joins the group, and it commits nothing itself.
            "group.id": self.app.conf.id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            **self._fetch_config(),
            # Only what committed transactions wrote (other stream_app apps, or producers
            # upstream, may write the input topics transactionally).
            "isolation.level": "read_committed",
            "queued.max.messages.kbytes": 16384,
            "client.id": f"{self.app.conf.id}-batch-input",
            "logger": rdkafka_logger(),
        }

    # -- changelog -------------------------------------------------------------------------

    def send(
        self,
        tp: TP,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        headers: Headers = None,
    ) -> None:
        """Produce an output of input partition ``tp`` (a changelog record, an event, a reply,
        an effect, a message to a cell, a dead letter): acknowledged before the partition's
        offset is committed (``at_least_once``), or in its transaction (``exactly_once``),
        without Faust's per-record send path. :meth:`PartitionWork.produce` calls it."""
        producer: Producer
        # confluent-kafka's stubs want a list of (str, str | bytes | None): ours is narrower.
        extra: Any = headers
        if self.exactly_once:
            producer = self._transaction(tp)
        elif self._producer is None:
            producer = self._producer = Producer(self._producer_config())
        else:
            producer = self._producer
        while True:
            try:
                producer.produce(
                    topic, value, key, partition, on_delivery=self._on_delivery, headers=extra
                )
                return
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:
                if not self.exactly_once:
                    raise
                # A fatal transactional error, most often a fence: a newer owner of the
                # partition initialised its transactional id. The produce call only says
                # "fatal"; serving the producer's events hands the cause to its error_cb.
                producer.poll(0)
                cause = self._fatal.get(tp)
                raise TransactionError(
                    f"exactly_once: producing to {topic}[{partition}] failed: {exc}"
                    + (f" (the producer's fatal error: {cause})" if cause else "")
                ) from exc

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        topic = message.topic() or ""
        if error is not None:
            logger.warning("output to %s not delivered: %s", topic, error)
            self._failed.append(error)
            return
        self.acknowledged[topic] += 1
        if topic in self._changelogs:
            tp = (topic, message.partition() or 0)
            offset = message.offset() or 0
            if offset > self._delivered.get(tp, -1):
                self._delivered[tp] = offset

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self.settings.kafka_connection(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": self.app.conf.producer_max_request_size,
            "client.id": f"{self.app.conf.id}-changelog",
            "logger": rdkafka_logger(),
        }

    # -- transactions (exactly_once) --------------------------------------------------------

    def _transaction(self, tp: TP) -> Producer:
        """The producer of the open transaction of input partition ``tp`` (begun if need be)."""
        producer = self._transactions[tp]
        if tp not in self._open:
            producer.begin_transaction()
            self._open.add(tp)
        return producer

    def transactional_id(self, tp: TP) -> str:
        """The transactional id of input partition ``tp``: every worker that ever reads the
        partition uses it, so the broker fences all but the newest."""
        return f"stream_app.{self.app.conf.id}.{tp.topic}.{tp.partition}"

    def _transaction_config(self, tp: TP) -> dict[str, Any]:
        interval_ms = int(self.app.conf.broker_commit_interval * 1000)

        def on_error(error: KafkaError) -> None:
            # librdkafka reports the cause of a fatal error (a fence, most often) here; the
            # calls that fail afterwards only say "fatal". Other errors (a broker away) also
            # reach its log, through the logger, rate-limited there (stream_app.logs).
            if not error.fatal():
                logger.debug("exactly_once: producer of %s: %s", tp, error.str())
            elif tp not in self._fatal:
                # The code's own description ("... fenced by a newer instance") and librdkafka's
                # account of this occurrence.
                cause = f"{KafkaError(error.code()).str()} ({error.str()})"
                self._fatal[tp] = cause
                logger.error(
                    "exactly_once: the transactional producer of %s[%s] failed fatally: %s",
                    tp.topic,
                    tp.partition,
                    cause,
                )

        return {
            **self._producer_config(),
            "error_cb": on_error,
            "transactional.id": self.transactional_id(tp),
            # Room for a few commit intervals, within the broker's default maximum (15 min).
            "transaction.timeout.ms": min(900_000, max(60_000, 10 * interval_ms)),
            "client.id": f"{self.app.conf.id}-txn-{tp.topic}-{tp.partition}",
        }

    async def _init_transactions(self, tps: frozenset[TP]) -> None:
        """Make and initialise the transactional producers of the partitions in ``tps`` that
        have none, side by side."""
        new = {tp: Producer(self._transaction_config(tp)) for tp in tps - self._transactions.keys()}
        timeout = self.call_timeout
        await self._each(
            "could not initialise", list(new), lambda tp: new[tp].init_transactions(timeout)
        )
        self._transactions.update(new)

    async def _each(self, failure: str, tps: list[TP], call: Callable[[TP], None]) -> None:
        """Run a blocking transaction ``call`` for each partition of ``tps``, side by side;
        raise :class:`TransactionError` naming every partition where it failed."""
        loop = asyncio.get_running_loop()
        calls = asyncio.gather(
            *(loop.run_in_executor(self._txn_pool, call, tp) for tp in tps),
            return_exceptions=True,
        )
        results = await self._bounded(calls, failure)
        failed = [
            f"{tp.topic}[{tp.partition}]: {result}"
            for tp, result in zip(tps, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if failed:
            raise TransactionError(f"exactly_once: {failure}: " + "; ".join(failed))

    async def _bounded(self, calls: Awaitable[T], what: str) -> T:
        """Await blocking calls made in a thread, for at most the call time-out and a grace.

        Each call has the time-out itself; this is for one that does not return by then
        (librdkafka's ``send_offsets_to_transaction`` has been seen to wait forever for a
        coordinator that came back from an outage). The thread is left to its fate: the
        worker stops, and its stop deadline ends the process if the thread holds it up.
        """
        # A commit is two calls (offsets, then commit), each with the time-out.
        limit = 2 * self.call_timeout + CALL_GRACE_S
        try:
            return await asyncio.wait_for(calls, limit)
        except TimeoutError:
            failure = TransactionError if self.exactly_once else ChangelogError
            raise failure(
                f"{what}: no answer from the Kafka client within {limit:.0f}s (a broker "
                "outage, or a client wedged by one)"
            ) from None

    def _close_transactions(self, keep: frozenset[TP]) -> None:
        """Drop the transactional producers of partitions not in ``keep``. Their transactions
        are committed (or, after a failure, left for the next owner to abort)."""
        for tp in [tp for tp in self._transactions if tp not in keep]:
            del self._transactions[tp]
            self._open.discard(tp)

    async def _commit_transactions(self, offsets: dict[TP, int]) -> None:
        """Commit every open transaction, and one for each partition with processed input,
        each with its partition's next offset; side by side."""
        consumer = self._consumer
        tps = [tp for tp in self._transactions if tp in self._open or tp in offsets]
        if not tps or consumer is None:
            return
        metadata = consumer.consumer_group_metadata()
        timeout = self.call_timeout

        def commit(tp: TP) -> None:
            producer = self._transactions[tp]
            if tp not in self._open:
                producer.begin_transaction()
            if tp in offsets:
                position = [TopicPartition(tp.topic, tp.partition, offsets[tp])]
                _retrying(
                    lambda left: producer.send_offsets_to_transaction(position, metadata, left),
                    timeout,
                )
            _retrying(producer.commit_transaction, timeout)

        # A failure is a fence (a newer owner took the partition) or a transaction that had to
        # be aborted: the worker stops. The tables hold writes no committed transaction has;
        # the next start rebuilds them from the changelog.
        try:
            await self._each("commit failed", tps, commit)
        except TransactionError:
            self.transactions_failed += len(tps)
            raise
        self.transactions_committed += len(tps)
        self._open.difference_update(tps)

    # -- commit ----------------------------------------------------------------------------

    async def _commit(self, *, wait: bool = True) -> None:
        """:meth:`_commit_processed`, timed: the input waits while it runs (the counters of
        :meth:`stats`; ``bench.eos_partitions`` compares them across guarantees)."""
        began = time.monotonic()
        try:
            await self._commit_processed(wait=wait)
        finally:
            took = time.monotonic() - began
            self.commit_calls += 1
            self.commit_seconds += took
            self.commit_seconds_max = max(self.commit_seconds_max, took)

    async def _commit_processed(self, *, wait: bool) -> None:
        """Commit the input processed so far: once everything it produced is acknowledged
        (``at_least_once``), or with everything it produced, in one transaction per partition
        (``exactly_once``).

        Under ``at_least_once`` with ``wait=False`` (the commits of the interval) the offsets
        go to the group in the background, once the outputs are acknowledged: input keeps
        flowing during the group's round trip, which otherwise held every record arriving
        meanwhile. The next commit (or a rebalance, or a stop) waits for it first, so commits
        stay in order and a failed one still stops the worker.
        """
        await self._settle()
        self._last_commit = time.monotonic()
        offsets = dict(self._processed)
        if self.exactly_once:
            await self._commit_transactions(offsets)
            failure: type[StreamAppError] = TransactionError
        else:
            failure = ChangelogError
            producer = self._producer
            if producer is not None:
                loop = asyncio.get_running_loop()
                flushed = loop.run_in_executor(self._pool, producer.flush, self.call_timeout)
                left = await self._bounded(flushed, "flushing the outputs")
                if left:
                    raise ChangelogError(f"{left} changelog records not acknowledged in time")
        if self._failed:
            errors, self._failed = self._failed, []
            raise failure(f"changelog or output records failed: {errors[:3]}")
        # What went through Faust's producer: the sweep's wake records.
        await self.app.producer.flush()
        for (topic, partition), offset in self._delivered.items():
            self._changelogs[topic](partition, offset)
        self._delivered.clear()
        if not offsets:
            return
        if self.exactly_once:
            self._committed(offsets)
        elif wait:
            await self._commit_offsets(offsets)
        else:
            self._committing = asyncio.ensure_future(self._commit_offsets(offsets))

    async def _commit_offsets(self, offsets: dict[TP, int]) -> None:
        """Commit ``offsets`` to the group through Faust's consumer (``at_least_once``)."""
        if await commit_offsets(self.app.consumer, offsets):
            self._committed(offsets)

    def _committed(self, offsets: dict[TP, int]) -> None:
        """``offsets`` are committed: forget those no record processed since has moved on."""
        self.commits += 1
        for tp, offset in offsets.items():
            if self._processed.get(tp) == offset:
                del self._processed[tp]

    async def _settle(self) -> None:
        """Wait for the group commit still in flight, if any; raise what it raised."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing

    async def close(self) -> None:
        """Close the Kafka clients (after :meth:`drain`)."""
        try:
            await self._settle()
        except Exception as exc:
            # Stopping anyway: offsets not committed are read again by the next owner.
            logger.warning("batch input: the last offset commit failed: %s", exc)
        self._close_transactions(keep=frozenset())
        loop = asyncio.get_running_loop()
        queue_wake, self._queue_wake = self._queue_wake, None
        if queue_wake is not None:
            queue_wake.detach()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await loop.run_in_executor(self._pool, consumer.close)
        producer, self._producer = self._producer, None
        if producer is not None:
            await loop.run_in_executor(self._pool, producer.flush, self.call_timeout)


#: Errors librdkafka calls retriable that a transaction call is not tried again after: a
#: time-out (see :func:`_retrying`), and a call made while an earlier one is still running
#: (``_PREV_IN_PROGRESS``: the earlier one is wedged; the worker is stopping because of it).
_NOT_RETRIED = frozenset({KafkaError._TIMED_OUT, KafkaError._PREV_IN_PROGRESS})


def _retrying(call: Callable[[float], None], timeout: float) -> None:
    """Run a transaction call, given ``timeout`` seconds in all: a retriable error (a
    coordinator that is loading or moving after a broker died: ``COORDINATOR_LOAD_IN_PROGRESS``,
    ``NOT_COORDINATOR``, ``CONCURRENT_TRANSACTIONS``) is tried again after a pause that doubles
    from :data:`TXN_RETRY_PAUSE_S` to :data:`TXN_RETRY_PAUSE_MAX_S`, each try given what is
    left of ``timeout``, until that is spent; librdkafka asks for exactly that ("retry call to
    resume"). A coordinator takes seconds to load its transaction log after a failover; a few
    tries in a row without a pause failed within half a second and stopped the worker.

    A time-out is not tried again: a transaction call that timed out is one a broker outage
    caught, and librdkafka does not complete it after the broker is back (each try waits out
    the whole time-out again; seen as a worker that stopped processing for minutes). Nor is a
    call refused because an earlier one still runs (``_PREV_IN_PROGRESS``).

    Raises:
        KafkaException: The call failed with an error that is not retriable, or timed out, or
            was still failing when ``timeout`` was spent.
    """
    deadline = time.monotonic() + timeout
    pause = TXN_RETRY_PAUSE_S
    while True:
        try:
            call(max(deadline - time.monotonic(), TXN_RETRY_PAUSE_S))
            return
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if (
                not isinstance(error, KafkaError)
                or not error.retriable()
                or error.code() in _NOT_RETRIED
                or time.monotonic() + pause >= deadline
            ):
                raise
            logger.warning("exactly_once: retrying a transaction call after %s", error)
            time.sleep(pause)  # on a transaction thread (TXN_THREADS), not the event loop
            pause = min(2 * pause, TXN_RETRY_PAUSE_MAX_S)
