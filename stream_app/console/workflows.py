"""The workflow runs pages: the runs of a workflow behaviour, and one run's graph and trace.

- ``/console/workflows``: every run (``/stream-app/workflows/<b>/``, gathered from every
  worker), filtered by workflow and status, newest first.
- ``/console/workflows/<b>/<run_id>``: the run (``/stream-app/workflows/<b>/<run_id>/``, from
  its owner): its graph drawn by ``static/runs.js`` with Cytoscape.js from the elements
  :func:`graph_elements` writes (a ``<script type="application/json">`` block), a table of its
  nodes (the same facts, for a keyboard or a page without scripts), its trace as a tree, and
  the cancel action when it is still running.
- ``POST /console/workflows/cancel``: cancel a run through
  :class:`~stream_app.clients.workflows.WorkflowClient` (its pending nodes become
  ``cancelled``).

A node's times are the ones its run's record keeps: when it was created (the time the edge
that derived it ran), and when the nodes drawn after it were created (its own edge, or the join
its fork ended in): a node with nothing after it has no end time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from stream_app.clients.workflows import WorkflowClient
from stream_app.console.pagekit import (
    Invalid,
    as_view,
    behaviour_field,
    behaviours_of,
    path_part,
    read_view,
    text_field,
)
from stream_app.console.server import Console, ViewAnswer
from stream_app.console.when import FILTERS, at_text, ms_between, span
from stream_app.core.workflow_graph import Graph, run_graph
from stream_app.core.workflows import Node, RunRecord, RunStatus
from stream_app.errors import StreamAppError
from stream_app.settings import Settings

__all__ = [
    "NodeView",
    "RunRow",
    "TraceItem",
    "graph_elements",
    "install",
    "node_views",
    "run_rows",
    "trace_tree",
]

#: The run statuses, in the order the filter offers them.
STATUSES = tuple(status.value for status in RunStatus)

#: The node statuses, in the order the legend lists them.
NODE_STATUSES = ("pending", "processed", "final", "failed", "cancelled")


@dataclass(frozen=True)
class NodeView:
    """One node of a run as the page shows it.

    Attributes:
        id: The node's id.
        name: Its node type.
        status: Its status.
        attempts: Attempts made at processing it.
        created_at: When it was created (ISO 8601).
        processed_at: When the first node drawn after it was created, if any.
        took_ms: From ``created_at`` to ``processed_at``.
        message: Its error, if any.
        opens_fork: Whether it is the first node of a fork.
        joins: How many forks it joined (0: not a join).
        payload: Its payload.
        predecessor_id: The node it was derived from.
    """

    id: str
    name: str
    status: str
    attempts: int
    created_at: str
    processed_at: str | None
    took_ms: int | None
    message: str | None
    opens_fork: bool
    joins: int
    payload: dict[str, Any]
    predecessor_id: str | None

    @property
    def short_id(self) -> str:
        """The first 12 hex digits of the id."""
        return self.id[:12]

    def facts(self) -> dict[str, Any]:
        """The node as ``runs.js`` shows it in the side panel (plain JSON)."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "attempts": self.attempts,
            "created": at_text(self.created_at),
            "processed": at_text(self.processed_at),
            "took": span(self.took_ms) if self.took_ms is not None else "-",
            "message": self.message,
            "fork": self.opens_fork,
            "joins": self.joins,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class TraceItem:
    """A node of the trace tree with the nodes derived from it.

    Attributes:
        node: The node.
        children: The nodes under it (a join under the node that opened its forks).
    """

    node: NodeView
    children: list[TraceItem] = field(default_factory=list)


@dataclass(frozen=True)
class RunRow:
    """One run in the list.

    Attributes:
        run_id: The run's id.
        workflow: Its workflow.
        status: Its status.
        nodes: How many nodes it has.
        started_at: When it started (ISO 8601).
        finished_at: When it ended, if it has.
    """

    run_id: str
    workflow: str
    status: str
    nodes: int
    started_at: str | None
    finished_at: str | None

    @property
    def took(self) -> str:
        """How long it ran (``-`` while it runs)."""
        took = ms_between(self.started_at, self.finished_at)
        return span(took) if took is not None else "-"


def node_views(record: RunRecord, graph: Graph | None = None) -> list[NodeView]:
    """The run's nodes, ancestors first, each with its times (see the module's docstring);
    ``graph``: the run's :func:`~stream_app.core.workflow_graph.run_graph`, if drawn already."""
    after: dict[str, list[str]] = {}
    for edge in (graph or run_graph(record)).edges:
        after.setdefault(edge.source, []).append(record.nodes[edge.target].created_at)
    ordered = sorted(record.nodes.values(), key=lambda node: (len(node.trace), node.id))
    return [_node_view(node, min(after.get(node.id, []), default=None)) for node in ordered]


