"""The RocksDB databases of a worker share one memory budget (``faust_patches.RocksDBMemory``).

Faust opens each table partition's database with its own 2 GiB block cache and up to
3 x 64 MiB of memtables; ``share_rocksdb_memory`` opens them around one cache that the
memtables are charged to. These tests open databases the way Faust's store does (its
``RocksDBOptions.open``) and write several times the memtables' share into them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.stores.rocksdb import RocksDBOptions

from stream_app.kafka.app import create_app
from stream_app.kafka.faust_patches import RocksDBMemory, share_rocksdb_memory, write_batch
from stream_app.settings import Settings
from stream_app.testing import wait_for

BUDGET = 16 * 1_048_576


def shared_options(memory: RocksDBMemory) -> Any:
    """Faust's options of one table's store, made to share ``memory``."""
    store = SimpleNamespace(rocksdb_options=RocksDBOptions())
    table = SimpleNamespace(_new_store=lambda: store)
    share_rocksdb_memory(table, memory)
    options: RocksDBOptions = table._new_store().rocksdb_options
    return options


def fill(db: Any, *, batches: int, prefix: str, first: int = 0) -> None:
    """Write ``batches`` write batches (numbered from ``first``) of 2,000 keys of 100-byte
    values (raw mode, as Faust)."""
    for b in range(first, first + batches):
        batch = write_batch()
        for k in range(2_000):
            batch.put(f"{prefix}-{b}-{k}".encode(), b"v" * 100)
        db.write(batch)


def test_databases_of_several_tables_stay_within_the_shared_budget(tmp_path: Path) -> None:
    memory = RocksDBMemory(BUDGET)
    dbs = [
        shared_options(memory).open(tmp_path / f"table{t}-p{p}") for t in range(2) for p in range(3)
    ]
    # About 6 MiB each, 36 MiB in all: twice the budget, four times the memtables' share;
    # written as a worker writes, a batch to each partition's database in turn. (The write
    # buffer manager flushes the database that is writing when the memtables are over their
    # share: one that takes no more writes keeps its memtable, so writing each database to
    # the end before the next leaves up to a whole database's writes unflushed.)
    for b in range(25):
        for i, db in enumerate(dbs):
            fill(db, batches=1, prefix=f"db{i}", first=b)
    # The memtables past their share are flushed in the background: on a loaded machine the
    # last flushes may still be running when the writes return.
    wait_for(memory.usage, lambda used: 0 < used <= BUDGET * 1.1, timeout=30, what="usage")
    # Everything written is still there (flushed to files, read back through the cache).
    assert dbs[0][b"db0-0-0"] == b"v" * 100
    assert dbs[-1][b"db5-24-1999"] == b"v" * 100
    for db in dbs:
        db.close()


def test_without_the_shared_budget_memtables_keep_what_was_written(tmp_path: Path) -> None:
    """The failure the budget prevents: Faust's own options keep every write of a database in
    its memtable until 64 MiB, so the same writes hold more memory than the whole budget."""
    memory = RocksDBMemory(BUDGET)
    faust_db = RocksDBOptions().open(tmp_path / "faust")
    shared_db = shared_options(memory).open(tmp_path / "shared")
    fill(faust_db, batches=100, prefix="k")
    fill(shared_db, batches=100, prefix="k")
    faust_memtables = int(faust_db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0)
    assert faust_memtables > BUDGET
    assert memory.usage() <= BUDGET * 1.1
    faust_db.close()
    shared_db.close()


def test_a_worker_app_carries_the_budget_of_its_settings(tmp_path: Path) -> None:
    settings = Settings(app_id="rocks-budget", data_dir=tmp_path, rocksdb_memory_bytes=BUDGET)
    app = create_app(settings)
    assert app.rocksdb_memory.total_bytes == BUDGET
