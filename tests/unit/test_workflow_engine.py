"""The local engine, the graph exports and the examples' command line."""

from __future__ import annotations

import json
import re

import pytest

from stream_app.api.workflows import Workflow
from stream_app.core.workflow_graph import run_graph
from stream_app.core.workflows import RunStatus
from stream_app.engine.workflows import LocalEngine
from stream_app.errors import WorkflowInputError
from stream_app.examples import workflows as examples
from stream_app.examples.workflows import generic, sources
from stream_app.testing.workflows import Fan, Flaky, Shape, build_workflow, run_outcome


@pytest.mark.parametrize(
    ("workflow", "payload"), [(generic, {"input": 2}), (sources, {"topic": "t"})]
)
def test_sequential_and_threaded_runs_give_the_same_record(
    workflow: Workflow, payload: dict[str, object]
) -> None:
    sequential = LocalEngine(workflow).run(payload, run_id="r")
    threaded = LocalEngine(workflow).run(payload, run_id="r", parallel=3)
    assert sequential.status is RunStatus.SUCCEEDED
    assert run_outcome(threaded) == run_outcome(sequential)


def test_the_engine_waits_out_retry_pauses_with_its_sleep() -> None:
    shape = Shape(segments=[Fan(width=2, branch=[Flaky(failures=2, attempts=3)])])
    slept: list[float] = []
    record = LocalEngine(build_workflow(shape), sleep=slept.append).run({"v": 1}, run_id="r")
    assert record.status is RunStatus.SUCCEEDED
    assert slept and all(0 <= pause <= 0.05 for pause in slept)
    assert sorted(n.attempts for n in record.nodes.values() if n.name.startswith("x")) == [3, 3]
    threaded = LocalEngine(build_workflow(shape), sleep=slept.append).run(
        {"v": 1}, run_id="r", parallel=2
    )
    assert run_outcome(threaded) == run_outcome(record)


def test_a_run_gets_a_fresh_id_unless_given_one() -> None:
    engine = LocalEngine(generic)
    one, two = engine.run({"input": 1}), engine.run({"input": 1})
    assert one.run_id != two.run_id
    assert set(one.nodes).isdisjoint(two.nodes)


def test_bad_input_and_bad_parallelism_are_refused() -> None:
    with pytest.raises(WorkflowInputError):
        LocalEngine(generic).run({"input": "three"})
    with pytest.raises(ValueError, match="parallel"):
        LocalEngine(generic).run({"input": 3}, parallel=0)


def test_the_definition_graph_has_every_type_and_edge() -> None:
    mermaid = sources.to_mermaid()
    assert mermaid.startswith("flowchart TD\n")
    vertices = re.findall(r"^  (n\d+)[\[(]", mermaid, re.M)
    assert len(vertices) == len(sources.node_types) == 5
    assert '(["topic<br/>root"])' in mermaid
    assert '(["summary<br/>final"])' in mermaid
    assert mermaid.count(" ==>") == 1  # the fork
    assert mermaid.count(" -.->") == 1  # the join
    assert mermaid.count(" -->") == 2

    dot = sources.to_dot()
    assert dot.startswith('digraph "sources" {') and dot.rstrip().endswith("}")
    assert '"topic" -> "fetch" [label="open_sources", style=bold];' in dot
    assert '"topic" -> "gathered" [label="join", style=dotted];' in dot
    assert dot.count(" -> ") == 4


def test_the_run_graph_shows_every_node_with_its_status() -> None:
    record = LocalEngine(sources).run({"topic": "t"}, run_id="r")
    graph = run_graph(record)
    assert graph.nodes[0].key == next(
        n.id for n in record.nodes.values() if n.predecessor_id is None
    )
    assert len(graph.nodes) == len(record.nodes) == 9
    styles = sorted(edge.style for edge in graph.edges)
    assert styles == ["action"] * 4 + ["fork"] * 3 + ["join"] * 3
    fetched = {n.id for n in record.nodes.values() if n.name == "fetched"}
    assert {e.source for e in graph.edges if e.style == "join"} == fetched
    dot = graph.to_dot()
    assert dot.count("\\nprocessed") == 8 and dot.count("\\nfinal") == 1
    assert "shape=doublecircle" in dot
    assert graph.to_mermaid().count("<br/>processed") == 8


def test_the_examples_command_prints_both_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert examples.main(["local", "--input", "3", "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    decoder = json.JSONDecoder()
    reports, index = [], 0
    while index < len(out.rstrip()):
        report, index = decoder.raw_decode(out, index)
        reports.append(report)
        while index < len(out) and out[index].isspace():
            index += 1
    generic_run, sources_run = reports
    assert generic_run["status"] == "succeeded"
    assert generic_run["finals"] == [
        {"name": "output", "payload": {"c": 19}, "trace": ["stage1", "stage2", "stage3"]}
    ]
    (summary,) = sources_run["finals"]
    assert summary["payload"]["sources"] == ["archive", "news", "wiki"]
    assert summary["trace"][0] == "topic" and summary["trace"][-1] == "gathered"