def _node_view(node: Node, processed_at: str | None) -> NodeView:
    return NodeView(
        id=node.id,
        name=node.name,
        status=node.status.value,
        attempts=node.attempts,
        created_at=node.created_at,
        processed_at=processed_at,
        took_ms=ms_between(node.created_at, processed_at),
        message=node.message,
        opens_fork=node.fork == node.id,
        joins=len(node.joins),
        payload=node.payload,
        predecessor_id=node.predecessor_id,
    )


def graph_elements(record: RunRecord, graph: Graph | None = None) -> dict[str, list[Any]]:
    """The run as Cytoscape.js elements: a node per run node (its label carries its status,
    its data the facts the side panel shows) and an edge per derivation, fork and join;
    ``graph`` as for :func:`node_views`."""
    graph = graph or run_graph(record)
    views = {view.id: view for view in node_views(record, graph)}
    nodes = [
        {
            "data": {
                **views[vertex.key].facts(),
                "label": f"{views[vertex.key].name}\n{vertex.kind}"
                + (f" x{views[vertex.key].attempts}" if views[vertex.key].attempts > 1 else ""),
            }
        }
        for vertex in graph.nodes
    ]
    edges = [
        {
            "data": {
                "id": f"e{index}",
                "source": edge.source,
                "target": edge.target,
                "label": edge.label,
                "style": edge.style,
            }
        }
        for index, edge in enumerate(graph.edges)
    ]
    return {"nodes": nodes, "edges": edges}


def trace_tree(record: RunRecord, views: list[NodeView] | None = None) -> list[TraceItem]:
    """The run as a tree: each node under the node it was derived from (a join node under the
    node that opened its forks), siblings by creation time, joins last; ``views``: the run's
    :func:`node_views`, if made already."""
    views = node_views(record) if views is None else views
    children: dict[str | None, list[NodeView]] = {}
    for view in views:
        parent = view.predecessor_id if view.predecessor_id in record.nodes else None
        children.setdefault(parent, []).append(view)
    for siblings in children.values():
        siblings.sort(key=lambda v: (v.joins > 0, v.created_at, v.id))

    def grow(parent: str | None) -> list[TraceItem]:
        return [TraceItem(view, grow(view.id)) for view in children.get(parent, [])]

    return grow(None)


def run_rows(runs: Mapping[str, Any], *, workflow: str = "", status: str = "") -> list[RunRow]:
    """The runs of a gathered listing (``run id -> {workflow, status, nodes, started_at,
    finished_at}``) whose workflow and status match (an empty filter matches all), newest
    first."""
    rows = [
        RunRow(
            run_id=str(run_id),
            workflow=str(entry.get("workflow") or ""),
            status=str(entry.get("status") or ""),
            nodes=int(entry.get("nodes") or 0),
            started_at=entry.get("started_at"),
            finished_at=entry.get("finished_at"),
        )
        for run_id, entry in runs.items()
        if isinstance(entry, Mapping)
    ]
    chosen = [
        row
        for row in rows
        if (not workflow or row.workflow == workflow) and (not status or row.status == status)
    ]
    return sorted(chosen, key=lambda row: (row.started_at or "", row.run_id), reverse=True)


def _cancel(settings: Settings, behaviour: str, run_id: str, reason: str | None) -> None:
    client = WorkflowClient(behaviour, settings, config={"log_level": 0})
    try:
        client.cancel(run_id, reason, timeout=15.0)
    finally:
        client.close()


def install(console: Console) -> None:
    """Register ``/console/workflows``, ``/console/workflows/<b>/<run_id>`` and the cancel
    action."""
    console.templates.filters.update(FILTERS)
    pages = _RunPages(console)
    console.page("/workflows", title="Workflows")(as_view(pages.runs))
    console.page("/workflows/{behaviour}/{run_id}")(as_view(pages.run))
    console.action("/workflows/cancel")(as_view(pages.cancel))


