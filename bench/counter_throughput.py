"""Counter worker throughput as a ratio to a hand-written loop doing the same work.

Both sides run in one process tree, on one broker, over the same number of records, cells and
partitions, in this run:

* **baseline**: a plain confluent-kafka loop: batch consume, decode the envelope with the same
  pydantic model, rocksdict get/put of the cell state, produce the changelog record, commit
  offsets once per batch (at-least-once, like the worker).
* **counter**: `faust -A stream_app.examples.counter worker`, fed the same records.

Prints one JSON object. Absolute rates are noise on shared 2-core machines; `ratio` is what we
track. Run: `.venv/bin/python -m bench.counter_throughput [--records N] [--cells N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from rocksdict import Rdict

from stream_app.examples.counter import MESSAGES, CounterState, apply_message
from stream_app.kafka.dev_broker import find_free_port, kafka_broker, project_root
from stream_app.kafka.topics import apply_changes, load_definitions, plan_changes
from stream_app.settings import Settings
from stream_app.testing import WorkerProcess, wait_for

PARTITIONS = 4


def make_records(count: int, cells: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(7)
    return [
        (f"cell-{rng.randrange(cells)}".encode(), b'{"type": "increment", "body": {"by": 1}}')
        for _ in range(count)
    ]


def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def setup_app(bootstrap: str, workdir: Path, name: str) -> Settings:
    settings = Settings(
        app_id=f"bench-{name}-{uuid.uuid4().hex[:6]}",
        bootstrap_servers=bootstrap,
        partitions=PARTITIONS,
        data_dir=workdir / name,
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    definitions = load_definitions([project_root() / "topics" / "counter.toml"], settings)
    apply_changes(admin, plan_changes(admin, definitions))
    return settings


def run_baseline(
    bootstrap: str, workdir: Path, records: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    settings = setup_app(bootstrap, workdir, "baseline")
    produce_all(bootstrap, settings.input_topic("counter"), records)
    db = Rdict(str(workdir / "baseline-rocksdb"))
    changelog = settings.changelog_topic("counter")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": settings.app_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    consumer.subscribe([settings.input_topic("counter")])
    done = 0
    started: float | None = None
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    while done < len(records):
        batch = consumer.consume(500, timeout=1.0)
        if started is None and batch:
            started = time.perf_counter()
        for message in batch:
            if message.error():
                continue
            key = message.key()
            decoded = MESSAGES.decode(key, message.value(), max_bytes=settings.max_message_bytes)
            raw = db.get(key)
            state = CounterState.model_validate_json(raw) if raw is not None else None
            outcome = apply_message(
                state, decoded, partition=message.partition(), offset=message.offset()
            )
            assert outcome.state is not None
            value = outcome.state.model_dump_json().encode()
            db[key] = value
            producer.produce(changelog, key=key, value=value, partition=message.partition())
            done += 1
        if batch:
            producer.flush(30)
            consumer.commit(asynchronous=False)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    consumer.close()
    db.close()
    cpu = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    return {
        "records_per_s": round(len(records) / elapsed, 1),
        "seconds": round(elapsed, 3),
        "cpu_us_per_event": round(cpu * 1e6 / len(records), 1),
    }


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_counter(
    bootstrap: str, workdir: Path, records: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    settings = setup_app(bootstrap, workdir, "counter")
    env = {
        "STREAM_APP_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_APP_ID": settings.app_id,
        "STREAM_APP_DATA_DIR": str(settings.data_dir),
        "STREAM_APP_PARTITIONS": str(PARTITIONS),
    }
    worker = WorkerProcess(
        "stream_app.examples.counter",
        env=env,
        log_path=workdir / "counter-worker.log",
        web_port=find_free_port(),
    )
    worker.start()
    try:
        worker.wait_ready()
        cpu_before = process_cpu_seconds(worker.pid)
        started = time.perf_counter()
        produce_all(bootstrap, settings.input_topic("counter"), records)
        wait_for(
            lambda: sum(worker.get_json("/counter/").values()),
            lambda total: total >= len(records),
            timeout=900,
            interval=0.25,
            what="all records applied",
        )
        elapsed = time.perf_counter() - started
        cpu = process_cpu_seconds(worker.pid) - cpu_before
    finally:
        worker.stop()
    return {
        "records_per_s": round(len(records) / elapsed, 1),
        "seconds": round(elapsed, 3),
        "cpu_us_per_event": round(cpu * 1e6 / len(records), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--cells", type=int, default=1_000)
    args = parser.parse_args()
    records = make_records(args.records, args.cells)
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        baseline = run_baseline(broker.bootstrap, workdir, records)
        counter = run_counter(broker.bootstrap, workdir, records)
    print(
        json.dumps(
            {
                "benchmark": "counter_throughput",
                "records": args.records,
                "cells": args.cells,
                "partitions": PARTITIONS,
                "broker": broker.source,
                "baseline_hand_written_loop": baseline,
                "counter_worker": counter,
                "ratio_counter_to_baseline": round(
                    counter["records_per_s"] / baseline["records_per_s"], 3
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
