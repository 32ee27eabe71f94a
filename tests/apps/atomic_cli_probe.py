"""An atomic log of bids with an in-worker validator, for the ``stream-app atomic`` tests.

Run as ``faust -A tests.apps.atomic_cli_probe worker`` (exactly-once). ``bids`` is keyed by
lot; a bid is accepted when it beats the lot's highest (the fold's summary), else rejected
with ``too-low`` and the highest as ``meta``; the scope keeps its last two bids.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from stream_app import Accept, AtomicFold, AtomicLog, Reject, Runtime, Validation


class Bid(BaseModel):
    """A bid on a lot."""

    lot: str = Field(min_length=1)
    bidder: str
    amount: int = Field(gt=0)


class Refusal(BaseModel):
    """Why a bid was refused."""

    code: str


class Highest(BaseModel):
    """The fold of a lot's bids."""

    amount: int = 0
    bids: int = 0


def raise_highest(bid: Bid, summary: Highest) -> Highest:
    """The summary after the accepted ``bid``."""
    return Highest(amount=max(summary.amount, bid.amount), bids=summary.bids + 1)


bids: AtomicLog[Bid, Refusal] = AtomicLog(
    "bids",
    event=Bid,
    reason=Refusal,
    scope=lambda bid: bid.lot,
    timeout_reason=Refusal(code="timeout"),
    validation_timeout=10,
    fold=AtomicFold(state=Highest, init=Highest, update=raise_highest, keep_last=2),
)


@bids.validator
def beats_the_highest(v: Validation[Bid, Highest]) -> Accept[Bid] | Reject[Refusal]:
    """Accept a bid over the lot's highest."""
    highest = v.summary.amount if v.summary is not None else 0
    if v.prospective_event.amount > highest:
        return Accept(meta={"previous": highest})
    return Reject(Refusal(code="too-low"), meta={"highest": highest})


runtime = Runtime()
app = runtime.app
runtime.atomic(bids)
