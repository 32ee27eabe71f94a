"""The workflows of the workflow probe (``tests.apps.workflow_probe``), without its runtime.

The integration tests import them to compute what the workers compute, and to check starts.

- ``chain``: ``a → b → c``, the payload's ``n`` growing (``+1``, ``*10``);
- ``fan``: ``start`` opens ``width`` forks (``part`` nodes, each sleeping ``delay_s``), joined
  into ``gathered``, summed up in the final ``total``;
- ``flaky``: ``work`` fails its first ``fail`` attempts (3 tries, 0.2 s apart), then ``done``;
  ``rescued`` is the same with an error edge to ``rescue``, which ends in ``saved``.

Every execution of a ``part`` or ``work`` action appends ``{pid, run, node, attempt}`` to the
JSON-lines file ``$WORKFLOW_PROBE_OUTBOX``: which worker ran what, how many times.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import BaseModel

from stream_app import EdgeContext, Failure, Joined, Node, RetryPolicy, Workflow


def note(node: Node, ctx: EdgeContext) -> None:
    """Append this execution to the outbox."""
    outbox = os.environ.get("WORKFLOW_PROBE_OUTBOX")
    if not outbox:
        return
    line = {"pid": os.getpid(), "run": node.run_id, "node": node.id, "attempt": ctx.attempt}
    with Path(outbox).open("a") as fh:
        fh.write(json.dumps(line) + "\n")


class Number(BaseModel):
    """A number."""

    n: int


class Spread(BaseModel):
    """How wide to fan out, and how long each fork's work takes."""

    width: int
    delay_s: float = 0.0


class Part(BaseModel):
    """One fork's share."""

    i: int
    delay_s: float = 0.0


class Failing(BaseModel):
    """How many attempts fail."""

    fail: int


chain = Workflow("chain", root="a")
chain.node("a", payload=Number)
chain.node("b", payload=Number)
chain.node("c", payload=Number, final=True)


@chain.action("a", to=["b"])
def plus_one(node: Node, ctx: EdgeContext) -> None:
    """``n + 1``."""
    ctx.derive("b", payload={"n": node.payload["n"] + 1})


@chain.action("b", to=["c"])
def times_ten(node: Node, ctx: EdgeContext) -> None:
    """``n * 10``."""
    ctx.derive("c", payload={"n": node.payload["n"] * 10})


fan = Workflow("fan", root="start")
fan.node("start", payload=Spread)
fan.node("part", payload=Part)
fan.node("part_done", payload=Part)
fan.node("gathered", payload=Joined)
fan.node("total", payload=Number, final=True)
fan.join("gathered", forks_of="start")


@fan.action("start", to=["part"], fork=True)
def spread(node: Node, ctx: EdgeContext) -> None:
    """One ``part`` per fork."""
    for i in range(node.payload["width"]):
        ctx.derive("part", payload={"i": i, "delay_s": node.payload["delay_s"]})


@fan.action("part", to=["part_done"])
def work_on_part(node: Node, ctx: EdgeContext) -> None:
    """Take ``delay_s``, then pass the part on."""
    note(node, ctx)
    time.sleep(node.payload["delay_s"])
    ctx.derive("part_done")


@fan.action("gathered", to=["total"])
def add_up(node: Node, ctx: EdgeContext) -> None:
    """The sum of the parts' indexes."""
    ctx.derive("total", payload={"n": sum(fork["i"] for fork in node.payload["forks"])})


_RETRY = RetryPolicy(attempts=3, backoff_s=0.2, max_backoff_s=0.2, jitter=0.0)


def _failing(name: str, *, error_edge: str | None) -> Workflow:
    wf = Workflow(name, root="work")
    wf.node("work", payload=Failing, retry=_RETRY, error_edge=error_edge)
    wf.node("done", payload=Failing, final=True)

    @wf.action("work", to=["done"])
    def attempt(node: Node, ctx: EdgeContext) -> None:
        note(node, ctx)
        if ctx.attempt <= node.payload["fail"]:
            raise RuntimeError(f"attempt {ctx.attempt} fails")
        ctx.derive("done")

    return wf


flaky = _failing("flaky", error_edge=None)
rescued = _failing("rescued", error_edge="rescue")
rescued.node("rescue", payload=Failure)
rescued.node("saved", payload=Failure, final=True)


@rescued.action("rescue", to=["saved"])
def save(node: Node, ctx: EdgeContext) -> None:
    """Keep the failure as the result."""
    ctx.derive("saved")
