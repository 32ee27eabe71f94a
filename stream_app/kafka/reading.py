"""Read a topic from its beginning to its end as of now (committed records only).

:func:`read_to_end` yields confluent-kafka messages as they come; :func:`read_records` collects
them as :class:`Record` values (the dead-letter tools and the test harness read topics that way).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

from stream_app.logs import rdkafka_logger
from stream_app.settings import KafkaConnection, client_config

__all__ = ["Record", "last_record_offsets", "read_records", "read_to_end"]

#: Offsets before a partition's end read first by :func:`last_record_offsets` (then 8x more).
TAIL_WINDOW = 64


def read_to_end(
    kafka: KafkaConnection,
    topic: str,
    *,
    partitions: list[int] | None = None,
    on_total: Callable[[int], None] | None = None,
    tail: int | None = None,
    spans: Mapping[int, tuple[int, int]] | None = None,
    timeout: float = 30.0,
) -> Iterator[Message]:
    """Yield every committed record of ``topic`` (or of its ``partitions``), from the
    beginning (or, with ``tail``, from that many offsets before the end) to the end each
    partition had when the call started.

    ``spans`` reads only those partitions, each from its first offset up to (not including)
    its end offset, within what the partition holds: one record is ``{p: (o, o + 1)}``.

    ``kafka`` is the bootstrap servers, or a client configuration with security
    (:meth:`~stream_app.settings.Settings.kafka_client_config`).

    Reads ``read_committed`` with a consumer that joins no group and commits nothing. The end
    is reached when the consumer's position passes the end offset, not when a record with
    that offset is seen: compaction and transaction markers leave gaps. ``on_total`` is told,
    before the first record, how many offsets (at most that many records) lie ahead.

    Raises:
        LookupError: The topic does not exist.
        TimeoutError: The end was not reached within ``timeout`` seconds.
    """
    consumer = Consumer(
        {
            **client_config(kafka),
            "group.id": f"stream-app-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "logger": rdkafka_logger(),
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise LookupError(f"topic {topic} does not exist")
        held = metadata.topics[topic].partitions
        if spans is not None:
            wanted = sorted(p for p in spans if p in held)
        else:
            wanted = sorted(held) if partitions is None else partitions
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        for p in wanted:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if spans is not None:
                low, high = max(low, spans[p][0]), min(high, spans[p][1])
            if high > low:
                starts[p], ends[p] = low if tail is None else max(low, high - tail), high
        if on_total is not None:
            on_total(sum(ends[p] - starts[p] for p in ends))
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        assigned = [TopicPartition(topic, p) for p in ends]
        deadline = time.monotonic() + timeout
        while True:
            for message in consumer.consume(1000, timeout=0.2):
                partition, offset = message.partition(), message.offset()
                if message.error() or partition is None or offset is None:
                    continue
                if offset < ends[partition]:
                    yield message
            position = {tp.partition: tp.offset for tp in consumer.position(assigned)}
            if all(position[p] >= ends[p] for p in ends):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: at {position} of {ends} after {timeout:.0f}s")
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class Record:
    """One record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]


def read_records(
    kafka: KafkaConnection,
    topic: str,
    *,
    tail: int | None = None,
    spans: Mapping[int, tuple[int, int]] | None = None,
    timeout: float = 30.0,
) -> list[Record]:
    """Every committed record of ``topic`` from the beginning (or, with ``tail``, from that many
    offsets before the end of each partition; with ``spans``, in those offsets only: see
    :func:`read_to_end`) to its end as of the call.

    Raises:
        LookupError: The topic does not exist.
        TimeoutError: The end was not reached within ``timeout`` seconds.
    """
    records: list[Record] = []
    for message in read_to_end(kafka, topic, tail=tail, spans=spans, timeout=timeout):
        headers = message.headers() or []
        records.append(
            Record(
                topic,
                message.partition() or 0,
                message.offset() or 0,
                message.key(),
                message.value(),
                list(headers.items() if isinstance(headers, dict) else headers),
            )
        )
    return records


def last_record_offsets(
    kafka: KafkaConnection, ends: Mapping[tuple[str, int], int], *, timeout: float = 30.0
) -> dict[tuple[str, int], int | None]:
    """The offset of the last committed record before each partition's end.

    ``ends`` maps ``(topic, partition)`` to an end offset, normally the last stable offset.
    A partition written in transactions ends with a commit (or abort) marker, which takes an
    offset but is never delivered, so "the end minus one" is not a record. This reads each
    partition ``read_committed`` backwards from its end in growing windows until it finds a
    record (``None`` when the partition has none before its end).

    Raises:
        TimeoutError: A window was not read within ``timeout`` seconds.
    """
    found: dict[tuple[str, int], int | None] = {tp: None for tp, end in ends.items() if end <= 0}
    pending = {tp: end for tp, end in ends.items() if end > 0}
    window = TAIL_WINDOW
    consumer = Consumer(
        {
            **client_config(kafka),
            "group.id": f"stream-app-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
            "logger": rdkafka_logger(),
        }
    )
    try:
        while pending:
            starts = {tp: max(0, end - window) for tp, end in pending.items()}
            consumer.assign([TopicPartition(t, p, starts[t, p]) for t, p in pending])
            assigned = [TopicPartition(t, p) for t, p in pending]
            last: dict[tuple[str, int], int] = {}
            deadline = time.monotonic() + timeout
            while True:
                for message in consumer.consume(1000, timeout=0.1):
                    offset = message.offset()
                    tp = (message.topic() or "", message.partition() or 0)
                    if message.error() or offset is None:
                        continue
                    if tp in pending and offset < pending[tp]:
                        last[tp] = max(offset, last.get(tp, -1))
                positions = {(t.topic, t.partition): t.offset for t in consumer.position(assigned)}
                if all(positions[tp] >= end for tp, end in pending.items()):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"reading the last records: at {positions} of {dict(pending)} after "
                        f"{timeout:.0f}s"
                    )
            for tp in list(pending):
                if tp in last or starts[tp] == 0:
                    found[tp] = last.get(tp)
                    del pending[tp]
            window *= 8
        return found
    finally:
        consumer.close()
