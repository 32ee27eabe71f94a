"""A counter cell with a slow effect handler, for backpressure runs: ``faust -A
bench.apps.backpressure_cell worker``.

The behaviour ``counter`` (input ``<app_id>.counter.in``, table ``counter``) adds 1 to the
cell's :class:`~bench.apps.model.Count` for each ``increment``, and for each ``work`` message
also emits an effect of kind ``slow``, whose handler takes ``BACKPRESSURE_EFFECT_MS``
milliseconds (default 50, an ``asyncio.sleep``: a call to a slow service). A backlog of work
messages therefore leaves many effects queued in ``<app_id>.effects`` behind the cells.

``GET /bench/backpressure/`` reports the messages applied (:class:`~bench.apps.harness.Progress`,
``BENCH_EXPECTED``), the distinct effect ids handled and the handler's calls, the dead letters
published by reason, the batched input's counters and the RocksDB memory in use.
``bench.backpressure`` and ``tests/integration/test_backpressure.py`` run it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench.apps.harness import Progress, faust_options
from bench.apps.model import BEHAVIOUR, Count, Increment
from stream_app import Behaviour, CellState, Effect, Runtime, get_settings
from stream_app.kafka.app import create_app

__all__ = ["EFFECT_KIND", "Work", "app", "counter", "progress", "runtime"]

#: The kind of the effects ``work`` messages emit.
EFFECT_KIND = "slow"


class Work(BaseModel):
    """Count the message, and emit one ``slow`` effect carrying ``n``."""

    model_config = ConfigDict(extra="forbid")

    n: int


progress = Progress.from_env()
effect_seconds = int(os.environ.get("BACKPRESSURE_EFFECT_MS", "50")) / 1000
#: Ids of the effects handled (a redelivered effect keeps its id).
handled: set[str] = set()
calls = 0


def handle(state: CellState[Count]) -> None:
    """Count the message; a ``work`` message also emits its effect."""
    message = state.message
    assert message is not None
    data = state.data or Count()
    data.count += 1
    state.data = data
    if isinstance(message.body, Work):
        state.emit_effect(EFFECT_KIND, {"n": message.body.n})
    progress.note()


counter: Behaviour[Count] = Behaviour(
    BEHAVIOUR, messages={"increment": Increment, "work": Work}, data=Count, handle_message=handle
)

settings = get_settings()
runtime = Runtime(settings, app=create_app(settings, **faust_options()))
app = runtime.app
runtime.behaviour(counter)


@runtime.effect_handler(EFFECT_KIND)
async def slow_effect(effect: Effect) -> None:
    """A slow call to the outside world: ``BACKPRESSURE_EFFECT_MS`` of waiting."""
    global calls
    calls += 1
    await asyncio.sleep(effect_seconds)
    handled.add(effect.id)


@app.page("/bench/backpressure/")
async def backpressure_view(web: Any, request: Any) -> Any:
    """Messages applied, effects handled, dead letters by reason, the input's counters, the
    RocksDB memory in use."""
    return web.json(
        {
            **progress.snapshot(),
            "effects_handled": len(handled),
            "effect_calls": calls,
            "dead_letters": dict(runtime.dead_letters.counts),
            "batch_input": runtime.batch_input.stats(),
            "rocksdb_bytes": runtime.app.rocksdb_memory.usage(),
        }
    )
