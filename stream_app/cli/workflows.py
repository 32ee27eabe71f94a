"""``stream-app workflows run|cancel|trace|list|graph``: start and inspect workflow runs.

``run`` and ``cancel`` produce to the workflow behaviour's input topic with
:class:`~stream_app.clients.workflows.WorkflowClient` (``run`` waits for the run to end on the
behaviour's done topic unless ``--background``). ``trace`` and ``list`` ask a worker's
workflow views (any worker: it routes a run to its owner and gathers the runs from every
worker). ``graph`` draws a workflow definition found in an app module (``--app``), or a run as
its owner holds it (``--run``), as Mermaid or Graphviz DOT.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from stream_app.cli.common import (
    current_settings,
    expect_ok,
    import_app,
    json_object,
    json_output_option,
    quote,
    timeout_option,
    url_option,
    worker_get,
)
from stream_app.errors import RunFailedError, WorkflowInputError

if TYPE_CHECKING:
    from stream_app.api.workflows import Workflow
    from stream_app.core.workflows import Node, RunRecord

__all__ = ["find_workflows", "format_trace", "workflows"]


def find_workflows(module_name: str) -> dict[str, Workflow]:
    """The workflow definitions of the app module ``module_name``, by name: its
    :class:`~stream_app.api.workflows.Workflow` values and those of its workflow behaviours.

    Raises:
        click.ClickException: The module cannot be imported.
    """
    from stream_app.api.workflows import Workflow
    from stream_app.engine.workflow_runs import WorkflowBehaviour

    found: dict[str, Workflow] = {}
    for value in vars(import_app(module_name)).values():
        if isinstance(value, Workflow):
            found.setdefault(value.name, value)
        elif isinstance(value, WorkflowBehaviour):
            for workflow in value.workflows.values():
                found.setdefault(workflow.name, workflow)
    return found


def _ms_between(start: str, end: str) -> int:
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return round(delta.total_seconds() * 1000)


def format_trace(record: RunRecord) -> list[str]:
    """A run as a tree: a header line, then one line per node under the node it was derived
    from (a join node under the node that opened its forks), with its status, attempts, its
    creation time after the run's start (``+ms``) and, for a failed node, why."""
    header = f"run {record.run_id}  {record.workflow}  {record.status.value}"
    if record.finished_at is not None:
        header += f"  {_ms_between(record.started_at, record.finished_at)}ms"
    if record.message:
        header += f"  ({record.message})"
    children: dict[str | None, list[Node]] = {}
    for node in record.nodes.values():
        parent = node.predecessor_id if node.predecessor_id in record.nodes else None
        children.setdefault(parent, []).append(node)
    for siblings in children.values():
        siblings.sort(key=lambda n: (bool(n.joins), n.created_at, n.id))
    lines = [header]

    def walk(parent: str | None, prefix: str) -> None:
        kids = children.get(parent, [])
        for index, node in enumerate(kids):
            last = index == len(kids) - 1
            line = (
                f"{prefix}{'└── ' if last else '├── '}{node.name}  {node.id[:12]}  "
                f"{node.status.value}  attempts={node.attempts}  "
                f"+{_ms_between(record.started_at, node.created_at)}ms"
            )
            if node.fork == node.id:
                line += "  fork"
            if node.joins:
                line += f"  joins={len(node.joins)}"
            if node.message:
                line += f"  message={node.message!r}"
            lines.append(line)
            walk(node.id, prefix + ("    " if last else "│   "))

    walk(None, "")
    return lines


def _finals(finals: list[Node]) -> list[str]:
    return [
        json.dumps({"name": n.name, "id": n.id, "payload": n.payload}, sort_keys=True)
        for n in finals
    ]


def _run_record(behaviour: str, run_id: str, url: str | None, timeout: float) -> RunRecord:
    from stream_app.core.workflows import RunRecord

    base = url or current_settings().web_url
    path = f"/stream-app/workflows/{quote(behaviour)}/{quote(run_id)}/"
    status, body = worker_get(base, path, timeout=timeout)
    if status == 404 and isinstance(body, dict) and "run" in body:
        raise click.ClickException(f"no run {run_id} in {behaviour} ({base})")
    described: dict[str, Any] = expect_ok(status, body, base + path, behaviour)
    return RunRecord.model_validate(described["run"])


@click.group()
def workflows() -> None:
    """Start, cancel, trace and draw workflow runs.

    run and cancel produce to the workflow behaviour's input topic (STREAM_APP_* settings);
    trace and list ask a worker's web views (--url); graph draws a definition or a run.
    """


