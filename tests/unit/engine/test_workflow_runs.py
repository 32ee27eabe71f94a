"""The Kafka engine of workflows on fake ports: a run's cell, its tasks, results and retries.

A :class:`Harness` runs the :class:`WorkflowBehaviour` in a real :class:`CellEngine` with fake
tables and units of work; the tests play the workers' part (take the tasks the run's commits
produced, execute them, feed the results back), so every step of the protocol in
:mod:`stream_app.engine.workflow_runs` is checked without a broker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from stream_app import (
    ConfigError,
    EdgeContext,
    LocalEngine,
    Node,
    NodeStatus,
    RetryPolicy,
    RunEnded,
    RunRecord,
    RunStatus,
    Workflow,
    WorkflowBehaviour,
)
from stream_app.core.partitioner import partition_for
from stream_app.core.workflows import Task, TaskResult
from stream_app.engine.ports import ManualClock
from stream_app.engine.reactor import ReactorRecord
from stream_app.engine.workflow_runs import TaskRunner
from tests.unit.engine.fakes import APP, PARTITIONS, Harness

TASKS = f"{APP}.runs.tasks"
DONE = f"{APP}.runs.done"
START_MS = 1_800_000_000_000


class Number(BaseModel):
    """A payload."""

    n: int


def linear() -> Workflow:
    wf = Workflow("linear", root="a")
    wf.node("a", payload=Number)
    wf.node("b", payload=Number)
    wf.node("c", payload=Number, final=True)

    @wf.action("a", to=["b"])
    def ab(node: Node, ctx: EdgeContext) -> None:
        ctx.derive("b", payload={"n": node.payload["n"] + 1})

    @wf.action("b", to=["c"])
    def bc(node: Node, ctx: EdgeContext) -> None:
        ctx.derive("c", payload={"n": node.payload["n"] * 10})

    return wf


def fan(width: int = 3) -> Workflow:
    wf = Workflow("fan", root="start")
    wf.node("start", payload=Number)
    wf.node("part", payload=Number)
    wf.node("joined")
    wf.node("total", payload=Number, final=True)
    wf.join("joined", forks_of="start")

    @wf.action("start", to=["part"], fork=True)
    def split(node: Node, ctx: EdgeContext) -> None:
        for i in range(width):
            ctx.derive("part", payload={"n": node.payload["n"] + i})

    @wf.action("joined", to=["total"])
    def add(node: Node, ctx: EdgeContext) -> None:
        ctx.derive("total", payload={"n": sum(f["n"] for f in node.payload["forks"])})

    return wf


class Flaky:
    """An action that fails its first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, node: Node, ctx: EdgeContext) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"flaky call {self.calls}")
        ctx.derive("done", payload=node.payload)


def flaky(failures: int, *, attempts: int = 3, error_edge: bool = False) -> Workflow:
    wf = Workflow("flaky", root="work")
    policy = RetryPolicy(attempts=attempts, backoff_s=2.0, max_backoff_s=2.0, jitter=0)
    wf.node("work", payload=Number, retry=policy, error_edge="rescue" if error_edge else None)
    wf.node("done", payload=Number, final=True)
    wf.action("work", to=["done"], name="work")(Flaky(failures))
    if error_edge:
        wf.node("rescue")
        wf.node("rescued", final=True)

        @wf.action("rescue", to=["rescued"])
        def rescue(node: Node, ctx: EdgeContext) -> None:
            ctx.derive("rescued", payload={"error": node.payload["error"]})

    return wf


