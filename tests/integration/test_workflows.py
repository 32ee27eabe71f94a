"""Workflows on a real broker, in real `faust worker` processes (``tests.apps.workflow_probe``).

One worker, shared by the module, serves the runs of the first five tests (each test uses runs
of its own, and the property test builds each drawn shape from a file the worker reads); then
two workers of another app share the tasks of a run, and one is SIGKILLed in the middle of a
run; last, the examples' own worker runs both examples.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from stream_app import (
    AsyncWorkflowClient,
    CellClient,
    DeadLetter,
    LocalEngine,
    Node,
    NodeStatus,
    RunEnded,
    RunFailedError,
    RunRecord,
    RunStatus,
    WorkflowClient,
    WorkflowInputError,
)
from stream_app.cli.main import cli
from stream_app.core.partitioner import partition_for
from stream_app.core.workflows import TaskResult
from stream_app.examples.workflows import generic, sources
from stream_app.testing import (
    WorkerProcess,
    committed_to_end,
    read_topic,
    settings_from_env,
    wait_for,
)
from stream_app.testing.dev_broker import find_free_port, session_name
from stream_app.testing.workflows import Shape, build_workflow, run_outcome, trace_problems
from tests.apps import workflow_definitions as defs
from tests.workflow_shapes import inputs, shapes

pytestmark = pytest.mark.integration

MODULE = "tests.apps.workflow_probe"
DEFINITIONS = "tests.apps.workflow_definitions"
StartWorker = Callable[..., WorkerProcess]


class Probe:
    """The shared worker, its settings and the files it writes."""

    def __init__(self, worker: WorkerProcess, env: dict[str, str], root: Path) -> None:
        self.worker = worker
        self.env = env
        self.settings = settings_from_env(env)
        self.shapes = root / "shapes"
        self.outbox = root / "outbox.jsonl"
        self.bootstrap = env["STREAM_APP_BOOTSTRAP_SERVERS"]

    def client(self, **options: Any) -> WorkflowClient:
        return WorkflowClient("probe", self.settings, **options)

    def run(self, run_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.worker.get_json(f"/stream-app/workflows/probe/{run_id}/")
        return answer

    def record(self, run_id: str) -> RunRecord:
        return RunRecord.model_validate(self.run(run_id)["run"])

    def wait_record(self, run_id: str, done: Callable[[RunRecord], bool], what: str) -> RunRecord:
        def look() -> RunRecord | None:
            answer = self.run(run_id)
            return RunRecord.model_validate(answer["run"]) if answer.get("run") else None

        found = wait_for(look, lambda r: r is not None and done(r), timeout=60, what=what)
        assert found is not None
        return found

    def ended(self) -> list[RunEnded]:
        topic = self.settings.done_topic("probe")
        return [
            RunEnded.model_validate_json(r.value or b"") for r in read_topic(self.bootstrap, topic)
        ]

    def executions(self, run_id: str) -> list[dict[str, Any]]:
        if not self.outbox.exists():
            return []
        lines = [json.loads(line) for line in self.outbox.read_text().splitlines() if line]
        return [line for line in lines if line["run"] == run_id]


def probe_env(bootstrap: str, root: Path) -> dict[str, str]:
    return {
        "STREAM_APP_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_APP_ID": session_name("t"),
        "STREAM_APP_DATA_DIR": str(root / "data"),
        "STREAM_APP_PARTITIONS": "4",
        "STREAM_APP_SESSION_TIMEOUT_S": "6",
        "WORKFLOW_PROBE_SHAPES": str(root / "shapes"),
        "WORKFLOW_PROBE_OUTBOX": str(root / "outbox.jsonl"),
    }


@pytest.fixture(scope="module")
def probe(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    root = tmp_path_factory.mktemp("workflows")
    (root / "shapes").mkdir()
    env = probe_env(bootstrap, root)
    worker = WorkerProcess(MODULE, env=env, log_path=root / "worker.log", web_port=find_free_port())
    worker.start()
    try:
        worker.wait_ready()
        yield Probe(worker, env, root)
    finally:
        worker.kill()


def test_linear_and_fork_join_runs_their_trace_graph_and_console(probe: Probe) -> None:
    with probe.client() as client:
        [c] = client.run("chain", {"n": 4}, run_id="chain-1", timeout=60)
        assert (c.name, c.payload, c.status) == ("c", {"n": 50}, NodeStatus.FINAL)

    async def fan_out() -> list[Node]:
        async with AsyncWorkflowClient("probe", probe.settings) as client:
            return await client.run("fan", {"width": 4}, run_id="fan-1", timeout=60)

    [total] = asyncio.run(fan_out())
    assert total.payload == {"n": 0 + 1 + 2 + 3}
    chain_run = probe.record("chain-1")
    assert [chain_run.nodes[i].name for i in c.trace] == ["a", "b"]
    assert chain_run.status is RunStatus.SUCCEEDED
    fan_run = probe.record("fan-1")
    names = sorted(n.name for n in fan_run.nodes.values())
    assert names == ["gathered", "part", "part", "part", "part"] + ["part_done"] * 4 + [
        "start",
        "total",
    ]
    assert trace_problems(fan_run, defs.fan) == []
    assert len(total.trace) == 1 + 4 + 4 + 1, "the total traces the start, the forks, the join"

    def console(*args: str) -> str:
        result = CliRunner().invoke(cli, ["workflows", *args], env=probe.env)
        assert result.exit_code == 0, result.output
        return result.output

    url = f"http://127.0.0.1:{probe.worker.web_port}"
    traced = console("trace", "probe", "fan-1", "--url", url).splitlines()
    assert traced[0].startswith("run fan-1  fan  succeeded")
    assert [line.lstrip("│├└─ ").split("  ")[0] for line in traced[1:]][:2] == ["start", "part"]
    assert sum("joins=4" in line for line in traced) == 1
    drawn = console("graph", "probe", "--run", "chain-1", "--url", url)
    assert drawn.startswith("flowchart")
    assert all(f"{node.name} {node.id[:8]}" in drawn for node in chain_run.nodes.values())
    listed = console("list", "probe", "--url", url)
    assert "chain-1  chain  succeeded  nodes=3" in listed
    ran = console("run", "probe", "chain", "--payload", '{"n": 1}', "--app", DEFINITIONS)
    run_id, final = ran.splitlines()
    assert json.loads(final)["payload"] == {"n": 20}
    assert probe.record(run_id).status is RunStatus.SUCCEEDED


def test_results_delivered_twice_fire_the_join_once_and_add_no_node(probe: Probe) -> None:
    """Every part's result reaches the run three times: twice by hand (built here, before the
    slow worker is done with its first part) and once from the worker."""
    with probe.client() as client:
        client.start("fan", {"width": 3, "delay_s": 2.0}, run_id="dup-1")
    parts = probe.wait_record(
        "dup-1",
        lambda r: sum(n.name == "part" for n in r.nodes.values()) == 3,
        "the three parts stored",
    )
    cells = CellClient(probe.settings)
    for node in (n for n in parts.nodes.values() if n.name == "part"):
        # What the worker's execution derives: the same id, from the run and the edge.
        successor = node.derive(
            "part_done", index=0, action="work_on_part", at=datetime.fromisoformat(node.created_at)
        )
        result = TaskResult(
            run_id="dup-1", node_id=node.id, attempt=1, ok=True, successors=(successor,)
        )
        for _ in range(2):
            cells.send("probe", "dup-1", "result", result)
    cells.flush()
    done = probe.wait_record("dup-1", lambda r: r.done, "the run ended")
    assert done.status is RunStatus.SUCCEEDED
    tasks_topic = probe.settings.tasks_topic("probe")
    wait_for(
        lambda: (
            len(probe.executions("dup-1")),
            committed_to_end(probe.bootstrap, probe.settings.app_id, tasks_topic),
        ),
        lambda seen: seen == (3, True),
        timeout=60,
        what="the worker's own three tasks done (results sent, offsets committed)",
    )
    # A barrier: a run on the same partition, started after the worker's results were sent.
    later = same_partition_run("dup-1", probe.settings.partitions)
    with probe.client() as client:
        client.run("chain", {"n": 0}, run_id=later, timeout=60)
    again = probe.record("dup-1")
    assert again == done, "results applied already change nothing"
    assert sorted(n.name for n in again.nodes.values()).count("gathered") == 1
    assert len(again.nodes) == 1 + 3 + 3 + 1 + 1
    assert [e.run_id for e in probe.ended()].count("dup-1") == 1


def same_partition_run(run_id: str, partitions: int) -> str:
    """A fresh run id on the partition of ``run_id``."""
    target = partition_for(run_id.encode(), partitions)
    while True:
        candidate = f"barrier-{uuid.uuid4().hex[:8]}"
        if partition_for(candidate.encode(), partitions) == target:
            return candidate


def test_retries_exhaustion_error_edges_and_cancel(probe: Probe) -> None:
    with probe.client() as client:
        [done] = client.run("flaky", {"fail": 2}, run_id="retry-1", timeout=60)
        with pytest.raises(RunFailedError) as failed:
            client.run("flaky", {"fail": 5}, run_id="retry-2", timeout=60)
        [saved] = client.run("rescued", {"fail": 5}, run_id="retry-3", timeout=60)
        slow = client.start("fan", {"width": 2, "delay_s": 2.0}, run_id="cancel-1")
        client.cancel(slow, "changed my mind")
        cancelled = client.wait(slow, timeout=60)
    assert done.name == "done"
    assert [e["attempt"] for e in probe.executions("retry-1")] == [1, 2, 3]
    assert probe.record("retry-1").nodes[done.predecessor_id or ""].attempts == 3
    assert failed.value.status == "failed"
    work = next(n for n in probe.record("retry-2").nodes.values() if n.name == "work")
    assert work.status is NodeStatus.FAILED and "attempt 3 fails" in (work.message or "")
    assert [e["attempt"] for e in probe.executions("retry-2")] == [1, 2, 3]
    assert saved.name == "saved" and "attempt 3 fails" in saved.payload["error"]
    assert probe.record("retry-3").status is RunStatus.SUCCEEDED
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.message == "cancelled: changed my mind"
    assert probe.run("retry-2")["parked"] is None, "a failing action never parks the run"


def test_bad_inputs_are_refused_before_sending_or_dead_lettered(probe: Probe) -> None:
    with probe.client(workflows=[defs.chain]) as checked:
        with pytest.raises(WorkflowInputError, match="unknown workflow 'nope'"):
            checked.start("nope", {})
        with pytest.raises(WorkflowInputError, match="root node type 'a'"):
            checked.start("chain", {"n": "four"})
    with probe.client() as unchecked:
        unchecked.start("nope", {}, run_id="bad-1")
        unchecked.start("chain", {"n": "four"}, run_id="bad-2")
        unchecked.cancel("bad-3")

    def letters() -> dict[str, DeadLetter]:
        found = {}
        for r in read_topic(probe.bootstrap, probe.settings.dead_letter_topic):
            letter = DeadLetter.from_record(r.key, r.value, r.headers)
            found[(letter.key or b"").decode()] = letter
        return found

    found = wait_for(
        letters,
        lambda f: {"bad-1", "bad-2", "bad-3"} <= set(f),
        timeout=30,
        what="three dead letters",
    )
    assert found["bad-1"].reason == "unknown-workflow" and "'nope'" in found["bad-1"].error
    assert found["bad-2"].reason == "workflow-input" and "'a'" in found["bad-2"].error
    assert found["bad-3"].reason == "unknown-run"
    assert probe.run("bad-1")["run"] is None


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(shape=shapes(max_segments=3), payload=inputs())
def test_the_local_and_kafka_engines_agree_on_drawn_shapes(
    probe: Probe, shape: Shape, payload: dict[str, int]
) -> None:
    digest = hashlib.sha256(shape.model_dump_json().encode()).hexdigest()[:16]
    named = shape.model_copy(update={"name": f"shape-{digest}"})
    (probe.shapes / f"{named.name}.json").write_text(named.model_dump_json())
    run_id = f"{named.name}-{payload['v']}-{uuid.uuid4().hex[:6]}"
    workflow = build_workflow(named)
    local = LocalEngine(workflow, sleep=lambda _: None).run(payload, run_id=run_id)
    with probe.client() as client:
        client.start(named.name, payload, run_id=run_id)
        ended = client.wait(run_id, timeout=60)
    kafka = probe.record(run_id)
    assert ended.status is local.status
    assert run_outcome(kafka) == run_outcome(local)
    assert trace_problems(kafka, workflow) == []


def test_two_workers_share_a_runs_tasks_and_a_sigkill_loses_nothing(
    bootstrap: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    (tmp_path / "shapes").mkdir()
    env = probe_env(bootstrap, tmp_path)
    settings_ = settings_from_env(env)
    # Each worker keeps its tables in a folder of its own (RocksDB locks them).
    first = start_worker(
        MODULE, {**env, "STREAM_APP_DATA_DIR": str(tmp_path / "first")}, name="first"
    )
    second = start_worker(
        MODULE, {**env, "STREAM_APP_DATA_DIR": str(tmp_path / "second")}, name="second"
    )
    workers = {first.pid: first, second.pid: second}
    outbox = tmp_path / "outbox.jsonl"

    def executions(run_id: str) -> list[dict[str, Any]]:
        if not outbox.exists():
            return []
        lines = [json.loads(line) for line in outbox.read_text().splitlines() if line]
        return [line for line in lines if line["run"] == run_id]

    def wait_both_own_partitions() -> None:
        def owned(worker: WorkerProcess) -> list[int]:
            metrics = worker.get_json("/stream-app/metrics/")
            partitions: list[int] = metrics["behaviours"]["probe"]["partitions"]
            return partitions

        wait_for(
            lambda: [len(owned(w)) for w in workers.values()],
            lambda counts: all(counts) and sum(counts) == 4,
            timeout=60,
            what="both workers owning partitions",
        )

    wait_both_own_partitions()
    with WorkflowClient("probe", settings_) as client:
        [total] = client.run("fan", {"width": 12, "delay_s": 0.1}, run_id="shared-1", timeout=90)
    assert total.payload == {"n": sum(range(12))}
    pids = {e["pid"] for e in executions("shared-1")}
    assert pids == set(workers), "both workers ran parts of the one run"

    with WorkflowClient("probe", settings_) as client:
        client.start("fan", {"width": 12, "delay_s": 0.5}, run_id="crash-1")
        wait_for(
            lambda: {e["pid"] for e in executions("crash-1")},
            lambda seen: first.pid in seen,
            timeout=60,
            what="the first worker working on the run",
        )
        first.kill()
        ended = client.wait("crash-1", timeout=120)
    assert ended.status is RunStatus.SUCCEEDED
    [total] = ended.finals
    assert total.payload == {"n": sum(range(12))}
    record = RunRecord.model_validate(
        second.get_json("/stream-app/workflows/probe/crash-1/", timeout=10)["run"]
    )
    assert trace_problems(record, defs.fan) == []
    names = [n.name for n in record.nodes.values()]
    assert names.count("part") == 12 and names.count("part_done") == 12
    assert names.count("gathered") == 1 and names.count("total") == 1
    assert len(set(total.trace)) == len(total.trace) == 1 + 12 + 12 + 1
    ran = executions("crash-1")
    assert {e["node"] for e in ran} == {n.id for n in record.nodes.values() if n.name == "part"}
    assert second.pid in {e["pid"] for e in ran}, "the survivor took over"


def test_the_examples_run_on_kafka_as_on_the_local_engine(
    start_worker: StartWorker, cells_env: dict[str, str]
) -> None:
    worker = start_worker("stream_app.examples.workflows", cells_env)
    with WorkflowClient("jobs", settings_from_env(cells_env), workflows=[generic, sources]) as c:
        [output] = c.run("generic", {"input": 3}, run_id="generic-1", timeout=60)
        [summary] = c.run("sources", {"topic": "kafka"}, run_id="sources-1", timeout=60)
    assert output.payload == {"c": 19}
    assert summary.payload["sources"] == ["archive", "news", "wiki"]
    for workflow, payload, run_id in (
        (generic, {"input": 3}, "generic-1"),
        (sources, {"topic": "kafka"}, "sources-1"),
    ):
        answer = worker.get_json(f"/stream-app/workflows/jobs/{run_id}/")
        kafka = RunRecord.model_validate(answer["run"])
        assert run_outcome(kafka) == run_outcome(LocalEngine(workflow).run(payload, run_id=run_id))
