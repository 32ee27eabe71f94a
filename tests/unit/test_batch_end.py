"""The end of a batch in the batched input: flushes first, then its offsets count.

The cells store keeps a batch's table writes in memory until the batch ends
(:meth:`BatchInput.at_batch_end`). So a batch's offsets may be committed only after that flush:
a batch whose handler raised halfway is never marked processed, and a stop after the failure
(which commits what was processed) reads all of it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from confluent_kafka import Message
from faust.types import TP

from stream_app.core.records import InputRecord
from stream_app.kafka.batch_input import BatchInput, PartitionWork
from stream_app.settings import Settings
from tests.unit.offline_input import offline_batch_input

TOPIC = "batchend.cells.in"


@pytest.fixture
def batch_input() -> Iterator[BatchInput]:
    settings = Settings(app_id="batchend", bootstrap_servers="127.0.0.1:9")
    with offline_batch_input(settings) as reader:
        tps = [TP(TOPIC, 0), TP(TOPIC, 1)]
        reader._works = {tp: PartitionWork(reader, tp) for tp in tps}
        yield reader


def _messages(partition: int, offsets: range) -> list[Message]:
    return [
        Message(
            topic=TOPIC,
            partition=partition,
            offset=offset,
            key=b"k",
            value=b"{}",
            headers=None,
            timestamp=(1, 1_700_000_000_000),
        )
        for offset in offsets
    ]


def test_a_batch_counts_as_processed_after_its_flush(batch_input: BatchInput) -> None:
    events: list[str] = []

    async def handler(record: InputRecord, work: PartitionWork) -> None:
        events.append(f"{record.partition}@{record.offset}")

    def flush() -> None:
        events.append("flush")
        assert batch_input._processed == {}, "offsets count only once the batch is flushed"

    batch_input.register(TOPIC, handler)
    batch_input.at_batch_end(flush)
    asyncio.run(batch_input._process(_messages(0, range(3)) + _messages(1, range(7, 9))))
    assert events == ["0@0", "0@1", "0@2", "1@7", "1@8", "flush"]
    assert batch_input._processed == {TP(TOPIC, 0): 3, TP(TOPIC, 1): 9}


def test_a_batch_that_fails_halfway_is_not_processed(batch_input: BatchInput) -> None:
    flushed: list[int] = []

    async def handler(record: InputRecord, work: PartitionWork) -> None:
        if record.offset == 12:
            raise OSError("RocksDB failed")

    batch_input.register(TOPIC, handler)
    batch_input.at_batch_end(lambda: flushed.append(1))
    asyncio.run(batch_input._process(_messages(0, range(5))))
    assert batch_input._processed == {TP(TOPIC, 0): 5}
    with pytest.raises(OSError, match="RocksDB failed"):
        asyncio.run(batch_input._process(_messages(0, range(10, 15))))
    assert flushed == [1], "the failed batch was not flushed"
    assert batch_input._processed == {TP(TOPIC, 0): 5}, "nothing of the failed batch counts"