class _RunPages:
    """The handlers of the workflow runs pages and of the cancel action."""

    def __init__(self, console: Console) -> None:
        self.console = console

    async def record(self, behaviour: str, run_id: str) -> tuple[RunRecord, ViewAnswer]:
        """The run's record and its view's whole answer, or :class:`Invalid`."""
        text_field(run_id, "run id")
        answer = await read_view(
            self.console, f"workflows/{path_part(behaviour)}/{path_part(run_id)}/"
        )
        if answer.status == 404:
            raise Invalid(404, f"no run {run_id!r} of {behaviour}")
        if not answer.ok or not isinstance(answer.data, dict) or not answer.data.get("run"):
            raise Invalid(502, f"the run's view answered {answer.status}")
        try:
            return RunRecord.model_validate(answer.data["run"]), answer
        except ValidationError as exc:
            raise Invalid(502, f"the run's record does not read: {exc}") from None

    def listing(self, web: Any, request: Any, status: int = 200, **page: Any) -> Any:
        """The runs page, with the defaults of an empty one."""
        empty: dict[str, Any] = {"error": None, "behaviour": "", "rows": [], "workflows": []}
        return self.console.render(
            web,
            request,
            "workflows.html",
            status=status,
            choices=behaviours_of(self.console, "workflows"),
            statuses=STATUSES,
            **{"status_filter": "", **empty, **page},
        )

    def result(self, web: Any, request: Any, ok: bool, message: str, status: int = 200) -> Any:
        """The ``action_result.html`` fragment."""
        return self.console.render(
            web, request, "action_result.html", status=status, ok=ok, message=message
        )

    async def runs(self, web: Any, request: Any) -> Any:
        """``/console/workflows?behaviour=&workflow=&status=``: the runs, filtered."""
        query = request.query
        try:
            behaviour = behaviour_field(self.console, query.get("behaviour"), "workflows")
            workflow = text_field(query.get("workflow"), "workflow", required=False)
            status = query.get("status", "")
            if status and status not in STATUSES:
                raise Invalid(400, f"the status is one of {', '.join(STATUSES)}")
            answer = await read_view(self.console, f"workflows/{path_part(behaviour)}/")
        except Invalid as problem:
            return self.listing(web, request, problem.status, error=problem.message)
        runs = answer.data if answer.ok and isinstance(answer.data, dict) else {}
        return self.listing(
            web,
            request,
            error=None if answer.ok else f"the runs' view answered {answer.status}",
            behaviour=behaviour,
            workflow=workflow,
            status_filter=status,
            rows=run_rows(runs, workflow=workflow, status=status),
            workflows=sorted({str(e.get("workflow")) for e in runs.values()} | {workflow} - {""}),
        )

    async def run(self, web: Any, request: Any, **match: str) -> Any:
        """``/console/workflows/<b>/<run_id>``: the run's graph, nodes and trace."""
        try:
            behaviour = behaviour_field(self.console, match.get("behaviour"), "workflows")
            record, answer = await self.record(behaviour, match.get("run_id", ""))
        except Invalid as problem:
            return self.listing(web, request, problem.status, error=problem.message)
        took = ms_between(record.started_at, record.finished_at)
        graph = run_graph(record)
        nodes = node_views(record, graph)
        return self.console.render(
            web,
            request,
            "workflow_run.html",
            behaviour=behaviour,
            run=record,
            took=span(took) if took is not None else "-",
            nodes=nodes,
            tree=trace_tree(record, nodes),
            graph=graph_elements(record, graph),
            node_statuses=NODE_STATUSES,
            timers=answer.data.get("timers") or [],
            parked=answer.data.get("parked"),
        )

    async def cancel(self, web: Any, request: Any) -> Any:
        """``POST /console/workflows/cancel`` (``behaviour``, ``run_id``, ``reason``): cancel a
        running run."""
        form = self.console.form(request)
        try:
            behaviour = behaviour_field(
                self.console, text_field(form.get("behaviour"), "behaviour"), "workflows"
            )
            run_id = text_field(form.get("run_id"), "run id")
            reason = text_field(form.get("reason"), "reason", required=False).strip() or None
            record, _ = await self.record(behaviour, run_id)
            if record.done:
                raise Invalid(409, f"run {run_id} has ended ({record.status}): nothing to cancel")
            await self.console.in_thread(_cancel, self.console.settings, behaviour, run_id, reason)
        except Invalid as problem:
            return self.result(web, request, False, problem.message, problem.status)
        except StreamAppError as exc:
            return self.result(web, request, False, f"the cancel was not sent: {exc}", 502)
        return self.result(
            web,
            request,
            True,
            f"the cancel of run {run_id} is durable: its pending nodes become cancelled and "
            "the run ends cancelled. Reload the page to see it.",
        )
