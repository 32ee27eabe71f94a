"""How the fast restore takes a consumed batch (stream_app.kafka.restore._read_batch), without a
broker: runs of a partition are taken whole (map over the message methods, one dict update),
and must leave each job exactly as taking the records one by one does: the last value of each
key (``None`` for a tombstone), the last offset read, the records and bytes counted, the end of
the partition (its end-of-partition event, records past its end left out), whatever the runs,
errors and topics in the batch.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from stream_app.kafka.restore import RestoreJob, _read_batch


class FakeConsumer:
    """Hands out the given batches, one per ``consume``."""

    def __init__(self, batches: list[list[Message]]) -> None:
        self.batches = list(batches)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        return self.batches.pop(0) if self.batches else []


def job(topic: str, partition: int, end: int) -> RestoreJob:
    made = RestoreJob(
        topic=topic, partition=partition, start=0, db=None, offset_key=b"o", still_ours=bool
    )
    made._end = end
    return made


def record(topic: str, partition: int, offset: int, key: bytes, value: bytes | None) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, key=key, value=value)


def eof(topic: str, partition: int, offset: int) -> Message:
    error = KafkaError(KafkaError._PARTITION_EOF)
    return Message(topic=topic, partition=partition, offset=offset, error=error)


def one_by_one(batch: list[Message], jobs: dict[tuple[str, int], RestoreJob]) -> int:
    """The reference: each message taken on its own, as the restore did before it took runs."""
    applied = 0
    for message in batch:
        taker = jobs.get((message.topic(), message.partition()))
        if taker is None:
            continue
        error = message.error()
        if error is not None:
            assert error.code() == KafkaError._PARTITION_EOF
            taker._end = min(taker._end, message.offset())
            taker._at_end = True
            continue
        if message.offset() >= taker._end:
            continue
        value = message.value()
        taker._writes[message.key()] = value
        taker._bytes += len(value) if value is not None else 0
        taker._last = message.offset()
        taker.records += 1
        applied += 1
    return applied


def state(jobs: dict[tuple[str, int], RestoreJob]) -> dict[tuple[str, int], Any]:
    return {
        key: (j._writes, list(j._writes), j._last, j.records, j._bytes, j._end, j._at_end)
        for key, j in jobs.items()
    }


def random_batches(rng: random.Random) -> tuple[list[list[Message]], dict[tuple[str, int], int]]:
    """Batches over two topics with the same partition numbers, in runs of random length, with
    tombstones, an end-of-partition event where a partition's records stop (sometimes before
    its high watermark, as under read_committed), records past the high watermark, and a
    partition nobody restores; and the high watermark of each partition."""
    partitions = [(topic, p) for topic in ("a", "b") for p in range(3)]
    ends = {tp: rng.randrange(0, 60) for tp in partitions}
    written = {tp: ends[tp] + rng.choice([0, 0, 5]) for tp in partitions}
    next_offset = dict.fromkeys(partitions, 0)
    stream: list[Message] = []
    while any(next_offset[tp] <= written[tp] for tp in partitions):
        tp = rng.choice([tp for tp in partitions if next_offset[tp] <= written[tp]])
        for _ in range(rng.randrange(1, 12)):
            offset = next_offset[tp]
            if offset > written[tp]:
                break
            next_offset[tp] += 1
            if offset == written[tp]:
                stream.append(eof(tp[0], tp[1], rng.choice([offset, min(offset, ends[tp])])))
                break
            key = b"k%d" % rng.randrange(8)
            value = None if rng.random() < 0.2 else b"v" * rng.randrange(0, 5) + b"%d" % offset
            stream.append(record(tp[0], tp[1], offset, key, value))
    cuts = sorted(rng.sample(range(len(stream) + 1), min(4, len(stream) + 1)))
    batches = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    return batches, ends


@pytest.mark.parametrize("seed", range(200))
def test_a_batch_is_taken_as_one_record_at_a_time_would_be(seed: int) -> None:
    rng = random.Random(seed)
    batches, ends = random_batches(rng)
    restored = [tp for tp in ends if tp != ("b", 2)]
    fast = {tp: job(*tp, ends[tp]) for tp in restored}
    slow = {tp: job(*tp, ends[tp]) for tp in restored}
    consumer = FakeConsumer(batches)
    for batch in batches:
        assert _read_batch(consumer, fast) == one_by_one(batch, slow)
        assert state(fast) == state(slow)


def test_records_past_the_end_are_left_out_and_the_end_event_is_taken_in_order() -> None:
    # High watermark 5 at the start; the consumer reports the end at 2 (the last stable offset),
    # then delivers records a transaction committed since: not chased.
    restored = {("t", 0): job("t", 0, 5)}
    batch = [
        record("t", 0, 0, b"x", b"1"),
        record("t", 0, 1, b"y", None),
        eof("t", 0, 2),
        record("t", 0, 2, b"x", b"22"),
        record("t", 0, 3, b"z", b"3"),
    ]
    assert _read_batch(FakeConsumer([batch]), restored) == 2
    taken = restored["t", 0]
    assert taken._writes == {b"x": b"1", b"y": None}
    assert (taken._last, taken.records, taken._bytes, taken._end, taken._at_end) == (
        1,
        2,
        1,
        2,
        True,
    )
    # A partition's records past the high watermark noted at the start are not taken either.
    other = {("t", 1): job("t", 1, 2)}
    batch = [record("t", 1, offset, b"k", b"%d" % offset) for offset in range(4)]
    assert _read_batch(FakeConsumer([batch]), other) == 2
    assert (other["t", 1]._writes, other["t", 1]._last) == ({b"k": b"1"}, 1)


def test_a_fatal_error_stops_the_restore() -> None:
    fatal = KafkaError(KafkaError._FATAL, fatal=True)
    batch = [record("t", 0, 0, b"x", b"1"), Message(topic="t", partition=0, error=fatal)]
    with pytest.raises(KafkaException):
        _read_batch(FakeConsumer([batch]), {("t", 0): job("t", 0, 10)})


def test_every_kafka_error_is_true() -> None:
    # _read_run finds a run's errors with any(map(Message.error, run)).
    assert all(KafkaError(code) for code in (0, KafkaError._PARTITION_EOF, KafkaError._FATAL))
