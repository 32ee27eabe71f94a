"""The Faust app of a stream_app worker: its factory and its lifecycle.

:func:`create_app` builds a :class:`StreamApp` configured from
:class:`~stream_app.settings.Settings`, so every stream_app worker agrees on broker, store,
partitions and guarantees. :class:`StreamApp` adds what a worker does around Faust's start and
stop (creating topics before the consumer joins, rebuilding tables after an unclean stop, a
deadline for the stop); its changes to Faust's internals live in
:mod:`stream_app.kafka.faust_patches`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from stream_app.kafka.faust_patches import (
    CLEAN_MARKER,
    PatchedApp,
    RocksDBMemory,
    discard_unclean_tables,
)
from stream_app.kafka.security import broker_credentials, check_credentials
from stream_app.logs import quiet_transient_errors
from stream_app.settings import Settings, resolve_guarantee

__all__ = [
    "STOP_OVERRUN_EXIT",
    "StreamApp",
    "create_app",
    "exit_after",
    "raw_topic",
]

logger = logging.getLogger(__name__)


class StreamApp(PatchedApp):
    """The Faust app of a stream_app worker.

    It runs :meth:`before_start` hooks (creating topics, checking partition counts) before the
    consumer subscribes, and bounds how long a stop may take (:func:`exit_after`). Its consumer,
    producer and flow control carry the patches of :class:`~stream_app.kafka.faust_patches.
    PatchedApp`: the send buffer drains before offsets commit, and another reader can take
    some subscribed topics off the consumer (:meth:`take_input_topics`). Everything else is
    Faust's.

    Faust itself always runs ``at_least_once`` here: stream_app's ``exactly_once`` is made by
    the reader of the cell input topics (:mod:`stream_app.kafka.batch_input`), with a Kafka
    transaction per input partition. With :attr:`exactly_once` set the app's consumer reads
    ``read_committed`` (table recovery, effects). Under either guarantee, table databases left
    by a worker that did not stop cleanly are rebuilt from their changelogs.

    Attributes:
        shutdown_timeout_s: Longest a stop may take before the process exits anyway (set by
            :func:`create_app` from ``Settings.shutdown_timeout_s``; see :func:`exit_after`).
        rocksdb_memory: The memory the app's table databases share (set by :func:`create_app`
            from ``Settings.rocksdb_memory_bytes``; see
            :class:`~stream_app.kafka.faust_patches.RocksDBMemory`).
        connection: The settings whose credentials the first start checks
            (:func:`~stream_app.kafka.security.check_credentials`); set by :func:`create_app`.
    """

    _before_start_hooks: list[Callable[[], Awaitable[None]]]
    shutdown_timeout_s: float = 60.0
    rocksdb_memory: RocksDBMemory
    connection: Settings | None = None
    _stop_deadline: threading.Timer | None = None

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
        """Check the Kafka credentials (a refusal raises
        :class:`~stream_app.errors.KafkaAuthError` before any client of Faust retries them for
        ever), create the app's data folder with its parents (the data dir itself, first
        time), then Faust's first start, which creates only the last level of each.

        In a worker process, the objects made so far (the modules imported, the app and its
        runtime: some 100,000 objects, nearly all kept for the life of the process) are first moved
        out of the garbage collector's sight (:func:`gc.freeze`). Faust's RocksDB store runs a
        full collection for each table at every partition assignment
        (``faust.stores.rocksdb.Store.revoke_partitions``), so that the databases of revoked
        partitions are released: each took 50 to 150 ms walking those objects, 0.2 to 0.45 s
        of a worker's start with one cell behaviour (three tables), and now takes about a
        millisecond. Objects made later are collected as before; a frozen object that became
        garbage in a reference cycle later would stay in memory (objects of the start-up that
        are dropped are freed by their reference count as usual).
        """
        if self.in_worker:
            gc.freeze()
        if self.connection is not None:
            await asyncio.to_thread(check_credentials, self.connection)
        Path(self.conf.datadir).mkdir(parents=True, exist_ok=True)
        await super().on_first_start()

    async def on_start(self) -> None:
        """Faust's start, then the :meth:`before_start` hooks in registration order.

        Table databases left by a worker that did not stop cleanly are discarded first, under
        either guarantee (see
        :func:`~stream_app.kafka.faust_patches.discard_unclean_tables`).
        """
        await super().on_start()
        discard_unclean_tables(Path(self.conf.tabledir))
        for hook in getattr(self, "_before_start_hooks", []):
            await hook()

    async def on_shutdown(self) -> None:
        """After Faust has stopped (tables closed, the last commit made): mark the table
        databases clean, so the next start keeps them."""
        await super().on_shutdown()
        if not self.crashed:
            tables = Path(self.conf.tabledir)
            if tables.is_dir():
                (tables / CLEAN_MARKER).touch()


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
        # Faust's web_host is the advertised one (its canonical URL, which routes a cell's
        # view to the owner); web_bind is the interface the server listens on.
        "web_host": settings.advertised_web_host,
        "web_bind": settings.web_host,
        "web_port": settings.web_port,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_commit_interval": settings.commit_interval_s,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout_s / 3),
        "table_standby_replicas": settings.standby_replicas,
        "consumer_group_instance_id": settings.group_instance_id,
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
        "broker_credentials": broker_credentials(settings),
    }
    options.update(overrides)
    quiet_transient_errors()
    app = StreamApp(settings.app_id, **options)
    # Under ``auto`` the runtime turns it on when it registers something that needs fencing
    # (Runtime.require_fencing), before the app starts.
    app.exactly_once = resolve_guarantee(settings.processing_guarantee, fencing=False) == (
        "exactly_once"
    )
    app.kafka_config = settings.kafka_connection()
    app.connection = settings
    app.shutdown_timeout_s = settings.shutdown_timeout_s
    app.rocksdb_memory = RocksDBMemory(settings.rocksdb_memory_bytes)
    return app


def raw_topic(app: faust.App, name: str) -> Any:
    """The Faust topic ``name`` of ``app`` with raw-bytes keys and values (no serialisation)."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
