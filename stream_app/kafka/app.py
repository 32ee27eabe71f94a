"""Faust application factory and the worker-side dead-letter sink.

:func:`create_app` builds a :class:`faust.App` configured from
:class:`~stream_app.settings.Settings`, so every stream_app worker agrees on broker, store,
partitions and guarantees.
:class:`DeadLetterSink` publishes rejected records from inside an agent and counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import faust
from faust.types import TP, ProducerT
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from stream_app.core.dead_letters import DeadLetter
from stream_app.errors import FlushTimeoutError, StreamAppError
from stream_app.kafka.reading import last_record_offsets
from stream_app.logs import quiet_transient_errors
from stream_app.settings import Settings

__all__ = [
    "CLEAN_MARKER",
    "STOP_OVERRUN_EXIT",
    "DeadLetterSink",
    "KeepingFlowControl",
    "SendCounts",
    "StreamApp",
    "create_app",
    "discard_unclean_tables",
    "drain_send_buffer",
    "exit_after",
]

logger = logging.getLogger(__name__)

#: How long a commit waits for Faust's send buffer to drain before failing the worker.
FLUSH_TIMEOUT_S = 300.0


class InputTaker(Protocol):
    """What :meth:`StreamApp.take_input_topics` needs of a reader that takes topics over."""

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


class KeepingFlowControl(FlowControlEvent):
    """Faust's flow control, except that resuming a flow that is already running keeps the
    records waiting in the stream queues.

    ``FlowControlEvent.resume()`` always empties every stream queue. Faust's recovery calls it
    once more when it completes, after it has already resumed the flow (to read changelogs)
    and the input partitions: a record the consumer had just handed to an agent's queue was
    dropped there without being processed. Faust counts it as read, and its offset was later
    committed with the ones after it, so the record was lost (seen as one lost increment in
    about one restart in ten without committed offsets). Queues still empty when the flow
    resumes after a real suspension (a rebalance).
    """

    def resume(self) -> None:
        """Resume a suspended flow (emptying the queues); no-op if it is running."""
        if self.is_active():
            return
        super().resume()


#: Written in the table directory by a clean shutdown under ``exactly_once``.
CLEAN_MARKER = ".stream_app-clean-shutdown"


def discard_unclean_tables(tabledir: Path) -> list[Path]:
    """Delete the table databases under ``tabledir`` unless the last worker stopped cleanly.

    Under ``exactly_once`` a table write reaches RocksDB at once while its changelog record
    waits for the transaction: a worker killed mid-transaction leaves writes in RocksDB whose
    transaction is aborted, so the database is ahead of everything committed (and the input
    that made those writes is read again). As Kafka Streams does after an unclean shutdown
    under exactly-once, the databases are then rebuilt from the changelog, which the app's
    consumer reads ``read_committed``. A clean shutdown leaves :data:`CLEAN_MARKER`, which this
    consumes.

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
            "exactly_once: the last worker did not stop cleanly; rebuilding %d table "
            "database(s) from their changelogs",
            len(doomed),
        )
    return doomed


