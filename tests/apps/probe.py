"""A behaviour that does on command what the integration tests need to observe.

Run as ``faust -A tests.apps.probe worker``. Files named by environment variables receive what
the tests cannot read from the state (firing order, effect attempts, handler calls):

- ``PROBE_TIMER_LOG``: one line per ``on_timeout``: ``<due_ms> <cell> <name> <missed>``.
- ``PROBE_EFFECT_LOG``: one line per effect handler attempt: ``<kind> <effect id> <attempt>``.
- ``PROBE_HANDLER_LOG``: one line per reactor-handler call: ``<handler> <partition> <offset>``.
- ``PROBE_FIX_FILE``: while this file does not exist, ``poison`` messages raise.
- ``PROBE_WATCHDOG_S``: Faust's ``stream_processing_timeout`` (its stream watchdog), if set.

``relay`` injects an ``add`` into another cell without Kafka (``Runtime.inject``); ``forward``
sends one through Kafka (``CellState.send``).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from stream_app import (
    Behaviour,
    CellState,
    Effect,
    Exhausted,
    Misfire,
    ReactorRecord,
    RejectMessage,
    RetryPolicy,
    Runtime,
)
from stream_app.kafka.app import create_app
from stream_app.settings import get_settings


class Data(BaseModel):
    count: int = 0
    value: int | None = None
    boots: int = 0
    fired: int = 0
    applied: list[str] = Field(default_factory=list)


class Add(BaseModel):
    by: int = 1


class Set(BaseModel):
    value: int


class Clear(BaseModel):
    pass


class Timer(BaseModel):
    name: str = "timeout"
    after_ms: int = 0
    at_ms: int | None = None
    every_ms: int | None = None
    misfire: Misfire = Misfire.FIRE_ONCE
    max_catch_up: int = 1


class Timers(BaseModel):
    count: int
    after_ms: int = 0
    spread_ms: int = 0
    at_ms: list[int] | None = None  # explicit due times, one per timer (count is ignored)


class Cancel(BaseModel):
    name: str = "timeout"


class Emit(BaseModel):
    kind: str
    payload: Any = None


class Poison(BaseModel):
    tag: str


class Note(BaseModel):
    tag: str


class Reject(BaseModel):
    pass


class Step(BaseModel):
    seq: int


class Relay(BaseModel):
    to: str
    by: int = 1


class Forward(BaseModel):
    to: str
    by: int = 1


def _append(variable: str, line: str) -> None:
    path = os.environ.get(variable)
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


def handle(state: CellState[Data]) -> None:
    message = state.message
    assert message is not None
    body = message.body
    data = state.data or Data()
    if isinstance(body, Add):
        data.count += body.by
    elif isinstance(body, Set):
        data.value = body.value
    elif isinstance(body, Clear):
        state.clear()
        return
    elif isinstance(body, Timer):
        if body.at_ms is not None:
            state.set_timer(
                body.name,
                at=body.at_ms,
                every=body.every_ms and body.every_ms / 1000,
                misfire=body.misfire,
                max_catch_up=body.max_catch_up,
            )
        else:
            state.set_timer(
                body.name,
                after=body.after_ms / 1000,
                every=body.every_ms / 1000 if body.every_ms else None,
                misfire=body.misfire,
                max_catch_up=body.max_catch_up,
            )
    elif isinstance(body, Timers) and body.at_ms is not None:
        for i, due in enumerate(body.at_ms):
            state.set_timer(f"t{i}", at=due, payload=i)
    elif isinstance(body, Timers):
        for i in range(body.count):
            spread = body.spread_ms * i // max(1, body.count)
            state.set_timer(f"t{i}", after=(body.after_ms + spread) / 1000, payload=i)
    elif isinstance(body, Cancel):
        state.cancel_timer(body.name)
    elif isinstance(body, Emit):
        state.emit_effect(body.kind, body.payload)
    elif isinstance(body, Poison):
        if not Path(os.environ.get("PROBE_FIX_FILE", "/nonexistent")).exists():
            raise RuntimeError(f"poison {body.tag}")
        data.applied.append(body.tag)
    elif isinstance(body, Note):
        data.applied.append(body.tag)
    elif isinstance(body, Reject):
        raise RejectMessage("probe rejects this on purpose")
    elif isinstance(body, Step):
        data.value = body.seq
        data.count += 1
    elif isinstance(body, Relay):
        runtime.inject("probe", body.to, "add", {"by": body.by})
    elif isinstance(body, Forward):
        state.send("probe", body.to, "add", {"by": body.by})
    state.data = data


def boot(state: CellState[Data]) -> None:
    assert state.data is not None
    state.data.boots += 1


def timeout(state: CellState[Data]) -> None:
    assert state.data is not None and state.timer is not None
    state.data.fired += 1
    timer = state.timer
    _append("PROBE_TIMER_LOG", f"{timer.due_ms} {state.cell_id} {timer.name} {timer.missed}")


probe = Behaviour(
    "probe",
    messages={
        "add": Add,
        "set": Set,
        "clear": Clear,
        "timer": Timer,
        "timers": Timers,
        "cancel": Cancel,
        "emit": Emit,
        "poison": Poison,
        "note": Note,
        "reject": Reject,
        "step": Step,
        "relay": Relay,
        "forward": Forward,
    },
    data=Data,
    handle_message=handle,
    on_boot=boot,
    on_timeout=timeout,
    retry=RetryPolicy(attempts=2, backoff_s=0.05),
)

_watchdog = os.environ.get("PROBE_WATCHDOG_S")  # Faust's stream watchdog, shortened for tests
runtime = Runtime(
    app=create_app(get_settings(), stream_processing_timeout=float(_watchdog))
    if _watchdog
    else None
)
app = runtime.app
runtime.behaviour(probe)
_attempts: Counter[str] = Counter()


@runtime.effect_handler(
    "flaky", retry=RetryPolicy(attempts=5, backoff_s=0.05, on_exhausted=Exhausted.DEAD_LETTER)
)
def flaky(effect: Effect) -> None:
    _attempts[effect.id] += 1
    _append("PROBE_EFFECT_LOG", f"flaky {effect.id} {_attempts[effect.id]}")
    if _attempts[effect.id] <= 2:
        raise ConnectionError(f"flaky failure {_attempts[effect.id]}")


@runtime.effect_handler(
    "broken", retry=RetryPolicy(attempts=3, backoff_s=0.05, on_exhausted=Exhausted.DEAD_LETTER)
)
def broken(effect: Effect) -> None:
    _append("PROBE_EFFECT_LOG", f"broken {effect.id} x")
    raise RuntimeError("broken effect handler")


@runtime.handler(f"{runtime.settings.app_id}.audit", name="first")
def first(record: ReactorRecord) -> None:
    _append("PROBE_HANDLER_LOG", f"first {record.partition} {record.offset}")


@runtime.handler(f"{runtime.settings.app_id}.audit", name="second")
async def second(record: ReactorRecord) -> None:
    _append("PROBE_HANDLER_LOG", f"second {record.partition} {record.offset}")
