"""The workflow layer's data: nodes, tasks, task results and the record of a run (pure models).

A workflow run (Gruffle's model) is driven by immutable data. A :class:`Node` is a piece of data
with the name of its node type; an *edge* is the execution of an action on a node, which
derives successor nodes; a run goes from its root node until no work is left, and the nodes
with no edge out are its results (status ``final``). A :class:`Task` asks a worker to process
one node (one attempt), and its :class:`TaskResult` carries back the successors the actions
derived, or the error.

Everything that identifies a node is derived, never drawn: the root's id from the run id, a
successor's id from ``(run_id, predecessor id, action, index)``, and ``created_at`` from the
time the engine hands in (the triggering record's time, not the wall clock at replay). So an
edge executed twice, after a crash or by two workers, yields the same successors, and the run's
single writer (:class:`RunRecord`) stores them once.

A node that ``derive`` puts on a new *fork* gets its own id as fork token; every node derived
from it inherits the token, so a fork is the branch grown from that first node. A *join* node
lists the tokens it waited for in ``joins``.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NotRequired, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from typing_extensions import TypedDict  # pydantic takes typing's only from Python 3.12

__all__ = [
    "MAIN_LINE",
    "ForkGroup",
    "Node",
    "NodeStatus",
    "RunRecord",
    "RunStatus",
    "Task",
    "TaskResult",
    "edge_id",
    "iso_utc",
]

#: The key of the run's main line (nodes on no fork) in :attr:`RunRecord.open_work`.
MAIN_LINE = ""

#: Attributes of a successor an action may set through ``derive``'s ``overrides``; the others
#: (workflow, run, predecessor, trace, id, created_at) are inferred and cannot be overridden.
_OVERRIDABLE = frozenset({"fork", "joins", "status", "message", "attempts"})


def edge_id(*parts: str) -> str:
    """A node id: 24 hex digits hashed from ``parts`` (the same parts give the same id)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


