"""The local workflow engine: one process, no Kafka, the same :class:`RunState` as on Kafka.

:class:`LocalEngine` drives a run the way the Kafka engine does, with an in-process queue for
the work topic and a thread pool for the workers:

1. :meth:`RunState.start` gives the record and the root task;
2. tasks are executed with :meth:`Workflow.execute` (inline, or on ``parallel`` threads);
3. each result is applied by :meth:`RunState.apply` in the calling thread, the run's single
   writer, which returns the tasks to run now and the retries to run after their pause;
4. the run ends when the state machine says it is done.

Because the engine only moves tasks and results, a run gives the same nodes and traces here as
on a cluster (up to times); the engine's own choices (order of execution, thread timing) cannot
change them, and the property tests check that.
"""

from __future__ import annotations

import heapq
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from stream_app.api.workflows import RunState, Step, Workflow
from stream_app.core.workflows import RunRecord, Task, TaskResult

__all__ = ["LocalEngine"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LocalEngine:
    """Runs a workflow in this process, sequentially or on a thread pool.

    Args:
        workflow: The workflow (validated here).
        sleep: Waits out a retry's pause (a test passes a function that records and returns).
        clock: The time handed to the state machine and the actions.
    """

    def __init__(
        self,
        workflow: Workflow,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.workflow = workflow.validate()
        self._sleep = sleep
        self._clock = clock

    def run(
        self, payload: dict[str, Any], *, run_id: str | None = None, parallel: int = 1
    ) -> RunRecord:
        """Run the workflow on ``payload`` to its end; returns the run's record.

        Args:
            payload: The root node's payload.
            run_id: The run's id (a new uuid4 when left out).
            parallel: Threads executing tasks (1: each task in turn, in this thread).

        Raises:
            WorkflowInputError: ``payload`` fails the root node type's model.
            ValueError: ``parallel`` is below 1.
        """
        if parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {parallel}")
        record, tasks = RunState.start(
            self.workflow, run_id or str(uuid.uuid4()), payload, at=self._clock()
        )
        run = _Run(self.workflow, record, tasks, self._sleep, self._clock)
        if parallel == 1:
            return run.sequential()
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="workflow") as pool:
            return run.threaded(pool)


class _Run:
    """One run's queue (ready tasks), delayed retries and record, owned by the calling thread.

    Retry pauses are measured on a logical clock that the engine advances by what it asks
    ``sleep`` to wait, and by the real time that passes; a retry runs once its pause is over.
    """

    def __init__(
        self,
        workflow: Workflow,
        record: RunRecord,
        tasks: list[Task],
        sleep: Callable[[float], None],
        clock: Callable[[], datetime],
    ) -> None:
        self.workflow = workflow
        self.record = record
        self.ready: deque[Task] = deque(tasks)
        self.delayed: list[tuple[float, int, Task]] = []
        self._sleep = sleep
        self._clock = clock
        self._order = itertools.count()
        self._origin = time.monotonic()
        self._skipped = 0.0

    def sequential(self) -> RunRecord:
        while not self.record.done:
            if not self.ready:
                self._wait_for_retry()
                continue
            task = self.ready.popleft()
            self._apply(self.workflow.execute(task, at=self._clock()))
        return self.record

    def threaded(self, pool: ThreadPoolExecutor) -> RunRecord:
        running: set[Future[TaskResult]] = set()
        while not self.record.done:
            self._release_due()
            while self.ready:
                task = self.ready.popleft()
                running.add(pool.submit(self.workflow.execute, task, at=self._clock()))
            if not running:
                self._wait_for_retry()
                continue
            finished, running = wait(
                running, timeout=self._until_next(), return_when=FIRST_COMPLETED
            )
            for future in finished:
                self._apply(future.result())
        for future in running:
            future.cancel()
        return self.record

    def _apply(self, result: TaskResult) -> None:
        step: Step = RunState.apply(self.workflow, self.record, result, at=self._clock())
        self.record = step.record
        self.ready.extend(step.tasks)
        for task, delay in step.retries:
            heapq.heappush(self.delayed, (self._now() + delay, next(self._order), task))

    def _now(self) -> float:
        return time.monotonic() - self._origin + self._skipped

    def _until_next(self) -> float | None:
        return max(0.0, self.delayed[0][0] - self._now()) if self.delayed else None

    def _release_due(self) -> None:
        now = self._now()
        while self.delayed and self.delayed[0][0] <= now:
            self.ready.append(heapq.heappop(self.delayed)[2])

    def _wait_for_retry(self) -> None:
        if not self.delayed:
            raise RuntimeError(
                f"run {self.record.run_id}: no task ready or delayed, but the run is not done"
            )
        pause = self._until_next() or 0.0
        before = time.monotonic()
        self._sleep(pause)
        self._skipped += max(0.0, pause - (time.monotonic() - before))
        self.ready.append(heapq.heappop(self.delayed)[2])
        self._release_due()
