"""How fast a fresh worker restores a cell table from its changelog, as a ratio to reading it.

A worker that lost its disk (a new machine, a failover without a standby) rebuilds its tables
from their changelogs before it processes anything: that is its downtime. This fills the
changelog of the ``counter`` table of a cell app (``bench.apps.cell_counter``, topics from
``topics/counter.toml``, :data:`~bench._common.PARTITIONS` partitions) with ``--records``
records over ``--keys`` keys, exactly as the engine writes them (key = cell id, value = the
stored cell record, :func:`stream_app.engine.cells.encode_record`, partition = murmur2 of the
key, no headers), with a fast confluent-kafka producer. Then, in the same run, per round:

1. **raw**: a confluent-kafka consumer (joining no group) reads the whole changelog from the
   beginning to its end: the floor of restoring.
2. **writebatch**: the same read, each batch written to one rocksdict ``WriteBatch`` per
   partition database: what a hand-written restore costs.
3. **worker**: ``faust -A bench.apps.cell_counter worker`` with an empty state dir, timed from
   the process start to ready: Faust's ``[^Worker]: Ready`` line, which it logs once table
   recovery is complete and the worker starts processing (the log is polled every 20 ms). Its
   restore's own summary line (``stream_app.kafka.restore``: records, seconds) is reported too.
   After it stops, its RocksDB databases are read: every key, each with the last value written
   (``complete``), and identical, byte for byte, to the writebatch baseline's databases.

An empty worker (another app id, an empty changelog) started the same way in each round gives
the fixed cost of a start (``empty_start_s``): imports, topic checks, group join. Before
anything is timed, the project's modules are compiled to bytecode (as an install does) and a
worker of each app is started once on an empty changelog: a worker that restores is a new
worker of an app that ran before, whose group and Faust's leader topic exist (the first start
of an app creates the topic, 0.3-0.6 s here).

Headline: ``R_restore`` = the worker's restore rate (records / seconds from start to ready)
÷ the raw read rate (goal >= 0.5); ``R_restore_net`` takes the empty worker's start time off
the worker's, and ``R_restore_phase`` uses the seconds the restore itself logged. Medians over
``--rounds``. Prints one JSON object; ``--save`` keeps it in ``bench/results/restore.json``.

Run: ``.venv/bin/python -m bench.restore [--records 1000000] [--keys 100000] [--partitions 4]
[--rounds N] [--save]``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import rocksdict
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench._common import save_result, worker_env
from stream_app.core.partitioner import partition_for
from stream_app.engine.cells import encode_record
from stream_app.kafka.faust_patches import FAUST_OFFSET_KEY
from stream_app.kafka.topics import apply_changes, load_definitions, plan_changes
from stream_app.settings import Settings
from stream_app.testing import READY_MARKER, WorkerProcess, wait_for
from stream_app.testing.dev_broker import find_free_port, kafka_broker, project_root

#: The goal of issue 12.
GOAL_R_RESTORE = 0.5
#: The worker module restored (its table ``counter``).
MODULE = "bench.apps.cell_counter"
TABLE = "counter"
#: The summary line of a fast restore in the worker log.
RESTORED = re.compile(r"restored (\d+) records into \d+ active partition\(s\) in ([\d.]+)s")
#: Longest a worker may take to become ready.
READY_TIMEOUT_S = 900.0


def setup(bootstrap: str, workdir: Path, partitions: int) -> Settings:
    """A fresh app id with the counter's topics (``partitions`` each)."""
    settings = Settings(
        app_id=f"bench-restore-{uuid.uuid4().hex[:6]}",
        bootstrap_servers=bootstrap,
        partitions=partitions,
        data_dir=workdir / "unused",
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    definitions = load_definitions([project_root() / "topics" / "counter.toml"], settings)
    apply_changes(admin, plan_changes(admin, definitions))
    return settings


def cell_value(count: int) -> bytes:
    """The stored record of a counter cell with ``count`` (behaviour version 1, no timers)."""
    return encode_record(1, b'{"count":%d}' % count, {})


def fill(bootstrap: str, topic: str, records: int, keys: int, partitions: int) -> float:
    """Produce ``records`` changelog records over ``keys`` cells (record ``i`` sets cell
    ``i % keys`` to ``i // keys + 1``); the seconds it took."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "enable.idempotence": True,
        }
    )
    names = [f"cell-{k}".encode() for k in range(keys)]
    placed = [partition_for(name, partitions) for name in names]
    started = time.monotonic()
    for i in range(records):
        k = i % keys
        while True:
            try:
                producer.produce(topic, cell_value(i // keys + 1), names[k], placed[k])
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(300):
        raise RuntimeError(f"changelog records to {topic} not acknowledged after 300s")
    return time.monotonic() - started


def _reader(bootstrap: str) -> Any:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-restore-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )


def read_all(bootstrap: str, topic: str, partitions: int, dbdir: Path | None) -> dict[str, Any]:
    """Read ``topic`` from its beginning to its end; with ``dbdir``, into one rocksdict database
    per partition there (a ``WriteBatch`` per partition per batch, the offset recorded as
    Faust's store does). Timed from the consumer's creation to the last record taken."""
    started = time.monotonic()
    consumer = _reader(bootstrap)
    dbs: dict[int, Any] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in tps}
        consumer.assign([TopicPartition(topic, p, 0) for p in ends if ends[p] > 0])
        if dbdir is not None:
            options = rocksdict.Options(raw_mode=True)
            dbs = {p: rocksdict.Rdict(str(dbdir / f"{p}.db"), options=options) for p in ends}
        left = {p for p, end in ends.items() if end > 0}
        count = 0
        while left:
            batches: dict[int, Any] = {}
            last: dict[int, int] = {}
            for message in consumer.consume(10_000, timeout=1.0):
                if message.error():
                    continue
                p, offset = message.partition(), message.offset()
                count += 1
                last[p] = offset
                if dbdir is not None:
                    batch = batches.get(p)
                    if batch is None:
                        batch = batches[p] = rocksdict.WriteBatch(raw_mode=True)
                    value = message.value()
                    if value is None:
                        batch.delete(message.key())
                    else:
                        batch.put(message.key(), value)
            for p, offset in last.items():
                if dbdir is not None:
                    batches[p].put(FAUST_OFFSET_KEY, str(offset).encode())
                    dbs[p].write(batches[p])
                if offset >= ends[p] - 1:
                    left.discard(p)
        seconds = time.monotonic() - started
    finally:
        consumer.close()
        for db in dbs.values():
            db.close()
    return {"records": count, "seconds": round(seconds, 3), "records_per_s": round(count / seconds)}


def db_contents(paths: list[Path]) -> dict[bytes, bytes]:
    """Every key and value (Faust's offset key left out) of the rocksdict databases."""
    found: dict[bytes, bytes] = {}
    for path in paths:
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        try:
            found.update((k, v) for k, v in db.items() if k != FAUST_OFFSET_KEY)
        finally:
            db.close()
    return found


def compile_sources() -> None:
    """Compile the project's modules to bytecode, as installing it does: a worker started from
    a source tree without ``__pycache__`` (or with ``PYTHONDONTWRITEBYTECODE`` set) compiles
    stream_app at every start, about a quarter of a second of CPU that a deployed worker does
    not spend."""
    root = project_root()
    for package in ("stream_app", "bench"):
        compileall.compile_dir(root / package, quiet=1)


def start_to_ready(settings: Settings, data_dir: Path, log: Path) -> tuple[float, str]:
    """Start a worker with ``data_dir`` (empty), wait until it is ready, stop it; the seconds
    from its start to ready and its log."""
    env = {**worker_env(settings), "STREAM_APP_DATA_DIR": str(data_dir)}
    worker = WorkerProcess(MODULE, env=env, log_path=log, web_port=find_free_port())
    started = time.monotonic()
    worker.start()
    try:
        wait_for(
            lambda: worker.log_text() if worker.alive() else "(worker exited)",
            lambda text: READY_MARKER in text or text == "(worker exited)",
            timeout=READY_TIMEOUT_S,
            interval=0.02,
            what="worker ready",
        )
        ready = time.monotonic() - started
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log_text()[-4000:]}")
    finally:
        worker.stop(timeout=120)
    return ready, worker.log_text()


def run_worker(
    settings: Settings, workdir: Path, logs: Path, records: int, expected: dict[bytes, bytes]
) -> dict[str, Any]:
    """The worker subject: start to ready with an empty state dir, then its state checked."""
    name = f"worker-{uuid.uuid4().hex[:6]}"
    data_dir = workdir / name
    seconds, log = start_to_ready(settings, data_dir, logs / f"{name}.log")
    restored = [(int(n), float(s)) for n, s in RESTORED.findall(log)]
    restored_records = sum(n for n, _ in restored)
    restore_s = sum(s for _, s in restored)
    state = db_contents(sorted(data_dir.glob(f"**/tables/{TABLE}-*.db")))
    return {
        "ready_s": round(seconds, 3),
        "records_per_s": round(records / seconds),
        "fast_restore_records": restored_records,
        "fast_restore_s": round(restore_s, 3),
        "fast_restore_records_per_s": round(restored_records / restore_s) if restore_s else None,
        "keys_restored": len(state),
        "complete": state == expected,
    }


def median(rounds: list[dict[str, Any]], field: str) -> float:
    """The median of ``field`` over ``rounds``."""
    return float(statistics.median(r[field] for r in rounds))


def main() -> None:
    """Fill the changelog, run the subjects ``--rounds`` times and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="changelog records")
    parser.add_argument("--keys", type=int, default=100_000, help="distinct cells they set")
    parser.add_argument("--partitions", type=int, default=4, help="changelog partitions")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every subject (median)")
    parser.add_argument(
        "--save", action="store_true", help="also write the report to bench/results/restore.json"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, metavar="DIR", help="keep the worker logs in DIR"
    )
    args = parser.parse_args()
    if args.keys > args.records:
        parser.error("--keys must not exceed --records")
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        bootstrap = broker.bootstrap
        empty = setup(bootstrap, workdir, args.partitions)
        settings = setup(bootstrap, workdir, args.partitions)
        logs = args.keep or workdir
        logs.mkdir(parents=True, exist_ok=True)
        compile_sources()
        # Each app once, untimed, before anything is measured: a worker that restores is a new
        # worker of an app that ran before (its group and Faust's leader topic exist).
        for app, name in ((empty, "empty"), (settings, "full")):
            start_to_ready(app, workdir / f"warmup-{name}", logs / f"warmup-{name}.log")
        topic = settings.changelog_topic(TABLE)
        fill_s = fill(bootstrap, topic, args.records, args.keys, args.partitions)
        last = args.records - 1
        expected = {
            f"cell-{k}".encode(): cell_value((last - (last - k) % args.keys) // args.keys + 1)
            for k in range(min(args.keys, args.records))
        }
        rounds: dict[str, list[dict[str, Any]]] = {"raw": [], "writebatch": [], "worker": []}
        identical = True
        empty_starts: list[float] = []
        for n in range(args.rounds):
            empty_dir = workdir / f"empty-{n}"
            empty_starts.append(start_to_ready(empty, empty_dir, logs / f"empty-{n}.log")[0])
            rounds["raw"].append(read_all(bootstrap, topic, args.partitions, None))
            dbdir = workdir / f"writebatch-{n}"
            dbdir.mkdir()
            rounds["writebatch"].append(read_all(bootstrap, topic, args.partitions, dbdir))
            baseline = db_contents(sorted(dbdir.glob("*.db")))
            worker = run_worker(settings, workdir, logs, args.records, expected)
            identical = identical and baseline == expected and worker["complete"]
            rounds["worker"].append(worker)
    raw_rate = median(rounds["raw"], "records_per_s")
    r_restore = median(rounds["worker"], "records_per_s") / raw_rate
    phase = [r["fast_restore_records_per_s"] or 0 for r in rounds["worker"]]
    empty_start_s = statistics.median(empty_starts)
    # Noise can make the empty start the slower one at small sizes: then there is no figure.
    net_s = median(rounds["worker"], "ready_s") - empty_start_s
    report = {
        "benchmark": "restore",
        "records": args.records,
        "keys": args.keys,
        "partitions": args.partitions,
        "rounds": args.rounds,
        "broker": broker.source,
        "timed": "raw, writebatch: consumer created -> last record taken; worker: process start "
        "-> Faust's '[^Worker]: Ready' log line (table recovery complete, processing starts), "
        "empty state dir, each app started once before (untimed), modules compiled",
        "fill_s": round(fill_s, 3),
        "empty_start_s": round(empty_start_s, 3),
        "empty_starts_s": [round(t, 3) for t in empty_starts],
        "raw_records_per_s": raw_rate,
        "writebatch_records_per_s": median(rounds["writebatch"], "records_per_s"),
        "worker_ready_s": median(rounds["worker"], "ready_s"),
        "worker_records_per_s": median(rounds["worker"], "records_per_s"),
        "state_complete_and_identical_to_writebatch": identical,
        "rounds_detail": rounds,
        "R_restore": round(r_restore, 3),
        "R_restore_net": None if net_s <= 0 else round(args.records / net_s / raw_rate, 3),
        "R_restore_phase": round(statistics.median(phase) / raw_rate, 3),
        "R_writebatch": round(median(rounds["writebatch"], "records_per_s") / raw_rate, 3),
        "goals": {
            "R_restore": {"goal": f">= {GOAL_R_RESTORE}", "met": r_restore >= GOAL_R_RESTORE}
        },
    }
    if args.save:
        save_result("restore", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