@workflows.command()
@click.argument("behaviour")
@click.argument("workflow")
@click.option("--payload", callback=json_object, metavar="JSON", help="The root node's data.")
@click.option(
    "--app",
    "module",
    metavar="MODULE",
    help="The app module the workers run: the start is checked against its workflows first.",
)
@click.option("--run-id", help="The run's id (default: a fresh UUID).")
@click.option("--background", is_flag=True, help="Print the run id and return at once.")
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for the end."
)
def run(
    behaviour: str,
    workflow: str,
    payload: dict[str, Any] | None,
    module: str | None,
    run_id: str | None,
    background: bool,
    timeout: float,
) -> None:
    """Run WORKFLOW of the workflow BEHAVIOUR: print its run id, then (unless --background)
    wait for it to end and print its final nodes, one JSON object a line.

    Exits with status 1 when the run fails or is cancelled.
    """
    from stream_app.clients.workflows import WorkflowClient, check_start

    definitions = list(find_workflows(module).values()) if module else []
    if definitions:
        try:
            check_start(definitions, workflow, payload or {})
        except WorkflowInputError as exc:
            raise click.ClickException(f"refused, nothing sent: {exc}") from None
    ident = run_id or str(uuid.uuid4())
    with WorkflowClient(behaviour, current_settings()) as client:
        click.echo(ident)
        try:
            if background:
                client.start(workflow, payload, run_id=ident)
                return
            finals = client.run(workflow, payload, run_id=ident, timeout=timeout)
        except (RunFailedError, TimeoutError) as exc:
            raise click.ClickException(str(exc)) from None
    for line in _finals(finals):
        click.echo(line)


@workflows.command()
@click.argument("behaviour")
@click.argument("run_id")
@click.option("--reason", help="Why (kept as the run's message).")
def cancel(behaviour: str, run_id: str, reason: str | None) -> None:
    """Cancel RUN_ID of the workflow BEHAVIOUR: its pending nodes are cancelled."""
    from stream_app.clients.workflows import WorkflowClient

    with WorkflowClient(behaviour, current_settings()) as client:
        client.cancel(run_id, reason)
    click.echo(f"asked {behaviour}/{run_id} to cancel")


@workflows.command()
@click.argument("behaviour")
@click.argument("run_id")
@url_option
@timeout_option
@json_output_option
def trace(behaviour: str, run_id: str, url: str | None, timeout: float, as_json: bool) -> None:
    """Print RUN_ID of the workflow BEHAVIOUR as a tree: every node with its status, attempts
    and creation time after the run's start."""
    record = _run_record(behaviour, run_id, url, timeout)
    if as_json:
        click.echo(record.model_dump_json(indent=2))
        return
    for line in format_trace(record):
        click.echo(line)


@workflows.command(name="list")
@click.argument("behaviour")
@url_option
@timeout_option
@json_output_option
def list_runs(behaviour: str, url: str | None, timeout: float, as_json: bool) -> None:
    """List every run of the workflow BEHAVIOUR, gathered from every worker."""
    base = url or current_settings().web_url
    path = f"/stream-app/workflows/{quote(behaviour)}/"
    status, body = worker_get(base, path, timeout=timeout)
    found: dict[str, Any] = expect_ok(status, body, base + path, behaviour)
    if as_json:
        click.echo(json.dumps(found, indent=2, sort_keys=True))
        return
    if not found:
        click.echo(f"no run in {behaviour}")
    for run_id, entry in sorted(found.items(), key=lambda kv: str(kv[1]["started_at"])):
        click.echo(
            f"{run_id}  {entry['workflow']}  {entry['status']}  nodes={entry['nodes']}  "
            f"started={entry['started_at']}"
        )


@workflows.command()
@click.argument("name")
@click.option("--app", "module", metavar="MODULE", help="The app module defining the workflow.")
@click.option("--run", "run_id", metavar="RUN_ID", help="Draw this run of the behaviour NAME.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
)
@url_option
@timeout_option
def graph(
    name: str, module: str | None, run_id: str | None, fmt: str, url: str | None, timeout: float
) -> None:
    """Draw a workflow or a run as Mermaid or Graphviz DOT.

    ``graph WORKFLOW --app MODULE`` draws the definition (node types, actions, forks, joins,
    error edges); ``graph BEHAVIOUR --run RUN_ID`` draws a run's nodes with their statuses.
    """
    if run_id is not None:
        from stream_app.core.workflow_graph import run_graph

        drawn = run_graph(_run_record(name, run_id, url, timeout))
    else:
        if module is None:
            raise click.UsageError("give --app MODULE to draw a workflow, or --run RUN_ID")
        found = find_workflows(module)
        if name not in found:
            raise click.ClickException(
                f"{module} defines no workflow {name!r} (it defines {sorted(found)})"
            )
        drawn = found[name].graph()
    click.echo(drawn.to_mermaid() if fmt == "mermaid" else drawn.to_dot(), nl=False)
