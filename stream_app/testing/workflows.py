"""Workflow shapes as data, a driver that models a cluster, and the checks both engines share.

Property tests generate a :class:`Shape` (with the strategies in ``tests/workflow_shapes.py``),
build it with :func:`build_workflow` and run it on every engine; the shape is JSON, so a
``faust worker`` subprocess can build the same workflow from it (``STREAM_APP_WORKFLOW_SHAPE``
in :func:`workflow_from_env`). A shape is a list of segments run one after the other:

- :class:`Chain`: ``length`` node types in a row;
- :class:`Branch`: a node with two conditional actions (on the parity of the payload's ``v``
  and on ``v % 3``): one, both or neither may run, so a run may split or stop there;
- :class:`Fan`: an action opening ``width`` forks, each running ``branch`` (segments, nested
  fans included), joined into one node;
- :class:`Flaky`: an action that fails its first ``failures`` attempts, under a retry policy
  of ``attempts`` tries; an ``error_edge`` handler continues the run when they are exhausted.

:func:`drive_shuffled` is the model of the Kafka engine: tasks executed and results applied in
a random order, each task possibly executed twice and each result possibly delivered twice.
:func:`run_outcome` is what must be equal across engines (every node, times left out), and
:func:`trace_problems` lists broken trace and join invariants.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stream_app.api.workflows import EdgeContext, Failure, Joined, RunState, Workflow
from stream_app.core.retry import RetryPolicy
from stream_app.core.workflows import Node, RunRecord, Task, TaskResult

__all__ = [
    "SHAPE_ENV",
    "Branch",
    "Chain",
    "Fan",
    "Flaky",
    "Segment",
    "Shape",
    "build_workflow",
    "drive_shuffled",
    "run_outcome",
    "trace_problems",
    "workflow_from_env",
]

#: The environment variable a worker reads a shape from (JSON of a :class:`Shape`).
SHAPE_ENV = "STREAM_APP_WORKFLOW_SHAPE"

#: The time the shuffled driver hands to the state machine and the actions.
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Chain(BaseModel):
    """``length`` node types in a row."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["chain"] = "chain"
    length: int = Field(ge=1)


class Branch(BaseModel):
    """A node with two conditional actions (``v`` even; ``v % 3 != 0``)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["branch"] = "branch"


class Fan(BaseModel):
    """``width`` forks, each running ``branch``, then one join node."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["fan"] = "fan"
    width: int = Field(ge=0)
    branch: list[Segment] = Field(default_factory=list)


class Flaky(BaseModel):
    """An action failing its first ``failures`` attempts out of ``attempts`` tries."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["flaky"] = "flaky"
    failures: int = Field(ge=0)
    attempts: int = Field(ge=1)
    error_edge: bool = False


#: One segment of a shape.
Segment = Annotated[Chain | Branch | Fan | Flaky, Field(discriminator="kind")]
Fan.model_rebuild()


class Shape(BaseModel):
    """A workflow shape: a root node, the segments in a row, then a final node."""

    model_config = ConfigDict(frozen=True)

    name: str = "shape"
    segments: list[Segment] = Field(default_factory=list)


def build_workflow(shape: Shape) -> Workflow:
    """The workflow of ``shape`` (validated). Payloads are ``{"v": int}``; actions mix ``v``."""
    builder = _Builder(shape.name)
    builder.wf.node("done", final=True)
    entry = builder.segments(shape.segments, "done")
    builder.wf.node("start")
    builder.step("start", entry)
    return builder.wf.validate()


def workflow_from_env() -> Workflow:
    """The workflow of the shape in :data:`SHAPE_ENV` (for a worker subprocess of a test).

    Raises:
        KeyError: The variable is not set.
    """
    return build_workflow(Shape.model_validate_json(os.environ[SHAPE_ENV]))


class _Builder:
    def __init__(self, name: str) -> None:
        self.wf = Workflow(name, root="start")
        self._count = 0

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def segments(self, segments: list[Segment], exit_type: str) -> str:
        """Declare ``segments`` leading to ``exit_type``; returns the first type's name."""
        entry = exit_type
        for segment in reversed(segments):
            entry = self.segment(segment, entry)
        return entry

    def segment(self, segment: Segment, next_type: str) -> str:
        match segment:
            case Chain(length=length):
                entry = next_type
                for _ in range(length):
                    name = self.fresh("c")
                    self.wf.node(name)
                    self.step(name, entry)
                    entry = name
                return entry
            case Branch():
                return self.branch(next_type)
            case Fan(width=width, branch=branch):
                return self.fan(width, branch, next_type)
            case Flaky(failures=failures, attempts=attempts, error_edge=error_edge):
                return self.flaky(failures, attempts, error_edge, next_type)
        raise TypeError(f"unknown segment {segment!r}")

    def step(self, name: str, to: str, *, when: Callable[[Node], bool] | None = None) -> None:
        salt = self._count + len(name)

        def act(node: Node, ctx: EdgeContext) -> None:
            ctx.derive(to, payload={"v": (node.payload["v"] * 7 + salt) % 1000})

        self.wf.action(name, to=[to], when=when, name=f"to_{to}")(act)

    def branch(self, next_type: str) -> str:
        name, even, odd = self.fresh("b"), self.fresh("e"), self.fresh("o")
        for declared in (name, even, odd):
            self.wf.node(declared)
        self.step(name, even, when=lambda node: node.payload["v"] % 2 == 0)
        self.step(name, odd, when=lambda node: node.payload["v"] % 3 != 0)
        self.step(even, next_type)
        self.step(odd, next_type)
        return name

    def fan(self, width: int, branch: list[Segment], next_type: str) -> str:
        name, end, joined = self.fresh("f"), self.fresh("end"), self.fresh("j")
        self.wf.node(name)
        self.wf.node(end)
        self.wf.node(joined, payload=Joined)
        entry = self.segments(branch, end)

        def open_forks(node: Node, ctx: EdgeContext) -> None:
            for i in range(width):
                ctx.derive(entry, payload={"v": node.payload["v"] + i})

        self.wf.action(name, to=[entry], fork=True, name="open")(open_forks)
        self.wf.join(joined, forks_of=name)

        def gather(node: Node, ctx: EdgeContext) -> None:
            total = sum(int(fork.get("v", 0)) for fork in node.payload["forks"])
            ctx.derive(next_type, payload={"v": total % 1000})

        self.wf.action(joined, to=[next_type], name="gather")(gather)
        return name

    def flaky(self, failures: int, attempts: int, error_edge: bool, next_type: str) -> str:
        name = self.fresh("x")
        handler = self.fresh("h") if error_edge else None
        policy = RetryPolicy(attempts=attempts, backoff_s=0.01, max_backoff_s=0.05, jitter=0.0)
        self.wf.node(name, retry=policy, error_edge=handler)

        def try_it(node: Node, ctx: EdgeContext) -> None:
            if ctx.attempt <= failures:
                raise RuntimeError(f"attempt {ctx.attempt} of {name} fails")
            ctx.derive(next_type, payload={"v": node.payload["v"] + ctx.attempt})

        self.wf.action(name, to=[next_type], name="try_it")(try_it)
        if handler is not None:
            self.wf.node(handler, payload=Failure)

            def recover(node: Node, ctx: EdgeContext) -> None:
                ctx.derive(next_type, payload={"v": len(node.payload["error"])})

            self.wf.action(handler, to=[next_type], name="recover")(recover)
        return name


