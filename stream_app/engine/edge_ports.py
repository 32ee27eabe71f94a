"""The ports of the effect dispatcher and the reactor: what they need of the world around them.

:class:`~stream_app.engine.effects.EffectDispatcher` and :class:`~stream_app.engine.reactor.
Reactor` are handling logic only (decode, call the user's handler, retry, dead-letter, count).
They reach Kafka and the process only through these small protocols, which the runtime fills
with the real things (the worker's :class:`~stream_app.kafka.dead_letters.DeadLetterSink`, its
:class:`~stream_app.runtime.RuntimeMetrics`, :func:`asyncio.sleep`) and a unit test with fakes.
The Faust agents that feed them records live on the Kafka side (:mod:`stream_app.kafka.agents`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from stream_app.core.retry import RetryPolicy

__all__ = ["DeadLetterPublisher", "EffectCounters", "Pauses", "SourceRecord"]


class DeadLetterPublisher(Protocol):
    """Sends a rejected record to the dead-letter topic (and counts it)."""

    async def publish_record(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error: str,
        behaviour: str,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        """Dead-letter the record; returns once the broker has acknowledged the dead letter."""
        ...


class EffectCounters(Protocol):
    """The counters the effect dispatcher keeps (served at ``/stream-app/metrics/``)."""

    effects_done: int
    effect_failures: int


class SourceRecord(Protocol):
    """The parts of a consumed Kafka record the handling logic reads."""

    @property
    def topic(self) -> str:
        """Its topic."""
        ...

    @property
    def partition(self) -> int:
        """Its partition."""
        ...

    @property
    def offset(self) -> int:
        """Its offset."""
        ...

    @property
    def key(self) -> bytes | None:
        """Its key."""
        ...

    @property
    def value(self) -> bytes | None:
        """Its value."""
        ...


@dataclass(frozen=True, slots=True)
class Pauses:
    """How the pauses between tries are taken: the clock and the jitter's random source.

    Attributes:
        sleep: Waits the given seconds (:func:`asyncio.sleep`; a test records them instead).
        random_factor: A number in ``[0, 1)`` for :meth:`RetryPolicy.delay`'s jitter.
    """

    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    random_factor: Callable[[], float] = field(default=random.random)

    def before(self, policy: RetryPolicy, attempt: int) -> float:
        """The pause ``policy`` gives before try number ``attempt``."""
        return policy.delay(attempt, random_factor=self.random_factor)
