"""Every layer in one app, for the operator console (``/console/``) to show.

- ``counter``: plain cells (:mod:`stream_app.examples.counter`);
- ``wallet``: cells that can get stuck: a withdrawal larger than the balance raises, the cell's
  retries run out and it is **parked** until an operator releases it (skipping the withdrawal,
  or after a deposit that makes it pass);
- ``account``: an event-sourced entity (:mod:`stream_app.examples.ledger`);
- ``fitness``: quests over each person's workouts and meals (:mod:`stream_app.examples.fitness`);
- ``jobs``: workflow runs: ``generic`` and ``sources`` (:mod:`stream_app.examples.workflows`),
  and ``approval``, a run that waits: its node fails ``checks`` times, retried every two
  seconds, before it is approved (a run to watch retrying, and to cancel).

Run it, then open http://127.0.0.1:6066/console/::

    faust -A stream_app.examples.console_demo worker -l info

Send it work with ``stream-app cells send counter alice increment`` (and the clients of each
layer); ``python -m stream_app.examples.console_demo --seed`` sends a little of everything,
including one message that parks a wallet and one that becomes a dead letter.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel, ConfigDict, Field

from stream_app import (
    Behaviour,
    CellState,
    EdgeContext,
    Failure,
    Node,
    RetryPolicy,
    Runtime,
    Workflow,
    WorkflowBehaviour,
)
from stream_app.examples.counter import counter
from stream_app.examples.fitness import fitness
from stream_app.examples.ledger import account
from stream_app.examples.workflows import generic, sources
from stream_app.settings import Settings

__all__ = [
    "Approval",
    "Deposit",
    "InsufficientFunds",
    "WalletState",
    "Withdraw",
    "app",
    "approval",
    "check_approval",
    "handle_wallet",
    "jobs",
    "runtime",
    "seed",
    "wallet",
]


class Deposit(BaseModel):
    """Add ``amount`` to the wallet."""

    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=1, le=1_000_000_000)


class Withdraw(BaseModel):
    """Take ``amount`` out of the wallet; more than its balance fails (and parks the wallet)."""

    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=1, le=1_000_000_000)


class WalletState(BaseModel):
    """A wallet's data.

    Attributes:
        balance: What is in it.
    """

    balance: int = 0


class InsufficientFunds(Exception):
    """A withdrawal larger than the balance."""


def handle_wallet(state: CellState[WalletState]) -> None:
    """Apply a deposit or a withdrawal.

    Raises:
        InsufficientFunds: The withdrawal is larger than the balance; the cell retries it, then
            is parked with this error until it is released.
    """
    assert state.message is not None
    data = state.data or WalletState()
    match state.message.body:
        case Deposit(amount=amount):
            data.balance += amount
        case Withdraw(amount=amount):
            if amount > data.balance:
                raise InsufficientFunds(f"withdraw {amount} from a balance of {data.balance}")
            data.balance -= amount
    state.data = data


wallet = Behaviour(
    "wallet",
    messages={"deposit": Deposit, "withdraw": Withdraw},
    data=WalletState,
    handle_message=handle_wallet,
)


class Approval(BaseModel):
    """A job waiting for an approval that comes at check ``checks + 1``."""

    model_config = ConfigDict(extra="forbid")

    job: str = Field(min_length=1, max_length=200)
    checks: int = Field(default=3, ge=0, le=20)


approval = Workflow("approval", root="request")
approval.node(
    "request",
    payload=Approval,
    retry=RetryPolicy(attempts=21, backoff_s=2.0, max_backoff_s=2.0, jitter=0.0),
    error_edge="expired",
)
approval.node("approved", payload=Approval, final=True)
approval.node("expired", payload=Failure, final=True)


@approval.action("request", to=["approved"])
def check_approval(node: Node, ctx: EdgeContext) -> None:
    """Not approved before attempt ``checks + 1``: each earlier attempt fails and is retried."""
    checks = node.payload["checks"]
    if ctx.attempt <= checks:
        raise RuntimeError(f"not approved yet (check {ctx.attempt} of {checks})")
    ctx.derive("approved")


approval.validate()

#: The demo's workflow behaviour: the two example workflows and ``approval``.
jobs = WorkflowBehaviour("jobs", workflows=[generic, sources, approval])

runtime = Runtime()
app = runtime.app
runtime.behaviour(counter)
runtime.behaviour(wallet)
runtime.entity(account)
runtime.quests(fitness)
runtime.workflows(jobs)


def seed(settings: Settings | None = None) -> None:
    """Send a little of everything to the app of ``settings`` (default: the environment's):
    counters, wallets (one of which parks), one malformed record (a dead letter), one workflow
    run."""
    from stream_app.clients.cells import CellClient
    from stream_app.clients.workflows import WorkflowClient

    settings = settings or runtime.settings
    with CellClient(settings) as cells:
        for who, times in (("alice", 3), ("bob", 5)):
            for _ in range(times):
                cells.send("counter", who, "increment", {"by": 1})
        cells.send("wallet", "w-1", "deposit", {"amount": 50})
        cells.send("wallet", "w-2", "deposit", {"amount": 10})
        cells.send("wallet", "w-2", "withdraw", {"amount": 99})
        cells.produce_raw(settings.input_topic("counter"), "carol", b"{not json")
    with WorkflowClient("jobs", settings, workflows=list(jobs.workflows.values())) as workflows:
        workflows.start("generic", {"input": 1}, run_id="demo-run-1")


if __name__ == "__main__" and "--seed" in sys.argv:
    seed()
