"""The worker-side dead-letter sink: rejected records to ``<app_id>.dead-letters``, counted.

Cells, effect handlers and reactor handlers reject a record by handing it to the
:class:`DeadLetterSink`, which wraps it in a :class:`~stream_app.core.dead_letters.DeadLetter`
(reason, error, origin, truncated to ``Settings.dead_letter_max_bytes``), produces it and counts
it by reason (served by the worker's ``/stream-app/metrics/`` and ``/stream-app/dead-letters/``
views).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import faust

from stream_app.core.dead_letters import DeadLetter
from stream_app.errors import StreamAppError
from stream_app.kafka.app import raw_topic
from stream_app.settings import Settings

__all__ = ["DeadLetterSink"]


class DeadLetterSink:
    """Sends rejected records to ``<app_id>.dead-letters`` from inside a Faust agent.

    The send is awaited until the broker acknowledges it, so the source offset is never
    committed ahead of its dead letter: a crash in between replays the record and dead-letters
    it again (at least once), it is never lost. (Dead letters of cell input records go out with
    the record's other outputs instead: :class:`stream_app.kafka.cell_store.CellDeadLetters`,
    which counts them in :attr:`counts` too.)

    Attributes:
        counts: Dead letters published by this process, by reason.
    """

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.settings = settings
        self.topic = raw_topic(app, settings.dead_letter_topic)
        self.counts: Counter[str] = Counter()

    async def publish(self, message: Any, error: StreamAppError, *, behaviour: str) -> None:
        """Dead-letter the Faust ``message`` (an ``event.message``) rejected with ``error``.

        The reason is the error's ``reason`` attribute (``invalid`` when it has none).
        """
        await self.publish_record(
            key=message.key,
            value=message.value,
            reason=getattr(error, "reason", "invalid"),
            error=str(error),
            behaviour=behaviour,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )

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
        """Dead-letter a record given by its parts, and wait for the broker's acknowledgement."""
        letter = DeadLetter.for_record(
            key=key,
            value=value,
            reason=reason,
            error=error,
            app=self.settings.app_id,
            behaviour=behaviour,
            topic=topic,
            partition=partition,
            offset=offset,
            max_bytes=self.settings.dead_letter_max_bytes,
        )
        pending = await self.topic.send(
            key=letter.key, value=letter.value, headers=letter.headers()
        )
        await pending
        self.counts[letter.reason] += 1
