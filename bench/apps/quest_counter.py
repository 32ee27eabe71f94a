"""The quest benchmark's worker: ``faust -A bench.apps.quest_counter worker``.

Two behaviours on one :class:`~stream_app.Runtime`, so that both subjects of
:mod:`bench.quests` run the same module, process and settings:

- ``quests``, a :class:`~stream_app.QuestBehaviour`. Its contexts take the quests ``q0``, ``q1``
  and ``q2``, each with one action on the event ``tick`` that counts the hit in the instance's
  variables: a multicast ``tick`` runs all three. The quest ``beat`` has one recurring timer
  (``every`` ``BENCH_BEAT_S`` seconds, default 300, from the instance's start) whose action
  notes its lag.
- ``plain``, a plain cell :class:`~stream_app.Behaviour` with the messages ``touch`` (makes the
  cell, not counted) and ``tick`` (adds 1, counted): the baseline.

What the harness reads, over HTTP: ``GET /bench/progress/`` (the ticks handled, timed from the
first to the ``BENCH_EXPECTED``-th as :class:`~bench.apps.harness.Progress` does; quests count
a multicast once, in ``q2``'s action, and report each quest's calls so the bench checks that
every tick reached all three; ``setup``: quests started and cells touched) and
``GET /bench/beats/`` (beats fired; with ``?lags=1`` the percentiles of their lag: the
invocation's time, the wall time the runtime took when it started the wake that fired the
timer, minus the occurrence's due time).
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench.apps.harness import Progress, faust_options, start_profile_if_requested
from bench.apps.model import Count
from stream_app import (
    ActionContext,
    Behaviour,
    CellState,
    NoVariables,
    Quest,
    QuestBehaviour,
    Runtime,
    get_settings,
)
from stream_app.kafka.app import create_app

__all__ = [
    "BEAT_S",
    "Hits",
    "Tick",
    "Touch",
    "app",
    "beat",
    "plain",
    "progress",
    "quests",
    "runtime",
]

start_profile_if_requested()
progress = Progress.from_env()
#: The period of the ``beat`` quest's timer, in seconds.
BEAT_S = float(os.environ.get("BENCH_BEAT_S", "300"))


class Hits(BaseModel):
    """A counting quest's variables."""

    hits: int = 0


class _Observed:
    """What this worker saw (measurement, not state: kept outside the contexts)."""

    def __init__(self) -> None:
        self.setup = 0
        self.calls: Counter[str] = Counter()
        # A compact array: with 1,000,000 beats a list of ints would add ~35 MB to the RSS
        # the benchmark reports.
        self.beat_lags = array("q")


observed = _Observed()


def _counting(name: str, *, last: bool) -> Quest[Hits]:
    quest = Quest(name, variables=Hits, init=_started)

    def hit(ctx: ActionContext[Hits]) -> None:
        ctx.vars.hits += 1
        observed.calls[name] += 1
        if last:
            progress.note()

    quest.on("tick", hit, name="hit")
    return quest


def _started(ctx: ActionContext[Any]) -> None:
    observed.setup += 1


def _beat(ctx: ActionContext[Any]) -> None:
    observed.beat_lags.append(ctx.now_ms - int(ctx.event["due_ms"]))


beat: Quest[NoVariables] = Quest("beat", variables=NoVariables, init=_started)
beat.every("beat", BEAT_S, _beat)

quests = QuestBehaviour(
    "quests",
    quests=[
        _counting("q0", last=False),
        _counting("q1", last=False),
        _counting("q2", last=True),
        beat,
    ],
)


class Touch(BaseModel):
    """Make the cell (setup: not counted)."""

    model_config = ConfigDict(extra="forbid")


class Tick(BaseModel):
    """Add 1 to the cell (counted)."""

    model_config = ConfigDict(extra="forbid")


def _plain(state: CellState[Count]) -> None:
    message = state.message
    assert message is not None
    data = state.data if state.data is not None else Count()
    if isinstance(message.body, Tick):
        data.count += 1
        progress.note()
    else:
        observed.setup += 1
    state.data = data


plain: Behaviour[Count] = Behaviour(
    "plain", messages={"touch": Touch, "tick": Tick}, data=Count, handle_message=_plain
)

settings = get_settings()
runtime = Runtime(settings, app=create_app(settings, **faust_options()))
app = runtime.app
runtime.quests(quests)
runtime.behaviour(plain)


def _percentiles(values: array[int]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p99": None, "p999": None, "max": None, "count": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

    return {
        "p50": pick(0.5),
        "p99": pick(0.99),
        "p999": pick(0.999),
        "max": float(ordered[-1]),
        "count": len(ordered),
    }


@app.page("/bench/progress/")
async def progress_view(web: Any, request: Any) -> Any:
    """Ticks handled (timed), setup done, and each counting quest's calls."""
    return web.json({**progress.snapshot(), "setup": observed.setup, "calls": dict(observed.calls)})


@app.page("/bench/beats/")
async def beats_view(web: Any, request: Any) -> Any:
    """Beats fired; their lag percentiles with ``?lags=1`` (sorts them)."""
    body: dict[str, Any] = {"setup": observed.setup, "beats": len(observed.beat_lags)}
    if request.query.get("lags"):
        body["lag_ms"] = _percentiles(observed.beat_lags)
    return web.json(body)
