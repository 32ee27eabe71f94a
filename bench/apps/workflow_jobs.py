"""The workflow benchmark's worker: ``faust -A bench.apps.workflow_jobs worker``.

One workflow behaviour, ``bench``, running two workflows (:mod:`bench.workflows` times them):

- ``chain``: ``n`` nodes in a row. Each ``step`` node's action (:func:`advance`) derives the
  next ``step``, the last one an ``end`` (final): the per-node cost of the engine, with an
  action that costs next to nothing.
- ``fan``: the root opens ``width`` forks (``part`` nodes); each part's action sleeps
  ``task_ms`` (a call to another service) before it derives its ``part_done``; the forks join
  into ``gathered``, which derives the final ``total``: how the tasks of one run spread over
  the workers.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from bench.apps.harness import faust_options, start_profile_if_requested
from stream_app import EdgeContext, Joined, Node, Runtime, Workflow, WorkflowBehaviour
from stream_app.kafka.app import create_app
from stream_app.settings import get_settings

__all__ = ["advance", "app", "chain", "fan", "jobs", "runtime"]


class Step(BaseModel):
    """A chain's step: its index, the chain's length and a running value."""

    i: int
    n: int
    acc: int = 0


class Spread(BaseModel):
    """A fan's width and each part's work time."""

    width: int
    task_ms: float = 0.0


class Part(BaseModel):
    """One part of a fan."""

    i: int
    task_ms: float = 0.0


def advance(payload: dict[str, Any]) -> dict[str, Any]:
    """The chain's action on one payload: the next step's payload (what the direct loop of
    :mod:`bench.workflows` calls too)."""
    return {"i": payload["i"] + 1, "n": payload["n"], "acc": (payload["acc"] * 31 + 7) % 1_000_003}


chain = Workflow("chain", root="step")
chain.node("step", payload=Step)
chain.node("end", payload=Step, final=True)


@chain.action("step", to=["step"], when=lambda node: node.payload["i"] + 2 < node.payload["n"])
def next_step(node: Node, ctx: EdgeContext) -> None:
    """The next step."""
    ctx.derive("step", payload=advance(node.payload))


@chain.action("step", to=["end"], when=lambda node: node.payload["i"] + 2 >= node.payload["n"])
def last_step(node: Node, ctx: EdgeContext) -> None:
    """The end of the chain (its ``n``-th node)."""
    ctx.derive("end", payload=advance(node.payload))


fan = Workflow("fan", root="start")
fan.node("start", payload=Spread)
fan.node("part", payload=Part)
fan.node("part_done", payload=Part)
fan.node("gathered", payload=Joined)
fan.node("total", final=True)
fan.join("gathered", forks_of="start")


@fan.action("start", to=["part"], fork=True)
def spread(node: Node, ctx: EdgeContext) -> None:
    """One part per fork."""
    for i in range(node.payload["width"]):
        ctx.derive("part", payload={"i": i, "task_ms": node.payload["task_ms"]})


@fan.action("part", to=["part_done"])
def work(node: Node, ctx: EdgeContext) -> None:
    """Wait ``task_ms`` (another service answering), then pass the part on."""
    time.sleep(node.payload["task_ms"] / 1000)
    ctx.derive("part_done")


@fan.action("gathered", to=["total"])
def total(node: Node, ctx: EdgeContext) -> None:
    """How many parts came back."""
    ctx.derive("total", payload={"parts": len(node.payload["forks"])})


jobs = WorkflowBehaviour("bench", workflows=[chain, fan])

start_profile_if_requested()
settings = get_settings()
runtime = Runtime(settings, app=create_app(settings, **faust_options()))
app = runtime.app
runtime.workflows(jobs)
