"""The models every counter subject of the benchmarks uses: one envelope, one data model.

The hand-written loop, the plain Faust agent and the cell all decode the same envelope with the
same :class:`~stream_app.core.envelope.MessageTypes`, and keep a cell's count in :class:`Count`.

The deduplicating counter (:mod:`bench.apps.faust_counter_dedup`, and the loop of
:mod:`bench.counter_throughput`) keeps more: the input partition and offset of the last record
applied to the cell (:class:`MarkedCount`), so that a record replayed after a crash is skipped
(:func:`apply_marked`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stream_app.core.envelope import CellMessage, MessageTypes

__all__ = [
    "BEHAVIOUR",
    "MARKED_MESSAGES",
    "MESSAGES",
    "Count",
    "Increment",
    "MarkedCount",
    "MarkedOutcome",
    "Reset",
    "apply_increment",
    "apply_marked",
]

#: The behaviour (and table) name: input topic ``<app_id>.counter.in``.
BEHAVIOUR = "counter"


class Increment(BaseModel):
    """Add ``by`` to the cell's count."""

    model_config = ConfigDict(extra="forbid")

    by: int = Field(default=1, ge=1, le=1_000_000_000)


class Count(BaseModel):
    """A counter cell's data.

    Attributes:
        count: The sum of the increments applied.
    """

    count: int = 0


MESSAGES = MessageTypes(BEHAVIOUR, {"increment": Increment})


def apply_increment(data: Count | None, body: Increment) -> Count:
    """The update all subjects perform: a dead cell starts at 0."""
    data = data if data is not None else Count()
    data.count += body.by
    return data


class Reset(BaseModel):
    """Clear the cell: its key is deleted."""

    model_config = ConfigDict(extra="forbid")


#: The deduplicating counter's messages: increments and resets.
MARKED_MESSAGES = MessageTypes(BEHAVIOUR, {"increment": Increment, "reset": Reset})


class MarkedCount(BaseModel):
    """A deduplicating counter cell's data, as stored in its table (JSON).

    Attributes:
        count: The current count.
        partition: Input partition of the last record applied.
        offset: Input offset of the last record applied.
    """

    count: int
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class MarkedOutcome:
    """What applying one record did to a deduplicating counter cell.

    Attributes:
        state: The cell's data afterwards; ``None`` means the cell is dead (key deleted).
        duplicate: The record was applied before (a replay) and changed nothing.
    """

    state: MarkedCount | None
    duplicate: bool


def apply_marked(
    state: MarkedCount | None, message: CellMessage[Any], *, partition: int, offset: int
) -> MarkedOutcome:
    """Apply one record unless the cell's mark shows it was applied before (a replay)."""
    if state is not None and state.partition == partition and offset <= state.offset:
        return MarkedOutcome(state=state, duplicate=True)
    if isinstance(message.body, Reset):
        return MarkedOutcome(state=None, duplicate=False)
    assert isinstance(message.body, Increment)
    count = (state.count if state is not None else 0) + message.body.by
    return MarkedOutcome(MarkedCount(count=count, partition=partition, offset=offset), False)
