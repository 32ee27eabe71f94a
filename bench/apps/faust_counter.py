"""The counter as a plain Faust agent with a Table: ``faust -A bench.apps.faust_counter worker``.

What a Faust user writes for the same update as :mod:`bench.apps.cell_counter`: a
:class:`faust.App` (not stream_app's :class:`~stream_app.kafka.app.StreamApp`) configured like
:func:`~stream_app.kafka.app.create_app` configures the cell worker's (broker, RocksDB store,
data dir,
partitions, earliest offsets, ``acks=all``), one agent on ``<app_id>.counter.in`` that decodes
each record with the same envelope model, reads the cell's :class:`Count` from the table
``counter``, adds, and writes it back. No dead-letter topic, no timers, no boot, no parking.

``GET /bench/progress/`` reports the records applied (see :mod:`bench.apps.harness`).
"""

from __future__ import annotations

from typing import Any

import faust

from bench.apps.harness import Progress, faust_options, start_profile_if_requested
from bench.apps.model import BEHAVIOUR, MESSAGES, Count, apply_increment
from stream_app.settings import get_settings, resolve_guarantee

__all__ = ["app", "counter", "progress"]

settings = get_settings()
start_profile_if_requested()
progress = Progress.from_env()
# Faust creates only the last level of its datadir (StreamApp.on_first_start does this for
# stream_app's apps; this baseline is a plain faust.App).
settings.app_data_dir.mkdir(parents=True, exist_ok=True)
app = faust.App(
    settings.app_id,
    broker=settings.faust_broker,
    store=settings.store,
    datadir=str(settings.app_data_dir),
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication_factor,
    processing_guarantee=resolve_guarantee(settings.processing_guarantee, fencing=False),
    web_host=settings.web_host,
    web_bind=settings.web_host,
    web_port=settings.web_port,
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    autodiscover=False,
    version=1,
    **faust_options(),
)
source = app.topic(
    settings.input_topic(BEHAVIOUR),
    partitions=settings.partitions,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
cells = app.Table(
    BEHAVIOUR, partitions=settings.partitions, key_type=bytes, value_type=bytes, help="counters"
)


@app.agent(source)
async def counter(stream: Any) -> None:
    """Apply every increment of ``<app_id>.counter.in`` to its cell in the table."""
    async for key, value in stream.items():
        message = MESSAGES.decode(key, value, max_bytes=settings.max_message_bytes)
        raw = cells.get(key)
        data = Count.model_validate_json(raw) if raw is not None else None
        cells[key] = apply_increment(data, message.body).model_dump_json().encode()
        progress.note()


@app.page("/bench/progress/")
async def progress_view(web: Any, request: Any) -> Any:
    """Records applied so far, with the in-worker timings."""
    return web.json(progress.snapshot())
