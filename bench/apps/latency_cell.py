"""The cell of the latency benchmark: ``faust -A bench.apps.latency_cell worker``.

A counter cell (behaviour ``counter``, as :mod:`bench.apps.cell_counter`) that also publishes
one record per message it handles, to ``<app_id>.counter.out`` on the cell's partition: the
output a user of the cell would observe (a published record; under ``exactly_once`` it becomes
visible when its transaction commits, like a reply). The record's value is the message's
``seq``, so :mod:`bench.latency` can tell when the record it produced came out.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from bench.apps.harness import faust_options, start_profile_if_requested
from bench.apps.model import BEHAVIOUR, Count
from stream_app import Behaviour, CellState, Runtime, get_settings
from stream_app.core.envelope import MessageTypes
from stream_app.kafka.app import create_app

__all__ = ["MESSAGES", "Tick", "app", "output_topic", "runtime", "ticker"]

start_profile_if_requested()


class Tick(BaseModel):
    """One event: add 1 to the cell and publish ``seq``."""

    model_config = ConfigDict(extra="forbid")

    seq: int


MESSAGES = MessageTypes(BEHAVIOUR, {"tick": Tick})


def output_topic(app_id: str) -> str:
    """Where the cells of app ``app_id`` publish: ``<app_id>.counter.out``."""
    return f"{app_id}.{BEHAVIOUR}.out"


settings = get_settings()
OUTPUT = output_topic(settings.app_id)


def handle(state: CellState[Count]) -> None:
    """Count the tick and publish its ``seq``."""
    message = state.message
    assert message is not None and isinstance(message.body, Tick)
    state.data = Count(count=(state.data.count if state.data is not None else 0) + 1)
    state.publish(OUTPUT, str(message.body.seq).encode())


ticker: Behaviour[Count] = Behaviour(
    BEHAVIOUR, messages=MESSAGES.types, data=Count, handle_message=handle
)

runtime = Runtime(settings, app=create_app(settings, **faust_options()))
app = runtime.app
runtime.behaviour(ticker)
