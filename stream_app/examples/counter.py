"""The counter: the first cell app, run with ``faust -A stream_app.examples.counter worker``.

One cell per counter, identified by the record key. Producers in any language send JSON
envelopes to ``<app_id>.counter.in``::

    key   = b"alice"
    value = b'{"type": "increment", "body": {"by": 2}}'
    value = b'{"type": "reset"}'           # the cell dies: its key is deleted

A live cell's data is a :class:`CounterState`, ``{"count": 2}``, in the table ``counter``
(changelog ``<app_id>-counter-changelog``). Read it with ``stream-app cells get counter alice``
or ``GET /stream-app/cells/counter/alice/``. Everything else is the runtime's: records that fail
validation go to ``<app_id>.dead-letters`` with the reason, a record produced with another
partitioner than murmur2 is forwarded to its cell's partition, and under
``STREAM_APP_PROCESSING_GUARANTEE=exactly_once`` every message is applied exactly once, across
crashes (under ``at_least_once`` a crash may apply a message twice; see docs/cells.md).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stream_app import Behaviour, CellState, Runtime

__all__ = ["CounterState", "Increment", "Reset", "app", "counter", "handle_message", "runtime"]


class Increment(BaseModel):
    """Add ``by`` to the cell's count (creating the cell if it is dead)."""

    model_config = ConfigDict(extra="forbid")

    by: int = Field(default=1, ge=1, le=1_000_000_000)


class Reset(BaseModel):
    """Clear the cell: its data is deleted and it costs nothing until its next message."""

    model_config = ConfigDict(extra="forbid")


class CounterState(BaseModel):
    """A live counter's data.

    Attributes:
        count: The sum of the increments since the cell was created or last reset.
    """

    count: int = 0


def handle_message(state: CellState[CounterState]) -> None:
    """Apply one message to a counter: add an increment, or kill the cell on a reset."""
    assert state.message is not None
    match state.message.body:
        case Increment(by=by):
            data = state.data or CounterState()
            data.count += by
            state.data = data
        case Reset():
            state.data = None


counter = Behaviour(
    "counter",
    messages={"increment": Increment, "reset": Reset},
    data=CounterState,
    handle_message=handle_message,
)

runtime = Runtime()
app = runtime.app
runtime.behaviour(counter)
