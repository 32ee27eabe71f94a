"""The behaviour the engine unit tests run: a tally whose messages exercise every output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState
from stream_app.core.retry import RetryPolicy
from stream_app.core.timers import Misfire
from stream_app.errors import RejectMessage

NAME = "probe"


class Tally(BaseModel):
    """A probe cell's data."""

    count: int = 0
    boots: int = 0
    fired: list[list[Any]] = []


class Add(BaseModel):
    """Add ``by`` to the count."""

    by: int = 1


class SetTo(BaseModel):
    """Set the count."""

    value: int


class Arm(BaseModel):
    """Set a timer."""

    name: str = "t"
    at_ms: int | None = None
    after_ms: int | None = None
    every_ms: int | None = None
    misfire: Misfire = Misfire.FIRE_ONCE
    max_catch_up: int = 1


class Tell(BaseModel):
    """Send ``add`` to cell ``to``."""

    to: str


class Emit(BaseModel):
    """Emit an effect of ``kind``, and publish a record to ``topic`` if given (keyed by
    ``key`` if given)."""

    kind: str = "notify"
    topic: str | None = None
    key: str | None = None


class Empty(BaseModel):
    """No body."""


@dataclass
class Switch:
    """Makes the probe's ``boom`` messages raise while ``failing`` is set, counting the calls."""

    failing: bool = True
    calls: int = 0
    attempts: list[float] = field(default_factory=list)


def probe(switch: Switch | None = None, retry: RetryPolicy | None = None) -> Behaviour[Tally]:
    """The probe behaviour; ``switch`` controls its ``boom`` messages."""
    control = switch or Switch()

    def handle(state: CellState[Tally]) -> None:
        message = state.message
        assert message is not None
        data = state.data or Tally()
        body: Any = message.body
        if message.type == "add":
            data.count += body.by
        elif message.type == "set":
            data.count = body.value
        elif message.type == "boom":
            control.calls += 1
            if control.failing:
                raise RuntimeError("boom")
            data.count += 100
        elif message.type == "reject":
            raise RejectMessage("not for me")
        elif message.type == "arm":
            state.data = data
            every = body.every_ms / 1000 if body.every_ms else None
            if body.at_ms is not None:
                state.set_timer(
                    body.name,
                    at=body.at_ms,
                    every=every,
                    misfire=body.misfire,
                    max_catch_up=body.max_catch_up,
                )
            else:
                state.set_timer(
                    body.name,
                    after=(body.after_ms or 0) / 1000 if body.after_ms is not None else None,
                    every=every,
                    misfire=body.misfire,
                    max_catch_up=body.max_catch_up,
                )
            return
        elif message.type == "disarm":
            state.cancel_timer("t")
        elif message.type == "tell":
            state.send(NAME, body.to, "add", {"by": 1})
        elif message.type == "emit":
            state.emit_effect(body.kind, {"count": data.count})
            if body.topic is not None:
                state.publish(body.topic, b"published", key=body.key)
        elif message.type == "stop":
            state.clear()
            return
        state.data = data

    def timeout(state: CellState[Tally]) -> None:
        assert state.data is not None and state.timer is not None
        timer = state.timer
        state.data.count += 1
        state.data.fired.append([timer.name, timer.due_ms, timer.missed])

    def boot(state: CellState[Tally]) -> None:
        assert state.data is not None
        state.data.boots += 1

    return Behaviour(
        NAME,
        messages={
            "add": Add,
            "set": SetTo,
            "boom": Empty,
            "reject": Empty,
            "arm": Arm,
            "disarm": Empty,
            "tell": Tell,
            "emit": Emit,
            "stop": Empty,
        },
        data=Tally,
        handle_message=handle,
        on_timeout=timeout,
        on_boot=boot,
        retry=retry or RetryPolicy(attempts=3, backoff_s=0.0, jitter=0.0),
    )
