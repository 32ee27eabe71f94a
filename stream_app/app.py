"""Faust application factory and the worker-side dead-letter sink.

:func:`create_app` builds a :class:`faust.App` configured from
:class:`~stream_app.settings.Settings`, so every stream_app worker agrees on broker, store,
partitions and guarantees.
:class:`DeadLetterSink` publishes rejected records from inside an agent and counts them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import faust

from stream_app.core.dead_letters import DeadLetter
from stream_app.errors import InvalidMessageError
from stream_app.settings import Settings

__all__ = ["DeadLetterSink", "create_app"]


def create_app(settings: Settings, **overrides: Any) -> faust.App:
    """Create the Faust app of a stream_app worker.

    Args:
        settings: Where the broker is, which store to use, partitions, guarantees.
        **overrides: Further :class:`faust.App` options, applied last.

    The app does not autodiscover modules, reads every topic from the earliest offset when the
    group has none committed, and produces with ``acks=all`` so an acknowledged record survives
    the loss of the leader.
    """
    options: dict[str, Any] = {
        "broker": settings.faust_broker,
        "store": settings.store,
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "processing_guarantee": settings.processing_guarantee,
        "web_host": settings.web_host,
        "web_bind": settings.web_host,
        "web_port": settings.web_port,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout_s / 3),
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # A dead letter carries a full-size original value plus its reason headers.
        "producer_max_request_size": max(settings.max_message_bytes, settings.dead_letter_max_bytes)
        + 65_536,
        "autodiscover": False,
        "version": 1,
    }
    options.update(overrides)
    return faust.App(settings.app_id, **options)


class DeadLetterSink:
    """Sends rejected records to ``<app_id>.dead-letters`` from inside a Faust agent.

    The send is awaited until the broker acknowledges it, so the source offset is never
    committed ahead of its dead letter: a crash in between replays the record and dead-letters
    it again (at least once), it is never lost.

    Attributes:
        counts: Dead letters published by this process, by reason.
    """

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.settings = settings
        self.topic = app.topic(
            settings.dead_letter_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.counts: Counter[str] = Counter()

    async def publish(self, message: Any, error: InvalidMessageError, *, behaviour: str) -> None:
        """Dead-letter the Faust ``message`` (an ``event.message``) rejected with ``error``."""
        letter = DeadLetter.for_record(
            key=message.key,
            value=message.value,
            reason=error.reason,
            error=str(error),
            app=self.settings.app_id,
            behaviour=behaviour,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            max_bytes=self.settings.dead_letter_max_bytes,
        )
        pending = await self.topic.send(
            key=letter.key, value=letter.value, headers=letter.headers()
        )
        await pending
        self.counts[letter.reason] += 1
