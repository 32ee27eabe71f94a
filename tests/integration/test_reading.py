"""stream_app.kafka.reading against a real broker: the ends of transactional partitions."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from stream_app.kafka.reading import TAIL_WINDOW, last_record_offsets, read_records, read_to_end

pytestmark = pytest.mark.integration


def _topic(bootstrap: str, partitions: int) -> str:
    name = f"reading-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(30)
    return name


def _stable_end(bootstrap: str, topic: str, partition: int) -> int:
    """The last stable offset, as a read_committed consumer sees the partition's end."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "x", "isolation.level": "read_committed"}
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        return int(high)
    finally:
        consumer.close()


def test_the_last_committed_record_is_found_behind_markers_and_aborted_records(
    bootstrap: str,
) -> None:
    topic = _topic(bootstrap, 3)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": topic})
    producer.init_transactions(30)

    def transaction(partition: int, values: list[bytes], *, commit: bool) -> None:
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value, b"k", partition)
        # Written to the log before the end of the transaction (an abort would purge them).
        assert producer.flush(30) == 0
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    # Partition 0: a committed record, then many aborted ones, then only markers: the last
    # committed record lies more than one window behind the end.
    transaction(0, [b"kept"], commit=True)
    for _ in range(3):
        transaction(0, [b"dropped"] * TAIL_WINDOW, commit=False)
    # Partition 1: two committed transactions; the end is a commit marker.
    transaction(1, [b"a", b"b"], commit=True)
    transaction(1, [b"c"], commit=True)
    # Partition 2: nothing committed at all.
    transaction(2, [b"never"], commit=False)

    ends = {(topic, p): _stable_end(bootstrap, topic, p) for p in range(3)}
    assert ends[topic, 0] > 3 * TAIL_WINDOW, ends
    found = last_record_offsets(bootstrap, ends)

    committed = {(m.partition(), m.value()): m.offset() for m in read_to_end(bootstrap, topic)}
    assert found == {
        (topic, 0): committed[0, b"kept"],
        (topic, 1): committed[1, b"c"],
        (topic, 2): None,
    }
    # The markers are real offsets: "the end minus one" is not the last record.
    assert ends[topic, 1] - 1 != committed[1, b"c"]


def test_an_empty_partition_has_no_last_record(bootstrap: str) -> None:
    topic = _topic(bootstrap, 1)
    assert last_record_offsets(bootstrap, {(topic, 0): 0}) == {(topic, 0): None}


def test_a_tail_reads_the_last_records_of_each_partition(bootstrap: str) -> None:
    topic = _topic(bootstrap, 2)
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition in (0, 1):
        for i in range(10):
            producer.produce(topic, value=f"{partition}-{i}".encode(), partition=partition)
    producer.flush(30)
    records = read_records(bootstrap, topic, tail=3, timeout=30)
    assert sorted((r.partition, r.offset, r.value) for r in records) == [
        (p, i, f"{p}-{i}".encode()) for p in (0, 1) for i in (7, 8, 9)
    ]
    assert len(read_records(bootstrap, topic, timeout=30)) == 20


def test_spans_read_only_the_offsets_asked_for_within_what_the_partition_holds(
    bootstrap: str,
) -> None:
    topic = _topic(bootstrap, 3)
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition in (0, 1, 2):
        for i in range(10):
            producer.produce(topic, value=f"{partition}-{i}".encode(), partition=partition)
    producer.flush(30)
    # One record, a window, and a window past the end (cut at the end); partition 2 unread,
    # and a partition the topic does not have is left out.
    records = read_records(bootstrap, topic, spans={0: (4, 5), 1: (8, 20), 7: (0, 1)}, timeout=30)
    assert sorted((r.partition, r.offset, r.value) for r in records) == [
        (0, 4, b"0-4"),
        (1, 8, b"1-8"),
        (1, 9, b"1-9"),
    ]
    assert read_records(bootstrap, topic, spans={2: (10, 11)}, timeout=30) == []
