"""The workflow DSL and the run state machine: what both engines rely on."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from stream_app.api.workflows import EdgeContext, Failure, Joined, RunState, Step, Workflow
from stream_app.core.retry import Exhausted, RetryPolicy
from stream_app.core.workflows import Node, NodeStatus, RunRecord, RunStatus, Task, TaskResult
from stream_app.engine.workflows import LocalEngine
from stream_app.errors import WorkflowDefinitionError, WorkflowInputError
from stream_app.examples.workflows import SOURCES, generic, sources

AT = datetime(2026, 1, 1, tzinfo=UTC)


def start(workflow: Workflow, payload: dict[str, object], run_id: str = "run-1") -> Step:
    record, tasks = RunState.start(workflow, run_id, payload, at=AT)
    return Step(record, tasks)


def apply(workflow: Workflow, record: RunRecord, result: TaskResult) -> Step:
    return RunState.apply(workflow, record, result, at=AT)


def run_to_end(workflow: Workflow, step: Step) -> Step:
    """Execute every task and retry in order (delays skipped), applying each result once."""
    queue = list(step.tasks)
    while queue:
        task = queue.pop(0)
        step = apply(workflow, step.record, workflow.execute(task, at=AT))
        queue.extend(step.tasks)
        queue.extend(task for task, _ in step.retries)
    return step


# -- linear -----------------------------------------------------------------------------------


def test_a_linear_run_ends_in_the_output_node_tracing_the_three_stages() -> None:
    step = run_to_end(generic, start(generic, {"input": 3}))

    record = step.record
    assert step.done
    assert record.status is RunStatus.SUCCEEDED
    (output,) = record.finals()
    assert output.name == "output"
    assert output.payload == {"c": 3 + 4 + 12}
    assert [record.nodes[i].name for i in output.trace] == ["stage1", "stage2", "stage3"]
    assert [record.nodes[i].payload for i in output.trace] == [
        {"input": 3},
        {"input": 3, "a": 4},
        {"input": 3, "a": 4, "b": 12},
    ]
    assert all(record.nodes[i].status is NodeStatus.PROCESSED for i in output.trace)
    assert record.finished_at is not None


def test_start_refuses_an_input_that_fails_the_root_model() -> None:
    with pytest.raises(WorkflowInputError, match=r"root node type 'stage1': input: Field required"):
        RunState.start(generic, "run-1", {"inptu": 3}, at=AT)


def test_a_result_applied_twice_changes_nothing_the_second_time() -> None:
    first = start(generic, {"input": 1})
    result = generic.execute(first.tasks[0], at=AT)
    once = apply(generic, first.record, result)
    twice = apply(generic, once.record, result)
    assert len(once.tasks) == 1
    assert twice.record is once.record
    assert twice.tasks == [] and twice.retries == []


def test_apply_does_not_change_the_record_it_is_given() -> None:
    first = start(generic, {"input": 1})
    before = first.record.model_dump()
    apply(generic, first.record, generic.execute(first.tasks[0], at=AT))
    assert first.record.model_dump() == before


# -- fork / join ------------------------------------------------------------------------------


def fork_results() -> tuple[Step, list[list[TaskResult]]]:
    """The sources run after its root: each fork's results, in the order each fork makes them."""
    after_root = run_root(sources, {"topic": "kafka"})
    branches = []
    for task in after_root.tasks:
        fetch = sources.execute(task, at=AT)
        (fetched,) = fetch.successors
        follow = Task(workflow="sources", run_id="run-1", node=fetched, attempt=1)
        branches.append([fetch, sources.execute(follow, at=AT)])
    return after_root, branches


def run_root(workflow: Workflow, payload: dict[str, object]) -> Step:
    first = start(workflow, payload)
    return apply(workflow, first.record, workflow.execute(first.tasks[0], at=AT))


def interleavings(branches: list[list[TaskResult]]) -> list[list[TaskResult]]:
    """Every order of all results that keeps each fork's own order (90 for 3 forks of 2)."""
    flat = [(b, i) for b, branch in enumerate(branches) for i in range(len(branch))]
    orders = []
    for order in itertools.permutations(flat):
        if all(order.index((b, 0)) < order.index((b, 1)) for b in range(len(branches))):
            orders.append([branches[b][i] for b, i in order])
    return orders