def iso_utc(at: datetime) -> str:
    """``at`` in UTC as ISO 8601 with milliseconds (``2026-01-02T03:04:05.678+00:00``).

    Raises:
        ValueError: ``at`` is naive (without a time zone), so its instant is unknown.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"workflow times must be timezone-aware, got naive {at.isoformat()}")
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


class NodeStatus(StrEnum):
    """Where a node is in its run.

    Attributes:
        PENDING: Stored, waiting for a worker to process it (or for its next attempt).
        PROCESSED: Its actions ran and its successors are stored.
        FINAL: Processed with no edge out: one of the run's results.
        FAILED: Its attempts are exhausted; ``message`` says why.
        CANCELLED: Still pending when the run was cancelled.
    """

    PENDING = "pending"
    PROCESSED = "processed"
    FINAL = "final"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Node(BaseModel):
    """An immutable piece of a run's data, with the name of the node type that consumes it.

    Attributes:
        workflow: The workflow's name.
        run_id: The run the node belongs to.
        id: Unique in the run, derived from the run and the edge that created the node.
        predecessor_id: The node whose action derived this one (``None`` for the root; for a
            join node, the node that opened the forks).
        name: The node type.
        trace: Ids of the nodes processed before this one, ancestors first.
        status: Where the node is in its run.
        message: Why the node failed, or the last error of a node being retried.
        fork: Token of the fork the node is on (``None``: the run's main line).
        joins: Tokens of the forks that completed before this (join) node was created.
        created_at: When the edge that created the node ran (UTC, ISO 8601).
        payload: The user's data, valid for the node type's payload model.
        attempts: Attempts made at processing the node so far.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    workflow: str
    run_id: str
    id: str
    predecessor_id: str | None = None
    name: str
    trace: tuple[str, ...] = ()
    status: NodeStatus = NodeStatus.PENDING
    message: str | None = None
    fork: str | None = None
    joins: tuple[str, ...] = ()
    created_at: str
    payload: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0

    @classmethod
    def create(
        cls, workflow: str, run_id: str, name: str, payload: dict[str, Any], *, at: datetime
    ) -> Node:
        """The root node of run ``run_id`` (its id is derived from the run id alone)."""
        return cls(
            workflow=workflow,
            run_id=run_id,
            id=edge_id(run_id, "root"),
            name=name,
            created_at=iso_utc(at),
            payload=payload,
        )

    def serialize(self) -> bytes:
        """The node as UTF-8 JSON."""
        return self.model_dump_json().encode()

    @classmethod
    def deserialize(cls, data: bytes | str) -> Node:
        """The node :meth:`serialize` wrote.

        Raises:
            pydantic.ValidationError: ``data`` is not a serialized node.
        """
        return cls.model_validate_json(data)

    def derive(
        self,
        name: str,
        *,
        index: int,
        action: str,
        at: datetime,
        payload: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> Node:
        """A successor of this node, as the ``index``-th node derived by ``action``.

        Workflow, run, predecessor (this node), trace (this node's trace and this node) and
        fork are inferred; ``payload`` replaces this node's payload (left out: a copy of it).
        ``overrides`` may set ``fork``, ``joins``, ``status``, ``message`` and ``attempts``.

        Raises:
            ValueError: ``overrides`` names an attribute that is inferred.
        """
        refused = set(overrides) - _OVERRIDABLE
        if refused:
            raise ValueError(
                f"derive cannot override {sorted(refused)} (only {sorted(_OVERRIDABLE)})"
            )
        attributes: dict[str, Any] = {
            "fork": self.fork,
            **overrides,
            "workflow": self.workflow,
            "run_id": self.run_id,
            "id": edge_id(self.run_id, self.id, action, str(index)),
            "predecessor_id": self.id,
            "name": name,
            "trace": (*self.trace, self.id),
            "created_at": iso_utc(at),
            "payload": dict(self.payload) if payload is None else payload,
        }
        return Node(**attributes)


class Task(BaseModel):
    """One attempt at processing one node: an item of the worker queue.

    Attributes:
        workflow: The workflow's name.
        run_id: The run the node belongs to.
        node: The node to process.
        attempt: Which attempt this is (1-based).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    workflow: str
    run_id: str
    node: Node
    attempt: int = Field(default=1, ge=1)

    @property
    def key(self) -> str:
        """``<run_id>/<node id>/<attempt>``: the same for every delivery of the task."""
        return f"{self.run_id}/{self.node.id}/{self.attempt}"


class TaskResult(BaseModel):
    """What one attempt at processing a node gave.

    Attributes:
        run_id: The run.
        node_id: The node processed.
        attempt: The attempt (as in the task).
        ok: Whether every action ran without raising.
        successors: The nodes the actions derived (deterministic ids), empty when not ``ok``.
        error: What went wrong, when not ``ok``.
        started_at: When the attempt started (UTC, ISO 8601), for the trace only.
        finished_at: When it finished, for the trace only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    node_id: str
    attempt: int = Field(ge=1)
    ok: bool
    successors: tuple[Node, ...] = ()
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None

    def without_timing(self) -> TaskResult:
        """This result with the timing fields cleared, to compare results across engines."""
        return self.model_copy(update={"started_at": None, "finished_at": None})


class _StoredNode(TypedDict):
    """A node as a run's record writes it: :class:`Node`'s fields in its order, the trace left
    out when the record can rebuild it. Serialized against this schema, the nodes of a record
    are written by pydantic in one pass, as fast as models and without inferring types."""

    workflow: str
    run_id: str
    id: str
    predecessor_id: str | None
    name: str
    trace: NotRequired[tuple[str, ...]]
    status: NodeStatus
    message: str | None
    fork: str | None
    joins: tuple[str, ...]
    created_at: str
    payload: dict[str, Any]
    attempts: int


class RunStatus(StrEnum):
    """Where a run is.

    Attributes:
        RUNNING: Work is in flight or waiting for a retry.
        SUCCEEDED: No work is left and no node failed without an error edge.
        FAILED: A node exhausted its attempts and its type has no error edge.
        CANCELLED: The run was cancelled; results arriving later are ignored.
    """

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ForkGroup(BaseModel):
    """The forks one node opened, and whether the join after them has fired.

    Attributes:
        forker: The node whose action opened the forks.
        tokens: The fork tokens, in the order the action derived them.
        open: Tokens of the forks not completed yet.
        joined: The id of the join node, once created (at most one per group).
    """

    model_config = ConfigDict(extra="forbid")

    forker: str
    tokens: list[str] = Field(default_factory=list)
    open: list[str] = Field(default_factory=list)
    joined: str | None = None


class RunRecord(BaseModel):
    """Everything the run's single writer keeps: its node store and bookkeeping.

    Only :class:`~stream_app.api.workflows.RunState` changes a record, and it returns a new one
    instead of changing the one it is given. Serialized, a record leaves out the traces it can
    rebuild from the predecessor's (all but the join nodes'), so that it grows with its nodes
    and not with their square; ``model_dump_json(context={"full_traces": True})`` writes every
    trace out, and reading either form gives the same record.

    Attributes:
        workflow: The workflow's name.
        run_id: The run.
        status: Where the run is.
        message: Why the run failed, or that it was cancelled.
        nodes: The node store: every node of the run by id, with its latest status.
        in_flight: Node id to the attempt whose result is awaited; a result for any other
            (node, attempt) has been applied already or is stale, and is ignored.
        open_work: Per fork token (:data:`MAIN_LINE` for the main line), nodes not processed
            yet plus fork groups opened on it and not closed yet; a fork completes at 0.
        groups: The fork groups by the id of the node that opened them.
        forks_completed: Fork tokens in the order their forks completed.
        started_at: When the run started (UTC, ISO 8601).
        finished_at: When it ended, once it has.
    """

    model_config = ConfigDict(extra="forbid")

    workflow: str
    run_id: str
    status: RunStatus = RunStatus.RUNNING
    message: str | None = None
    nodes: dict[str, Node] = Field(default_factory=dict)
    in_flight: dict[str, int] = Field(default_factory=dict)
    open_work: dict[str, int] = Field(default_factory=dict)
    groups: dict[str, ForkGroup] = Field(default_factory=dict)
    forks_completed: list[str] = Field(default_factory=list)
    started_at: str
    finished_at: str | None = None

    @field_serializer("nodes")
    def _compact_traces(
        self, nodes: dict[str, Node], info: SerializationInfo
    ) -> dict[str, _StoredNode]:
        """Leave out every trace that is its predecessor's trace and its predecessor.

        A trace holds every ancestor, so a run of ``n`` nodes in a row holds ``n**2 / 2`` ids in
        its traces; stored in full, a record of a few hundred nodes would outgrow a Kafka
        record. Only the join nodes' traces say something their predecessor's does not; the
        others are rebuilt when the record is read (:meth:`_rebuild_traces`). For a reader
        who wants every trace written out, dump with ``context={"full_traces": True}``.

        The record is written at every step of its run, so this stays light: each node is a
        copy of its fields (:class:`_StoredNode`), which pydantic writes in one pass (a
        ``model_dump`` per node costs ten times as much).
        """
        full = isinstance(info.context, dict) and bool(info.context.get("full_traces"))
        return {node_id: _stored_node(node, nodes, full=full) for node_id, node in nodes.items()}

    @field_validator("nodes")
    @classmethod
    def _rebuild_traces(cls, nodes: dict[str, Node], info: ValidationInfo) -> dict[str, Node]:
        """Put back the traces :meth:`_compact_traces` left out, ancestors first.

        The nodes are validated by pydantic in one pass, each one read without a trace having
        none in its ``model_fields_set``; such a node with a predecessor gets its predecessor's
        trace and its predecessor (nodes are stored after their predecessors, but any order
        is read). A node whose predecessor is not in the run keeps an empty trace. The traces
        come from :data:`_TRACES`, which hands back the tuples it built at the record's
        previous read instead of copying every ancestor again.
        """
        waiting = {
            node_id
            for node_id, node in nodes.items()
            if node.predecessor_id is not None and "trace" not in node.model_fields_set
        }
        if waiting:
            _TRACES.rebuild(nodes, waiting, fresh=info.mode == "json")
        return nodes

    @property
    def done(self) -> bool:
        """Whether the run has ended (succeeded, failed or cancelled)."""
        return self.status is not RunStatus.RUNNING

    def finals(self) -> list[Node]:
        """The run's results: its nodes with status ``final``, ordered by trace then id."""
        finals = [node for node in self.nodes.values() if node.status is NodeStatus.FINAL]
        return sorted(finals, key=lambda node: (len(node.trace), node.id))

    def fork_nodes(self, token: str) -> list[Node]:
        """The nodes grown on fork ``token`` (nested forks included), ancestors first."""
        branch = [n for n in self.nodes.values() if self._within(n.fork, token)]
        return sorted(branch, key=lambda node: (len(node.trace), node.id))

    def _within(self, fork: str | None, token: str) -> bool:
        """Whether fork ``fork`` is ``token`` or nested in it (opened by a node on it)."""
        while fork is not None:
            if fork == token:
                return True
            opener = self.nodes[fork].predecessor_id if fork in self.nodes else None
            fork = self.nodes[opener].fork if opener in self.nodes else None
        return False


class _TraceMemo:
    """The traces :class:`RunRecord` rebuilt lately, so that the next read of the record reuses
    them.

    A run's record is read at every step of the run, and each read rebuilds its traces: for a
    run of ``n`` nodes in a row, ``n**2 / 2`` ids copied and written out again. A rebuilt trace
    is a pure function of the predecessor's trace and id, so the memo keeps, by node id, the
    predecessor's trace tuple it was built from and the trace, and hands the trace back only to
    a predecessor with that very tuple (``is``) and that id: a hit is exactly what a rebuild
    would give, and a miss rebuilds. Traces read from JSON are new tuples at every read, so
    the nodes after a join node (whose trace is stored) miss at every read.

    The same identities tell :func:`_inferable_trace` that a trace needs no comparison.

    Args:
        capacity: The most references the memo holds: each entry counts its trace's length
            plus :data:`_ENTRY_REFS`; the oldest entries go first.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._refs = 0
        self._lock = threading.Lock()

    def rebuild(self, nodes: dict[str, Node], waiting: set[str], *, fresh: bool) -> None:
        """Give every node of ``waiting`` (ids of ``nodes``) its trace, ancestors first.

        ``fresh``: the nodes were just made from JSON and nothing else holds them, so each
        gets its trace in place; otherwise (nodes handed in by Python code) in a copy.
        """
        with self._lock:
            for node_id in list(nodes):
                chain: list[str] = []
                while node_id in waiting:
                    waiting.remove(node_id)
                    chain.append(node_id)
                    node_id = nodes[node_id].predecessor_id or ""
                for key in reversed(chain):
                    node = nodes[key]
                    predecessor = nodes.get(node.predecessor_id or "")
                    trace = () if predecessor is None else self._after(node.id, predecessor)
                    if fresh:
                        # What model_copy(update=...) would do, without copying the node.
                        object.__setattr__(node, "trace", trace)
                        node.__pydantic_fields_set__.add("trace")
                    else:
                        nodes[key] = node.model_copy(update={"trace": trace})

    @property
    def references(self) -> int:
        """The references the memo holds, as counted against its capacity."""
        return self._refs

    def built(self, node: Node, predecessor: Node) -> bool:
        """Whether ``node``'s trace is the one the memo built after ``predecessor``."""
        entry = self._entries.get(node.id)
        return (
            entry is not None
            and entry[1] is node.trace
            and entry[0] is predecessor.trace
            and entry[1][-1] == predecessor.id
        )

    def _after(self, node_id: str, predecessor: Node) -> tuple[str, ...]:
        entry = self._entries.get(node_id)
        if entry is not None and entry[0] is predecessor.trace and entry[1][-1] == predecessor.id:
            return entry[1]
        trace = (*predecessor.trace, predecessor.id)
        if entry is not None:
            self._refs -= len(entry[1]) + _ENTRY_REFS
            del self._entries[node_id]
        self._entries[node_id] = (predecessor.trace, trace)
        self._refs += len(trace) + _ENTRY_REFS
        while self._refs > self.capacity and self._entries:
            oldest = next(iter(self._entries))
            self._refs -= len(self._entries.pop(oldest)[1]) + _ENTRY_REFS
        return trace


#: What an entry of :class:`_TraceMemo` costs besides its trace (its key, its tuples and its
#: slot: some 250 bytes), in references of 8 bytes.
_ENTRY_REFS = 32
#: Two million references (some 16 MB): the traces of three runs of 1,000 nodes in a row.
_TRACES = _TraceMemo(capacity=2_000_000)


def _stored_node(node: Node, nodes: dict[str, Node], *, full: bool) -> _StoredNode:
    """The node as its record writes it: its fields as they are, without the trace unless
    ``full`` or the trace cannot be rebuilt from ``nodes``."""
    fields = node.__dict__.copy()
    if not full and _inferable_trace(node, nodes):
        del fields["trace"]
    return cast(_StoredNode, fields)


def _inferable_trace(node: Node, nodes: dict[str, Node]) -> bool:
    """Whether ``node``'s trace is its predecessor's trace and its predecessor (or empty, for a
    node whose predecessor is not in ``nodes``): what :class:`RunRecord` can rebuild."""
    predecessor = nodes.get(node.predecessor_id or "")
    if predecessor is None:
        return not node.trace
    if _TRACES.built(node, predecessor):
        return True
    trace = node.trace
    return (
        len(trace) == len(predecessor.trace) + 1
        and trace[-1] == predecessor.id
        and trace[:-1] == predecessor.trace
    )
