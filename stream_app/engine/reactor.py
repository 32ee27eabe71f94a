"""Reactor handlers: singleton functions called for every message of a topic, at least once.

Register handlers with :meth:`~stream_app.runtime.Runtime.handler`. Every record of the topic
is delivered to every handler registered for it, in registration order:

1. A handler that raises is retried with backoff up to ``max_attempts`` times; handlers that
   already succeeded on the record are not called again.
2. A record a handler still fails on goes to the dead-letter topic (reason ``handler-failed``,
   behaviour ``handler:<name>``) and the other handlers still get it.
3. The record is acknowledged only after every handler has finished with it (succeeded, or
   dead-lettered), and Faust commits acknowledged offsets every ``commit_interval_s``, on a
   rebalance and on a clean stop.

One agent per topic runs the handlers, one record at a time, so the resume point after a crash
is per partition and shared by the topic's handlers: the partition's last committed offset.
The next owner handles again, by every handler, the record that was in progress (also in the
handlers that had finished it) and every record finished since the last commit; nothing
before that commit, and nothing is skipped. Make handlers idempotent: a record's
``topic/partition/offset`` identifies it. :meth:`~stream_app.runtime.Runtime.inject_record`
gives the handlers a record from inside the worker, through their topic.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream_app.runtime import Runtime

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
    max_attempts: int
    backoff_s: float


class Reactor:
    """The reactor handlers of one worker, by topic; made by :class:`~stream_app.Runtime`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
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
        max_attempts: int = 5,
        backoff_s: float = 0.2,
    ) -> None:
        """Call ``handler`` for every record of ``topic``."""
        if max_attempts < 1:
            raise ValueError(f"handler on {topic!r}: max_attempts must be >= 1")
        label = name or str(getattr(handler, "__qualname__", repr(handler)))
        registration = _Registration(label, handler, max_attempts, backoff_s)
        if topic not in self.handlers:
            self.handlers[topic] = []
            channel = self.runtime.app.topic(
                topic,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
            )
            self.runtime.app.agent(channel, name=f"stream_app.reactor.{topic}")(
                self._agent_for(topic)
            )
        self.handlers[topic].append(registration)

    def _agent_for(self, topic: str) -> Callable[[Any], Awaitable[None]]:
        async def agent(stream: Any) -> None:
            async for event in stream.events():
                await self.deliver(topic, event.message)

        return agent

    async def deliver(self, topic: str, message: Any) -> None:
        """Give one record to every handler of ``topic`` (see the module docs for failures)."""
        record = ReactorRecord(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=tuple(
                (k, v if isinstance(v, bytes) else str(v).encode())
                for k, v in (message.headers or ())
            ),
            timestamp_ms=int((message.timestamp or 0) * 1000),
        )
        for registration in self.handlers[topic]:
            await self._call(registration, record)

    async def _call(self, registration: _Registration, record: ReactorRecord) -> None:
        for attempt in range(1, registration.max_attempts + 1):
            try:
                result = registration.handler(record)
                if inspect.isawaitable(result):
                    await result
                return
            except Exception as exc:
                if attempt == registration.max_attempts:
                    logger.error(
                        "handler %s failed on %s[%s]@%s %d times, dead-lettering: %r",
                        registration.name,
                        record.topic,
                        record.partition,
                        record.offset,
                        attempt,
                        exc,
                    )
                    await self.runtime.dead_letters.publish_record(
                        key=record.key,
                        value=record.value,
                        reason="handler-failed",
                        error=f"{type(exc).__name__}: {exc} (after {attempt} attempts)",
                        behaviour=f"handler:{registration.name}",
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                    )
                    return
                await asyncio.sleep(registration.backoff_s * 2 ** (attempt - 1))
