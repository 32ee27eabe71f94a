"""Nodes, tasks and records: deterministic ids and times, derive, serialization."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from stream_app.api.workflows import EdgeContext, Workflow
from stream_app.core.workflows import (
    Node,
    NodeStatus,
    RunRecord,
    Task,
    _StoredNode,
    _TraceMemo,
    iso_utc,
)
from stream_app.engine.workflows import LocalEngine
from stream_app.examples.workflows import sources

AT = datetime(2026, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)


def root(run_id: str = "run-1") -> Node:
    return Node.create("wf", run_id, "stage1", {"input": 3}, at=AT)


def test_the_root_id_comes_from_the_run_id_alone() -> None:
    assert root().id == root().id
    assert root("run-2").id != root().id
    assert Node.create("wf", "run-1", "other", {}, at=AT + timedelta(days=1)).id == root().id


def test_a_successor_id_comes_from_run_predecessor_action_and_index() -> None:
    node = root()
    first = node.derive("stage2", index=0, action="go", at=AT)
    assert node.derive("stage2", index=0, action="go", at=AT + timedelta(hours=1)).id == first.id
    assert node.derive("stage2", index=1, action="go", at=AT).id != first.id
    assert node.derive("stage2", index=0, action="other", at=AT).id != first.id
    assert root("run-2").derive("stage2", index=0, action="go", at=AT).id != first.id


def test_derive_infers_the_shared_attributes() -> None:
    node = root().model_copy(update={"fork": "f1", "status": NodeStatus.PROCESSED})
    later = AT + timedelta(seconds=5)
    successor = node.derive("stage2", index=0, action="go", at=later, payload={"a": 1})

    assert (successor.workflow, successor.run_id) == ("wf", "run-1")
    assert successor.predecessor_id == node.id
    assert successor.trace == (node.id,)
    assert successor.fork == "f1"
    assert successor.status is NodeStatus.PENDING
    assert successor.created_at == iso_utc(later)
    assert successor.payload == {"a": 1}
    assert successor.derive("x", index=0, action="go", at=AT).trace == (node.id, successor.id)


def test_derive_copies_the_payload_when_none_is_given_and_takes_overrides() -> None:
    node = root()
    successor = node.derive("stage2", index=0, action="go", at=AT, fork=None, joins=("t",))
    assert successor.payload == {"input": 3}
    assert successor.payload is not node.payload
    assert successor.joins == ("t",)


@pytest.mark.parametrize("attribute", ["id", "run_id", "trace", "predecessor_id", "created_at"])
def test_derive_refuses_to_override_an_inferred_attribute(attribute: str) -> None:
    with pytest.raises(ValueError, match=attribute):
        root().derive("stage2", index=0, action="go", at=AT, **{attribute: "x"})


def test_a_node_is_immutable() -> None:
    with pytest.raises(ValidationError):
        root().name = "other"  # type: ignore[misc]


def test_serialize_and_deserialize_round_trip() -> None:
    node = root().derive("stage2", index=2, action="go", at=AT, payload={"a": [1, {"b": None}]})
    data = node.serialize()
    assert isinstance(data, bytes)
    assert Node.deserialize(data) == node
    assert Node.deserialize(data.decode()) == node


def test_created_at_is_utc_iso_8601_whatever_the_zone_given() -> None:
    paris = datetime(2026, 3, 4, 6, 6, 7, 890_000, tzinfo=timezone(timedelta(hours=1)))
    node = Node.create("wf", "run-1", "stage1", {}, at=paris)
    assert node.created_at == "2026-03-04T05:06:07.890+00:00"
    assert datetime.fromisoformat(node.created_at) == paris


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Node.create("wf", "run-1", "stage1", {}, at=datetime(2026, 1, 1))


def test_a_task_key_names_run_node_and_attempt() -> None:
    node = root()
    task = Task(workflow="wf", run_id="run-1", node=node, attempt=2)
    assert task.key == f"run-1/{node.id}/2"
    with pytest.raises(ValidationError):
        Task(workflow="wf", run_id="run-1", node=node, attempt=0)


def test_a_stored_run_leaves_out_the_traces_it_can_rebuild() -> None:
    wf = Workflow("long", root="step")
    wf.node("step")
    wf.node("done", final=True)

    @wf.action("step", to=["step", "done"])
    def next_step(node: Node, ctx: EdgeContext) -> None:
        ctx.derive(
            "step" if node.payload["n"] < 299 else "done", payload={"n": node.payload["n"] + 1}
        )

    record = LocalEngine(wf.validate()).run({"n": 0}, run_id="run-1")
    data = record.model_dump_json()

    assert len(record.nodes) == 301
    assert data.count('"trace"') == 0
    assert len(data) < 400 * len(record.nodes)
    assert RunRecord.model_validate_json(data) == record
    (done,) = record.finals()
    assert len(done.trace) == 300
    full = record.model_dump_json(context={"full_traces": True})
    assert full.count('"trace"') == 301
    assert RunRecord.model_validate_json(full) == record


def test_a_stored_run_keeps_the_traces_of_its_join_nodes() -> None:
    record = LocalEngine(sources).run({"topic": "t"}, run_id="run-1")
    data = json.loads(record.model_dump_json())
    traced = [node["name"] for node in data["nodes"].values() if "trace" in node]
    assert traced == ["gathered"]
    assert RunRecord.model_validate(data) == record


def chain_record(length: int) -> RunRecord:
    """A run of ``length`` nodes in a row, the last one final."""
    wf = Workflow("row", root="step")
    wf.node("step")
    wf.node("done", final=True)

    @wf.action("step", to=["step", "done"])
    def next_step(node: Node, ctx: EdgeContext) -> None:
        last = node.payload["n"] + 2 >= length
        ctx.derive("done" if last else "step", payload={"n": node.payload["n"] + 1})

    return LocalEngine(wf.validate()).run({"n": 0}, run_id="run-1")


def test_a_record_read_again_rebuilds_the_same_traces() -> None:
    record = chain_record(50)
    data = record.model_dump_json()

    first = RunRecord.model_validate_json(data)
    second = RunRecord.model_validate_json(data)

    assert first == second == record
    assert RunRecord.model_validate_json(second.model_dump_json()) == record


def test_a_stored_trace_that_differs_is_the_one_its_successors_build_on() -> None:
    record = chain_record(5)
    RunRecord.model_validate_json(record.model_dump_json())  # traces rebuilt once
    doc = json.loads(record.model_dump_json())
    nodes = list(record.nodes.values())
    doc["nodes"][nodes[1].id]["trace"] = ["elsewhere"]

    read = RunRecord.model_validate_json(json.dumps(doc))

    assert read.nodes[nodes[1].id].trace == ("elsewhere",)
    assert read.nodes[nodes[2].id].trace == ("elsewhere", nodes[1].id)
    assert read.nodes[nodes[4].id].trace == ("elsewhere", *(n.id for n in nodes[1:4]))


def test_reading_a_record_of_nodes_leaves_the_nodes_as_they_were() -> None:
    first = root()
    second = Node(
        workflow="wf",
        run_id="run-1",
        id="n2",
        predecessor_id=first.id,
        name="stage2",
        created_at=iso_utc(AT),
    )

    read = RunRecord(
        workflow="wf", run_id="run-1", nodes={first.id: first, "n2": second}, started_at="t"
    )

    assert read.nodes["n2"].trace == (first.id,)
    assert second.trace == ()


def test_the_trace_memo_holds_no_more_than_its_capacity() -> None:
    record = chain_record(60)
    compact = json.loads(record.model_dump_json())["nodes"]
    memo = _TraceMemo(capacity=400)

    for _ in range(2):
        nodes = {key: Node.model_validate(raw) for key, raw in compact.items()}
        memo.rebuild(nodes, {key for key, node in nodes.items() if node.predecessor_id}, fresh=True)

        assert {key: node.trace for key, node in nodes.items()} == {
            key: node.trace for key, node in record.nodes.items()
        }
        assert 0 < memo.references <= 400


def test_a_stored_node_has_the_fields_of_a_node_in_their_order() -> None:
    assert list(_StoredNode.__annotations__) == list(Node.model_fields)
