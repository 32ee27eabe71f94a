"""A record read from a cell input topic, as the cell engine receives it.

The batched input (:mod:`stream_app.kafka.batch_input`) makes one :class:`InputRecord` of each
Kafka message it reads and hands it to the engine of the record's topic, with the unit of work
of the record's partition. The engine needs nothing else of the Kafka client's message.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Headers", "InputRecord"]

#: Kafka record headers, as confluent-kafka gives and takes them (``None`` for none).
Headers = list[tuple[str, bytes]] | None


@dataclass(slots=True)
class InputRecord:
    """One record of a cell input topic.

    Attributes:
        topic: The input topic.
        partition: The partition it was read from.
        offset: Its offset in the partition.
        key: The record key (the cell id, UTF-8), or ``None``.
        value: The record value (a JSON envelope, or a control record's value), or ``None``.
        headers: The record headers.
        timestamp_ms: The record's timestamp (milliseconds since the epoch), or ``None`` when
            it has none.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int | None