def test_the_forks_each_get_their_own_token() -> None:
    after_root, _ = fork_results()
    forks = [task.node.fork for task in after_root.tasks]
    assert forks == [task.node.id for task in after_root.tasks]
    assert len(set(forks)) == len(SOURCES)
    (group,) = after_root.record.groups.values()
    assert group.tokens == forks and group.open == forks


def test_the_join_fires_exactly_once_whatever_order_the_forks_finish_in() -> None:
    after_root, branches = fork_results()
    orders = interleavings(branches)
    assert len(orders) == 90
    joins = set()
    for order in orders:
        step = after_root
        fired = []
        for result in order:
            step = apply(sources, step.record, result)
            fired.extend(task.node for task in step.tasks if task.node.name == "gathered")
        assert len(fired) == 1
        (joined,) = fired
        assert [doc["source"] for doc in joined.payload["forks"]] == list(SOURCES)
        assert joined.joins == tuple(t.node.fork for t in after_root.tasks)
        assert joined.fork is None
        joins.add(joined.serialize())
    assert len(joins) == 1


def test_a_join_does_not_fire_twice_when_results_are_delivered_twice() -> None:
    after_root, branches = fork_results()
    step = after_root
    fired = []
    for result in [r for branch in branches for r in branch for _ in range(2)]:
        step = apply(sources, step.record, result)
        fired.extend(task for task in step.tasks if task.node.name == "gathered")
    late = apply(sources, step.record, branches[0][1])
    assert len(fired) == 1
    assert late.record is step.record and late.tasks == []
    end = run_to_end(sources, Step(step.record, fired))
    assert [n.name for n in end.record.finals()] == ["summary"]


def test_the_join_traces_its_opener_and_every_node_of_its_forks() -> None:
    record = LocalEngine(sources).run({"topic": "kafka"}, run_id="run-1")
    (summary,) = record.finals()
    names = [record.nodes[i].name for i in summary.trace]
    assert names[0] == "topic"
    assert sorted(names[1:-1]) == sorted(["fetch", "fetched"] * 3)
    assert names[-1] == "gathered"
    assert summary.payload["sources"] == list(SOURCES)


# -- retries and failure ----------------------------------------------------------------------


class Value(BaseModel):
    v: int


def flaky_workflow(*, failures: int, attempts: int, error_edge: bool) -> Workflow:
    wf = Workflow("flaky", root="try")
    policy = RetryPolicy(attempts=attempts, backoff_s=1.0, max_backoff_s=2.0, jitter=0.0)
    wf.node("try", payload=Value, retry=policy, error_edge="rescue" if error_edge else None)
    wf.node("done", payload=Value, final=True)
    if error_edge:
        wf.node("rescue", payload=Failure)

        @wf.action("rescue", to=["done"])
        def rescue(node: Node, ctx: EdgeContext) -> None:
            ctx.derive("done", payload={"v": -1})

    @wf.action("try", to=["done"])
    def attempt(node: Node, ctx: EdgeContext) -> None:
        if ctx.attempt <= failures:
            raise RuntimeError(f"no luck at attempt {ctx.attempt}")
        ctx.derive("done", payload={"v": ctx.attempt})

    return wf.validate()


def test_a_failing_node_is_retried_with_capped_backoff_then_succeeds() -> None:
    wf = flaky_workflow(failures=3, attempts=4, error_edge=False)
    step = start(wf, {"v": 0})
    delays = []
    while step.tasks or step.retries:
        task = step.tasks[0] if step.tasks else step.retries[0][0]
        step = apply(wf, step.record, wf.execute(task, at=AT))
        delays.extend(delay for _, delay in step.retries)
    record = step.record
    assert delays == [1.0, 2.0, 2.0]
    assert record.status is RunStatus.SUCCEEDED
    (root,) = [n for n in record.nodes.values() if n.name == "try"]
    assert (root.status, root.attempts, root.message) == (NodeStatus.PROCESSED, 4, None)
    assert [n.payload for n in record.finals()] == [{"v": 4}]


