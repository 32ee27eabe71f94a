"""The app of the worker chaos test and benchmark: ``faust -A bench.apps.chaos_app worker``.

Three kinds of work, each with ids, so that after any number of SIGKILLs every acknowledged
message can be checked to be applied (at least once or exactly once) and every timer to have
fired:

- behaviour ``tally``: ``add`` (``{"id": n}``) appends ``n`` to the cell's ``applied`` list;
  ``arm`` (``{"id": n, "after_ms": ms}``) sets the one-shot timer ``t<n>``, whose firing appends
  ``n`` to the cell's ``fired`` list. An id applied twice shows twice: the lists are the
  record of every application, which the reference model compares with what was acknowledged.
- entity ``purse``: ``deposit`` (``{"id": n}``) is a ``deposited`` event that appends ``n`` to
  the state's ``deposits``; clients send it with request/reply (``EntityClient.request``).
  Declared without fencing so that one app runs under both guarantees (see
  :mod:`bench.apps.entity_counter`); under ``exactly_once`` its events are transactional.

``GET /chaos/progress/?after=<ms>`` tells which partitions of ``<app_id>.tally.in`` this
worker has assigned and, per partition, the wall time (ms) of the first record it processed
after ``after``: the chaos harness times a recovery as the first record processed on a killed
worker's partitions after the kill, by whichever worker.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict, deque
from typing import Any

from pydantic import BaseModel, Field

from stream_app import Behaviour, CellState, Entity, Runtime

__all__ = [
    "Add",
    "Arm",
    "Deposit",
    "Deposited",
    "Purse",
    "Tally",
    "app",
    "purse",
    "runtime",
    "tally",
]

#: Processing times kept per partition: well over a minute of the harness's load.
KEPT_TIMES = 20_000


class Tally(BaseModel):
    """A ``tally`` cell's data: the ids of every ``add`` applied and every timer fired."""

    applied: list[int] = Field(default_factory=list)
    fired: list[int] = Field(default_factory=list)


class Add(BaseModel):
    """Message ``add``: note that message ``id`` was applied."""

    id: int


class Arm(BaseModel):
    """Message ``arm``: set timer ``t<id>`` due ``after_ms`` from now."""

    id: int
    after_ms: int = Field(ge=0)


class Purse(BaseModel):
    """A ``purse`` entity's state: the ids of its deposits, in the order applied."""

    deposits: list[int] = Field(default_factory=list)


class Deposit(BaseModel):
    """Message ``deposit`` of entity ``purse``."""

    id: int


class Deposited(BaseModel):
    """Event: deposit ``id`` was applied."""

    id: int


#: partition of the tally input topic -> wall ms of the records this worker processed.
processed: defaultdict[int, deque[int]] = defaultdict(lambda: deque(maxlen=KEPT_TIMES))


def handle(state: CellState[Tally]) -> None:
    """Apply an ``add`` or set an ``arm``'s timer; note when the record was processed."""
    message = state.message
    assert message is not None
    data = state.data or Tally()
    body = message.body
    if isinstance(body, Add):
        data.applied.append(body.id)
    else:
        assert isinstance(body, Arm)
        state.set_timer(f"t{body.id}", after=body.after_ms / 1000, payload=body.id)
    state.data = data
    _topic, partition, _offset = state.origin.rsplit("/", 2)
    processed[int(partition)].append(int(time.time() * 1000))


def on_timeout(state: CellState[Tally]) -> None:
    """Note the timer's id as fired."""
    assert state.data is not None and state.timer is not None
    state.data.fired.append(int(state.timer.name.removeprefix("t")))


tally: Behaviour[Tally] = Behaviour(
    "tally",
    messages={"add": Add, "arm": Arm},
    data=Tally,
    handle_message=handle,
    on_timeout=on_timeout,
)

purse: Entity[Purse] = Entity(
    "purse",
    state=Purse,
    messages={"deposit": Deposit},
    events={"deposited": Deposited},
    init=Purse,
    handle=lambda message, state: Deposited(id=message.id),
    update=lambda event, state: Purse(deposits=[*state.deposits, event.id]),
    fencing=False,
)

runtime = Runtime()
app = runtime.app
runtime.behaviour(tally)
runtime.entity(purse)


def first_after(times: deque[int], after_ms: int) -> int | None:
    """The first of ``times`` (ascending) later than ``after_ms``."""
    ordered = list(times)
    index = bisect.bisect_right(ordered, after_ms)
    return ordered[index] if index < len(ordered) else None


@app.page("/chaos/progress/")
async def progress_view(web: Any, request: Any) -> Any:
    """This worker's assigned tally partitions and its first processing after ``?after=ms``."""
    after = int(request.query.get("after", 0))
    topic = runtime.settings.input_topic(tally.name)
    assigned = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic)
    first = {p: first_after(times, after) for p, times in processed.items()}
    return web.json(
        {"assigned": assigned, "first_after": {p: t for p, t in first.items() if t is not None}}
    )
