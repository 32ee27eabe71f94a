"""The atomic logs that the atomic integration and chaos tests drive and observe.

The worker module :mod:`tests.apps.atomic_probe` runs them; the tests import them from here (a
client needs a log's definition, not its runtime). Three logs, one per way of validating:

- ``lots``: an auction (:class:`Bid` events, a lot per scope) for a *remote* validator, which
  the tests run in their own process (:func:`outbids`, served by
  :func:`~stream_app.clients.atomic.serve_validator`).
- ``bids``: the same auction with the *in-worker* validator :func:`judge_bid`. Every request it
  is given is appended to the file named by ``ATOMIC_PROBE_SEEN`` (``{"request_id", "scope",
  "attempt", "seq", "past"}``, ``past`` the amounts of the past bids; a JSON line each), and a
  bid of the bidder ``hold`` waits until the file named by ``ATOMIC_PROBE_GATE`` exists: a
  validation in progress a test can kill the worker in.
- ``scripted``: :class:`Entry` events for a remote validator that a test scripts request by
  request (answer, refuse, or stay silent); its ``validation_timeout`` is
  ``ATOMIC_PROBE_TIMEOUT_S`` seconds (default 2).

``lots`` and ``bids`` time out after 30 s: only a test that means a timeout should meet one.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from stream_app import Accept, AtomicLog, Reject, Validation
from stream_app.core.atomic import ValidationRequest, ValidationResponse

__all__ = [
    "HOLDER",
    "Bid",
    "Entry",
    "Why",
    "bids",
    "judge_bid",
    "lots",
    "outbids",
    "scripted",
]

#: The bidder whose bids the in-worker validator holds until the gate file exists.
HOLDER = "hold"


class Bid(BaseModel):
    """A bid on a lot (the scope)."""

    lot: str
    bidder: str
    amount: int


class Entry(BaseModel):
    """An event of the scripted log: its scope and a number the test chose."""

    scope: str
    n: int


class Why(BaseModel):
    """A rejection's reason."""

    code: str
    detail: str = ""


TIMEOUT = Why(code="timeout", detail="no answer in time")
LONG = timedelta(seconds=30)

lots: AtomicLog[Bid, Why] = AtomicLog(
    "lots",
    event=Bid,
    reason=Why,
    scope=lambda bid: bid.lot,
    timeout_reason=TIMEOUT,
    validation_timeout=LONG,
)
bids: AtomicLog[Bid, Why] = AtomicLog(
    "bids",
    event=Bid,
    reason=Why,
    scope=lambda bid: bid.lot,
    timeout_reason=TIMEOUT,
    validation_timeout=LONG,
)
scripted: AtomicLog[Entry, Why] = AtomicLog(
    "scripted",
    event=Entry,
    reason=Why,
    scope=lambda entry: entry.scope,
    timeout_reason=TIMEOUT,
    validation_timeout=float(os.environ.get("ATOMIC_PROBE_TIMEOUT_S", "2")),
)


def highest(past: list[Bid]) -> int:
    """The highest accepted bid (0 for none)."""
    return max((bid.amount for bid in past), default=0)


@bids.validator
def judge_bid(v: Validation[Bid, BaseModel]) -> Accept[Bid] | Reject[Why]:
    """A bid must beat the highest one; the request is noted first (and held, for ``hold``)."""
    seen = os.environ.get("ATOMIC_PROBE_SEEN")
    if seen:
        request = v.request
        line = {
            "request_id": request.request_id,
            "scope": request.scope,
            "attempt": request.attempt,
            "seq": request.seq,
            "past": [bid.amount for bid in v.past_events],
        }
        with Path(seen).open("a") as fh:
            fh.write(json.dumps(line) + "\n")
    gate = os.environ.get("ATOMIC_PROBE_GATE")
    if gate and v.prospective_event.bidder == HOLDER:
        while not Path(gate).exists():
            time.sleep(0.05)
    top = highest(v.past_events)
    if v.prospective_event.amount > top:
        return Accept(meta={"was": top})
    return Reject(Why(code="too-low"), meta={"highest": top})


def outbids(request: ValidationRequest) -> ValidationResponse:
    """The remote validator of ``lots``: the same rule as :func:`judge_bid`, on the wire."""
    bid = Bid.model_validate(request.prospective_event)
    top = highest([Bid.model_validate(e) for e in request.past_events])
    if bid.amount > top:
        return ValidationResponse(
            request_id=request.request_id,
            scope=request.scope,
            validation_did_pass=True,
            meta={"was": top},
        )
    return ValidationResponse(
        request_id=request.request_id,
        scope=request.scope,
        validation_did_pass=False,
        reason=Why(code="too-low").model_dump(),
        meta={"highest": top},
    )
