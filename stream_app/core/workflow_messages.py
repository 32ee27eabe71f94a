"""The wire format of workflow runs on Kafka: what clients send to a run and what it publishes.

A workflow behaviour ``B`` of app ``A``
(:class:`~stream_app.engine.workflow_runs.WorkflowBehaviour`) uses three topics, all with the
app's partition count:

- ``A.B.in``: the runs' input, keyed by run id. Envelopes of type ``start``
  (:class:`StartRun`), ``cancel`` (:class:`CancelRun`) and ``result`` (a
  :class:`~stream_app.core.workflows.TaskResult`, sent back by the worker that ran a task).
- ``A.B.tasks``: the worker queue, keyed by node id, one :class:`~stream_app.core.workflows.Task`
  (JSON) per record; every worker of the app reads its share of the partitions.
- ``A.B.done``: one :class:`RunEnded` per run that ended, keyed by run id, on the partition
  numbered like the run's (so a client waiting for one run reads one partition).

Any producer can start a run: ``{"type": "start", "body": {"workflow": "generic", "payload":
{...}}}`` keyed by a fresh run id (a UUID), to ``A.B.in``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stream_app.core.workflows import Node, RunRecord, RunStatus

__all__ = ["CancelRun", "RunEnded", "StartRun"]


class StartRun(BaseModel):
    """Start a run of ``workflow`` (the record key is the run id) with ``payload`` as the data
    of its root node.

    Attributes:
        workflow: The workflow's name (the behaviour must run it).
        payload: The root node's data, valid for the root node type's payload model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow: str = Field(min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)


class CancelRun(BaseModel):
    """Cancel the run (the record key): its pending nodes become ``cancelled``, its retries
    are dropped and results arriving later are ignored.

    Attributes:
        reason: Why, kept as the run's message.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str | None = None


class RunEnded(BaseModel):
    """A run that ended, as published on ``<app_id>.<behaviour>.done``.

    Attributes:
        workflow: The workflow's name.
        run_id: The run.
        status: ``succeeded``, ``failed`` or ``cancelled``.
        message: Why it failed, or was cancelled.
        finals: The run's results: its nodes with status ``final`` (see
            :meth:`~stream_app.core.workflows.RunRecord.finals`).
        nodes: How many nodes the run created.
        started_at: When it started (UTC, ISO 8601).
        finished_at: When it ended.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow: str
    run_id: str
    status: RunStatus
    message: str | None = None
    finals: tuple[Node, ...] = ()
    nodes: int = 0
    started_at: str
    finished_at: str | None = None

    @classmethod
    def of(cls, record: RunRecord) -> RunEnded:
        """The summary of the ended run ``record``."""
        return cls(
            workflow=record.workflow,
            run_id=record.run_id,
            status=record.status,
            message=record.message,
            finals=tuple(record.finals()),
            nodes=len(record.nodes),
            started_at=record.started_at,
            finished_at=record.finished_at,
        )
