"""A cell that sets many named timers per message: ``faust -A bench.apps.timer_cell worker``.

Behaviour ``ticker`` (input topic ``<app_id>.ticker.in``). An ``arm`` message makes the cell set
``count`` one-shot timers ``t0`` .. ``t<count-1>`` due inside a window: timer ``j`` of message
``index`` (of ``messages``) is due at ``first_due_ms + window_ms * (j * messages + index) /
(count * messages)``, so the due times of all messages interleave evenly over the window and
every partition fires at the same steady rate. ``on_timeout`` counts the firing in the cell's
data and notes, per firing:

- the runtime's own lag: ``state.now_ms - due`` (``now_ms`` of a firing is the wall time the
  runtime took when it started the wake that fires it; this is what ``timer_lag_ms`` of
  ``/stream-app/metrics/`` records);
- the callback lag: the wall time when ``on_timeout`` runs minus the due time, which adds the
  time spent firing the timers before it in the same wake.

``GET /bench/timers/`` reports the ``arm`` messages handled (with the wall time of the first and
last), the timers fired, and the percentiles of both lags; it is cheap enough to poll.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from bench.apps.harness import faust_options, start_profile_if_requested
from stream_app import Behaviour, CellState, Runtime, get_settings
from stream_app.core.partitioner import partition_for
from stream_app.kafka.app import create_app

__all__ = ["Arm", "Ticks", "app", "runtime", "ticker"]

BEHAVIOUR = "ticker"

start_profile_if_requested()


class Arm(BaseModel):
    """Set ``count`` timers on the cell, due inside the window (see the module docstring)."""

    count: int = Field(ge=1, le=100_000)
    first_due_ms: int = Field(ge=0)
    window_ms: int = Field(ge=0)
    index: int = Field(ge=0)
    messages: int = Field(ge=1)


class Ticks(BaseModel):
    """A ticker cell's data.

    Attributes:
        armed: Timers set by ``arm`` messages.
        fired: Timers fired.
    """

    armed: int = 0
    fired: int = 0


class _Observed:
    """What this worker saw, for ``/bench/timers/`` (kept outside the cells on purpose: it is
    measurement, not state)."""

    def __init__(self) -> None:
        self.arms = 0
        self.first_arm_wall: float | None = None
        self.last_arm_wall: float | None = None
        # Compact arrays, not lists of ints: with 1,000,000 timers the lists alone would add
        # about 70 MB to the worker's RSS, which the benchmark reports.
        self.runtime_lags = array("q")
        self.callback_lags = array("q")
        self.wakes: set[tuple[int, int]] = set()


observed = _Observed()


def handle(state: CellState[Ticks]) -> None:
    """Set the timers an ``arm`` message asks for."""
    message = state.message
    assert message is not None and isinstance(message.body, Arm)
    arm = message.body
    total = arm.count * arm.messages
    for j in range(arm.count):
        slot = j * arm.messages + arm.index
        state.set_timer(f"t{j}", at=arm.first_due_ms + arm.window_ms * slot // total)
    data = state.data or Ticks()
    data.armed += arm.count
    state.data = data
    now = time.time()
    if observed.first_arm_wall is None:
        observed.first_arm_wall = now
    observed.last_arm_wall = now
    observed.arms += 1


def on_timeout(state: CellState[Ticks]) -> None:
    """Count the firing and note its lags."""
    timer = state.timer
    assert timer is not None and state.data is not None
    observed.callback_lags.append(int(time.time() * 1000) - timer.due_ms)
    observed.runtime_lags.append(state.now_ms - timer.due_ms)
    observed.wakes.add((partition_for(state.cell_id.encode(), settings.partitions), state.now_ms))
    state.data.fired += 1


ticker: Behaviour[Ticks] = Behaviour(
    BEHAVIOUR, messages={"arm": Arm}, data=Ticks, handle_message=handle, on_timeout=on_timeout
)

settings = get_settings()
runtime = Runtime(settings, app=create_app(settings, **faust_options()))
app = runtime.app
runtime.behaviour(ticker)


def _percentiles(values: Sequence[int]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

    return {"p50": pick(0.5), "p99": pick(0.99), "max": float(ordered[-1]), "count": len(ordered)}


@app.page("/bench/timers/")
async def timers_view(web: Any, request: Any) -> Any:
    """Arms handled and timers fired so far; lag percentiles with ``?lags=1`` (sorts them)."""
    body: dict[str, Any] = {
        "arms": observed.arms,
        "first_arm_wall": observed.first_arm_wall,
        "last_arm_wall": observed.last_arm_wall,
        "fired": runtime.metrics.timers_fired,
        "callbacks": len(observed.callback_lags),
    }
    if request.query.get("lags"):
        body["runtime_lag_ms"] = _percentiles(observed.runtime_lags)
        body["callback_lag_ms"] = _percentiles(observed.callback_lags)
        body["in_wake_delay_ms"] = _percentiles(
            [c - r for c, r in zip(observed.callback_lags, observed.runtime_lags, strict=True)]
        )
        body["wakes_that_fired"] = len(observed.wakes)
    return web.json(body)
