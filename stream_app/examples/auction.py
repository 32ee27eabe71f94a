"""An auction on an atomic log: every lot is a scope, every bid an event its bidder proposes.

A bid is accepted only if the lot is open and the bid beats the current highest by the lot's
increment. The decision is the originator's: the validator is a separate process (any Kafka
client could be; this one is Python), and the worker only keeps each lot's log consistent, one
bid at a time. Run it with a broker up (``stream-app kafka up``); an atomic log runs
exactly-once (the default guarantee, ``auto``, turns it on)::

    faust -A stream_app.examples.auction worker -l info          # the lots
    python -m stream_app.examples.auction validate                # the validator
    python -m stream_app.examples.auction listen lot-1            # prints accepted bids
    python -m stream_app.examples.auction open lot-1 --increment 10
    python -m stream_app.examples.auction bid lot-1 ann 100       # accepted
    python -m stream_app.examples.auction bid lot-1 bob 105       # rejected: too-low
    python -m stream_app.examples.auction close lot-1

The log declares a fold (:class:`LotState`: open, increment, highest bid and bidder), so the
validator gets the lot's state and its last 5 events, not every bid ever made; the whole log
stays readable (``listen``, ``query_events``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, Field

from stream_app import AtomicFold, AtomicLog, Runtime
from stream_app.clients.atomic import AtomicClient, serve_validator
from stream_app.core.atomic import ValidationRequest, ValidationResponse

__all__ = [
    "LotEvent",
    "LotState",
    "Refusal",
    "app",
    "apply",
    "decide",
    "lots",
    "main",
    "runtime",
]


class LotEvent(BaseModel):
    """One event of a lot: it opens (with its increment), receives a bid, or closes."""

    lot: str = Field(min_length=1)
    kind: Literal["open", "bid", "close"]
    bidder: str | None = None
    amount: int | None = Field(default=None, gt=0)
    increment: int | None = Field(default=None, gt=0)


class Refusal(BaseModel):
    """Why an event was refused: a short code and, for people, a sentence."""

    code: str
    detail: str = ""


class LotState(BaseModel):
    """The fold of a lot's events."""

    open: bool = False
    closed: bool = False
    increment: int = 1
    highest: int = 0
    bidder: str | None = None
    bids: int = 0


def apply(event: LotEvent, state: LotState) -> LotState:
    """``state`` after the accepted ``event``."""
    if event.kind == "open":
        return state.model_copy(update={"open": True, "increment": event.increment or 1})
    if event.kind == "close":
        return state.model_copy(update={"open": False, "closed": True})
    assert event.amount is not None
    return state.model_copy(
        update={"highest": event.amount, "bidder": event.bidder, "bids": state.bids + 1}
    )


lots: AtomicLog[LotEvent, Refusal] = AtomicLog(
    "lots",
    event=LotEvent,
    reason=Refusal,
    scope=lambda event: event.lot,
    timeout_reason=Refusal(code="timeout", detail="the validator did not answer in time"),
    validation_timeout=timedelta(seconds=10),
    fold=AtomicFold(state=LotState, init=LotState, update=apply, keep_last=5),
)

runtime = Runtime()
app = runtime.app
runtime.atomic(lots)


def decide(request: ValidationRequest) -> ValidationResponse:
    """The validator: is the prospective event allowed after the lot's events so far?"""
    event = LotEvent.model_validate(request.prospective_event)
    state = LotState.model_validate(request.summary or {})

    def refuse(code: str, detail: str) -> ValidationResponse:
        return ValidationResponse(
            request_id=request.request_id,
            scope=request.scope,
            validation_did_pass=False,
            reason=Refusal(code=code, detail=detail).model_dump(),
            meta={"highest": state.highest},
        )

    if event.kind == "open":
        if state.open or state.closed:
            return refuse("already-opened", f"lot {event.lot} was opened before")
    elif not state.open:
        return refuse("not-open", f"lot {event.lot} is not open")
    elif event.kind == "bid":
        if event.amount is None or event.bidder is None:
            return refuse("malformed", "a bid needs a bidder and an amount")
        floor = state.highest + state.increment if state.bids else state.increment
        if event.amount < floor:
            return refuse("too-low", f"the lowest acceptable bid is {floor}")
    return ValidationResponse(
        request_id=request.request_id,
        scope=request.scope,
        validation_did_pass=True,
        meta={"highest": event.amount if event.kind == "bid" else state.highest},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The validator, a listener, and a bidder's commands (see the module docs)."""
    parser = argparse.ArgumentParser(prog="python -m stream_app.examples.auction")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("validate", help="serve the lots' validations until interrupted")
    listen = commands.add_parser("listen", help="print a lot's accepted events as they come")
    listen.add_argument("lot")
    opening = commands.add_parser("open", help="open a lot")
    opening.add_argument("lot")
    opening.add_argument("--increment", type=int, default=1)
    bid = commands.add_parser("bid", help="bid on a lot")
    bid.add_argument("lot")
    bid.add_argument("bidder")
    bid.add_argument("amount", type=int)
    closing = commands.add_parser("close", help="close a lot")
    closing.add_argument("lot")
    args = parser.parse_args(argv)
    settings = runtime.settings
    if args.command == "validate":
        stopping = threading.Event()
        # A SIGTERM leaves the consumer group at once (a killed member would hold its
        # partitions until its session times out).
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        with contextlib.suppress(KeyboardInterrupt):
            serve_validator(lots.name, decide, settings, stop=stopping.is_set)
        return 0
    with AtomicClient(lots, settings) as client:
        if args.command == "listen":
            for record in client.subscribe(args.lot):
                print(f"#{record.seq} {record.event}", flush=True)
            return 0
        if args.command == "open":
            event = LotEvent(lot=args.lot, kind="open", increment=args.increment)
        elif args.command == "bid":
            event = LotEvent(lot=args.lot, kind="bid", bidder=args.bidder, amount=args.amount)
        else:
            event = LotEvent(lot=args.lot, kind="close")
        result = client.store_if_valid(event)
    if result.was_accepted:
        print(f"accepted as #{result.seq}: {result.stored_event}")
        return 0
    print(f"rejected: {result.reason} (meta {result.meta})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
