"""Workflows drawn as graphs: Mermaid flowcharts and Graphviz DOT (pure text, no renderer).

Two graphs are drawn the same way: a workflow *definition* (node types, and edges for actions,
forks, joins and error edges) and a *run* (its nodes with their status and attempts, and an
edge from each node to the nodes derived from it). :class:`Graph` holds either; its
:meth:`Graph.to_mermaid` and :meth:`Graph.to_dot` write it out. Shapes and edge styles tell the
kinds apart, so a reader of either output sees the same thing:

- node kinds: ``root``, ``final``, ``type`` (definition); the node statuses (run);
- edge styles: ``action`` (solid), ``fork`` (thick), ``join`` (dotted, into the join node),
  ``error`` (dashed).
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.core.workflows import Node, RunRecord

__all__ = ["Graph", "GraphEdge", "GraphNode", "run_graph"]

_MERMAID_ARROWS = {"action": "-->", "fork": "==>", "join": "-.->", "error": "-.->"}
_DOT_STYLES = {"action": "solid", "fork": "bold", "join": "dotted", "error": "dashed"}
_DOT_SHAPES = {"root": "house", "final": "doublecircle", "failed": "octagon"}


@dataclass(frozen=True, slots=True)
class GraphNode:
    """A vertex: a node type, or a node of a run.

    Attributes:
        key: Unique in the graph (the type's name, or the node's id).
        label: The text shown.
        kind: ``root``, ``final`` or ``type`` for a type; the node's status for a run's node.
    """

    key: str
    label: str
    kind: str


@dataclass(frozen=True, slots=True)
class GraphEdge:
    """An edge between the vertices keyed ``source`` and ``target``.

    Attributes:
        source: Key of the source vertex.
        target: Key of the target vertex.
        label: The action (or ``join``, ``error``).
        style: ``action``, ``fork``, ``join`` or ``error``.
    """

    source: str
    target: str
    label: str
    style: str


@dataclass(frozen=True, slots=True)
class Graph:
    """A workflow or a run as vertices and edges, in a stable order.

    Attributes:
        name: The graph's title (the workflow's name, or ``<workflow> <run_id>``).
        nodes: The vertices.
        edges: The edges.
    """

    name: str
    nodes: list[GraphNode]
    edges: list[GraphEdge]

    def to_mermaid(self) -> str:
        """A Mermaid ``flowchart TD``; vertex ids are ``n0``, ``n1``, ... in vertex order."""
        ids = {node.key: f"n{i}" for i, node in enumerate(self.nodes)}
        lines = ["flowchart TD", f"  %% {self.name}"]
        for node in self.nodes:
            text = _quote(node.label if node.kind == "type" else f"{node.label}<br/>{node.kind}")
            opening, closing = ("([", "])") if node.kind in ("root", "final") else ("[", "]")
            lines.append(f"  {ids[node.key]}{opening}{text}{closing}")
        for edge in self.edges:
            arrow = _MERMAID_ARROWS.get(edge.style, "-->")
            lines.append(f"  {ids[edge.source]} {arrow}|{_quote(edge.label)}| {ids[edge.target]}")
        for node in self.nodes:
            if node.kind in ("failed", "cancelled"):
                lines.append(f"  class {ids[node.key]} {node.kind}")
        lines.append("  classDef failed stroke:#c00,stroke-width:2px")
        lines.append("  classDef cancelled stroke-dasharray:4")
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        """A Graphviz ``digraph``; vertices keep their keys as ids."""
        lines = [f"digraph {_quote(self.name)} {{", "  rankdir=TB;"]
        for node in self.nodes:
            label = node.label if node.kind == "type" else f"{node.label}\n{node.kind}"
            shape = _DOT_SHAPES.get(node.kind, "box")
            lines.append(f"  {_quote(node.key)} [label={_quote(label)}, shape={shape}];")
        for edge in self.edges:
            style = _DOT_STYLES.get(edge.style, "solid")
            lines.append(
                f"  {_quote(edge.source)} -> {_quote(edge.target)} "
                f"[label={_quote(edge.label)}, style={style}];"
            )
        lines.append("}")
        return "\n".join(lines) + "\n"


def run_graph(record: RunRecord) -> Graph:
    """A run as a graph: each node with its type, status and attempts; edges to successors."""
    ordered = sorted(record.nodes.values(), key=lambda node: (len(node.trace), node.id))
    nodes = [GraphNode(node.id, _run_label(node), node.status.value) for node in ordered]
    edges: list[GraphEdge] = []
    joins = {group.joined for group in record.groups.values() if group.joined is not None}
    for node in ordered:
        if node.predecessor_id is None or node.predecessor_id not in record.nodes:
            continue
        if node.id in joins:
            edges.extend(
                GraphEdge(end, node.id, "join", "join") for end in _join_sources(record, node)
            )
        elif record.nodes[node.predecessor_id].status.value == "failed":
            edges.append(GraphEdge(node.predecessor_id, node.id, "error", "error"))
        else:
            style = "fork" if node.fork == node.id else "action"
            edges.append(GraphEdge(node.predecessor_id, node.id, node.name, style))
    return Graph(f"{record.workflow} {record.run_id}", nodes, edges)


def _run_label(node: Node) -> str:
    attempts = f" x{node.attempts}" if node.attempts > 1 else ""
    return f"{node.name} {node.id[:8]}{attempts}"


def _join_sources(record: RunRecord, join: Node) -> list[str]:
    """The end nodes of the forks a join waited for (or its opener, if a fork left none)."""
    sources: list[str] = []
    for token in join.joins:
        branch = record.fork_nodes(token)
        traced = {node_id for node in branch for node_id in node.trace}
        sources.extend(node.id for node in branch if node.id not in traced)
    return sources or [join.predecessor_id or ""]


def _quote(text: str) -> str:
    """``text`` as a double-quoted Mermaid or DOT string (line breaks as DOT's ``\\n``)."""
    escaped = text.replace("\\", "\\\\").replace('"', "'").replace("\n", "\\n")
    return f'"{escaped}"'