def drive_shuffled(
    workflow: Workflow,
    payload: dict[str, Any],
    *,
    run_id: str,
    rng: random.Random,
    duplicates: float = 0.3,
) -> RunRecord:
    """Run ``workflow`` the way a cluster may: any order, tasks and results delivered twice.

    A bag holds tasks (the work topic) and results (on their way to the run's writer); each
    step takes a random item out. A task is executed and its result put in the bag, and with
    probability ``duplicates`` the task goes back in too (a redelivery) and the result is put
    in twice. Retries go in the bag at once (their pause is the engine's business). After the
    run has ended, whatever is left is delivered too, and must change nothing.
    """
    record, tasks = RunState.start(workflow, run_id, payload, at=_EPOCH)
    bag: list[Task | TaskResult] = list(tasks)
    while bag:
        item = bag.pop(rng.randrange(len(bag)))
        if isinstance(item, Task):
            result = workflow.execute(item, at=_EPOCH)
            bag.append(result)
            if rng.random() < duplicates:
                bag.extend((item, result))
            continue
        step = RunState.apply(workflow, record, item, at=_EPOCH)
        if record.done and step.record is not record:
            raise AssertionError(f"a result changed run {run_id} after it ended: {item!r}")
        record = step.record
        bag.extend(step.tasks)
        bag.extend(task for task, _ in step.retries)
    return record


def run_outcome(record: RunRecord) -> dict[str, Any]:
    """What must be the same on every engine: status, message, every node without its time."""
    return {
        "status": record.status.value,
        "message": record.message,
        "nodes": {
            node_id: node.model_dump(mode="json", exclude={"created_at"})
            for node_id, node in sorted(record.nodes.items())
        },
        "finals": [node.id for node in record.finals()],
        "forks_completed": sorted(record.forks_completed),
    }


def trace_problems(record: RunRecord, workflow: Workflow) -> list[str]:
    """Broken invariants of a finished run's traces and joins (empty when all hold).

    1. a node's trace lists existing nodes, each once, every node after its own ancestors;
    2. a node that is not a join traces its predecessor's trace and then its predecessor;
    3. a join node traces its opener's trace, its opener, then every node of the forks it
       joined; each fork group whose forks all completed has exactly one join node when its
       opener's type declares a join.
    """
    problems: list[str] = []
    nodes = record.nodes
    join_ids = {group.joined for group in record.groups.values() if group.joined is not None}
    for node in nodes.values():
        trace = node.trace
        if len(set(trace)) != len(trace) or node.id in trace:
            problems.append(f"{node.id}: a node twice in its trace")
        position = {node_id: i for i, node_id in enumerate(trace)}
        for i, node_id in enumerate(trace):
            if node_id not in nodes:
                problems.append(f"{node.id}: traces unknown node {node_id}")
            elif any(position.get(ancestor, len(trace)) >= i for ancestor in nodes[node_id].trace):
                problems.append(f"{node.id}: {node_id} is traced before its own ancestors")
        if node.predecessor_id is None:
            continue
        predecessor = nodes[node.predecessor_id]
        head = (*predecessor.trace, predecessor.id)
        if trace[: len(head)] != head:
            problems.append(f"{node.id}: the trace does not start with its predecessor's")
        if node.id not in join_ids and trace != head:
            problems.append(f"{node.id}: the trace is not its predecessor's and its predecessor")
        if node.id in join_ids:
            joined = {n.id for token in node.joins for n in record.fork_nodes(token)}
            if set(trace[len(head) :]) != joined:
                problems.append(f"{node.id}: the join does not trace exactly its forks' nodes")
    for group in record.groups.values():
        joins = [n for n in nodes.values() if n.id in join_ids and n.predecessor_id == group.forker]
        if group.joined is not None and [n.id for n in joins] != [group.joined]:
            problems.append(f"group of {group.forker}: joins {[n.id for n in joins]}")
        declared = workflow.join_of(nodes[group.forker].name) is not None
        if not group.open and declared and len(joins) != 1:
            problems.append(f"group of {group.forker}: all forks completed, {len(joins)} joins")
    return problems
