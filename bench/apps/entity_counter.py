"""The ledger's ``counter`` entity, opted out of fencing: ``faust -A bench.apps.entity_counter
worker``.

The same state, message, event, decision and effect as ``stream_app.examples.ledger``'s
``counter``, declared with ``fencing=False`` so that one app runs under both guarantees:
``bench.entities`` compares its throughput under ``exactly_once`` with ``at_least_once``
(``R_eos``), and ``bench.latency`` times its ``send`` round trips under either. The ledger itself
cannot run ``at_least_once``: its entities need fencing (``Runtime.require_fencing``). Under
``at_least_once`` a zombie may append to this counter's log; a benchmark has none.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field

from stream_app import Effect, Entity, EntityEffect, Runtime

__all__ = ["Count", "Increase", "Increased", "app", "counter", "handle", "reached_ten", "runtime"]

logger = logging.getLogger(__name__)


class Count(BaseModel):
    """A counter's state."""

    value: int = 0


class Increase(BaseModel):
    """Message ``increment``: add ``by`` to the counter."""

    by: int = Field(default=1, ge=1)


class Increased(BaseModel):
    """Event: the counter went up by ``by``."""

    by: int


def handle(message: Increase, state: Count) -> Any:
    """One ``increased`` event; the effect when this event takes the counter to 10."""
    event = Increased(by=message.by)
    if state.value < 10 <= state.value + message.by:
        return event, EntityEffect("counter-reached-ten", {"value": state.value + message.by})
    return event


counter: Entity[Count] = Entity(
    "counter",
    state=Count,
    messages={"increment": Increase},
    events={"increased": Increased},
    init=Count,
    handle=handle,
    update=lambda event, state: Count(value=state.value + event.by),
    fencing=False,
)

runtime = Runtime()
app = runtime.app
runtime.entity(counter)


@runtime.effect_handler("counter-reached-ten")
async def reached_ten(effect: Effect) -> None:
    """Log that a counter reached 10, as the ledger does."""
    logger.info("counter %s reached %s", effect.cell_id, effect.payload["value"])
