"""Workflows (Gruffle's model): node types, actions as edges, fork/join, retries, a full trace.

A :class:`Workflow` names its node types (each with a pydantic payload model) and the actions
that consume them. An action is a plain function of the node and an :class:`EdgeContext`; it
derives successors with :meth:`EdgeContext.derive`, and the nodes with no edge out are the
run's results::

    generic = Workflow("generic", root="stage1")
    generic.node("stage1", payload=Input)
    generic.node("stage2", payload=WithA)
    generic.node("output", payload=Output, final=True)

    @generic.action("stage1", to=["stage2"])
    def first(node: Node, ctx: EdgeContext) -> None:
        ctx.derive("stage2", payload={**node.payload, "a": stage1(node.payload["input"])})

The rest of the DSL:

- ``@wf.action(type, to=[...], when=predicate)``: the action runs on a node only when
  ``predicate(node)`` holds; every action whose condition holds runs, in declaration order.
- ``@wf.action(type, to=[...], fork=True)``: every successor the action derives is on a fork of
  its own; ``wf.join(target, forks_of=type)`` creates one ``target`` node when every fork a node
  of ``type`` opened has completed (no work left on it), whatever order they finish in. Its
  payload is :class:`Joined`: the payloads of each fork's end nodes, in fork order.
- ``wf.node(type, retry=RetryPolicy(...))``: how often a failing action is tried again, with
  capped backoff (the workflow's ``retry`` when left out); ``error_edge="handler"``: when the
  attempts are exhausted the node is stored ``failed`` and a ``handler`` node is derived from it
  with a :class:`Failure` payload, so error handling is part of the workflow. Without an error
  edge the run fails, once the work already under way (other forks) has finished: a run ends
  the same way whichever engine runs it and in whatever order its tasks finish.

:meth:`Workflow.validate` refuses a definition that cannot run (unknown or unreachable node
types, a join on forks no action opens, an action on a final type, a type with no way on) with
:class:`~stream_app.errors.WorkflowDefinitionError`; engines call it when a workflow is
registered.

:meth:`Workflow.execute` is what a worker does with a task, and :class:`RunState` is the one
state machine that decides everything else about a run: which tasks to run, retries, forks and
joins, failure and cancel. Both engines (the local one and the Kafka one) only move tasks and
results between the two, which is why a run gives the same nodes and traces on either.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from stream_app.core.retry import RetryPolicy
from stream_app.core.workflow_graph import Graph, GraphEdge, GraphNode
from stream_app.core.workflows import (
    MAIN_LINE,
    ForkGroup,
    Node,
    NodeStatus,
    RunRecord,
    RunStatus,
    Task,
    TaskResult,
    iso_utc,
)
from stream_app.errors import WorkflowDefinitionError, WorkflowInputError

__all__ = [
    "DEFAULT_RETRY",
    "Action",
    "ActionDef",
    "EdgeContext",
    "Failure",
    "Joined",
    "NodeType",
    "RunState",
    "Step",
    "Workflow",
]

#: An action: derives the node's successors through the context; returns nothing.
Action = Callable[[Node, "EdgeContext"], None]
#: A condition on a node: the action runs only when it returns ``True``.
Predicate = Callable[[Node], bool]

#: The retry policy of a node type that names none: 3 tries, 0.1 s then 0.2 s apart.
DEFAULT_RETRY = RetryPolicy(attempts=3, backoff_s=0.1, max_backoff_s=5.0)

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class Joined(BaseModel):
    """The payload of a join node.

    Attributes:
        forks: The payloads of the end nodes of each fork (the nodes nothing was derived
            from), forks in the order they were opened.
    """

    forks: list[dict[str, Any]]


class Failure(BaseModel):
    """The payload of a node derived through an error edge.

    Attributes:
        error: The last error of the failed node.
        node: The failed node's type.
        payload: The failed node's payload (its input, so the handler can try another way).
    """

    error: str
    node: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ActionDef:
    """An action as declared: which node type it consumes and what it may derive.

    Attributes:
        name: Unique among the actions of its node type (the function's name by default).
        node_type: The node type it consumes.
        to: The node types it may derive.
        fn: The function.
        when: Runs only on nodes for which this holds (``None``: always).
        fork: Every successor it derives is on a fork of its own.
    """

    name: str
    node_type: str
    to: tuple[str, ...]
    fn: Action
    when: Predicate | None
    fork: bool


@dataclass(frozen=True, slots=True)
class NodeType:
    """A node type as declared.

    Attributes:
        name: The type's name (``Node.name`` of its nodes).
        payload: The pydantic model of its payloads (``None``: any JSON object).
        final: Its nodes are results of the run; it has no actions.
        retry: How its failing actions are retried (``None``: the workflow's policy).
        error_edge: The node type derived from one of its nodes that exhausted its attempts.
    """

    name: str
    payload: type[BaseModel] | None
    final: bool
    retry: RetryPolicy | None
    error_edge: str | None


class EdgeContext:
    """What an action is given besides its node: the derive function and the edge's facts.

    Attributes:
        action: The action's name.
        attempt: Which attempt at processing the node this is (1-based).
        now: The edge's time (the task's time, not the wall clock at replay).
    """

    def __init__(
        self, workflow: Workflow, action: ActionDef, node: Node, attempt: int, at: datetime
    ):
        self._workflow = workflow
        self._action = action
        self._node = node
        self.action = action.name
        self.attempt = attempt
        self.now = at
        self._derived: list[Node] = []

    def derive(
        self,
        name: str,
        *,
        payload: dict[str, Any] | BaseModel | None = None,
        message: str | None = None,
    ) -> Node:
        """Derive a successor of type ``name`` (one of the action's ``to`` types).

        ``payload`` (a dict or a model; left out: the node's payload) is validated against the
        type's payload model; ``message`` is a note kept on the successor. The successor's id
        comes from the run, the node, the action and how many nodes the action derived before
        it; its fork, status and attempts are the state machine's.

        Raises:
            ValueError: ``name`` is not one of the action's successor types.
            pydantic.ValidationError: The payload fails the type's model.
        """
        if name not in self._action.to:
            raise ValueError(
                f"action {self._action.name!r} of {self._node.name!r} may derive "
                f"{list(self._action.to)}, not {name!r}"
            )
        raw = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        data = self._workflow.validate_payload(
            name, dict(self._node.payload) if raw is None else raw
        )
        successor = self._node.derive(
            name,
            index=len(self._derived),
            action=self._action.name,
            at=self.now,
            payload=data,
            message=message,
        )
        if self._action.fork:
            successor = successor.model_copy(update={"fork": successor.id})
        self._derived.append(successor)
        return successor

    @property
    def derived(self) -> tuple[Node, ...]:
        """The successors derived so far."""
        return tuple(self._derived)


class Workflow:
    """A workflow definition: node types, actions, joins; validated, then executed by engines.

    Args:
        name: The workflow's name (letters, digits, ``_`` and ``-``).
        root: The node type of a run's first node; a run's input is its payload.
        retry: The retry policy of node types that name none.
    """

    def __init__(self, name: str, *, root: str, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        _check_name("workflow", name)
        self.name = name
        self.root = root
        self.retry = _checked_retry(name, retry)
        self._types: dict[str, NodeType] = {}
        self._actions: dict[str, list[ActionDef]] = {}
        self._joins: dict[str, str] = {}

    # -- definition -------------------------------------------------------------------------

    def node(
        self,
        name: str,
        *,
        payload: type[BaseModel] | None = None,
        final: bool = False,
        retry: RetryPolicy | None = None,
        error_edge: str | None = None,
    ) -> NodeType:
        """Declare node type ``name``; see :class:`NodeType` for the options.

        Raises:
            WorkflowDefinitionError: The name is taken or malformed.
        """
        _check_name(f"{self.name}: node type", name)
        if name in self._types:
            raise WorkflowDefinitionError(f"{self.name}: node type {name!r} is declared twice")
        node_type = NodeType(
            name, payload, final, None if retry is None else _checked_retry(name, retry), error_edge
        )
        self._types[name] = node_type
        return node_type

    def action(
        self,
        node_type: str,
        *,
        to: Iterable[str] = (),
        when: Predicate | None = None,
        fork: bool = False,
        name: str | None = None,
    ) -> Callable[[Action], Action]:
        """Decorator: the function is an action on nodes of ``node_type``.

        Args:
            node_type: The node type it consumes.
            to: The node types it may derive.
            when: Run only on nodes for which this holds.
            fork: Put every successor it derives on a fork of its own.
            name: The action's name (the function's name by default).
        """

        def register(fn: Action) -> Action:
            action_name = name or fn.__name__
            _check_name(f"{self.name}: action", action_name)
            existing = self._actions.setdefault(node_type, [])
            if any(a.name == action_name for a in existing):
                raise WorkflowDefinitionError(
                    f"{self.name}: {node_type!r} has two actions named {action_name!r}"
                )
            existing.append(ActionDef(action_name, node_type, tuple(to), fn, when, fork))
            return fn

        return register

    def join(self, target: str, *, forks_of: str) -> None:
        """Create one ``target`` node when all forks a node of type ``forks_of`` opened complete.

        The join node is derived from the node that opened the forks, stays on its fork, lists
        the fork tokens in ``joins`` and has a :class:`Joined` payload; its trace holds every
        node of the forks.

        Raises:
            WorkflowDefinitionError: ``forks_of`` already has a join.
        """
        if forks_of in self._joins:
            raise WorkflowDefinitionError(
                f"{self.name}: the forks of {forks_of!r} already join into "
                f"{self._joins[forks_of]!r}"
            )
        self._joins[forks_of] = target

    def validate(self) -> Workflow:
        """Check that the definition can run; returns the workflow.

        Raises:
            WorkflowDefinitionError: Every problem found, one per line.
        """
        problems = self._problems()
        if problems:
            raise WorkflowDefinitionError(
                f"workflow {self.name!r} cannot run:\n- " + "\n- ".join(problems)
            )
        return self

    # -- lookup -----------------------------------------------------------------------------

    @property
    def node_types(self) -> dict[str, NodeType]:
        """The node types by name, in declaration order."""
        return dict(self._types)

    def actions(self, node_type: str) -> tuple[ActionDef, ...]:
        """The actions on ``node_type``, in declaration order."""
        return tuple(self._actions.get(node_type, ()))

    def join_of(self, forks_of: str) -> str | None:
        """The node type the forks opened by a ``forks_of`` node join into, if any."""
        return self._joins.get(forks_of)

    def retry_for(self, node_type: str) -> RetryPolicy:
        """The retry policy of ``node_type``."""
        declared = self._types.get(node_type)
        return self.retry if declared is None or declared.retry is None else declared.retry

    def error_edge_of(self, node_type: str) -> str | None:
        """The node type derived from a ``node_type`` node that exhausted its attempts."""
        declared = self._types.get(node_type)
        return None if declared is None else declared.error_edge

    def is_final(self, node_type: str) -> bool:
        """Whether ``node_type`` is declared final."""
        declared = self._types.get(node_type)
        return declared is not None and declared.final

    def validate_payload(self, node_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` checked against the payload model of ``node_type``, as JSON data.

        A type without a model takes any JSON object; its payload is turned into JSON data too
        (tuples into lists, times into strings), so a node is the same in one process as after
        a trip through Kafka.

        Raises:
            KeyError: ``node_type`` is not declared.
            pydantic.ValidationError: The payload fails the model.
            pydantic_core.PydanticSerializationError: The payload cannot be JSON.
        """
        model = self._types[node_type].payload
        if model is None:
            data: dict[str, Any] = to_jsonable_python(payload)
            return data
        return model.model_validate(payload).model_dump(mode="json")

    # -- execution --------------------------------------------------------------------------

    def execute(self, task: Task, *, at: datetime) -> TaskResult:
        """Process ``task``: run the node's actions whose conditions hold, collect successors.

        An exception from an action (or an unknown node type) becomes ``ok=False`` with the
        error; nothing else here has side effects, so a worker may run a task again.
        """
        node = task.node
        started = time.perf_counter()
        try:
            successors = self._run_actions(node, task.attempt, at)
        except Exception as exc:
            return _result(task, at, started, error=f"{type(exc).__name__}: {exc}")
        return _result(task, at, started, successors=successors)

    def _run_actions(self, node: Node, attempt: int, at: datetime) -> tuple[Node, ...]:
        if node.name not in self._types:
            raise KeyError(f"workflow {self.name!r} has no node type {node.name!r}")
        derived: list[Node] = []
        for action in self.actions(node.name):
            if action.when is not None and not action.when(node):
                continue
            ctx = EdgeContext(self, action, node, attempt, at)
            action.fn(node, ctx)
            derived.extend(ctx.derived)
        return tuple(derived)

    # -- graph ------------------------------------------------------------------------------

    def graph(self) -> Graph:
        """The definition as a graph: node types, action edges, join and error edges."""
        nodes = [
            GraphNode(
                t.name, t.name, "root" if t.name == self.root else "final" if t.final else "type"
            )
            for t in self._types.values()
        ]
        edges: list[GraphEdge] = []
        for actions in self._actions.values():
            for action in actions:
                style = "fork" if action.fork else "action"
                edges.extend(
                    GraphEdge(action.node_type, to, action.name, style) for to in action.to
                )
        edges.extend(GraphEdge(src, dst, "join", "join") for src, dst in self._joins.items())
        edges.extend(
            GraphEdge(t.name, t.error_edge, "error", "error")
            for t in self._types.values()
            if t.error_edge is not None
        )
        return Graph(self.name, nodes, edges)

    def to_mermaid(self) -> str:
        """The definition as a Mermaid flowchart."""
        return self.graph().to_mermaid()

    def to_dot(self) -> str:
        """The definition as a Graphviz DOT digraph."""
        return self.graph().to_dot()

    # -- validation -------------------------------------------------------------------------

    def _problems(self) -> list[str]:
        known = set(self._types)
        problems: list[str] = []
        if self.root not in known:
            problems.append(f"the root node type {self.root!r} is not declared")
        for node_type, actions in self._actions.items():
            if node_type not in known:
                problems.append(
                    f"actions {[a.name for a in actions]} are on unknown node type {node_type!r}"
                )
            elif self._types[node_type].final:
                problems.append(
                    f"final node type {node_type!r} has actions (a final node has no edge out)"
                )
            for action in actions:
                problems.extend(
                    f"action {action.name!r} of {node_type!r} derives unknown node type {to!r}"
                    for to in action.to
                    if to not in known
                )
        for forks_of, target in self._joins.items():
            if target not in known:
                problems.append(f"the forks of {forks_of!r} join into unknown node type {target!r}")
            elif not _accepts(self._types[target].payload, {"forks": []}):
                problems.append(
                    f"join node type {target!r} must take a Joined payload ({{'forks': [...]}})"
                )
            if not any(a.fork for a in self._actions.get(forks_of, ())):
                problems.append(
                    f"join into {target!r} waits for forks of {forks_of!r}, but no action of "
                    f"{forks_of!r} opens forks (fork=True)"
                )
        for t in self._types.values():
            if t.error_edge is not None and t.error_edge not in known:
                problems.append(
                    f"the error edge of {t.name!r} leads to unknown node type {t.error_edge!r}"
                )
            elif t.error_edge is not None and not _accepts(
                self._types[t.error_edge].payload, {"error": "", "node": t.name, "payload": {}}
            ):
                problems.append(
                    f"error edge node type {t.error_edge!r} must take a Failure payload"
                )
        if problems:
            return problems
        reachable = self._reachable({self.root})
        problems.extend(
            f"node type {name!r} is not reachable from the root {self.root!r}"
            for name in self._types
            if name not in reachable
        )
        fork_ends = self._fork_ends()
        problems.extend(
            f"node type {t.name!r} has no action and is not final: its nodes would end the run "
            "without a result (declare it final, give it an action, or end a joined fork with it)"
            for t in self._types.values()
            if not t.final and t.name not in self._actions and t.name not in fork_ends
        )
        return problems

    def _successor_types(self, name: str) -> set[str]:
        out = {to for action in self._actions.get(name, ()) for to in action.to}
        if name in self._joins:
            out.add(self._joins[name])
        error_edge = self._types[name].error_edge if name in self._types else None
        if error_edge is not None:
            out.add(error_edge)
        return out

    def _reachable(self, start: set[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(start)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self._successor_types(name) - seen)
        return seen

    def _fork_ends(self) -> set[str]:
        starts = {
            to
            for forks_of in self._joins
            for action in self._actions.get(forks_of, ())
            if action.fork
            for to in action.to
        }
        return self._reachable(starts)


@dataclass(frozen=True, slots=True)
class Step:
    """What applying one task result did to a run.

    Attributes:
        record: The run's new record (the one given, when the result was ignored).
        tasks: Tasks to run now.
        retries: Tasks to run after a pause (seconds), from the node type's retry policy.
        done: Whether the run has ended.
    """

    record: RunRecord
    tasks: list[Task] = field(default_factory=list)
    retries: list[tuple[Task, float]] = field(default_factory=list)
    done: bool = False


class RunState:
    """The state machine of a run: pure functions from a record and an input to a new record.

    It is the run's only writer: engines hand it the results of tasks, in any order and any
    number of times, and run the tasks it returns.
    """

    @staticmethod
    def start(
        workflow: Workflow, run_id: str, payload: dict[str, Any], *, at: datetime
    ) -> tuple[RunRecord, list[Task]]:
        """A new run of ``workflow`` with ``payload`` as its root node's payload.

        Raises:
            WorkflowInputError: ``payload`` fails the root node type's model.
        """
        try:
            data = workflow.validate_payload(workflow.root, payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or '(payload)'}: {error['msg']}"
                for error in exc.errors()
            )
            raise WorkflowInputError(
                f"workflow {workflow.name!r}: the input does not fit root node type "
                f"{workflow.root!r}: {problems}"
            ) from exc
        root = Node.create(workflow.name, run_id, workflow.root, data, at=at)
        record = RunRecord(
            workflow=workflow.name,
            run_id=run_id,
            nodes={root.id: root},
            in_flight={root.id: 1},
            open_work={MAIN_LINE: 1},
            started_at=iso_utc(at),
        )
        return record, [Task(workflow=workflow.name, run_id=run_id, node=root, attempt=1)]

    @staticmethod
    def apply(workflow: Workflow, record: RunRecord, result: TaskResult, *, at: datetime) -> Step:
        """Apply the result of one attempt at a node, as the run's single writer.

        1. A result for a run that has ended, or for a (node, attempt) no longer awaited (a
           duplicate, or a stale attempt), is ignored: the record is returned as it is.
        2. ``ok``: the node is stored ``processed`` (``final`` if its type is final), its
           successors ``pending``, each with a task; successors on new forks open a fork
           group; a fork left without work completes, and a group whose forks all completed
           creates its join node (with its task), exactly once.
        3. Not ``ok`` with attempts left: the node keeps its last error and a retry task is
           returned with its pause (the node type's policy; the jitter is drawn from the
           task's key, so a replay waits as long).
        4. Not ``ok`` and no attempts left: the node is stored ``failed``; its type's error
           edge derives a :class:`Failure` node (with its task) in its place.
        5. No work left in flight: the run ends, ``failed`` if a node failed without an error
           edge (``message`` lists them), ``succeeded`` otherwise.
        """
        if record.done or record.in_flight.get(result.node_id) != result.attempt:
            return Step(record, done=record.done)
        writer = _Writer(workflow, record, at)
        refused = _refused_successors(record, result)
        if refused:
            result = result.model_copy(update={"ok": False, "successors": (), "error": refused})
        if result.ok:
            writer.processed(result)
        else:
            writer.attempt_failed(result)
        return writer.step()

    @staticmethod
    def cancel(record: RunRecord, *, at: datetime) -> RunRecord:
        """The run cancelled: pending nodes are stored ``cancelled``, later results ignored.

        A run that has ended is returned as it is.
        """
        if record.done:
            return record
        nodes = {
            node_id: node.model_copy(update={"status": NodeStatus.CANCELLED})
            if node.status is NodeStatus.PENDING
            else node
            for node_id, node in record.nodes.items()
        }
        return record.model_copy(
            update={
                "status": RunStatus.CANCELLED,
                "message": "cancelled",
                "nodes": nodes,
                "in_flight": {},
                "finished_at": iso_utc(at),
            }
        )


class _Writer:
    """Applies one result to a copy of a record, collecting the tasks that follow.

    Fork bookkeeping, in steps:

    1. every node adds 1 to ``open_work`` of its fork when stored, and takes it off when
       processed (or failed with an error edge, whose node takes its place);
    2. a node that opens forks adds 1 to its own fork for the group until the group closes;
    3. a fork whose count falls to 0 is complete: it leaves its group's ``open`` list;
    4. a group with no open fork closes: its join node (if declared) is stored on the opener's
       fork *before* the group's 1 is taken off, so the opener's fork cannot complete early.

    Each result is applied once (``in_flight``), so each count falls to 0 once and each join
    is created once, whatever the order of the results. Join and error-edge nodes are derived
    as actions ``:join`` and ``:error``, names no user action can have, so their ids cannot
    meet the id of a node an action derived.
    """

    def __init__(self, workflow: Workflow, record: RunRecord, at: datetime) -> None:
        self.workflow = workflow
        self.at = at
        self.record = record.model_copy(
            update={
                "nodes": dict(record.nodes),
                "in_flight": dict(record.in_flight),
                "open_work": dict(record.open_work),
                "groups": {k: g.model_copy(deep=True) for k, g in record.groups.items()},
                "forks_completed": list(record.forks_completed),
            }
        )
        self.tasks: list[Task] = []
        self.retries: list[tuple[Task, float]] = []

    def step(self) -> Step:
        record = self.record
        if record.status is RunStatus.RUNNING and not record.in_flight:
            failures = self._unhandled_failures()
            record.status = RunStatus.FAILED if failures else RunStatus.SUCCEEDED
            record.message = "; ".join(failures) or None
            record.finished_at = iso_utc(self.at)
        if record.done:
            self.tasks, self.retries = [], []
        return Step(record, self.tasks, self.retries, record.done)

    def _unhandled_failures(self) -> list[str]:
        failed = [
            node
            for node in self.record.nodes.values()
            if node.status is NodeStatus.FAILED and self.workflow.error_edge_of(node.name) is None
        ]
        failed.sort(key=lambda node: (len(node.trace), node.id))
        return [
            f"node {node.name!r} ({node.id}) failed after {node.attempts} attempt(s): "
            f"{node.message}"
            for node in failed
        ]

    def processed(self, result: TaskResult) -> None:
        node = self.record.nodes[result.node_id]
        del self.record.in_flight[node.id]
        status = NodeStatus.FINAL if self.workflow.is_final(node.name) else NodeStatus.PROCESSED
        self._store(
            node.model_copy(update={"status": status, "attempts": result.attempt, "message": None})
        )
        openers = [s for s in result.successors if s.fork == s.id]
        group: ForkGroup | None = None
        if openers or self.workflow.join_of(node.name) is not None:
            tokens = [s.id for s in openers]
            group = ForkGroup(forker=node.id, tokens=tokens, open=list(tokens))
            self.record.groups[node.id] = group
            self._add_work(node.fork, 1)
        for successor in result.successors:
            self._add(successor)
        if group is not None and not group.open:
            self._close(group)
        self._add_work(node.fork, -1)

    def attempt_failed(self, result: TaskResult) -> None:
        node = self.record.nodes[result.node_id]
        error = result.error or "failed"
        policy = self.workflow.retry_for(node.name)
        if result.attempt < policy.attempts:
            retried = node.model_copy(update={"attempts": result.attempt, "message": error})
            self._store(retried)
            task = self._task(retried, result.attempt + 1)
            self.record.in_flight[node.id] = task.attempt
            delay = policy.delay(task.attempt, random_factor=lambda: _fraction(task.key))
            self.retries.append((task, delay))
            return
        del self.record.in_flight[node.id]
        failed = node.model_copy(
            update={"status": NodeStatus.FAILED, "attempts": result.attempt, "message": error}
        )
        self._store(failed)
        error_edge = self.workflow.error_edge_of(node.name)
        if error_edge is None:
            return
        payload = Failure(error=error, node=node.name, payload=node.payload).model_dump(mode="json")
        self._add(
            failed.derive(
                error_edge,
                index=0,
                action=":error",
                at=self.at,
                payload=payload,
            )
        )
        self._add_work(node.fork, -1)

    def _add(self, node: Node) -> None:
        if node.id in self.record.nodes:
            return
        self._store(node)
        self._add_work(node.fork, 1)
        task = self._task(node, 1)
        self.record.in_flight[node.id] = 1
        self.tasks.append(task)

    def _close(self, group: ForkGroup) -> None:
        forker = self.record.nodes[group.forker]
        target = self.workflow.join_of(forker.name)
        if target is not None:
            branches = [self.record.fork_nodes(token) for token in group.tokens]
            ends = [_ends(branch) for branch in branches]
            payload = Joined(
                forks=[n.payload for branch_ends in ends for n in branch_ends]
            ).model_dump(mode="json")
            joined = forker.derive(
                target,
                index=0,
                action=":join",
                at=self.at,
                payload=payload,
                fork=forker.fork,
                joins=tuple(group.tokens),
            )
            trace = (*joined.trace, *(n.id for branch in branches for n in branch))
            joined = joined.model_copy(update={"trace": trace})
            group.joined = joined.id
            self._add(joined)
        self._add_work(forker.fork, -1)

    def _add_work(self, fork: str | None, delta: int) -> None:
        key = MAIN_LINE if fork is None else fork
        left = self.record.open_work.get(key, 0) + delta
        self.record.open_work[key] = left
        if left == 0 and fork is not None:
            self._fork_completed(fork)

    def _fork_completed(self, token: str) -> None:
        self.record.forks_completed.append(token)
        opener = self.record.nodes[token].predecessor_id
        group = self.record.groups[opener] if opener is not None else None
        if group is None:
            return
        group.open.remove(token)
        if not group.open:
            self._close(group)

    def _store(self, node: Node) -> None:
        self.record.nodes[node.id] = node

    def _task(self, node: Node, attempt: int) -> Task:
        return Task(
            workflow=self.workflow.name, run_id=self.record.run_id, node=node, attempt=attempt
        )


def _refused_successors(record: RunRecord, result: TaskResult) -> str | None:
    """Why the successors of ``result`` cannot be stored (``None`` if they can).

    They come from a worker (and, on Kafka, from a topic anyone may write to): a successor
    must be of this run, derived from the node, on its fork or on a fork of its own. A result
    that breaks this counts as a failed attempt rather than breaking the run's bookkeeping.
    """
    node = record.nodes[result.node_id]
    for successor in result.successors:
        if (
            successor.run_id != record.run_id
            or successor.workflow != record.workflow
            or successor.predecessor_id != node.id
            or successor.fork not in (node.fork, successor.id)
        ):
            return (
                f"refused successor {successor.id} ({successor.name!r}): not derived from "
                f"node {node.id} of run {record.run_id} on its fork or a new one"
            )
    return None


def _ends(branch: list[Node]) -> list[Node]:
    """The nodes of a fork nothing was derived from (no other node of the fork traces them)."""
    traced = {node_id for node in branch for node_id in node.trace}
    return [node for node in branch if node.id not in traced]


def _fraction(key: str) -> float:
    """A number in [0, 1) drawn from ``key``: the jitter of a retry, the same at every replay."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2.0**64


def _result(
    task: Task,
    at: datetime,
    started: float,
    *,
    successors: tuple[Node, ...] = (),
    error: str | None = None,
) -> TaskResult:
    finished = at + timedelta(seconds=time.perf_counter() - started)
    return TaskResult(
        run_id=task.run_id,
        node_id=task.node.id,
        attempt=task.attempt,
        ok=error is None,
        successors=successors,
        error=error,
        started_at=iso_utc(at),
        finished_at=iso_utc(finished),
    )


def _accepts(model: type[BaseModel] | None, payload: dict[str, Any]) -> bool:
    if model is None:
        return True
    try:
        model.model_validate(payload)
    except ValidationError:
        return False
    return True


def _check_name(what: str, name: str) -> None:
    if not _NAME.match(name):
        raise WorkflowDefinitionError(
            f"{what} name {name!r} must be 1-100 letters, digits, '_' or '-'"
        )


def _checked_retry(what: str, policy: RetryPolicy) -> RetryPolicy:
    if policy.on_exhausted is not None:
        raise WorkflowDefinitionError(
            f"{what}: a workflow's RetryPolicy cannot end in {policy.on_exhausted.value!r}: an "
            "exhausted node is stored failed and takes its error edge (leave on_exhausted out)"
        )
    return policy