class Cluster:
    """A run's cell in a harness, and the tests as its workers."""

    def __init__(self, *workflows: Workflow) -> None:
        self.behaviour = WorkflowBehaviour("runs", workflows=list(workflows))
        self.behaviour.bind(tasks_topic=TASKS, done_topic=DONE)
        self.clock = ManualClock(START_MS)
        self.harness = Harness(self.behaviour, clock=self.clock)
        self.taken = 0

    def start(self, run_id: str, workflow: str, payload: dict[str, object]) -> None:
        self.harness.feed(
            self.harness.record(run_id, "start", {"workflow": workflow, "payload": payload})
        )

    def new_tasks(self) -> list[Task]:
        produced = self.harness.outputs(TASKS)
        fresh, self.taken = produced[self.taken :], len(produced)
        for record in fresh:
            task = Task.model_validate_json(record.value or b"")
            assert record.key == task.node.id.encode()
            assert record.partition == partition_for(record.key, PARTITIONS)
        return [Task.model_validate_json(r.value or b"") for r in fresh]

    def execute(self, task: Task) -> TaskResult:
        workflow = self.behaviour.workflow(task.workflow)
        return workflow.execute(task, at=datetime.fromtimestamp(START_MS / 1000, UTC))

    def deliver(self, result: TaskResult) -> None:
        self.harness.feed(self.harness.record(result.run_id, "result", result.model_dump()))

    def work(self) -> list[TaskResult]:
        """Execute every task produced so far, and those they lead to, in order."""
        results = []
        while tasks := self.new_tasks():
            for task in tasks:
                result = self.execute(task)
                results.append(result)
                self.deliver(result)
        return results

    def record(self, run_id: str) -> RunRecord:
        data = self.harness.data(run_id)
        assert data is not None, f"no run {run_id}"
        return RunRecord.model_validate(data)

    def ended(self) -> list[RunEnded]:
        return [RunEnded.model_validate_json(r.value or b"") for r in self.harness.outputs(DONE)]

    def letters(self) -> list[tuple[str, str]]:
        return [(d["reason"], d["error"]) for d in self.harness.dead_letters.letters]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    yield Cluster(linear(), fan())


def test_a_linear_run_goes_from_its_root_to_its_final_node(cluster: Cluster) -> None:
    cluster.start("r1", "linear", {"n": 1})
    [root_task] = cluster.new_tasks()
    assert (root_task.node.name, root_task.attempt) == ("a", 1)
    cluster.deliver(cluster.execute(root_task))
    cluster.work()
    record = cluster.record("r1")
    assert record.status is RunStatus.SUCCEEDED
    [final] = record.finals()
    assert (final.name, final.payload) == ("c", {"n": 20})
    assert [record.nodes[i].name for i in final.trace] == ["a", "b"]
    [ended] = cluster.ended()
    assert (ended.run_id, ended.status, ended.nodes) == ("r1", RunStatus.SUCCEEDED, 3)
    assert ended.finals == (final,)
    [done] = cluster.harness.outputs(DONE)
    assert (done.key, done.partition) == (b"r1", partition_for(b"r1", PARTITIONS))


def test_the_kafka_engine_stores_what_the_local_engine_does(cluster: Cluster) -> None:
    cluster.start("r2", "fan", {"n": 5})
    cluster.work()
    local = LocalEngine(fan()).run({"n": 5}, run_id="r2")

    def shape(record: RunRecord) -> list[tuple[str, str, tuple[str, ...], object]]:
        return sorted((n.id, n.status.value, n.trace, n.payload) for n in record.nodes.values())

    assert shape(cluster.record("r2")) == shape(local)


def test_a_result_delivered_twice_neither_fires_a_join_twice_nor_adds_a_node(
    cluster: Cluster,
) -> None:
    cluster.start("r3", "fan", {"n": 0})
    [root] = cluster.new_tasks()
    cluster.deliver(cluster.execute(root))
    parts = cluster.new_tasks()
    assert [t.node.name for t in parts] == ["part"] * 3
    results = [cluster.execute(t) for t in parts]
    for result in [results[2], results[0], results[2], results[1], results[0], results[1]]:
        cluster.deliver(result)
    [join_task] = cluster.new_tasks()
    assert join_task.node.name == "joined"
    before = cluster.record("r3")
    for result in results:
        cluster.deliver(result)
    assert cluster.new_tasks() == [], "no task for a result already applied"
    assert cluster.record("r3") == before
    cluster.deliver(cluster.execute(join_task))
    cluster.work()
    cluster.deliver(results[0])
    record = cluster.record("r3")
    assert [n.name for n in record.nodes.values()].count("joined") == 1
    assert [n.payload for n in record.finals()] == [{"n": 3}]
    assert len(cluster.ended()) == 1, "the end is announced once"


