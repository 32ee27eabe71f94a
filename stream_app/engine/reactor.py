"""Reactor handlers: singleton functions called for every message of a topic, at least once.

Register handlers with :meth:`~stream_app.runtime.Runtime.handler`. Every record of the topic
is delivered to every handler registered for it, in registration order:

1. A handler that raises is tried again under its :class:`~stream_app.core.retry.RetryPolicy`
   (default :data:`~stream_app.core.retry.HANDLER_RETRY`: 5 tries, pauses from 0.2 s
   doubling up to 5 s, with jitter); handlers that already succeeded on the record are not
   called again.
2. A record a handler still fails on goes to the dead-letter topic (reason ``handler-failed``,
   behaviour ``handler:<name>``) and the other handlers still get it.
3. The record is acknowledged only after every handler has finished with it (succeeded, or
   dead-lettered), and Faust commits acknowledged offsets every ``commit_interval_s``, on a
   rebalance and on a clean stop.

One Faust agent per topic (:mod:`stream_app.kafka.agents`) hands the records to
:meth:`Reactor.deliver`, one at a time, so the resume point after a crash
is per partition and shared by the topic's handlers: the partition's last committed offset.
The next owner handles again, by every handler, the record that was in progress (also in the
handlers that had finished it) and every record finished since the last commit; nothing
before that commit, and nothing is skipped. Make handlers idempotent: a record's
``topic/partition/offset`` identifies it. :meth:`~stream_app.runtime.Runtime.inject_record`
gives the handlers a record from inside the worker, through their topic.

The reactor is handling logic only: it reaches the dead-letter topic and the clock through the
ports of :mod:`stream_app.engine.ports`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from stream_app.core.retry import HANDLER_RETRY, RetryPolicy
from stream_app.engine.ports import DeadLetterPublisher, Pauses
from stream_app.engine.retrying import call_with_retry, dead_lettering

__all__ = ["Reactor", "ReactorHandler", "ReactorRecord"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReactorRecord:
    """One Kafka record, as given to a reactor handler.

    Attributes:
        topic: Its topic.
        partition: Its partition.
        offset: Its offset (with topic and partition, a unique id for idempotence).
        key: Its key, as bytes.
        value: Its value, as bytes.
        headers: Its headers.
        timestamp_ms: Its timestamp (milliseconds since the epoch).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


#: A reactor handler: called with each record, sync or async; raising means "try again".
ReactorHandler = Callable[[ReactorRecord], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class _Registration:
    name: str
    handler: ReactorHandler
    retry: RetryPolicy


class Reactor:
    """The reactor handlers of one worker, by topic.

    Args:
        dead_letters: Where records a handler fails on for good go.
        pauses: How the pauses between tries are taken (real sleeps by default).
    """

    def __init__(self, dead_letters: DeadLetterPublisher, *, pauses: Pauses | None = None) -> None:
        self.dead_letters = dead_letters
        self.pauses = pauses or Pauses()
        self.handlers: dict[str, list[_Registration]] = {}

    @property
    def topics(self) -> list[str]:
        """The topics that have handlers."""
        return sorted(self.handlers)

    def register(
        self,
        topic: str,
        handler: ReactorHandler,
        *,
        name: str | None = None,
        retry: RetryPolicy = HANDLER_RETRY,
    ) -> None:
        """Call ``handler`` for every record of ``topic``, after the handlers registered before,
        tried under ``retry``.

        Raises:
            ValueError: ``retry`` does not end in a dead letter.
        """
        label = name or str(getattr(handler, "__qualname__", repr(handler)))
        policy = dead_lettering(retry, f"handler {label} on {topic!r}")
        self.handlers.setdefault(topic, []).append(_Registration(label, handler, policy))

    async def deliver(self, record: ReactorRecord) -> None:
        """Give one record to every handler of its topic (see the module docs for failures)."""
        for registration in self.handlers[record.topic]:
            await self._call(registration, record)

    async def _call(self, registration: _Registration, record: ReactorRecord) -> None:
        def failed(attempt: int, exc: Exception, pause: float | None) -> None:
            if pause is None:
                logger.error(
                    "handler %s failed on %s[%s]@%s %d times, dead-lettering: %r",
                    registration.name,
                    record.topic,
                    record.partition,
                    record.offset,
                    attempt,
                    exc,
                )

        error = await call_with_retry(
            registration.handler, record, registration.retry, self.pauses, failed
        )
        if error is None:
            return
        await self.dead_letters.publish_record(
            key=record.key,
            value=record.value,
            reason="handler-failed",
            error=f"{type(error).__name__}: {error} (after {registration.retry.attempts} attempts)",
            behaviour=f"handler:{registration.name}",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
