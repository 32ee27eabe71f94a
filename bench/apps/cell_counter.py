"""The counter as a stream_app cell: ``faust -A bench.apps.cell_counter worker``.

A :class:`~stream_app.Behaviour` called ``counter`` on a :class:`~stream_app.Runtime`: its input
topic is ``<app_id>.counter.in`` and its state the table ``counter`` (changelog
``<app_id>-counter-changelog``). Each ``increment`` adds to the cell's :class:`Count`.

``BENCH_*`` variables are read by :mod:`bench.apps.harness`. ``GET /bench/progress/`` reports
the records applied and the runtime's count of misrouted records (which must be 0: the
benchmark produces with murmur2).
"""

from __future__ import annotations

from typing import Any

from bench.apps.harness import Progress, faust_options, start_profile_if_requested
from bench.apps.model import BEHAVIOUR, MESSAGES, Count, Increment, apply_increment
from stream_app import Behaviour, CellState, Runtime, get_settings
from stream_app.kafka.app import create_app

__all__ = ["app", "counter", "progress", "runtime"]

start_profile_if_requested()
progress = Progress.from_env()


def handle(state: CellState[Count]) -> None:
    """Apply one increment to the cell."""
    message = state.message
    assert message is not None and isinstance(message.body, Increment)
    state.data = apply_increment(state.data, message.body)
    progress.note()


counter: Behaviour[Count] = Behaviour(
    BEHAVIOUR, messages=MESSAGES.types, data=Count, handle_message=handle
)

settings = get_settings()
runtime = Runtime(settings, app=create_app(settings, **faust_options()))
app = runtime.app
runtime.behaviour(counter)


@app.page("/bench/progress/")
async def progress_view(web: Any, request: Any) -> Any:
    """Records applied so far, with the in-worker timings."""
    return web.json({**progress.snapshot(), "misrouted": runtime.metrics.misrouted})
