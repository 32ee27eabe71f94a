"""Unit tests of stream_app.core.partitioner: the same partitions as Kafka's Java client."""

from __future__ import annotations

import random

import pytest

from stream_app.core.partitioner import partition_for

#: Kafka's own vectors for ``Utils.murmur2`` (the Java client's default partitioner), from
#: ``UtilsTest.testMurmur2`` in apache/kafka
#: (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java), as Java ``int``s.
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def java_partition(murmur2: int, partitions: int) -> int:
    """``Utils.toPositive(Utils.murmur2(key)) % numPartitions``, as the Java client computes it."""
    return (murmur2 & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("key", list(KAFKA_MURMUR2), ids=[k.decode() for k in KAFKA_MURMUR2])
def test_partition_equals_the_java_clients_for_kafkas_vectors(key: bytes) -> None:
    for partitions in range(1, 257):
        assert partition_for(key, partitions) == java_partition(KAFKA_MURMUR2[key], partitions)


def test_a_large_partition_count_exposes_the_whole_positive_hash() -> None:
    # With 2**31 partitions the partition *is* toPositive(murmur2): every bit is checked.
    for key, murmur2 in KAFKA_MURMUR2.items():
        assert partition_for(key, 2**31) == murmur2 & 0x7FFFFFFF


def test_partition_is_stable_and_in_range() -> None:
    rng = random.Random(99)
    for _ in range(2000):
        key = rng.randbytes(rng.randrange(0, 40))
        partitions = rng.randrange(1, 100)
        first = partition_for(key, partitions)
        assert 0 <= first < partitions
        assert partition_for(bytes(key), partitions) == first


def test_keys_spread_over_partitions() -> None:
    counts = [0] * 8
    for i in range(8000):
        counts[partition_for(f"cell-{i}".encode(), 8)] += 1
    assert min(counts) > 800, counts


@pytest.mark.parametrize("partitions", [0, -3])
def test_partition_count_below_one_is_refused(partitions: int) -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for(b"k", partitions)
