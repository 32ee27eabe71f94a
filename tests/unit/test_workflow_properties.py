"""Property tests: any workflow shape gives the same run on every local driver.

The drivers are the sequential engine, the thread-pool engine and the shuffled driver (random
order, tasks and results delivered twice: the model of the Kafka engine). Each generated run
must also keep the trace and join invariants (:func:`trace_problems`), and a run cancelled at
any point must stay as it was cancelled whatever results arrive after.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.api.workflows import RunState
from stream_app.core.workflows import NodeStatus, RunRecord, RunStatus
from stream_app.engine.workflows import LocalEngine
from stream_app.testing.workflows import (
    Shape,
    build_workflow,
    drive_shuffled,
    run_outcome,
    trace_problems,
)
from tests.workflow_shapes import inputs, shapes

AT = datetime(2026, 1, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _no_sleep(_: float) -> None:
    return None


@PROPERTY
@given(shape=shapes(), payload=inputs(), seed=st.integers(0, 2**32 - 1))
def test_every_driver_gives_the_same_run(shape: Shape, payload: dict[str, int], seed: int) -> None:
    workflow = build_workflow(shape)
    sequential = LocalEngine(workflow, sleep=_no_sleep).run(payload, run_id="run-1")
    threaded = LocalEngine(workflow, sleep=_no_sleep).run(payload, run_id="run-1", parallel=4)
    shuffled = drive_shuffled(workflow, payload, run_id="run-1", rng=random.Random(seed))

    assert sequential.done
    assert run_outcome(threaded) == run_outcome(sequential)
    assert run_outcome(shuffled) == run_outcome(sequential)
    assert trace_problems(sequential, workflow) == []
    assert trace_problems(shuffled, workflow) == []
    stored = RunRecord.model_validate_json(shuffled.model_dump_json())
    assert stored == shuffled


@PROPERTY
@given(shape=shapes(allow_failure=False), payload=inputs(), seed=st.integers(0, 2**32 - 1))
def test_runs_without_unhandled_failures_succeed_and_leave_no_work(
    shape: Shape, payload: dict[str, int], seed: int
) -> None:
    workflow = build_workflow(shape)
    record = drive_shuffled(
        workflow, payload, run_id="run-2", rng=random.Random(seed), duplicates=0.6
    )

    assert record.status is RunStatus.SUCCEEDED
    assert record.in_flight == {}
    assert all(count == 0 for count in record.open_work.values())
    assert not any(n.status is NodeStatus.PENDING for n in record.nodes.values())
    assert all(not group.open for group in record.groups.values())
    assert sorted(record.forks_completed) == sorted(set(record.forks_completed))


@PROPERTY
@given(shape=shapes(), payload=inputs(), seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 20))
def test_a_cancelled_run_keeps_no_pending_node_and_takes_no_further_result(
    shape: Shape, payload: dict[str, int], seed: int, cut: int
) -> None:
    workflow = build_workflow(shape)
    rng = random.Random(seed)
    record, tasks = RunState.start(workflow, "run-3", payload, at=AT)
    results = []
    for _ in range(cut):
        if not tasks:
            break
        result = workflow.execute(tasks.pop(rng.randrange(len(tasks))), at=AT)
        results.append(result)
        step = RunState.apply(workflow, record, result, at=AT)
        record = step.record
        tasks.extend(step.tasks)
        tasks.extend(task for task, _ in step.retries)

    cancelled = RunState.cancel(record, at=AT)

    if record.done:
        assert cancelled is record
        return
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.in_flight == {}
    assert not any(n.status is NodeStatus.PENDING for n in cancelled.nodes.values())
    late = [workflow.execute(task, at=AT) for task in tasks] + results
    for result in late:
        assert RunState.apply(workflow, cancelled, result, at=AT).record is cancelled
