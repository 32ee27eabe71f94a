"""Event-sourced entities: Pachyderm's counter and a bank account with a rejected overdraft.

Run it with ``faust -A stream_app.examples.ledger worker -l info``.

``counter`` entities take ``{"type": "increment", "body": {"by": 1}}``; each increment is an
``increased`` event, and the increment that takes a counter to 10 or past it also returns an
effect ``counter-reached-ten``, dispatched after its event commits.

``account`` entities take ``open``, ``deposit`` and ``withdraw``; a withdrawal larger than the
balance is rejected (a dead letter with reason ``rejected``; no event, nothing changes).

Every event lands on ``<app_id>.counter.events`` / ``<app_id>.account.events`` with the
entity's next sequence number. ``LEDGER_EFFECT_LOG``, if set, names a file that receives one
line per dispatched effect: ``<effect id> <entity id> <payload as JSON> <config as JSON>``
(the config is the value the sender attached to the message, Pachyderm's dispatch config).

``account`` declares the projection ``balance``: ``EntityClient.send(..., project="balance")``
replies with the balance alone rather than the whole state.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from stream_app import Effect, Entity, EntityEffect, RejectMessage, Runtime

__all__ = [
    "Balance",
    "Count",
    "Deposit",
    "Deposited",
    "Increase",
    "Increased",
    "Open",
    "Opened",
    "Withdraw",
    "Withdrawn",
    "account",
    "app",
    "counter",
    "handle_account",
    "handle_counter",
    "reached_ten",
    "runtime",
    "update_account",
]

logger = logging.getLogger(__name__)

# -- the counter ---------------------------------------------------------------------------


class Count(BaseModel):
    """A counter's state."""

    value: int = 0


class Increase(BaseModel):
    """Message ``increment``: add ``by`` to the counter."""

    by: int = Field(default=1, ge=1)


class Increased(BaseModel):
    """Event: the counter went up by ``by``."""

    by: int


def handle_counter(message: Increase, state: Count) -> Any:
    """One ``increased`` event; the effect when this event takes the counter to 10."""
    events = [Increased(by=message.by)]
    if state.value < 10 <= state.value + message.by:
        return events, [EntityEffect("counter-reached-ten", {"value": state.value + message.by})]
    return events


counter: Entity[Count] = Entity(
    "counter",
    state=Count,
    messages={"increment": Increase},
    events={"increased": Increased},
    init=Count,
    handle=handle_counter,
    update=lambda event, state: Count(value=state.value + event.by),
)

# -- the bank account ----------------------------------------------------------------------


class Balance(BaseModel):
    """An account's state: ``owner`` is empty until it is opened."""

    owner: str = ""
    balance: int = 0


class Open(BaseModel):
    """Message ``open``."""

    owner: str = Field(min_length=1)


class Deposit(BaseModel):
    """Message ``deposit`` (amounts in cents)."""

    amount: int = Field(gt=0)


class Withdraw(BaseModel):
    """Message ``withdraw`` (amounts in cents)."""

    amount: int = Field(gt=0)


class Opened(BaseModel):
    """Event: the account was opened for ``owner``."""

    owner: str


class Deposited(BaseModel):
    """Event: ``amount`` came in."""

    amount: int


class Withdrawn(BaseModel):
    """Event: ``amount`` went out."""

    amount: int


def handle_account(message: BaseModel, state: Balance) -> list[BaseModel]:
    """Decide on one message; refuse what the account's state does not allow."""
    if isinstance(message, Open):
        if state.owner:
            raise RejectMessage(f"already open for {state.owner}")
        return [Opened(owner=message.owner)]
    if not state.owner:
        raise RejectMessage("the account is not open")
    if isinstance(message, Deposit):
        return [Deposited(amount=message.amount)]
    assert isinstance(message, Withdraw)
    if message.amount > state.balance:
        raise RejectMessage(f"overdraft: balance {state.balance}, withdrawal {message.amount}")
    return [Withdrawn(amount=message.amount)]


def update_account(event: BaseModel, state: Balance) -> Balance:
    """Apply one event."""
    if isinstance(event, Opened):
        return Balance(owner=event.owner, balance=state.balance)
    if isinstance(event, Deposited):
        return Balance(owner=state.owner, balance=state.balance + event.amount)
    assert isinstance(event, Withdrawn)
    return Balance(owner=state.owner, balance=state.balance - event.amount)


account: Entity[Balance] = Entity(
    "account",
    state=Balance,
    messages={"open": Open, "deposit": Deposit, "withdraw": Withdraw},
    events={"opened": Opened, "deposited": Deposited, "withdrawn": Withdrawn},
    init=Balance,
    handle=handle_account,
    update=update_account,
    # send(..., project="balance") replies with the balance alone.
    projections={"balance": lambda state: state.balance},
)

# -- the app -------------------------------------------------------------------------------

runtime = Runtime()
app = runtime.app
runtime.entity(counter)
runtime.entity(account)


@runtime.effect_handler("counter-reached-ten")
async def reached_ten(effect: Effect) -> None:
    """Tell the world (here: the log, and ``LEDGER_EFFECT_LOG``) that a counter reached 10."""
    logger.info("counter %s reached %s", effect.cell_id, effect.payload["value"])
    path = os.environ.get("LEDGER_EFFECT_LOG")
    if path:
        with Path(path).open("a") as log:
            payload = json.dumps(effect.payload, separators=(",", ":"))
            config = json.dumps(effect.config, separators=(",", ":"))
            log.write(f"{effect.id} {effect.cell_id} {payload} {config}\n")
