"""The Kafka engine of workflows: a run is a cell, its tasks are records of a work topic.

A :class:`WorkflowBehaviour` runs one or more :class:`~stream_app.api.workflows.Workflow`
definitions. Each run is one cell of it, keyed by the run id; its data is the run's
:class:`~stream_app.core.workflows.RunRecord` (the node store and the bookkeeping of forks,
joins, attempts and applied results). Every decision about a run is taken by the pure state
machine :class:`~stream_app.api.workflows.RunState`, the same one the local engine drives: this
module only carries its inputs and outputs over Kafka. That is why both engines reach the same
nodes for the same input.

The protocol of a run, with ``B`` the behaviour and ``A`` the app id:

1. A ``start`` (:class:`~stream_app.core.workflow_messages.StartRun`) reaches the run's cell on
   ``A.B.in``. :meth:`RunState.start` stores the root node; the tasks it asks for are published
   to ``A.B.tasks``, keyed by node id, in the cell's commit (so they exist if and only if the
   record that asks for them does).
2. Every worker reads its share of ``A.B.tasks`` (a reactor handler, :class:`TaskRunner`), runs
   :meth:`Workflow.execute` on the task in a thread, with the task record's timestamp as the
   edge's time, and sends the :class:`~stream_app.core.workflows.TaskResult` back to the run's
   cell as a ``result`` message; the task's offset is committed only once that record is
   flushed to Kafka. A crash in between runs the task again: at least once, and the same
   successors (their ids and times come from the run and the task record).
3. The cell applies each result with :meth:`RunState.apply`, which ignores a result already
   applied (a task run twice, a duplicate record), fires a join once, and asks for the next
   tasks (published as in step 1) and for retries after a delay: a retry is a durable timer on
   the run's cell (``retry:<node id>``) whose firing publishes the task again. A failing
   action therefore never fails the cell: its error comes back as a result like any other.
4. When the run ends (succeeded, failed or cancelled) its pending retry timers are cancelled
   and a :class:`~stream_app.core.workflow_messages.RunEnded` is published to ``A.B.done``, on
   the partition numbered like the run's, where :class:`~stream_app.clients.workflows.
   WorkflowClient` waits for it. The cell keeps the run's record: its trace stays inspectable.

Messages that can never apply (an unknown workflow, a payload failing the root node type's
model, a result or cancel for a run that does not exist) are rejected and dead-lettered with
their reason (:class:`~stream_app.errors.RunMessageError`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from stream_app.api.behaviour import Behaviour
from stream_app.api.workflows import RunState, Workflow
from stream_app.core.cell import CellState
from stream_app.core.envelope import envelope_bytes
from stream_app.core.retry import RetryPolicy
from stream_app.core.workflow_messages import CancelRun, RunEnded, StartRun
from stream_app.core.workflows import RunRecord, RunStatus, Task, TaskResult, iso_utc
from stream_app.engine.reactor import ReactorRecord
from stream_app.errors import (
    ConfigError,
    RunConflictError,
    RunInputError,
    UnknownRunError,
    UnknownWorkflowError,
    WorkflowInputError,
)

__all__ = [
    "MAX_RUN_BYTES",
    "RETRY_TIMER_PREFIX",
    "ResultSender",
    "TaskRunner",
    "WorkflowBehaviour",
]

logger = logging.getLogger(__name__)

#: A node waiting for its next attempt has the timer ``retry:<node id>`` on its run's cell.
RETRY_TIMER_PREFIX = "retry:"

#: The default :attr:`WorkflowBehaviour.max_run_bytes`: under the 1 MiB a Kafka record may have
#: by default (``max.message.bytes``), with room for the cell record around the run's record.
MAX_RUN_BYTES = 900_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Sends a task's result to its run: ``(run_id, envelope)``, handed to the worker's producer.
ResultSender = Callable[[str, bytes], Awaitable[None]]


class WorkflowBehaviour(Behaviour[RunRecord]):
    """The runs of some workflows: one run is one cell, keyed by its run id.

    Args:
        name: The behaviour's name: runs' messages go to ``<app_id>.<name>.in``, their tasks to
            ``<app_id>.<name>.tasks`` and the runs that ended to ``<app_id>.<name>.done``.
        workflows: The workflows it runs (each validated here).
        retry: As for :class:`~stream_app.api.behaviour.Behaviour`: how a failing *engine*
            callback is retried before the run's cell is parked. Actions never fail the cell;
            their retries are the node types' own (:class:`~stream_app.api.workflows.Workflow`).
        max_run_bytes: The largest run record (JSON) a run may keep. A step that would grow it
            beyond fails the run instead, keeping the record as it was before the step (a
            record Kafka refuses would stop the worker at every restart); a start whose first
            record is already too large is dead-lettered (``workflow-input``).

    Raises:
        WorkflowDefinitionError: A workflow does not validate.
        ValueError: Two workflows with one name, or a bad behaviour name.

    Register it with :meth:`Runtime.workflows <stream_app.runtime.Runtime.workflows>`, which
    names its topics (:meth:`bind`) and runs the tasks on every worker.
    """

    def __init__(
        self,
        name: str,
        *,
        workflows: Sequence[Workflow],
        retry: RetryPolicy | None = None,
        max_run_bytes: int = MAX_RUN_BYTES,
    ) -> None:
        super().__init__(
            name,
            messages={"start": StartRun, "result": TaskResult, "cancel": CancelRun},
            data=RunRecord,
            retry=retry,
        )
        self.workflows: dict[str, Workflow] = {}
        for workflow in workflows:
            if workflow.name in self.workflows:
                raise ValueError(f"behaviour {name!r}: two workflows named {workflow.name!r}")
            workflow.validate()
            self.workflows[workflow.name] = workflow
        self.max_run_bytes = max_run_bytes
        self._tasks_topic: str | None = None
        self._done_topic: str | None = None

    def bind(self, *, tasks_topic: str, done_topic: str) -> None:
        """Name the work topic and the topic of ended runs (the runtime does, from the app id)."""
        self._tasks_topic = tasks_topic
        self._done_topic = done_topic

    @property
    def tasks_topic(self) -> str:
        """The work topic (``<app_id>.<name>.tasks``).

        Raises:
            ConfigError: The behaviour was not registered on a runtime.
        """
        if self._tasks_topic is None:
            raise ConfigError(
                f"workflow behaviour {self.name!r}: register it with runtime.workflows"
            )
        return self._tasks_topic

    @property
    def done_topic(self) -> str:
        """The topic of ended runs (``<app_id>.<name>.done``).

        Raises:
            ConfigError: The behaviour was not registered on a runtime.
        """
        if self._done_topic is None:
            raise ConfigError(
                f"workflow behaviour {self.name!r}: register it with runtime.workflows"
            )
        return self._done_topic

    def workflow(self, name: str) -> Workflow:
        """The workflow called ``name``.

        Raises:
            UnknownWorkflowError: The behaviour runs no such workflow.
        """
        workflow = self.workflows.get(name)
        if workflow is None:
            raise UnknownWorkflowError(
                f"{self.name}: unknown workflow {name!r} "
                f"(runs: {', '.join(sorted(self.workflows))})"
            )
        return workflow

    # -- the run's cell ----------------------------------------------------------------------

    def handle_message(self, state: CellState[RunRecord]) -> None:
        """Apply a ``start``, ``result`` or ``cancel`` to the run (see the module docs)."""
        message = state.message
        assert message is not None
        body = message.body
        if isinstance(body, StartRun):
            self._start(state, body)
        elif isinstance(body, TaskResult):
            self._result(state, body)
        elif isinstance(body, CancelRun):
            self._cancel(state, body)

    def on_timeout(self, state: CellState[RunRecord]) -> None:
        """A retry came due: publish the node's next attempt."""
        fired = state.timer
        record = state.data
        assert fired is not None and record is not None
        if not fired.name.startswith(RETRY_TIMER_PREFIX) or record.done:
            logger.warning("%s/%s: ignoring timer %s", self.name, state.cell_id, fired.name)
            return
        self._publish_task(state, Task.model_validate(fired.payload))

    def _start(self, state: CellState[RunRecord], body: StartRun) -> None:
        existing = state.data
        if existing is not None:
            if existing.workflow != body.workflow:
                raise RunConflictError(
                    f"{self.name}: run {state.cell_id!r} is a run of {existing.workflow!r}, "
                    f"not of {body.workflow!r}"
                )
            logger.info("%s/%s: run already started; start ignored", self.name, state.cell_id)
            return
        workflow = self.workflow(body.workflow)
        try:
            record, tasks = RunState.start(workflow, state.cell_id, body.payload, at=state.now)
        except WorkflowInputError as exc:
            raise RunInputError(f"{self.name}/{state.cell_id}: {exc}") from exc
        self._store(state, None, record, tasks, [])

    def _result(self, state: CellState[RunRecord], result: TaskResult) -> None:
        record = self._existing(state, "result")
        if result.run_id != state.cell_id:
            raise UnknownRunError(
                f"{self.name}: a result for run {result.run_id!r} reached run {state.cell_id!r}"
            )
        step = RunState.apply(self.workflow(record.workflow), record, result, at=state.now)
        self._store(state, record, step.record, step.tasks, step.retries)

    def _cancel(self, state: CellState[RunRecord], body: CancelRun) -> None:
        record = self._existing(state, "cancel")
        if record.done:
            logger.info("%s/%s: run already ended; cancel ignored", self.name, state.cell_id)
            return
        cancelled = RunState.cancel(record, at=state.now)
        if body.reason is not None:
            cancelled = cancelled.model_copy(update={"message": f"cancelled: {body.reason}"})
        self._store(state, record, cancelled, [], [])

    def _existing(self, state: CellState[RunRecord], what: str) -> RunRecord:
        if state.data is None:
            raise UnknownRunError(
                f"{self.name}: {what} for run {state.cell_id!r}, which does not exist"
            )
        return state.data

    def _store(
        self,
        state: CellState[RunRecord],
        before: RunRecord | None,
        record: RunRecord,
        tasks: Sequence[Task],
        retries: Sequence[tuple[Task, float]],
    ) -> None:
        """Keep ``record`` and ask for its work, in this commit.

        1. A record over :attr:`max_run_bytes` is not kept: the run fails with the record it
           had before (a start that big is rejected).
        2. Tasks to run now go to the work topic; each retry becomes the node's timer.
        3. A run that has just ended loses its retry timers and is announced on the done topic.
        """
        size = len(type(record).__pydantic_serializer__.to_json(record))
        if size > self.max_run_bytes:
            why = (
                f"the run's record would grow to {size} bytes, over the {self.max_run_bytes} "
                "a run may keep (max_run_bytes)"
            )
            if before is None:
                raise RunInputError(f"{self.name}/{state.cell_id}: {why}")
            logger.error("%s/%s: failing the run: %s", self.name, state.cell_id, why)
            record = before.model_copy(
                update={
                    "status": RunStatus.FAILED,
                    "message": why,
                    "in_flight": {},
                    "finished_at": iso_utc(state.now),
                }
            )
            tasks, retries = [], []
        for task in tasks:
            self._publish_task(state, task)
        for task, delay in retries:
            state.set_timer(
                RETRY_TIMER_PREFIX + task.node.id,
                after=timedelta(seconds=max(delay, 0.0)),
                payload=task.model_dump(mode="json"),
            )
        if record.done and (before is None or not before.done):
            for name in state.timers:
                if name.startswith(RETRY_TIMER_PREFIX):
                    state.cancel_timer(name)
            state.publish(self.done_topic, RunEnded.of(record).model_dump_json().encode())
            logger.info("%s/%s: run %s", self.name, state.cell_id, record.status)
        state.data = record

    def _publish_task(self, state: CellState[RunRecord], task: Task) -> None:
        state.publish(self.tasks_topic, task.model_dump_json().encode(), key=task.node.id)


