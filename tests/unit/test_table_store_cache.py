"""The cells store's per-batch write cache (:class:`stream_app.kafka.cell_store.FaustTableStore`).

The store keeps a batch's writes in memory and applies them at the end of the batch: one
RocksDB ``WriteBatch`` per partition and one changelog record per key written, into the unit of
work the writes were made in. These tests run it on real rocksdict databases opened as Faust
opens them (raw mode), with a stand-in for the Faust table around them, and check:

- reads see the batch's own writes before the flush, and RocksDB has none of them;
- a key written many times in a batch costs one changelog record (its last value);
- a delete of a key put in the same batch, or already in RocksDB, ends as one tombstone;
- iterating a partition (boot, the timer scan) flushes it first, so it sees every write;
- inspection (``lookup``, ``local_items``) sees pending writes too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from stream_app.core.records import Headers
from stream_app.kafka.cell_store import FaustTableStore

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
