"""A behaviour whose timers the driven-clock tests arm and count.

Run as ``faust -A tests.apps.clocked worker`` with ``STREAM_APP_CLOCK=driven``. Each cell keeps
what happened to it in its data, read back through the cell view:

- ``cron`` arms a cron timer (expression, zone, misfire policy), ``timer`` a one-shot or
  ``every`` timer, ``note`` records the ``now`` of a message invocation;
- every firing appends ``[due_ms, now_ms, name, missed]`` to ``fired``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from stream_app import Behaviour, CellState, Misfire, Runtime


class Data(BaseModel):
    noted_ms: list[int] = Field(default_factory=list)
    fired: list[tuple[int, int, str, int]] = Field(default_factory=list)


class Cron(BaseModel):
    name: str = "cron"
    cron: str
    tz: str | None = None
    misfire: Misfire = Misfire.FIRE_ONCE
    max_catch_up: int = 1


class Timer(BaseModel):
    name: str = "timer"
    after_s: float | None = None
    every_s: float | None = None


class Note(BaseModel):
    pass


def handle(state: CellState[Data]) -> None:
    assert state.message is not None
    body = state.message.body
    data = state.data or Data()
    if isinstance(body, Cron):
        state.set_timer(
            body.name,
            cron=body.cron,
            tz=body.tz,
            misfire=body.misfire,
            max_catch_up=body.max_catch_up,
        )
    elif isinstance(body, Timer):
        state.set_timer(body.name, after=body.after_s, every=body.every_s)
    elif isinstance(body, Note):
        data.noted_ms.append(state.now_ms)
    state.data = data


def timeout(state: CellState[Data]) -> None:
    timer = state.timer
    assert timer is not None and state.data is not None
    state.data.fired.append((timer.due_ms, state.now_ms, timer.name, timer.missed))


clocked = Behaviour(
    "clocked",
    messages={"cron": Cron, "timer": Timer, "note": Note},
    data=Data,
    handle_message=handle,
    on_timeout=timeout,
)

runtime = Runtime()
app = runtime.app
runtime.behaviour(clocked)
