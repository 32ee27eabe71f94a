"""Restore table partitions from their changelogs at the speed of reading them.

Faust's table recovery reads a changelog through its aiokafka consumer, one record at a time:
each becomes a Faust event that passes the changelog queue, the recovery loop and a buffer
before a RocksDB write batch takes it. That runs at a few thousand records per second, when a
plain confluent-kafka consumer reads the same topic thirty times faster: a worker that lost its
disk stayed down for about a minute per 300,000 records of state.

:func:`restore` does the reading instead, before Faust's recovery reads a partition (the hook
is :func:`stream_app.kafka.faust_patches.restore_changelogs_fast`): one confluent-kafka
consumer, joining no group, reads every given changelog partition from a start offset to its
end in large batches; what it reads of a partition is kept as the last value of each key and
written in one RocksDB ``WriteBatch`` per :data:`FLUSH_KEYS` keys (a key changed ten times in
the changelog is written once), which also records the offset it reaches under Faust's own
offset key. Faust's recovery then finds the partition up to date and reads nothing of it (or
only what was written since).

The consumer hands records over in runs of one partition (a fetch's worth each), and a run is
taken without a Python step per record (:func:`_read_batch`): its keys and values are read with
``map`` over the message methods and put into the partition's pending writes with one
``dict.update``. Taking records one by one cost about as much as reading them: the restore
phase of a 1,000,000-record changelog took 3.2 s against 1.9 s for a bare read of it (the
benchmark ``bench.restore``); the consumer's own ``consume`` is now most of its time, and the
restore reads about as fast as that bare read.

What Faust's recovery would write, this writes, byte for byte: each record's raw key and value
(Faust's RocksDB store, ``apply_changelog_batch``), a ``None`` value (a tombstone) as a delete,
and the offset as ``str(offset).encode()``. Records are applied in offset order per partition;
under ``read_committed`` the consumer delivers committed records only and stops at the last
stable offset, as Faust's consumer does under stream_app's ``exactly_once``.

It runs in a thread (the event loop keeps serving the group, the web view and rebalances), one
restore at a time. A rebalance or a stop sets ``stop``; a partition whose database the store
closed (revoked) is dropped at once. Every write batch records its offset with its writes,
atomically, so a restore stopped anywhere is resumed from where it got to.

Progress shows in the log every :data:`PROGRESS_EVERY_S` (records read of the total, rate,
time left, and per changelog topic) and in :class:`RestoreProgress`, which the Prometheus view
reads (records restored and remaining per changelog partition).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import compress, groupby, repeat
from operator import is_not
from typing import Any

import rocksdict
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from stream_app.logs import rdkafka_logger
from stream_app.settings import KafkaConnection, client_config

__all__ = [
    "BATCH_RECORDS",
    "FLUSH_BYTES",
    "FLUSH_KEYS",
    "PROGRESS_EVERY_S",
    "RestoreJob",
    "RestoreProgress",
    "RestoreSummary",
    "restore",
]

logger = logging.getLogger(__name__)

#: Records taken from the consumer per call. Small enough that a batch's message objects are
#: still in the CPU caches when they are taken: with 10,000 (about 3 MB of objects) the
#: restore thread spent about a quarter more CPU time than with 1,000 (1,000,000 records, 4
#: partitions; 2.2-2.5 s against 1.8-1.9 s, three alternated rounds).
BATCH_RECORDS = 1_000

#: A partition's reads are written once they hold this many distinct keys (or
#: :data:`FLUSH_BYTES` of values), and at its end: a key changed many times in the changelog is
#: written once per flush, not once per record (a bound on the memory a restore takes).
FLUSH_KEYS = 100_000
FLUSH_BYTES = 32 * 1024 * 1024

# The methods of a consumed message, called by ``map`` (no Python step per record).
_TOPIC: Callable[[Any], Any] = Message.topic
_PARTITION: Callable[[Any], Any] = Message.partition
_OFFSET: Callable[[Any], Any] = Message.offset
_KEY: Callable[[Any], Any] = Message.key
_VALUE: Callable[[Any], Any] = Message.value
_ERROR: Callable[[Any], Any] = Message.error

#: Least time between two progress lines in the log.
PROGRESS_EVERY_S = 5.0

#: One restore at a time: a restore a rebalance stopped may still finish its batch while the
#: next one starts.
_ONE_AT_A_TIME = threading.Lock()


@dataclass(slots=True)
class RestoreJob:
    """One changelog partition to read into one RocksDB database.

    Attributes:
        topic: The changelog topic.
        partition: The partition (of the changelog and of the table).
        start: The first offset to read (earlier offsets are in the database already).
        db: The partition's rocksdict database (opened by Faust's store, raw mode).
        offset_key: The key under which the database keeps the last changelog offset applied.
        still_ours: Whether the store still has ``db`` open for this partition; a partition
            revoked mid-restore is dropped.
        covered: After :func:`restore`: the offset of the last record applied, which the
            database records, or ``None`` if none was.
        records: After :func:`restore`: records applied.
    """

    topic: str
    partition: int
    start: int
    db: Any
    offset_key: bytes
    still_ours: Callable[[], bool]
    covered: int | None = None
    records: int = 0
    _end: int = field(default=0, repr=False)
    _at_end: bool = field(default=False, repr=False)
    #: Read and not yet written: the last value (``None``: a delete) of each key read, and the
    #: offset of the last record read; keys updated again and again are written once.
    _writes: dict[bytes, bytes | None] = field(default_factory=dict, repr=False)
    _bytes: int = field(default=0, repr=False)
    _last: int | None = field(default=None, repr=False)

    @property
    def remaining(self) -> int:
        """Records left to read before the end noted at the start (0 once at the end, and
        before the restore has looked the end up)."""
        if self._at_end:
            return 0
        reached = self.start if self._last is None else self._last + 1
        return max(0, self._end - reached)


class RestoreProgress:
    """How far the latest restore of each changelog partition got, for the metrics: records
    restored and records remaining.

    The restore's thread notes each job after every batch; the event loop reads the notes. It
    keeps numbers only, never a job: a job holds its partition's database, which Faust's store
    closes by dropping its last reference when the partition is revoked.
    """

    def __init__(self) -> None:
        self._noted: dict[tuple[str, int], tuple[int, int]] = {}

    def note(self, job: RestoreJob) -> None:
        """Record where ``job`` is now (replacing an earlier restore of its partition)."""
        self._noted[job.topic, job.partition] = (job.records, job.remaining)

    def forget(self, job: RestoreJob) -> None:
        """Drop ``job``'s partition (revoked while it was restored: no longer this worker's)."""
        self._noted.pop((job.topic, job.partition), None)

    def partitions(self) -> list[tuple[str, int, int, int]]:
        """``(changelog topic, partition, records restored, records remaining)`` of each
        partition noted, in order."""
        return [
            (topic, partition, restored, remaining)
            for (topic, partition), (restored, remaining) in sorted(self._noted.items())
        ]


@dataclass(frozen=True, slots=True)
class RestoreSummary:
    """What one :func:`restore` did.

    Attributes:
        title: What was restored (``"active"``, ``"standby"``), for the log.
        partitions: Changelog partitions read.
        records: Records applied (deletes included).
        seconds: Time taken.
        stopped: It was stopped (rebalance, stop) before every partition reached its end.
    """

    title: str
    partitions: int
    records: int
    seconds: float
    stopped: bool

    @property
    def rate(self) -> float:
        """Records applied per second."""
        return self.records / self.seconds if self.seconds > 0 else 0.0


def restore(
    kafka: KafkaConnection,
    jobs: Sequence[RestoreJob],
    *,
    read_committed: bool,
    stop: threading.Event,
    title: str = "",
    progress: RestoreProgress | None = None,
) -> RestoreSummary:
    """Read each job's changelog partition from ``job.start`` to its end into ``job.db``.

    The end of a partition is its high watermark when the restore starts, or where the consumer
    reports reaching the end (the last stable offset under ``read_committed``), whichever comes
    first: a changelog still being written (a standby's) is not chased.

    Args:
        kafka: The brokers (and the security of a client of them).
        jobs: The partitions; each gets ``covered`` and ``records``.
        read_committed: Read committed records only (``exactly_once``); otherwise every record,
            as Faust's own recovery reads under ``at_least_once``.
        stop: Set to stop at the end of the current batch.
        title: What is restored, for the log.
        progress: Where each job is noted after every batch (for the metrics).
    """
    with _ONE_AT_A_TIME:
        return _restore(
            kafka,
            jobs,
            read_committed=read_committed,
            stop=stop,
            title=title,
            progress=progress or RestoreProgress(),
        )


def _consumer(kafka: KafkaConnection, read_committed: bool) -> Any:
    return Consumer(
        {
            **client_config(kafka),
            "group.id": f"stream-app-restore-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "logger": rdkafka_logger(),
        }
    )


def _restore(
    kafka: KafkaConnection,
    jobs: Sequence[RestoreJob],
    *,
    read_committed: bool,
    stop: threading.Event,
    title: str,
    progress: RestoreProgress,
) -> RestoreSummary:
    started = time.monotonic()
    consumer = _consumer(kafka, read_committed)
    try:
        pending: dict[tuple[str, int], RestoreJob] = {}
        for job in jobs:
            # A restore stopped by a rebalance may have got further than the offset Faust read.
            recorded = job.db.get(job.offset_key)
            if recorded is not None:
                job.start = max(job.start, int(recorded) + 1)
            _, high = consumer.get_watermark_offsets(
                TopicPartition(job.topic, job.partition), timeout=30.0
            )
            job._end = high
            progress.note(job)
            if high > job.start:
                pending[job.topic, job.partition] = job
        total = sum(job._end - job.start for job in pending.values())
        if pending:
            logger.info(
                "restoring %d %s changelog partition(s): up to %d records",
                len(pending),
                title,
                total,
            )
            consumer.assign([TopicPartition(t, p, job.start) for (t, p), job in pending.items()])
        done = 0
        last_log = started
        while pending and not stop.is_set():
            done += _read_batch(consumer, pending)
            for key, job in list(pending.items()):
                if not job.still_ours():
                    logger.info("%s[%d]: revoked while restoring; dropped", *key)
                    progress.forget(job)
                    del pending[key]
                    consumer.incremental_unassign([TopicPartition(*key)])
                    continue
                finished = job._at_end or (job._last is not None and job._last >= job._end - 1)
                if finished or len(job._writes) >= FLUSH_KEYS or job._bytes >= FLUSH_BYTES:
                    _flush(job)
                if finished:
                    del pending[key]
                progress.note(job)
            now = time.monotonic()
            if now - last_log >= PROGRESS_EVERY_S:
                last_log = now
                _log_progress(title, jobs, done, total, now - started)
        for job in pending.values():
            # Stopped: keep what was read; the next restore goes on from there.
            if job.still_ours():
                _flush(job)
        seconds = time.monotonic() - started
        summary = RestoreSummary(title, len(jobs), done, seconds, stopped=bool(pending))
        if jobs:
            logger.info(
                "restored %d records into %d %s partition(s) in %.2fs (%.0f records/s)%s",
                summary.records,
                summary.partitions,
                title,
                summary.seconds,
                summary.rate,
                "; stopped before the end (rebalance or stop)" if summary.stopped else "",
            )
        return summary
    finally:
        consumer.close()


def _read_batch(consumer: Any, pending: dict[tuple[str, int], RestoreJob]) -> int:
    """Take one batch from ``consumer`` into the partitions' pending writes; the records read.

    A partition is at its end once the consumer reports it, or at the high watermark noted at
    the start.

    The consumer hands records over in runs of one partition (a fetch's worth each). A run is
    taken whole, without a Python step per record: its keys, values and offsets are read with
    ``map`` over the message methods (C calls), its records past the partition's end cut off
    by bisecting the offsets (increasing in a partition), and its values put into the pending
    writes with one ``dict.update`` (in offset order, so the last value of a key wins, as
    record by record). Errors (the end of a partition) split a run and are handled in order.
    """
    applied = 0
    for partition, grouped in groupby(consumer.consume(BATCH_RECORDS, timeout=0.5), _PARTITION):
        run = list(grouped)
        # Runs are keyed by partition number: two topics' runs of the same number that follow
        # each other are split here.
        topics = list(map(_TOPIC, run))
        if topics.count(topics[0]) != len(topics):
            for topic, part in groupby(run, _TOPIC):
                applied += _read_run(pending.get((topic, partition)), list(part))
        else:
            applied += _read_run(pending.get((topics[0], partition)), run)
    return applied


def _read_run(job: RestoreJob | None, run: list[Any]) -> int:
    """Take ``run``, messages of ``job``'s partition in offset order, into its pending writes;
    the records taken."""
    if job is None:
        return 0
    # A KafkaError is always true (it defines neither __bool__ nor __len__).
    if not any(map(_ERROR, run)):
        return _take(job, run)
    # Identity, not ==: a KafkaError compared with None raises.
    failed = compress(range(len(run)), map(is_not, map(_ERROR, run), repeat(None)))
    taken = 0
    begin = 0
    for at in failed:
        taken += _take(job, run[begin:at])
        _error(job, run[at])
        begin = at + 1
    return taken + _take(job, run[begin:])


def _error(job: RestoreJob, message: Any) -> None:
    """Handle a message of ``job``'s partition that carries an error."""
    error = message.error()
    if error.code() == KafkaError._PARTITION_EOF:
        # Everything before the reported offset was read (or skipped: aborted records,
        # transaction markers). The offset recorded stays the last record's: Faust's recovery
        # counts a partition done at its last record (a marker's offset would be "past the
        # end" to its consistency check).
        job._end = min(job._end, message.offset())
        job._at_end = True
        return
    if error.fatal():
        raise KafkaException(error)
    logger.warning("restoring %s[%d]: %s", job.topic, job.partition, error)


def _take(job: RestoreJob, records: list[Any]) -> int:
    """Put ``records`` (records of ``job``'s partition in offset order, no errors) before the
    partition's end into its pending writes; the records taken."""
    if not records:
        return 0
    last = records[-1].offset()
    if last >= job._end:
        offsets = list(map(_OFFSET, records))
        records = records[: bisect_left(offsets, job._end)]
        if not records:
            return 0
        last = offsets[len(records) - 1]
    values = list(map(_VALUE, records))
    job._writes.update(zip(map(_KEY, records), values, strict=True))
    try:
        job._bytes += sum(map(len, values))
    except TypeError:  # a tombstone (None) among them
        job._bytes += sum(len(value) for value in values if value is not None)
    job._last = last
    job.records += len(records)
    return len(records)


def _flush(job: RestoreJob) -> None:
    """Write ``job``'s pending writes, and the offset of the last record they cover, in one
    RocksDB write batch (atomically: a restore stopped after it resumes from that offset)."""
    if job._last is None or (job.covered is not None and job._last <= job.covered):
        return
    batch = rocksdict.WriteBatch(raw_mode=True)
    for key, value in job._writes.items():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    batch.put(job.offset_key, str(job._last).encode())
    job.db.write(batch)
    job.covered = job._last
    job._writes.clear()
    job._bytes = 0


def _log_progress(
    title: str, jobs: Sequence[RestoreJob], done: int, total: int, seconds: float
) -> None:
    rate = done / seconds if seconds > 0 else 0.0
    left = max(total - done, 0)
    eta = f"{left / rate:.0f}s" if rate > 0 else "?"
    by_topic: dict[str, list[int]] = {}
    for job in jobs:
        counts = by_topic.setdefault(job.topic, [0, 0])
        counts[0] += job.records
        counts[1] += job.remaining
    logger.info(
        "restoring %s changelogs: %d of %d records, %.0f records/s, ETA %s (%s)",
        title,
        done,
        total,
        rate,
        eta,
        "; ".join(
            f"{topic}: {restored} restored, {remaining} left"
            for topic, (restored, remaining) in sorted(by_topic.items())
        ),
    )