def test_a_stale_result_of_an_earlier_attempt_is_ignored() -> None:
    wf = flaky_workflow(failures=1, attempts=3, error_edge=False)
    first = start(wf, {"v": 0})
    failed = wf.execute(first.tasks[0], at=AT)
    retrying = apply(wf, first.record, failed)
    assert retrying.record.in_flight == {first.tasks[0].node.id: 2}
    assert apply(wf, retrying.record, failed).record is retrying.record


def test_retry_jitter_is_the_same_at_every_replay() -> None:
    wf = Workflow("jittery", root="try", retry=RetryPolicy(attempts=2, backoff_s=1.0, jitter=0.5))
    wf.node("try", final=True)
    first = start(wf.validate(), {})
    failure = TaskResult(run_id="run-1", node_id=first.tasks[0].node.id, attempt=1, ok=False)
    (one,) = apply(wf, first.record, failure).retries
    (two,) = apply(wf, first.record, failure).retries
    assert one == two
    assert 0.5 <= one[1] <= 1.5


def test_exhausted_attempts_without_an_error_edge_fail_the_run() -> None:
    wf = flaky_workflow(failures=5, attempts=2, error_edge=False)
    step = run_to_end(wf, start(wf, {"v": 0}))
    record = step.record
    assert step.done and record.status is RunStatus.FAILED
    (node,) = record.nodes.values()
    assert (node.status, node.attempts) == (NodeStatus.FAILED, 2)
    assert node.message == "RuntimeError: no luck at attempt 2"
    assert record.message is not None and "'try'" in record.message
    assert "no luck at attempt 2" in record.message
    assert record.finals() == []


def test_exhausted_attempts_with_an_error_edge_run_the_handler() -> None:
    wf = flaky_workflow(failures=5, attempts=2, error_edge=True)
    record = run_to_end(wf, start(wf, {"v": 7})).record
    assert record.status is RunStatus.SUCCEEDED
    failed = next(n for n in record.nodes.values() if n.name == "try")
    rescue = next(n for n in record.nodes.values() if n.name == "rescue")
    assert failed.status is NodeStatus.FAILED
    assert rescue.predecessor_id == failed.id
    assert rescue.payload == {
        "error": "RuntimeError: no luck at attempt 2",
        "node": "try",
        "payload": {"v": 7},
    }
    assert [n.payload for n in record.finals()] == [{"v": -1}]


def test_one_failed_fork_lets_the_others_finish_then_fails_the_run() -> None:
    wf = Workflow("fan", root="open", retry=RetryPolicy(attempts=1))
    wf.node("open")
    wf.node("work", payload=Value)
    wf.node("done", payload=Value, final=True)

    @wf.action("open", to=["work"], fork=True)
    def fan(node: Node, ctx: EdgeContext) -> None:
        for v in range(3):
            ctx.derive("work", payload={"v": v})

    @wf.action("work", to=["done"])
    def work(node: Node, ctx: EdgeContext) -> None:
        if node.payload["v"] == 0:
            raise ValueError("zero")
        ctx.derive("done")

    record = LocalEngine(wf).run({}, run_id="run-1")
    assert record.status is RunStatus.FAILED
    assert sorted(n.payload["v"] for n in record.finals()) == [1, 2]
    assert "ValueError: zero" in (record.message or "")


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_marks_pending_nodes_and_ignores_later_results() -> None:
    after_root, branches = fork_results()
    cancelled = RunState.cancel(after_root.record, at=AT)
    assert cancelled.status is RunStatus.CANCELLED and cancelled.done
    assert sorted(n.status.value for n in cancelled.nodes.values()) == [
        "cancelled",
        "cancelled",
        "cancelled",
        "processed",
    ]
    late = apply(sources, cancelled, branches[0][0])
    assert late.record is cancelled and late.done and late.tasks == []
    assert RunState.cancel(cancelled, at=AT) is cancelled


