"""Start, wait for, inspect and cancel workflow runs from any process, through Kafka.

:class:`WorkflowClient` talks to one workflow behaviour
(:class:`~stream_app.engine.workflow_runs.WorkflowBehaviour`)::

    with WorkflowClient("jobs", settings, workflows=[generic]) as client:
        run_id = client.start("generic", {"input": "hello"})      # background: durable on return
        finals = client.run("generic", {"input": "hi"}, timeout=30)  # the final nodes
        client.cancel(run_id)
        record = client.get(run_id)                                # the run's record (a view)

    async with AsyncWorkflowClient("jobs", settings) as client:
        finals = await client.run("generic", {"input": "hi"})

How ``run`` learns that its run ended: a run that ends publishes a
:class:`~stream_app.core.workflow_messages.RunEnded` to ``<app_id>.<behaviour>.done``, keyed by
the run id, on the partition numbered like the run's. Before it sends the start, the client
notes the end of that one partition; it then reads from there (``read_committed``, without
joining a group) until its run's record comes. :meth:`WorkflowClient.wait` reads the partition
from its beginning instead, so it finds a run that ended before it was called (within the
topic's retention, 7 days).

With ``workflows=`` (the definitions the workers run) a start is checked before anything is
sent: an unknown workflow or a payload failing the root node type's model raises
:class:`~stream_app.errors.WorkflowInputError`. Without, the worker dead-letters such a start
with the reason (``unknown-workflow``, ``workflow-input``).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol

from pydantic import ValidationError

from stream_app.clients.flushing import flush
from stream_app.core.envelope import envelope_bytes
from stream_app.core.partitioner import partition_for
from stream_app.core.workflow_messages import RunEnded
from stream_app.core.workflows import Node, RunRecord, RunStatus
from stream_app.errors import RunFailedError, StreamAppError, WorkflowInputError
from stream_app.settings import Settings, get_settings

__all__ = ["AsyncWorkflowClient", "WorkflowClient", "WorkflowDefinition", "check_start"]


class WorkflowDefinition(Protocol):
    """What the client reads of a workflow definition (a
    :class:`~stream_app.api.workflows.Workflow`) to check a start before sending it."""

    @property
    def name(self) -> str:
        """The workflow's name."""
        ...

    @property
    def root(self) -> str:
        """The root node type."""
        ...

    def validate_payload(self, node_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` checked against ``node_type``'s payload model (raises pydantic's
        ``ValidationError``)."""
        ...


def check_start(
    definitions: Iterable[WorkflowDefinition], workflow: str, payload: dict[str, Any]
) -> None:
    """Check a start of ``workflow`` with ``payload`` against ``definitions``, as a worker
    running them would, before anything is sent.

    Raises:
        WorkflowInputError: No definition is called ``workflow``, or ``payload`` fails the
            payload model of its root node type.
    """
    known = {definition.name: definition for definition in definitions}
    definition = known.get(workflow)
    if definition is None:
        raise WorkflowInputError(
            f"unknown workflow {workflow!r} (known: {', '.join(sorted(known))})"
        )
    try:
        definition.validate_payload(definition.root, payload)
    except ValidationError as exc:
        raise WorkflowInputError(
            f"workflow {workflow!r}: the input does not fit root node type "
            f"{definition.root!r}: {exc}"
        ) from None


class WorkflowClient:
    """A blocking client of the runs of one workflow behaviour; safe to share between threads.

    Args:
        behaviour: The workflow behaviour's name.
        settings: Where the broker is and the app id; default: from the environment.
        workflows: The workflow definitions, to check starts before sending them (optional).
        web_url: A worker's web address, for :meth:`get` (default: the settings' web host and
            port).
        timeout: Default seconds :meth:`run` and :meth:`wait` wait for a run to end.
        config: Extra librdkafka producer settings, applied last.
    """

    def __init__(
        self,
        behaviour: str,
        settings: Settings | None = None,
        *,
        workflows: Sequence[WorkflowDefinition] = (),
        web_url: str | None = None,
        timeout: float = 60.0,
        config: dict[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        self.behaviour = behaviour
        self.settings = settings or get_settings()
        self.workflows = {workflow.name: workflow for workflow in workflows}
        self.web_url = web_url
        self.timeout = timeout
        self._producer = Producer(
            {
                **self.settings.kafka_client_config(),
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                **(config or {}),
            }
        )

    # -- runs ------------------------------------------------------------------------------

    def check(self, workflow: str, payload: dict[str, Any]) -> None:
        """Check a start as the workers would, when the client knows the definitions
        (:func:`check_start`).

        Raises:
            WorkflowInputError: An unknown workflow, or a payload that fails its model.
        """
        if self.workflows:
            check_start(self.workflows.values(), workflow, payload)

    def start(
        self,
        workflow: str,
        payload: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Start a run in the background; return its run id once the start is durable.

        Args:
            workflow: The workflow's name.
            payload: The root node's data.
            run_id: The run's id (default: a fresh UUID). Starting a run id again with the
                same workflow is ignored by the run, so a start may be retried safely.
            timeout: Seconds to wait for the broker's acknowledgement.

        Raises:
            WorkflowInputError: The start cannot apply (only checked with ``workflows=``).
            StreamAppError: The broker did not acknowledge the start in time.
        """
        data = payload or {}
        self.check(workflow, data)
        body = {"workflow": workflow, "payload": data}
        ident = run_id or str(uuid.uuid4())
        self._send(ident, envelope_bytes("start", body, id=ident), timeout)
        return ident

    def run(
        self,
        workflow: str,
        payload: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        timeout: float | None = None,
    ) -> list[Node]:
        """Start a run and wait for it to end; return its final nodes.

        Raises:
            WorkflowInputError: The start cannot apply (only checked with ``workflows=``).
            RunFailedError: The run failed or was cancelled.
            TimeoutError: The run did not end within ``timeout`` seconds (it goes on).
        """
        ident = run_id or str(uuid.uuid4())
        offset = self._end_offset(ident)
        self.start(workflow, payload, run_id=ident)
        ended = self._read_ended(ident, offset, self.timeout if timeout is None else timeout)
        if ended.status is not RunStatus.SUCCEEDED:
            raise RunFailedError(
                f"run {ident} of {workflow!r} {ended.status}: {ended.message or 'no message'}",
                run_id=ident,
                status=str(ended.status),
                ended=ended,
            )
        return list(ended.finals)

    def wait(self, run_id: str, *, timeout: float | None = None) -> RunEnded:
        """Wait for run ``run_id`` to end (or find that it has); return how it ended.

        Raises:
            TimeoutError: It did not end within ``timeout`` seconds.
        """
        return self._read_ended(run_id, None, self.timeout if timeout is None else timeout)

    def cancel(self, run_id: str, reason: str | None = None, *, timeout: float = 30.0) -> None:
        """Ask run ``run_id`` to cancel; return once the request is durable.

        The run's pending nodes become ``cancelled`` and it ends ``cancelled`` (a run that
        already ended is left as it is).
        """
        body = {"reason": reason} if reason is not None else {}
        self._send(run_id, envelope_bytes("cancel", body), timeout)

    def get(self, run_id: str, *, timeout: float = 10.0) -> RunRecord | None:
        """The run's record as its owner holds it now (``None`` if there is no such run).

        Raises:
            StreamAppError: No worker answered, or it answered with an error.
        """
        base = (self.web_url or self.settings.web_url).rstrip("/")
        url = (
            f"{base}/stream-app/workflows/{urllib.parse.quote(self.behaviour, safe='')}/"
            f"{urllib.parse.quote(run_id, safe='')}/"
        )
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise StreamAppError(
                f"{url}: the worker answered {exc.code}: {exc.read()[:300]!r}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StreamAppError(f"cannot query {url}: {getattr(exc, 'reason', exc)}") from None
        return RunRecord.model_validate(answer["run"]) if answer.get("run") else None

    # -- Kafka -----------------------------------------------------------------------------

    def _send(self, run_id: str, value: bytes, timeout: float) -> None:
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        topic = self.settings.input_topic(self.behaviour)
        while True:
            try:
                self._producer.produce(
                    topic, key=run_id.encode(), value=value, on_delivery=on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        left = flush(self._producer, timeout)
        if errors or left:
            raise StreamAppError(
                f"{self.behaviour}/{run_id}: not acknowledged within {timeout:g}s"
                + (f": {'; '.join(errors)}" if errors else "")
            )

    def _done_partition(self, run_id: str) -> Any:
        from confluent_kafka import TopicPartition

        partition = partition_for(run_id.encode(), self.settings.partitions)
        return TopicPartition(self.settings.done_topic(self.behaviour), partition)

    def _consumer(self) -> Any:
        from confluent_kafka import Consumer

        return Consumer(
            {
                **self.settings.kafka_client_config(),
                # Required by librdkafka; the consumer is assigned, never joins, never commits.
                "group.id": f"{self.settings.app_id}.workflow-client",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )

    def _end_offset(self, run_id: str) -> int:
        """The end of the done-topic partition where ``run_id`` will be announced."""
        consumer = self._consumer()
        tp = self._done_partition(run_id)
        try:
            _low, high = consumer.get_watermark_offsets(tp, timeout=30, cached=False)
        except Exception as exc:  # KafkaException: no such topic yet, broker unreachable
            raise StreamAppError(
                f"cannot read {tp.topic} partition {tp.partition}: {exc} "
                "(is a worker of this app running? it creates the topic)"
            ) from exc
        finally:
            consumer.close()
        return int(high)

    def _read_ended(self, run_id: str, offset: int | None, timeout: float) -> RunEnded:
        """Read the done-topic partition of ``run_id`` from ``offset`` (``None``: its
        beginning) until the run's :class:`RunEnded` comes."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        tp = self._done_partition(run_id)
        key = run_id.encode()
        consumer = self._consumer()
        start = OFFSET_BEGINNING if offset is None else offset
        consumer.assign([TopicPartition(tp.topic, tp.partition, start)])
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                record = consumer.poll(min(left, 0.2))
                if record is None or record.error() is not None or record.key() != key:
                    continue
                return RunEnded.model_validate_json(record.value() or b"")
        finally:
            consumer.close()
        raise TimeoutError(
            f"run {run_id} of {self.behaviour} did not end within {timeout:g}s "
            f"(watching {tp.topic} partition {tp.partition})"
        )

    def close(self) -> None:
        """Flush what is queued (the sends flush already) and let the producer go."""
        self._producer.flush(10)

    def __enter__(self) -> WorkflowClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncWorkflowClient:
    """The asyncio twin of :class:`WorkflowClient` (same arguments); its calls are coroutines.

    Each call runs the blocking client's in a thread, so many runs may be awaited at once.
    """

    def __init__(self, behaviour: str, settings: Settings | None = None, **options: Any) -> None:
        self._client = WorkflowClient(behaviour, settings, **options)
        self.behaviour = behaviour
        self.settings = self._client.settings

    async def start(
        self,
        workflow: str,
        payload: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
    ) -> str:
        """Start a run in the background (see :meth:`WorkflowClient.start`)."""
        return await asyncio.to_thread(self._client.start, workflow, payload, run_id=run_id)

    async def run(
        self,
        workflow: str,
        payload: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        timeout: float | None = None,
    ) -> list[Node]:
        """Start a run and return its final nodes (see :meth:`WorkflowClient.run`)."""
        return await asyncio.to_thread(
            self._client.run, workflow, payload, run_id=run_id, timeout=timeout
        )

    async def wait(self, run_id: str, *, timeout: float | None = None) -> RunEnded:
        """Wait for a run to end (see :meth:`WorkflowClient.wait`)."""
        return await asyncio.to_thread(self._client.wait, run_id, timeout=timeout)

    async def cancel(self, run_id: str, reason: str | None = None) -> None:
        """Cancel a run (see :meth:`WorkflowClient.cancel`)."""
        await asyncio.to_thread(self._client.cancel, run_id, reason)

    async def get(self, run_id: str) -> RunRecord | None:
        """The run's record (see :meth:`WorkflowClient.get`)."""
        return await asyncio.to_thread(self._client.get, run_id)

    async def close(self) -> None:
        """Close the client (see :meth:`WorkflowClient.close`)."""
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncWorkflowClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
