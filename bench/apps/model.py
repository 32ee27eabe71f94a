"""The models every counter subject of the benchmarks uses: one envelope, one data model.

The hand-written loop, the plain Faust agent and the cell all decode the same envelope with the
same :class:`~stream_app.core.envelope.MessageTypes`, and keep a cell's count in :class:`Count`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stream_app.core.envelope import MessageTypes

__all__ = [
    "BEHAVIOUR",
    "MESSAGES",
    "Count",
    "Increment",
    "apply_increment",
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
