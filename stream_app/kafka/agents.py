"""The Faust agents that feed the effect dispatcher and the reactor their records.

:class:`~stream_app.engine.effects.EffectDispatcher` and :class:`~stream_app.engine.reactor.
Reactor` know nothing of Faust; the runtime wires them to Kafka here. Each agent reads its
topic with Faust's consumer, one record at a time per agent (so in order within a partition),
and awaits the handling of a record before it takes the next. Faust acknowledges a record when
the agent takes the next one (``stream.events()``) and commits acknowledged offsets every
``commit_interval_s``, on a rebalance and on a clean stop: a record is committed only after
its handlers have finished with it (succeeded, or dead-lettered with the dead letter
acknowledged), so effects and reactor handlers run at least once under both guarantees. Under
``exactly_once`` the app's consumer reads ``read_committed``, so an effect is handled only once
the transaction of the cell that emitted it has committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust

from stream_app.engine.ports import SourceRecord
from stream_app.engine.reactor import ReactorRecord
from stream_app.kafka.app import raw_topic

__all__ = ["feed_effects", "feed_reactor", "reactor_record"]


def feed_effects(
    app: faust.App, topic: str, dispatch: Callable[[SourceRecord], Awaitable[None]]
) -> None:
    """Run an agent on ``app`` that gives each record of the effects ``topic`` to ``dispatch``
    (:meth:`~stream_app.engine.effects.EffectDispatcher.dispatch`)."""

    async def agent(stream: Any) -> None:
        async for event in stream.events():
            await dispatch(event.message)

    app.agent(raw_topic(app, topic), name="stream_app.effects")(agent)


def feed_reactor(
    app: faust.App, topic: str, deliver: Callable[[ReactorRecord], Awaitable[None]]
) -> None:
    """Run an agent on ``app`` that gives each record of ``topic`` to ``deliver``
    (:meth:`~stream_app.engine.reactor.Reactor.deliver`), as a :class:`ReactorRecord`."""

    async def agent(stream: Any) -> None:
        async for event in stream.events():
            await deliver(reactor_record(event.message))

    app.agent(raw_topic(app, topic), name=f"stream_app.reactor.{topic}")(agent)


def reactor_record(message: Any) -> ReactorRecord:
    """The :class:`ReactorRecord` of a Faust ``message`` (an ``event.message``): headers as
    bytes, the timestamp (seconds in Faust) in milliseconds."""
    return ReactorRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=tuple(
            (k, v if isinstance(v, bytes) else str(v).encode()) for k, v in (message.headers or ())
        ),
        timestamp_ms=int((message.timestamp or 0) * 1000),
    )
