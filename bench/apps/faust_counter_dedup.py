"""The hand-written counter with its own deduplication: ``faust -A bench.apps.faust_counter_dedup
worker``.

This was ``stream_app.examples.counter`` before the runtime existed: one Faust agent on
``<app_id>.counter.in`` with its own table ``counter`` (cell id -> :class:`MarkedCount` JSON) and
dead letters, written by hand. It is kept as a baseline for :mod:`bench.counter_throughput`: what
the counter cost before it was a :class:`~stream_app.Behaviour`.

**Applied once, delivered at least once.** Each cell's state carries the partition and offset of
the last record applied to it, written in the same changelog record as the count. A record
replayed after a crash (at-least-once delivery) has an offset at or below that mark and is
skipped (:func:`~bench.apps.model.apply_marked`). A skipped record re-writes the cell's current
state to the changelog: RocksDB may hold a write whose changelog record was lost with the
process, and the re-write puts it there before the replayed offset is committed again. The
runtime gets the same guarantee for every behaviour from ``exactly_once`` instead.

It works only for records produced with murmur2 partitioning (another partitioner puts a cell's
records on two partitions, and so in two cells), which is how the benchmark produces.

``GET /counter/`` answers every live cell held by this worker: ``{cell_id: count}``.
"""

from __future__ import annotations

from typing import Any

from bench.apps.model import BEHAVIOUR, MARKED_MESSAGES, MarkedCount, apply_marked
from stream_app.errors import InvalidMessageError
from stream_app.kafka.app import create_app
from stream_app.kafka.dead_letters import DeadLetterSink
from stream_app.settings import get_settings

__all__ = ["all_cells", "app", "counter"]

settings = get_settings()
app = create_app(settings)
dead_letters = DeadLetterSink(app, settings)
input_topic = app.topic(
    settings.input_topic(BEHAVIOUR),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
cells = app.Table(
    BEHAVIOUR,
    # bytes in, bytes out: the changelog key is the cell id exactly as producers send it, and the
    # value is MarkedCount as JSON, so any Kafka tool can read the state.
    key_type=bytes,
    value_type=bytes,
    help="Counter cells: cell id -> MarkedCount JSON.",
)


@app.agent(input_topic)
async def counter(stream: Any) -> None:
    """Apply every record of ``<app_id>.counter.in`` to its cell, dead-lettering bad ones."""
    async for event in stream.events():
        record = event.message
        try:
            message = MARKED_MESSAGES.decode(
                record.key, record.value, max_bytes=settings.max_message_bytes
            )
        except InvalidMessageError as exc:
            await dead_letters.publish(record, exc, behaviour=BEHAVIOUR)
            continue
        key = record.key
        raw = cells.get(key)
        state = MarkedCount.model_validate_json(raw) if raw is not None else None
        outcome = apply_marked(state, message, partition=record.partition, offset=record.offset)
        if outcome.state is None:
            cells.pop(key, None)
        else:
            cells[key] = outcome.state.model_dump_json().encode()


@app.page("/counter/")
async def all_cells(web: Any, request: Any) -> Any:
    """Every live counter cell held by this worker: ``{cell_id: count}``."""
    return web.json(
        {key.decode(): MarkedCount.model_validate_json(raw).count for key, raw in cells.items()}
    )
