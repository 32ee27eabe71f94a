"""The cells store's per-batch write cache (:class:`stream_app.kafka.cell_store.FaustTableStore`).

The store keeps a batch's writes in memory and applies them at the end of the batch: one
RocksDB ``WriteBatch`` per partition and one changelog record per key written, into the unit of
work the writes were made in. These tests run it on real rocksdict databases opened as Faust
opens them (raw mode), with a stand-in for the Faust table around them, and check:

- reads see the batch's own writes before the flush, and RocksDB has none of them;
- a key written many times in a batch costs one changelog record (its last value);
- a delete of a key put in the same batch, or already in RocksDB, ends as one tombstone;
- iterating a partition (boot, the timer scan) flushes it first, so it sees every write;
- inspection (``lookup``, ``local_items``) sees pending writes too;
- the read cache answers keys read or written before without RocksDB, holds what RocksDB
  holds (writes enter it at the flush), empties when full, and is dropped by ``forget``, which
  the batched input calls whenever its partitions change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from rocksdict import Options, Rdict

from stream_app.core.records import Headers
from stream_app.kafka.cell_store import CACHE_ENTRY_BYTES, FaustTableStore
from stream_app.settings import Settings
from tests.unit.offline_input import offline_batch_input

CHANGELOG = "unit-cells-changelog"


class _Store:
    """What ``partition_db`` reaches: ``table.data._db_for_partition``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.dbs: dict[int, Rdict] = {}

    def _db_for_partition(self, partition: int) -> Rdict:
        if partition not in self.dbs:
            self.dbs[partition] = Rdict(str(self.folder / str(partition)), Options(raw_mode=True))
        return self.dbs[partition]


class _Table:
    """A stand-in for a Faust table on ``_Store`` (name, ``get`` and ``items`` as Faust's)."""

    name = "cells"

    def __init__(self, folder: Path) -> None:
        self.data = _Store(folder)

    def get(self, key: bytes) -> bytes | None:
        for db in self.data.dbs.values():
            found: bytes | None = db.get(key)
            if found is not None:
                return found
        return None

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for db in self.data.dbs.values():
            yield from db.items()