class StreamApp(faust.App):
    """A :class:`faust.App` whose producer flush drains the send buffer before offsets commit.

    See :func:`drain_send_buffer` for why. It also runs :meth:`before_start` hooks (creating
    topics, checking partition counts) before the consumer subscribes, and lets another reader
    take some subscribed topics off its consumer (:meth:`take_input_topics`). Everything else
    is Faust's.

    Faust itself always runs ``at_least_once`` here: stream_app's ``exactly_once`` is made by
    the reader of the cell input topics (:mod:`stream_app.kafka.batch_input`), with a Kafka
    transaction per input partition. With :attr:`exactly_once` set the app's consumer reads
    ``read_committed`` (table recovery, effects), and table databases left by a worker that did
    not stop cleanly are rebuilt from their changelogs.

    Attributes:
        exactly_once: stream_app's ``exactly_once`` is in force (set by :func:`create_app`).
        bootstrap_servers: The brokers as ``host:port,...`` (set by :func:`create_app`).
        shutdown_timeout_s: Longest a stop may take before the process exits anyway (set by
            :func:`create_app` from ``Settings.shutdown_timeout_s``; see :func:`exit_after`).
    """

    _before_start_hooks: list[Callable[[], Awaitable[None]]]
    _input_taker: InputTaker | None = None
    exactly_once: bool = False
    bootstrap_servers: str = ""
    shutdown_timeout_s: float = 60.0
    _stop_deadline: threading.Timer | None = None

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        """Faust's flow control of the stream queues, as :class:`KeepingFlowControl`."""
        return KeepingFlowControl(loop=self.loop)

    def take_input_topics(self, taker: InputTaker) -> None:
        """Let ``taker`` read ``taker.topics`` instead of this app's consumer.

        The topics stay subscribed, so Faust still assigns their partitions, recovers the
        tables co-partitioned with them and runs the rebalance hooks, but its consumer never
        fetches them. On every fetch it tells ``taker.wanted(tps)`` which of their partitions
        it would have fetched (assigned, recovered, not paused); whenever Faust waits for its
        streams to empty (a rebalance revoking partitions, the worker stopping, both before
        the tables close) it awaits ``taker.drain()`` first, so the taker finishes, commits and
        lets go of them while the group still accepts its commits.
        """
        self._input_taker = taker

    def _new_consumer(self) -> Any:
        consumer: Any = super()._new_consumer()
        if self.exactly_once:
            _read_committed(consumer._thread, self.bootstrap_servers)
        verify_recovery_event_path = consumer.verify_recovery_event_path

        def own_verify_recovery_event_path(now: float, tp: TP) -> None:
            # Faust's recovery watchdog asks whether a changelog partition was fetched since
            # the *consumer* started: on a worker up for longer than stream_processing_timeout,
            # every recovery still waiting for its first fetch after 5 s (a rebalance under
            # load) logged "Aiokafka has not sent fetch request … since start" as an ERROR.
            # Let it judge a recovery only once the recovery itself has run that long.
            recovery: Any = getattr(self.tables, "recovery", None)
            started = getattr(recovery, "_recovery_started_at", None)
            if started is None or now - started >= self.conf.stream_processing_timeout:
                verify_recovery_event_path(now, tp)

        consumer.verify_recovery_event_path = own_verify_recovery_event_path
        taker = self._input_taker
        if taker is None:
            return consumer
        getmany, wait_empty = consumer._getmany, consumer.wait_empty

        async def own_getmany(active_partitions: Any, timeout: float) -> Any:
            topics = taker.topics
            if active_partitions:
                taker.wanted(frozenset(tp for tp in active_partitions if tp.topic in topics))
                active_partitions = {tp for tp in active_partitions if tp.topic not in topics}
                if not active_partitions:
                    # Nothing of Faust's own to fetch: wait a little, as an empty fetch would.
                    await asyncio.sleep(min(timeout, 0.05))
                    return {}
            return await getmany(active_partitions=active_partitions, timeout=timeout)

        async def own_wait_empty() -> None:
            await taker.drain()
            await wait_empty()

        verify_event_path = consumer.verify_event_path

        def own_verify_event_path(now: float, tp: TP) -> None:
            # Faust's stream watchdog knows only Faust's fetches and streams: on the partitions
            # the taker reads it saw no fetch and no stream, and logged an ERROR ("Stream has
            # not started processing") about 70 times a minute on a healthy worker.
            if tp.topic not in taker.topics:
                verify_event_path(now, tp)

        # Instance attributes shadow the consumer's methods for this consumer only.
        consumer._getmany = own_getmany
        consumer.wait_empty = own_wait_empty
        consumer.verify_event_path = own_verify_event_path
        return consumer

    async def on_stop(self) -> None:
        """Arm the shutdown deadline (:func:`exit_after`), then Faust's stop.

        Only in a worker process (``faust worker``), whose stop ends the process: an app run
        inside another program is left to stop in its own time.
        """
        if self._stop_deadline is None and self.in_worker:
            self._stop_deadline = exit_after(self.shutdown_timeout_s)
        await super().on_stop()

    def before_start(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` every time the app starts, before its consumer joins the group."""
        if not hasattr(self, "_before_start_hooks"):
            self._before_start_hooks = []
        self._before_start_hooks.append(hook)

    async def on_first_start(self) -> None:
        """Create the app's data folder with its parents (the data dir itself, first time),
        then Faust's first start, which creates only the last level of each."""
        Path(self.conf.datadir).mkdir(parents=True, exist_ok=True)
        await super().on_first_start()

    async def on_start(self) -> None:
        """Faust's start, then the :meth:`before_start` hooks in registration order.

        Under ``exactly_once``, table databases left by a worker that did not stop cleanly are
        discarded first (see :func:`discard_unclean_tables`).
        """
        await super().on_start()
        if self.exactly_once:
            discard_unclean_tables(Path(self.conf.tabledir))
        for hook in getattr(self, "_before_start_hooks", []):
            await hook()

    async def on_shutdown(self) -> None:
        """After Faust has stopped (tables closed, transactions committed): mark the table
        databases clean, so the next start under ``exactly_once`` keeps them."""
        await super().on_shutdown()
        if self.exactly_once and not self.crashed:
            tables = Path(self.conf.tabledir)
            if tables.is_dir():
                (tables / CLEAN_MARKER).touch()

    def _new_producer(self) -> ProducerT:
        producer = super()._new_producer()
        buffer: Any = producer.buffer
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

        # Instance attributes shadow ProducerBuffer's methods for this buffer only; the
        # buffer's sender task looks up _send_pending when it starts, after this.
        buffer.put = counted_put
        buffer._send_pending = counted_send
        buffer.flush = flush
        return producer


#: Exit status of a worker whose stop overran ``Settings.shutdown_timeout_s`` (EX_SOFTWARE).
STOP_OVERRUN_EXIT = 70


def exit_after(seconds: float) -> threading.Timer:
    """End the process with :data:`STOP_OVERRUN_EXIT` if it is still running in ``seconds``.

    Armed when a worker starts to stop. A stop normally takes a second or two (drain, commit,
    close); one that hangs — a commit or a transaction waiting on a broker that does not answer,
    a client thread that does not return — would keep the process alive with nothing processed,
    and a supervisor waiting. Exiting without the rest of the stop is what a SIGKILL does, which
    every guarantee survives: what was not committed is read again by the next owner, and under
    ``exactly_once`` the tables are rebuilt from the changelog. The timer thread is a daemon, so
    a process that finishes its stop in time exits as usual.
    """

    def overrun() -> None:
        logger.error(
            "stopping took longer than %.0fs (shutdown_timeout_s); exiting now with status %d "
            "(what was not committed is read again by the next owner of its partitions)",
            seconds,
            STOP_OVERRUN_EXIT,
        )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(STOP_OVERRUN_EXIT)

    timer = threading.Timer(seconds, overrun)
    timer.name = "stream_app-stop-deadline"
    timer.daemon = True
    timer.start()
    return timer


def _read_committed(thread: Any, bootstrap: str) -> None:
    """Make Faust's aiokafka consumer thread read ``read_committed``, while Faust commits
    offsets the ``at_least_once`` way, and give table recovery ends it can reach.

    Recovery counts a changelog partition done when the last record it received has the
    partition's end offset minus one. Under ``exactly_once`` every changelog partition ends with
    a transaction marker, which is never received, so that never happens (Faust's own
    ``exactly_once`` gives up waiting after 10 s without records, and by then may have skipped
    records still queued). Here the end of each partition is the offset after its last
    committed record before the last stable offset (:func:`last_record_offsets`).
    """
    create = thread._create_worker_consumer
    end_offsets = thread._highwaters

    def create_read_committed(transport: Any) -> Any:
        consumer = create(transport)
        # Read by the fetcher aiokafka makes when the consumer starts, after this.
        consumer._isolation_level = "read_committed"
        return consumer

    async def record_ends(partitions: list[TP]) -> dict[TP, int]:
        # Under read_committed the broker answers with the last stable offsets.
        stable: dict[TP, int] = dict(await end_offsets(partitions))
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(
            None,
            last_record_offsets,
            bootstrap,
            {(tp.topic, tp.partition): offset or 0 for tp, offset in stable.items()},
        )
        ends = {}
        for tp in stable:
            offset = last.get((tp.topic, tp.partition))
            ends[tp] = 0 if offset is None else offset + 1
        return ends

    # Instance attributes shadow the thread's methods for this thread only.
    thread._create_worker_consumer = create_read_committed
    thread._highwaters = record_ends


def create_app(settings: Settings, **overrides: Any) -> StreamApp:
    """Create the Faust app of a stream_app worker.

    Args:
        settings: Where the broker is, which store to use, partitions, guarantees.
        **overrides: Further :class:`faust.App` options, applied last.

    The app does not autodiscover modules, reads every topic from the earliest offset when the
    group has none committed, and produces with ``acks=all`` so an acknowledged record survives
    the loss of the leader.
    """
    options: dict[str, Any] = {
        "broker": settings.faust_broker,
        "store": settings.store,
        # Per app id: RocksDB files are named by table, not by app (Settings.app_data_dir).
        "datadir": str(settings.app_data_dir),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        # stream_app makes exactly_once itself (see StreamApp); Faust commits at least once.
        "processing_guarantee": "at_least_once",
        "web_host": settings.web_host,
        "web_bind": settings.web_host,
        "web_port": settings.web_port,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_commit_interval": settings.commit_interval_s,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout_s / 3),
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # A few ms of batching: aiokafka keeps one request in flight per broker, so without
        # it every changelog record waits for a round trip of its own.
        "producer_linger_ms": 5,
        # A dead letter carries a full-size original value plus its reason headers.
        "producer_max_request_size": max(settings.max_message_bytes, settings.dead_letter_max_bytes)
        + 65_536,
        "autodiscover": False,
        "version": 1,
    }
    options.update(overrides)
    quiet_transient_errors()
    app = StreamApp(settings.app_id, **options)
    app.exactly_once = settings.processing_guarantee == "exactly_once"
    app.bootstrap_servers = settings.bootstrap_servers
    app.shutdown_timeout_s = settings.shutdown_timeout_s
    return app


class DeadLetterSink:
    """Sends rejected records to ``<app_id>.dead-letters`` from inside a Faust agent.

    The send is awaited until the broker acknowledges it, so the source offset is never
    committed ahead of its dead letter: a crash in between replays the record and dead-letters
    it again (at least once), it is never lost. (Dead letters of cell input records go out with
    the record's other outputs instead: :class:`stream_app.kafka.cell_store.CellDeadLetters`,
    which counts them in :attr:`counts` too.)

    Attributes:
        counts: Dead letters published by this process, by reason.
    """

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.settings = settings
        self.topic = app.topic(
            settings.dead_letter_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.counts: Counter[str] = Counter()

    async def publish(self, message: Any, error: StreamAppError, *, behaviour: str) -> None:
        """Dead-letter the Faust ``message`` (an ``event.message``) rejected with ``error``.

        The reason is the error's ``reason`` attribute (``invalid`` when it has none).
        """
        await self.publish_record(
            key=message.key,
            value=message.value,
            reason=getattr(error, "reason", "invalid"),
            error=str(error),
            behaviour=behaviour,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )

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
        """Dead-letter a record given by its parts, and wait for the broker's acknowledgement."""
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
        pending = await self.topic.send(
            key=letter.key, value=letter.value, headers=letter.headers()
        )
        await pending
        self.counts[letter.reason] += 1
