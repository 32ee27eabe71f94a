"""The counter: the first cell app, run with ``faust -A stream_app.examples.counter worker``.

Each cell is a counter identified by the record key. Producers in any language send JSON
envelopes to ``<app_id>.counter.in``::

    key   = b"cell-42"
    value = b'{"type": "increment", "body": {"by": 2}}'
    value = b'{"type": "reset"}'           # clears the cell: its key is deleted (tombstone)

State lives in the Faust table ``counter`` on RocksDB with the changelog topic
``<app_id>-counter-changelog``. Records that fail validation go to ``<app_id>.dead-letters``
with the reason, and the worker keeps going.

**Applied once, delivered at least once.** Each cell's state carries the partition and offset of
the last record applied to it, written in the same changelog record as the count. A record
replayed after a crash (at-least-once delivery) has an offset at or below that mark and is
skipped, so counts are exact across SIGKILLs. A skipped record re-writes the cell's current
state to the changelog: RocksDB may hold a write whose changelog record was lost with the
process, and the re-write puts it there before the replayed offset is committed again.

HTTP views on the worker: ``GET /counter/`` (all cells on this worker) and
``GET /counter/<id>/`` (one cell, routed to the worker that owns its partition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stream_app.core.envelope import CellMessage, MessageTypes
from stream_app.errors import InvalidMessageError
from stream_app.kafka.app import create_app
from stream_app.kafka.dead_letters import DeadLetterSink
from stream_app.settings import get_settings

__all__ = [
    "BEHAVIOUR",
    "MESSAGES",
    "CounterState",
    "Increment",
    "Outcome",
    "Reset",
    "app",
    "apply_message",
]

BEHAVIOUR = "counter"


class Increment(BaseModel):
    """Add ``by`` to the cell's count (creating the cell if it is dead)."""

    model_config = ConfigDict(extra="forbid")

    by: int = Field(default=1, ge=1, le=1_000_000_000)


class Reset(BaseModel):
    """Clear the cell: its data is deleted and it costs nothing until its next message."""

    model_config = ConfigDict(extra="forbid")


MESSAGES = MessageTypes(BEHAVIOUR, {"increment": Increment, "reset": Reset})


class CounterState(BaseModel):
    """A live counter cell's data, as stored in the table (JSON).

    Attributes:
        count: The current count.
        partition: Input partition of the last record applied.
        offset: Input offset of the last record applied.
    """

    count: int
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one record did to a cell.

    Attributes:
        state: The cell's data afterwards; ``None`` means the cell is dead (key deleted).
        duplicate: The record was applied before (a replay) and changed nothing.
    """

    state: CounterState | None
    duplicate: bool


def apply_message(
    state: CounterState | None, message: CellMessage[Any], *, partition: int, offset: int
) -> Outcome:
    """The counter behaviour: a pure function of the cell's state and one message."""
    if state is not None and state.partition == partition and offset <= state.offset:
        return Outcome(state=state, duplicate=True)
    if isinstance(message.body, Reset):
        return Outcome(state=None, duplicate=False)
    assert isinstance(message.body, Increment)
    count = (state.count if state is not None else 0) + message.body.by
    return Outcome(CounterState(count=count, partition=partition, offset=offset), duplicate=False)


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
    # value is CounterState as JSON, so any Kafka tool can read the state.
    key_type=bytes,
    value_type=bytes,
    help="Counter cells: cell id -> CounterState JSON.",
)


@app.agent(input_topic)
async def counter(stream: Any) -> None:
    """Apply every record of ``<app_id>.counter.in`` to its cell, dead-lettering bad ones."""
    async for event in stream.events():
        record = event.message
        try:
            message = MESSAGES.decode(
                record.key, record.value, max_bytes=settings.max_message_bytes
            )
        except InvalidMessageError as exc:
            app.log.warning(
                "dead letter from %s[%s]@%s: %s", record.topic, record.partition, record.offset, exc
            )
            await dead_letters.publish(record, exc, behaviour=BEHAVIOUR)
            continue
        key = record.key
        raw = cells.get(key)
        state = CounterState.model_validate_json(raw) if raw is not None else None
        outcome = apply_message(state, message, partition=record.partition, offset=record.offset)
        if outcome.state is None:
            cells.pop(key, None)
        else:
            cells[key] = outcome.state.model_dump_json().encode()


@app.page("/counter/")
async def all_cells(web: Any, request: Any) -> Any:
    """Every live counter cell held by this worker: ``{cell_id: count}``."""
    return web.json(
        {key.decode(): CounterState.model_validate_json(raw).count for key, raw in cells.items()}
    )


@app.page("/counter/{cell_id}/")
@app.table_route(table=cells, match_info="cell_id")
async def one_cell(web: Any, request: Any, cell_id: str) -> Any:
    """One counter cell, answered by the worker that owns its partition."""
    raw = cells.get(cell_id.encode())
    if raw is None:
        return web.json({"cell_id": cell_id, "alive": False, "count": None}, status=404)
    count = CounterState.model_validate_json(raw).count
    return web.json({"cell_id": cell_id, "alive": True, "count": count})


@app.page("/stream-app/dead-letters/")
async def dead_letter_counts(web: Any, request: Any) -> Any:
    """Dead letters published by this worker since it started, by reason."""
    return web.json(dict(dead_letters.counts))