class _Unit:
    """A unit of work recording what is produced into it."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.produced: list[tuple[str, bytes | None, bytes | None, int]] = []

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        headers: Headers = None,
    ) -> None:
        self.produced.append((topic, key, value, partition))


@pytest.fixture
def table(tmp_path: Path) -> Iterator[_Table]:
    made = _Table(tmp_path)
    yield made
    for db in made.data.dbs.values():
        db.close()


def test_reads_see_pending_writes_and_rocksdb_gets_them_at_the_flush(table: _Table) -> None:
    store, unit = FaustTableStore(table, CHANGELOG), _Unit(1)
    store.put(unit, b"a", b"1")
    assert store.get(1, b"a") == b"1"
    assert store.lookup(b"a") == b"1"
    assert table.data._db_for_partition(1).get(b"a") is None
    assert unit.produced == []
    store.flush()
    assert table.data._db_for_partition(1).get(b"a") == b"1"
    assert unit.produced == [(CHANGELOG, b"a", b"1", 1)]
    store.flush()
    assert len(unit.produced) == 1, "a flush with nothing pending produces nothing"


def test_one_changelog_record_per_key_per_batch_with_its_last_value(table: _Table) -> None:
    store, unit = FaustTableStore(table, CHANGELOG), _Unit(0)
    for value in (b"1", b"2", b"3"):
        store.put(unit, b"a", value)
    store.put(unit, b"b", b"x")
    store.flush()
    assert sorted(unit.produced) == [(CHANGELOG, b"a", b"3", 0), (CHANGELOG, b"b", b"x", 0)]
    assert table.data._db_for_partition(0).get(b"a") == b"3"


def test_deletes_end_as_one_tombstone_and_absent_keys_produce_none(table: _Table) -> None:
    store, unit = FaustTableStore(table, CHANGELOG), _Unit(2)
    store.put(unit, b"old", b"1")
    store.flush()
    unit.produced.clear()
    store.put(unit, b"new", b"2")
    store.delete(unit, b"new")
    store.delete(unit, b"old")
    store.delete(unit, b"never")
    assert store.get(2, b"old") is None
    store.flush()
    assert sorted(unit.produced) == [(CHANGELOG, b"new", None, 2), (CHANGELOG, b"old", None, 2)]
    db = table.data._db_for_partition(2)
    assert db.get(b"old") is None and db.get(b"new") is None


def test_iterating_a_partition_flushes_it_first(table: _Table) -> None:
    store, unit, other = FaustTableStore(table, CHANGELOG), _Unit(0), _Unit(3)
    store.put(unit, b"b", b"2")
    store.put(unit, b"a", b"1")
    store.put(other, b"z", b"9")
    assert list(store.keys(0)) == [b"a", b"b"]
    assert list(store.items_from(0, b"b")) == [(b"b", b"2")]
    assert len(unit.produced) == 2
    assert other.produced == [], "only the partition iterated is flushed"
    store.flush()
    assert other.produced == [(CHANGELOG, b"z", b"9", 3)]


def test_local_items_overlay_pending_writes(table: _Table) -> None:
    store, unit = FaustTableStore(table, CHANGELOG), _Unit(0)
    store.put(unit, b"a", b"1")
    store.put(unit, b"b", b"2")
    store.flush()
    store.put(unit, b"a", b"10")
    store.delete(unit, b"b")
    store.put(unit, b"c", b"3")
    items: dict[Any, Any] = dict(store.local_items())
    assert items == {b"a": b"10", b"c": b"3"}


def _behind_its_back(table: _Table, partition: int, key: bytes, value: bytes | None) -> None:
    """Change the database without the store (as another worker's writes, restored, would)."""
    db = table.data._db_for_partition(partition)
    if value is None:
        del db[key]
    else:
        db[key] = value


def test_the_cache_answers_what_was_read_or_written_without_rocksdb(table: _Table) -> None:
    store, unit = FaustTableStore(table, CHANGELOG, cache_bytes=10_000), _Unit(0)
    table.data._db_for_partition(0)[b"read"] = b"1"
    assert store.get(0, b"read") == b"1"
    assert store.get(0, b"absent") is None
    store.put(unit, b"written", b"2")
    assert store.get(0, b"written") == b"2"
    store.flush()
    _behind_its_back(table, 0, b"read", b"changed")
    _behind_its_back(table, 0, b"absent", b"appeared")
    _behind_its_back(table, 0, b"written", None)
    assert [store.get(0, k) for k in (b"read", b"absent", b"written")] == [b"1", None, b"2"]
    store.forget()
    assert [store.get(0, k) for k in (b"read", b"absent", b"written")] == [
        b"changed",
        b"appeared",
        None,
    ]


def test_writes_enter_the_cache_once_written_and_deletes_as_absent(table: _Table) -> None:
    store, unit = FaustTableStore(table, CHANGELOG, cache_bytes=10_000), _Unit(1)
    table.data._db_for_partition(1)[b"a"] = b"old"
    assert store.get(1, b"a") == b"old"
    store.put(unit, b"a", b"new")
    store.delete(unit, b"a")
    store.put(unit, b"b", b"3")
    assert store.get(1, b"a") is None and store.get(1, b"b") == b"3"
    store.flush()
    assert table.data._db_for_partition(1).get(b"a") is None
    _behind_its_back(table, 1, b"a", b"resurrected")
    _behind_its_back(table, 1, b"b", b"other")
    assert store.get(1, b"a") is None, "the delete is cached as an absent key"
    assert store.get(1, b"b") == b"3"


def test_a_full_cache_starts_again_and_no_cache_reads_rocksdb(table: _Table) -> None:
    entry = 2 + 1 + CACHE_ENTRY_BYTES  # a two-byte key, a one-byte value
    store = FaustTableStore(table, CHANGELOG, cache_bytes=3 * entry)
    db = table.data._db_for_partition(0)
    for key in (b"k1", b"k2", b"k3"):
        db[key] = b"v"
        assert store.get(0, key) == b"v"
    _behind_its_back(table, 0, b"k1", b"changed")
    assert store.get(0, b"k1") == b"v", "three entries fit"
    db[b"k4"] = b"v"
    assert store.get(0, b"k4") == b"v"  # the fourth overflows it: it starts again
    assert store.get(0, b"k1") == b"changed"
    plain = FaustTableStore(table, CHANGELOG)
    assert plain.get(0, b"k2") == b"v"
    _behind_its_back(table, 0, b"k2", b"changed")
    assert plain.get(0, b"k2") == b"changed", "cache_bytes 0: every read is a lookup"


def test_written_values_are_counted_by_their_size(table: _Table) -> None:
    entry = 1 + CACHE_ENTRY_BYTES
    store, unit = FaustTableStore(table, CHANGELOG, cache_bytes=2 * entry + 10), _Unit(0)
    store.put(unit, b"a", b"x" * 5)
    store.put(unit, b"b", b"x" * 5)
    store.flush()
    store.put(unit, b"a", b"y")  # smaller: the cache shrinks, both still fit
    store.flush()
    _behind_its_back(table, 0, b"b", b"changed")
    assert store.get(0, b"b") == b"xxxxx"
    store.put(unit, b"a", b"z" * 20)  # larger than the room left: it starts again
    store.flush()
    assert store.get(0, b"b") == b"changed"


def test_the_batched_input_drops_the_caches_when_its_partitions_change() -> None:
    calls: list[frozenset[TP]] = []
    settings = Settings(app_id="cachedrop", bootstrap_servers="127.0.0.1:9")
    with offline_batch_input(settings) as reader:
        reader.at_assignment(lambda: calls.append(reader._assigned))
        asyncio.run(reader._assign(frozenset()))
        assert calls == [frozenset()]
