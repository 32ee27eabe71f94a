"""Unit-testing a behaviour without a worker: one :class:`~stream_app.core.cell.CellState`
factory.

A behaviour's callbacks are plain functions of a ``CellState``; a test builds one, calls the
callback, and looks at what it did (``state.data``, the timers set, the messages and effects
emitted)::

    state = cell_state(counter, message=("increment", {"by": 2}))
    counter.handle_message(state)
    assert state.data == CounterState(count=2)

The message is decoded by the behaviour's own message types, so a body its model refuses fails
the test as it would be dead-lettered by a worker.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState, FiredTimer, Trigger
from stream_app.core.envelope import CellMessage

__all__ = ["cell_state"]


def cell_state(
    behaviour: Behaviour[Any] | str,
    *,
    data: BaseModel | None = None,
    message: tuple[str, dict[str, Any] | None] | CellMessage[Any] | None = None,
    timer: FiredTimer | None = None,
    trigger: Trigger | None = None,
    cell_id: str = "cell-1",
    app_id: str = "app",
    now_ms: int = 1_000,
    clock_ms: int | None = None,
    origin: str | None = None,
    timers: dict[str, int] | None = None,
) -> CellState[Any]:
    """The state one callback of ``behaviour`` would get for ``cell_id``.

    Args:
        behaviour: The behaviour (needed to decode ``message``), or just its name.
        data: The cell's data (``None``: a dead cell).
        message: ``(type, body)`` of the message being handled, decoded as a worker decodes it
            (or a message decoded already).
        timer: The timer that fired (for ``on_timeout``).
        trigger: What woke the cell; default ``timeout`` with a ``timer``, else ``message``.
        cell_id: The cell's id.
        app_id: The application id (it seeds effect ids).
        now_ms: The invocation's time.
        clock_ms: The worker's clock at the invocation (default: ``now_ms``).
        origin: Where the invocation came from; default: offset 0 of partition 0 of the
            behaviour's input topic.
        timers: The cell's pending timers, ``name -> due_ms``.

    Raises:
        ValueError: ``message`` given with a behaviour's name rather than the behaviour.
        stream_app.errors.InvalidMessageError: The behaviour does not accept ``message``.
    """
    name = behaviour if isinstance(behaviour, str) else behaviour.name
    decoded = message if isinstance(message, CellMessage) else None
    if isinstance(message, tuple):
        if isinstance(behaviour, str):
            raise ValueError("give the Behaviour, not its name, to decode a message")
        kind, body = message
        value = json.dumps({"type": kind, "body": body}).encode()
        decoded = behaviour.message_types.decode(cell_id.encode(), value, max_bytes=1 << 20)
    return CellState(
        app_id=app_id,
        behaviour=name,
        cell_id=cell_id,
        data=data,
        trigger=trigger or ("timeout" if timer is not None else "message"),
        now_ms=now_ms,
        clock_ms=clock_ms,
        origin=origin or f"{app_id}.{name}.in/0/0",
        timers=dict(timers or {}),
        message=decoded,
        timer=timer,
    )
