"""The partition of a cell: murmur2 of its id, as Kafka's Java client and aiokafka compute it.

Every topic that carries work for a cell is keyed by the cell id and has the same partition
count, so one partition holds a cell's messages, state and timers. That only holds if every
producer maps a key to the same partition: use murmur2 (the Java client's default; in
librdkafka / confluent-kafka set ``partitioner=murmur2_random``, which
:class:`~stream_app.clients.cells.CellClient` does). A worker that receives a record on another
partition forwards it to the right one.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

__all__ = ["partition_for"]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``.

    Raises:
        ValueError: ``partitions`` is below 1.
    """
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got partitions={partitions}")
    return _positive_hash(key) % partitions


@lru_cache(maxsize=1 << 16)
def _positive_hash(key: bytes) -> int:
    # murmur2 is pure Python (about 4 µs a key); a worker sees the same cell ids again and again.
    return int(murmur2(key) & 0x7FFFFFFF)