def test_a_failed_attempt_is_retried_by_a_durable_timer_of_the_run() -> None:
    cluster = Cluster(flaky(1))
    cluster.start("r4", "flaky", {"n": 7})
    [first] = cluster.new_tasks()
    failed = cluster.execute(first)
    assert not failed.ok and "flaky call 1" in (failed.error or "")
    cluster.deliver(failed)
    assert cluster.new_tasks() == [], "the retry waits for its timer"
    [timer] = cluster.harness.engine.describe("r4")["timers"]
    assert timer["name"] == f"retry:{first.node.id}"
    assert timer["due_ms"] == START_MS + 2000
    assert cluster.harness.parked_items("r4") == [], "a failing action never parks the run"
    cluster.harness.wake("r4")
    assert cluster.new_tasks() == [], "not due yet"
    cluster.clock.move_to(START_MS + 2000)
    cluster.harness.wake("r4")
    [second] = cluster.new_tasks()
    assert (second.node.id, second.attempt) == (first.node.id, 2)
    cluster.deliver(cluster.execute(second))
    cluster.work()
    record = cluster.record("r4")
    assert record.status is RunStatus.SUCCEEDED
    assert [(n.name, n.payload) for n in record.finals()] == [("done", {"n": 7})]
    assert cluster.harness.engine.describe("r4")["timers"] == []


def exhaust(cluster: Cluster, run_id: str) -> None:
    """Fail every attempt of the run's ``work`` node, firing each retry."""
    cluster.start(run_id, "flaky", {"n": 1})
    while tasks := cluster.new_tasks():
        for task in tasks:
            cluster.deliver(cluster.execute(task))
        cluster.clock.move_to(cluster.clock.now_ms() + 2000)
        cluster.harness.wake(run_id)


def test_exhausted_attempts_fail_the_run_without_an_error_edge() -> None:
    cluster = Cluster(flaky(5, attempts=2))
    exhaust(cluster, "r5")
    record = cluster.record("r5")
    assert record.status is RunStatus.FAILED
    [work] = [n for n in record.nodes.values() if n.name == "work"]
    assert work.status is NodeStatus.FAILED and "flaky call 2" in (work.message or "")
    [ended] = cluster.ended()
    assert ended.status is RunStatus.FAILED and ended.finals == ()


def test_exhausted_attempts_take_the_error_edge() -> None:
    cluster = Cluster(flaky(5, attempts=2, error_edge=True))
    exhaust(cluster, "r6")
    record = cluster.record("r6")
    assert record.status is RunStatus.SUCCEEDED
    [rescued] = record.finals()
    assert rescued.name == "rescued" and "flaky call 2" in rescued.payload["error"]
    assert [record.nodes[i].name for i in rescued.trace] == ["work", "rescue"]


def test_a_cancel_drops_the_pending_retry_and_ends_the_run() -> None:
    cluster = Cluster(flaky(5))
    cluster.start("r7", "flaky", {"n": 1})
    [task] = cluster.new_tasks()
    cluster.deliver(cluster.execute(task))
    assert len(cluster.harness.engine.describe("r7")["timers"]) == 1
    cluster.harness.feed(cluster.harness.record("r7", "cancel", {"reason": "no longer needed"}))
    record = cluster.record("r7")
    assert record.status is RunStatus.CANCELLED
    assert record.message == "cancelled: no longer needed"
    assert cluster.harness.engine.describe("r7")["timers"] == []
    [ended] = cluster.ended()
    assert ended.status is RunStatus.CANCELLED
    cluster.harness.feed(cluster.harness.record("r7", "cancel", {}))
    assert len(cluster.ended()) == 1, "a second cancel changes nothing"


def test_messages_that_can_never_apply_are_dead_lettered_with_their_reason(
    cluster: Cluster,
) -> None:
    cluster.start("x1", "nope", {})
    cluster.start("x2", "linear", {"n": "one"})
    cluster.harness.feed(cluster.harness.record("x3", "cancel", {}))
    stray = TaskResult(run_id="x4", node_id="n", attempt=1, ok=True)
    cluster.deliver(stray)
    cluster.start("x5", "linear", {"n": 1})
    cluster.start("x5", "fan", {"n": 1})
    cluster.start("x5", "linear", {"n": 1})
    letters = cluster.letters()
    assert [reason for reason, _ in letters] == [
        "unknown-workflow",
        "workflow-input",
        "unknown-run",
        "unknown-run",
        "run-exists",
    ]
    assert "'nope'" in letters[0][1] and "fan, linear" in letters[0][1]
    assert "n" in letters[1][1] and "root node type 'a'" in letters[1][1]
    assert [t.node.name for t in cluster.new_tasks()] == ["a"], "a repeated start is ignored"
    assert cluster.harness.data("x1") is None and cluster.harness.data("x2") is None