# -- execute ----------------------------------------------------------------------------------


def test_execute_runs_only_the_actions_whose_condition_holds() -> None:
    wf = Workflow("cond", root="n")
    wf.node("n", payload=Value)
    wf.node("even", final=True)
    wf.node("big", final=True)
    wf.action("n", to=["even"], when=lambda node: node.payload["v"] % 2 == 0, name="e")(
        lambda node, ctx: ctx.derive("even") and None
    )
    wf.action("n", to=["big"], when=lambda node: node.payload["v"] > 10, name="b")(
        lambda node, ctx: ctx.derive("big") and None
    )
    wf.validate()
    for v, expected in [(1, []), (2, ["even"]), (11, ["big"]), (12, ["even", "big"])]:
        first = start(wf, {"v": v})
        result = wf.execute(first.tasks[0], at=AT)
        assert [n.name for n in result.successors] == expected


def test_execute_turns_a_raising_action_or_a_bad_successor_into_a_failed_result() -> None:
    wf = Workflow("bad", root="n")
    wf.node("n", payload=Value)
    wf.node("out", payload=Value, final=True)

    @wf.action("n", to=["out"])
    def act(node: Node, ctx: EdgeContext) -> None:
        if node.payload["v"] == 1:
            ctx.derive("n")
        ctx.derive("out", payload={"v": "not a number"})

    wf.validate()
    wrong_type = wf.execute(start(wf, {"v": 1}).tasks[0], at=AT)
    bad_payload = wf.execute(start(wf, {"v": 2}).tasks[0], at=AT)
    assert not wrong_type.ok and "may derive ['out'], not 'n'" in (wrong_type.error or "")
    assert not bad_payload.ok and "ValidationError" in (bad_payload.error or "")
    assert wrong_type.successors == () and wrong_type.started_at is not None


def test_execute_fails_a_node_of_an_unknown_type() -> None:
    node = Node.create("generic", "run-1", "stage9", {}, at=AT)
    result = generic.execute(Task(workflow="generic", run_id="run-1", node=node), at=AT)
    assert not result.ok and "no node type 'stage9'" in (result.error or "")


def test_the_same_task_executed_twice_gives_the_same_result_up_to_timing() -> None:
    task = start(generic, {"input": 5}).tasks[0]
    one, two = generic.execute(task, at=AT), generic.execute(task, at=AT)
    assert one.without_timing() == two.without_timing()


# -- validation -------------------------------------------------------------------------------


def broken() -> Workflow:
    wf = Workflow("broken", root="a")
    wf.node("a")
    wf.node("b", final=True)
    wf.node("island", final=True)
    wf.node("stuck")
    wf.node("handled", error_edge="nowhere")

    @wf.action("a", to=["b", "ghost", "stuck", "handled"])
    def go(node: Node, ctx: EdgeContext) -> None:
        ctx.derive("b")

    @wf.action("b", to=["a"])
    def back(node: Node, ctx: EdgeContext) -> None:
        ctx.derive("a")

    wf.join("b", forks_of="a")
    return wf


def test_validate_names_every_problem() -> None:
    with pytest.raises(WorkflowDefinitionError) as caught:
        broken().validate()
    text = str(caught.value)
    assert "workflow 'broken' cannot run" in text
    assert "derives unknown node type 'ghost'" in text
    assert "final node type 'b' has actions" in text
    assert "no action of 'a' opens forks" in text
    assert "error edge of 'handled' leads to unknown node type 'nowhere'" in text
    assert "join node type 'b' must take a Joined payload" not in text


def test_validate_finds_unreachable_and_dead_end_types() -> None:
    wf = Workflow("dead", root="a")
    wf.node("a")
    wf.node("b", final=True)
    wf.node("island", final=True)
    wf.node("stuck")
    wf.action("a", to=["b", "stuck"], name="go")(lambda node, ctx: None)
    with pytest.raises(WorkflowDefinitionError) as caught:
        wf.validate()
    text = str(caught.value)
    assert "'island' is not reachable from the root 'a'" in text
    assert "'stuck' has no action and is not final" in text