class TaskRunner:
    """The worker side of the queue: runs each task of a workflow behaviour's work topic.

    A reactor handler (:mod:`stream_app.engine.reactor`) of ``<app_id>.<name>.tasks``, so it
    inherits its guarantees: one task at a time per worker, and the task's offset committed
    only after the result it sent is flushed to Kafka (the commit waits for the producer), so
    a crash in between runs the task again. The action's own errors are results, not failures
    of the handler.

    A result larger than a run's input accepts (``max_result_bytes``) would be dead-lettered
    on arrival and leave its node waiting forever; it is sent as a failed attempt instead,
    which the node's retry policy and error edge handle like any failure.

    Args:
        behaviour: The workflow behaviour whose tasks it runs.
        send: Hands a result envelope to the producer, for the run's input.
        max_result_bytes: The largest envelope a run's input accepts
            (``Settings.max_message_bytes``).
    """

    def __init__(
        self, behaviour: WorkflowBehaviour, send: ResultSender, *, max_result_bytes: int
    ) -> None:
        self.behaviour = behaviour
        self._send = send
        self.max_result_bytes = max_result_bytes

    async def __call__(self, record: ReactorRecord) -> None:
        """Run the task in ``record`` and send its result to the run."""
        task = Task.model_validate_json(record.value or b"")
        workflow = self.behaviour.workflow(task.workflow)
        # The edge's time is the task record's, so a task run again derives the same nodes.
        at = _EPOCH + timedelta(milliseconds=record.timestamp_ms)
        # User code may block: the worker's event loop keeps serving cells meanwhile.
        result = await asyncio.to_thread(workflow.execute, task, at=at)
        envelope = envelope_bytes("result", result, id=task.key)
        if len(envelope) > self.max_result_bytes:
            failed = result.model_copy(
                update={
                    "ok": False,
                    "successors": (),
                    "error": (
                        f"the result is {len(envelope)} bytes, over the {self.max_result_bytes} "
                        "a run's input accepts (STREAM_APP_MAX_MESSAGE_BYTES)"
                    ),
                }
            )
            envelope = envelope_bytes("result", failed, id=task.key)
        await self._send(task.run_id, envelope)