def test_the_task_runner_executes_at_the_records_time_and_sends_the_result() -> None:
    behaviour = WorkflowBehaviour("runs", workflows=[linear()])
    sent: list[tuple[str, bytes]] = []

    async def send(run_id: str, envelope: bytes) -> None:
        sent.append((run_id, envelope))

    root = Node.create("linear", "r8", "a", {"n": 2}, at=datetime(2030, 1, 1, tzinfo=UTC))
    task = Task(workflow="linear", run_id="r8", node=root, attempt=1)
    record = ReactorRecord(
        topic=TASKS,
        partition=0,
        offset=3,
        key=root.id.encode(),
        value=task.model_dump_json().encode(),
        headers=(),
        timestamp_ms=START_MS,
    )
    runner = TaskRunner(behaviour, send, max_result_bytes=4096)
    asyncio.run(runner(record))
    asyncio.run(runner(record))
    [(run_id, first), (_, again)] = sent
    assert run_id == "r8"
    envelope = json.loads(first)
    assert (envelope["type"], envelope["id"]) == ("result", task.key)
    result = TaskResult.model_validate(envelope["body"])
    [successor] = result.successors
    assert successor.created_at == datetime.fromtimestamp(START_MS / 1000, UTC).isoformat(
        timespec="milliseconds"
    )
    assert TaskResult.model_validate(json.loads(again)["body"]).without_timing() == (
        result.without_timing()
    ), "a task run again derives the same successors"


def test_an_unbound_behaviour_says_how_to_register_it() -> None:
    behaviour = WorkflowBehaviour("runs", workflows=[linear()])
    with pytest.raises(ConfigError, match=r"runtime\.workflows"):
        _ = behaviour.tasks_topic


def test_two_workflows_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="two workflows named 'linear'"):
        WorkflowBehaviour("runs", workflows=[linear(), linear()])


def test_a_run_whose_record_would_outgrow_the_limit_fails_with_the_record_it_had() -> None:
    cluster = Cluster(linear())
    small = len(
        LocalEngine(linear()).run({"n": 1}, run_id="r9").model_dump_json()
    )  # the whole run's record
    cluster.behaviour.max_run_bytes = small - 200
    cluster.start("r9", "linear", {"n": 1})
    cluster.work()
    record = cluster.record("r9")
    assert record.status is RunStatus.FAILED
    assert "over the" in (record.message or "") and "max_run_bytes" in (record.message or "")
    assert len(record.model_dump_json()) <= cluster.behaviour.max_run_bytes
    assert record.finals() == []
    [ended] = cluster.ended()
    assert ended.status is RunStatus.FAILED
    cluster.behaviour.max_run_bytes = 10
    cluster.start("r10", "linear", {"n": 1})
    assert cluster.letters()[-1][0] == "workflow-input"
    assert cluster.harness.data("r10") is None


def test_a_result_too_big_for_the_runs_input_is_sent_as_a_failed_attempt() -> None:
    behaviour = WorkflowBehaviour("runs", workflows=[linear()])
    sent: list[bytes] = []

    async def send(run_id: str, envelope: bytes) -> None:
        sent.append(envelope)

    root = Node.create("linear", "r11", "a", {"n": 2}, at=datetime(2030, 1, 1, tzinfo=UTC))
    task = Task(workflow="linear", run_id="r11", node=root, attempt=2)
    record = ReactorRecord(
        topic=TASKS,
        partition=0,
        offset=0,
        key=root.id.encode(),
        value=task.model_dump_json().encode(),
        headers=(),
        timestamp_ms=START_MS,
    )
    asyncio.run(TaskRunner(behaviour, send, max_result_bytes=200)(record))
    [envelope] = sent
    assert len(envelope) <= 400
    result = TaskResult.model_validate(json.loads(envelope)["body"])
    assert (result.node_id, result.attempt, result.ok, result.successors) == (
        root.id,
        2,
        False,
        (),
    )
    assert "over the 200 a run's input accepts" in (result.error or "")