def test_validate_refuses_an_unknown_root_and_join_models_that_cannot_take_a_join() -> None:
    wf = Workflow("j", root="nope")
    wf.node("a")
    wf.node("gathered", payload=Value, final=True)
    wf.action("a", to=["a"], fork=True, name="f")(lambda node, ctx: None)
    wf.join("gathered", forks_of="a")
    with pytest.raises(WorkflowDefinitionError) as caught:
        wf.validate()
    assert "root node type 'nope' is not declared" in str(caught.value)
    assert "'gathered' must take a Joined payload" in str(caught.value)


def test_definition_mistakes_are_refused_where_they_are_made() -> None:
    wf = Workflow("w", root="a")
    wf.node("a")
    with pytest.raises(WorkflowDefinitionError, match="declared twice"):
        wf.node("a")
    with pytest.raises(WorkflowDefinitionError, match="name 'a b'"):
        wf.node("a b")
    wf.action("a", name="x")(lambda node, ctx: None)
    with pytest.raises(WorkflowDefinitionError, match="two actions named 'x'"):
        wf.action("a", name="x")(lambda node, ctx: None)
    wf.join("a", forks_of="a")
    with pytest.raises(WorkflowDefinitionError, match="already join"):
        wf.join("a", forks_of="a")
    with pytest.raises(WorkflowDefinitionError, match="cannot end in 'park'"):
        wf.node("b", retry=RetryPolicy(on_exhausted=Exhausted.PARK))


def test_the_examples_are_valid() -> None:
    assert generic.validate() is generic
    assert sources.validate() is sources


def test_payloads_without_a_model_are_stored_as_json_data() -> None:
    wf = Workflow("loose", root="n")
    wf.node("n")
    wf.node("out", final=True)

    @wf.action("n", to=["out"])
    def act(node: Node, ctx: EdgeContext) -> None:
        ctx.derive("out", payload={"pair": (1, 2), "at": AT})

    record = LocalEngine(wf.validate()).run({"tags": ("a",)}, run_id="run-1")
    (out,) = record.finals()
    assert out.payload == {"pair": [1, 2], "at": "2026-01-01T00:00:00Z"}
    assert record.nodes[out.predecessor_id or ""].payload == {"tags": ["a"]}


def test_a_result_with_a_successor_not_derived_from_its_node_counts_as_a_failure() -> None:
    wf = flaky_workflow(failures=0, attempts=2, error_edge=False)
    first = start(wf, {"v": 0})
    good = wf.execute(first.tasks[0], at=AT)
    (successor,) = good.successors
    for forged in (
        successor.model_copy(update={"fork": "elsewhere"}),
        successor.model_copy(update={"predecessor_id": "other"}),
        successor.model_copy(update={"run_id": "run-2"}),
    ):
        step = apply(wf, first.record, good.model_copy(update={"successors": (forged,)}))
        (node,) = step.record.nodes.values()
        assert node.message is not None and node.message.startswith("refused successor")
        assert step.tasks == [] and len(step.retries) == 1


def test_an_action_named_join_or_error_cannot_take_the_id_of_a_join_or_error_node() -> None:
    wf = Workflow("names", root="open", retry=RetryPolicy(attempts=1))
    wf.node("open", payload=Value)
    wf.node("work", payload=Value, error_edge="done")
    wf.node("gathered", payload=Joined, final=True)
    wf.node("done", payload=Failure, final=True)
    wf.join("gathered", forks_of="open")

    @wf.action("open", to=["work"], fork=True, name="join")
    def fan(node: Node, ctx: EdgeContext) -> None:
        ctx.derive("work", payload={"v": 1})

    @wf.action("work", to=["done"], name="error")
    def fail(node: Node, ctx: EdgeContext) -> None:
        raise RuntimeError("always")

    record = LocalEngine(wf.validate()).run({"v": 0}, run_id="run-1")
    assert record.status is RunStatus.SUCCEEDED
    assert sorted(n.name for n in record.finals()) == ["done", "gathered"]
    assert len(record.nodes) == 4
