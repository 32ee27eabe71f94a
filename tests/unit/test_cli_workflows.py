"""``stream-app workflows``: the trace tree, graphs of definitions, refused starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from click.testing import CliRunner

from stream_app import LocalEngine, NodeStatus, WorkflowInputError
from stream_app.cli.main import cli
from stream_app.cli.workflows import format_trace
from stream_app.clients.workflows import check_start
from stream_app.examples.workflows import generic, sources

MODULE = "stream_app.examples.workflows"


def ticking() -> datetime:
    """A clock that moves 5 ms each time it is read."""
    return datetime(2030, 1, 1, tzinfo=UTC) + timedelta(milliseconds=5 * next(_ticks))


_ticks = count()


def test_a_trace_is_a_tree_of_nodes_with_status_attempts_and_times() -> None:
    record = LocalEngine(sources, clock=ticking).run({"topic": "kafka"}, run_id="run-1")
    lines = format_trace(record)
    assert lines[0].startswith("run run-1  sources  succeeded  ")
    assert lines[0].endswith("ms")
    names = [line.lstrip("│├└─ ").split("  ")[0] for line in lines[1:]]
    assert names == [
        "topic",
        "fetch",
        "fetched",
        "fetch",
        "fetched",
        "fetch",
        "fetched",
        "gathered",
        "summary",
    ], "forks under their opener, the join after them, each node under its predecessor"
    assert lines[1].startswith("└── topic  ") and "processed  attempts=1  +0ms" in lines[1]
    assert lines[2].startswith("    ├── fetch  ") and lines[2].endswith("fork")
    assert lines[3].startswith("    │   └── fetched  ")
    assert lines[8].startswith("    └── gathered  ") and lines[8].endswith("joins=3")
    assert lines[9].startswith("        └── summary  ") and "  final  " in lines[9]
    offsets = [int(line.split("+")[1].split("ms")[0]) for line in lines[1:]]
    assert offsets[0] == 0 and max(offsets) > 0, "creation times after the run's start"


def test_a_failed_node_shows_its_message() -> None:
    record = LocalEngine(generic, clock=ticking).run({"input": 1}, run_id="run-2")
    stage1 = next(n for n in record.nodes.values() if n.name == "stage1")
    broken = record.model_copy(
        update={
            "nodes": {
                **record.nodes,
                stage1.id: stage1.model_copy(
                    update={"status": NodeStatus.FAILED, "message": "boom"}
                ),
            }
        }
    )
    assert "stage1" in format_trace(broken)[1] and "failed" in format_trace(broken)[1]
    assert format_trace(broken)[1].endswith("message='boom'")


def test_graph_draws_a_definition_as_mermaid_or_dot() -> None:
    runner = CliRunner()
    mermaid = runner.invoke(cli, ["workflows", "graph", "sources", "--app", MODULE])
    assert mermaid.exit_code == 0, mermaid.output
    assert mermaid.output == sources.to_mermaid()
    dot = runner.invoke(cli, ["workflows", "graph", "generic", "--app", MODULE, "--format", "dot"])
    assert dot.exit_code == 0, dot.output
    assert dot.output == generic.to_dot()
    missing = runner.invoke(cli, ["workflows", "graph", "nope", "--app", MODULE])
    assert missing.exit_code == 1
    assert "defines no workflow 'nope'" in missing.output and "generic" in missing.output
    neither = runner.invoke(cli, ["workflows", "graph", "generic"])
    assert neither.exit_code == 2 and "--app MODULE" in neither.output


def test_run_refuses_a_start_the_workers_would_dead_letter_before_sending() -> None:
    runner = CliRunner()
    env = {"STREAM_APP_BOOTSTRAP_SERVERS": "127.0.0.1:9"}  # nothing listens: nothing is sent
    bad = runner.invoke(
        cli,
        ["workflows", "run", "jobs", "generic", "--payload", '{"input": "x"}', "--app", MODULE],
        env=env,
    )
    assert bad.exit_code == 1
    assert "refused, nothing sent" in bad.output and "input" in bad.output
    unknown = runner.invoke(cli, ["workflows", "run", "jobs", "nope", "--app", MODULE], env=env)
    assert unknown.exit_code == 1 and "unknown workflow 'nope'" in unknown.output


def test_check_start_names_the_known_workflows() -> None:
    check_start([generic, sources], "generic", {"input": 1})
    try:
        check_start([generic, sources], "other", {})
    except WorkflowInputError as exc:
        assert "known: generic, sources" in str(exc)
    else:
        raise AssertionError("an unknown workflow must be refused")
