"""The partition of a cell: murmur2 of its id, as Kafka's Java client and aiokafka compute it.

Every topic that carries work for a cell is keyed by the cell id and has the same partition
count, so one partition holds a cell's messages, state and timers. That only holds if every
producer maps a key to the same partition: use murmur2 (the Java client's default; in
librdkafka / confluent-kafka set ``partitioner=murmur2_random``, which
:class:`~stream_app.clients.cells.CellClient` does). A worker that receives a record on another
partition forwards it to the right one.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

__all__ = ["partition_for"]

#: Most cell ids whose hash is remembered; past it the memory starts again (cheaper per call
#: than a least-recently-used cache, whose bookkeeping costs as much as a hit's lookup).
CACHE_MAX = 1 << 16
_hashes: dict[bytes, int] = {}


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``.

    Raises:
        ValueError: ``partitions`` is below 1.
    """
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got partitions={partitions}")
    found = _hashes.get(key)
    if found is None:
        # murmur2 is pure Python (about 4 µs a key); a worker sees the same cell ids again and
        # again (every record's partition is checked against it).
        if len(_hashes) >= CACHE_MAX:
            _hashes.clear()
        found = _hashes[key] = int(murmur2(key) & 0x7FFFFFFF)
    return found % partitions
