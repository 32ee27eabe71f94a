"""Counter worker throughput as a ratio to a hand-written loop doing the same work.

Both sides run in one process tree, on one broker, over the same number of records, cells and
partitions, in this run:

* **baseline**: a plain confluent-kafka loop: batch consume, decode the envelope with the same
  pydantic model, rocksdict get/put of the cell state, produce the changelog record, commit
  offsets once per batch (at-least-once, like the worker); see
  :func:`bench._common.run_hand_written_loop`. Timed from the first record taken to the last
  one applied.
* **counter**: `faust -A stream_app.examples.counter worker`, fed the same records. Timed from
  the start of producing them (the worker is already running) until its ``/counter/`` view
  counts them all.

Prints one JSON object. Absolute rates are noise on shared 2-core machines; `ratio` is what we
track. Run: `.venv/bin/python -m bench.counter_throughput [--records N] [--cells N]`.
See :mod:`bench.cells_throughput` for the cells runtime against the same loop and plain Faust.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    PARTITIONS,
    make_records,
    process_cpu_seconds,
    produce_all,
    run_hand_written_loop,
    running_worker,
    setup_app,
    worker_env,
)
from stream_app.examples.counter import MESSAGES, CounterState, apply_message
from stream_app.testing import wait_for
from stream_app.testing.dev_broker import kafka_broker

MAX_MESSAGE_BYTES = 1_048_576


def baseline_step(
    key: bytes, value: bytes, partition: int, offset: int, stored: bytes | None
) -> bytes:
    """The counter example's update, applied by the hand-written loop."""
    decoded = MESSAGES.decode(key, value, max_bytes=MAX_MESSAGE_BYTES)
    state = CounterState.model_validate_json(stored) if stored is not None else None
    outcome = apply_message(state, decoded, partition=partition, offset=offset)
    assert outcome.state is not None
    return outcome.state.model_dump_json().encode()


def run_baseline(
    bootstrap: str, workdir: Path, records: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    """The hand-written loop over ``records`` on a fresh app id (records pre-produced)."""
    settings = setup_app(bootstrap, workdir, "baseline")
    produce_all(bootstrap, settings.input_topic("counter"), records, murmur2=False)
    measured = run_hand_written_loop(
        bootstrap=bootstrap,
        group=settings.app_id,
        topic=settings.input_topic("counter"),
        changelog=settings.changelog_topic("counter"),
        db_path=workdir / "baseline-rocksdb",
        expected=len(records),
        step=baseline_step,
    )
    return {
        "records_per_s": round(measured.events_per_s, 1),
        "seconds": round(measured.seconds, 3),
        "cpu_us_per_event": round(measured.cpu_us_per_event, 1),
    }


def run_counter(
    bootstrap: str, workdir: Path, records: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    """The counter example worker on a fresh app id, fed ``records`` once it is ready."""
    settings = setup_app(bootstrap, workdir, "counter")
    env = worker_env(settings)
    with running_worker("stream_app.examples.counter", env, workdir / "counter.log") as worker:
        cpu_before = process_cpu_seconds(worker.pid)
        started = time.perf_counter()
        produce_all(bootstrap, settings.input_topic("counter"), records, murmur2=False)
        wait_for(
            lambda: sum(worker.get_json("/counter/").values()),
            lambda total: total >= len(records),
            timeout=900,
            interval=0.25,
            what="all records applied",
        )
        elapsed = time.perf_counter() - started
        cpu = process_cpu_seconds(worker.pid) - cpu_before
    return {
        "records_per_s": round(len(records) / elapsed, 1),
        "seconds": round(elapsed, 3),
        "cpu_us_per_event": round(cpu * 1e6 / len(records), 1),
    }


def main() -> None:
    """Run both sides and print the JSON report."""
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
