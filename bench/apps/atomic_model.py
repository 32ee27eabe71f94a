"""The atomic-log benchmark's subjects: two atomic logs and an entity with the same rule.

Kept apart from the worker module (:mod:`bench.apps.atomic_bids`), which builds a runtime when
imported, so that the benchmark's clients can use the logs' definitions.

- ``bids``, an :class:`~stream_app.AtomicLog` whose fold keeps the highest bid
  (:class:`High`) and the last :data:`KEEP_LAST` events; its in-worker validator accepts a bid
  that beats the summary's highest.
- ``quick``, the ``bids`` log with its validator ``inline``
  (``@log.validator(inline=True)``): decided in the store's own invocation, with no request
  on the validation topic, no answer and no timer.
- ``full``, the same log without a fold: every past event is in the scope's record and in
  every :class:`~stream_app.core.atomic.ValidationRequest`; its validator accepts a bid that
  beats every past event.
- ``lots``, an :class:`~stream_app.Entity` with the same rule in ``handle`` (a bid that beats
  the state's highest is a ``placed`` event, which ``update`` folds into the highest): the
  baseline, a cell that decides in one step what an atomic log decides in a validation round
  trip.

The events are small (:class:`Bid`: a scope and an amount, about 30 bytes of JSON), so that a
``full`` scope of 10,000 events stays under the default ``max_scope_bytes`` (900,000).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict

from stream_app import Accept, AtomicFold, AtomicLog, Entity, Reject, Validation

__all__ = [
    "KEEP_LAST",
    "Bid",
    "High",
    "Placed",
    "Refusal",
    "beats_every_past_bid",
    "beats_the_highest",
    "bids",
    "full",
    "lots",
    "place",
    "quick",
    "raise_highest",
]

#: How many of a ``bids`` scope's latest events its validations receive with the summary.
KEEP_LAST = 10


class Bid(BaseModel):
    """A bid on a scope (an atomic log's event; the entity's message ``bid``)."""

    model_config = ConfigDict(extra="forbid")

    scope: str
    amount: int


class Placed(Bid):
    """The entity's event: the bid was placed."""


class Refusal(BaseModel):
    """Why a bid was refused."""

    code: str


class High(BaseModel):
    """The highest bid so far: the ``bids`` log's fold and the entity's state."""

    highest: int = 0


def raise_highest(event: Bid, state: High) -> High:
    """Fold one accepted bid into the highest."""
    return High(highest=max(state.highest, event.amount))


def _bids_log(name: str, fold: AtomicFold[High] | None) -> AtomicLog[Bid, Refusal]:
    """One of the benchmark's logs of bids: they differ only by name, fold and validator."""
    return AtomicLog(
        name,
        event=Bid,
        reason=Refusal,
        scope=lambda bid: bid.scope,
        timeout_reason=Refusal(code="timeout"),
        validation_timeout=timedelta(seconds=60),
        fold=fold,
    )


_HIGHEST = AtomicFold(state=High, init=High, update=raise_highest, keep_last=KEEP_LAST)

bids = _bids_log("bids", _HIGHEST)
quick = _bids_log("quick", _HIGHEST)
full = _bids_log("full", None)


@bids.validator
def beats_the_highest(v: Validation[Bid, High]) -> Accept[Bid] | Reject[Refusal]:
    """Accept a bid above the summary's highest."""
    highest = v.summary.highest if v.summary is not None else 0
    if v.prospective_event.amount > highest:
        return Accept()
    return Reject(Refusal(code="too-low"))


quick.validator(inline=True)(beats_the_highest)


@full.validator
def beats_every_past_bid(v: Validation[Bid, BaseModel]) -> Accept[Bid] | Reject[Refusal]:
    """Accept a bid above every past bid."""
    highest = max((bid.amount for bid in v.past_events), default=0)
    if v.prospective_event.amount > highest:
        return Accept()
    return Reject(Refusal(code="too-low"))


def place(message: Bid, state: High) -> list[Placed]:
    """The entity's ``handle``: a bid above the highest is placed, any other is dropped."""
    if message.amount > state.highest:
        return [Placed(scope=message.scope, amount=message.amount)]
    return []


lots: Entity[High] = Entity(
    "lots",
    state=High,
    messages={"bid": Bid},
    events={"placed": Placed},
    init=High,
    handle=place,
    update=raise_highest,
)
