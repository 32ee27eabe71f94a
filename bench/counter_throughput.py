"""The counter example's throughput, as ratios to a hand-written loop and to the counter it
replaced.

The subjects run in one process tree, on one broker, over the same records (produced with
murmur2, as the runtime partitions), cells and partitions, in this run:

* **baseline**: a plain confluent-kafka loop: batch consume, decode the envelope with the same
  pydantic model, rocksdict get/put of the cell state with its offset mark, produce the
  changelog record, commit offsets once per batch (at-least-once); see
  :func:`bench._common.run_hand_written_loop`. Timed from the first record taken to the last
  one applied.
* **faust_dedup**: `faust -A bench.apps.faust_counter_dedup worker`, the hand-written Faust
  agent that was the counter example before the runtime (its own offset marks against replays).
* **counter**: `faust -A stream_app.examples.counter worker`, the counter as a Behaviour on a
  Runtime, under ``--guarantee`` (default ``at_least_once``; ``exactly_once`` is what applies
  every message once, as the dedup baseline does).

Both workers are timed from the start of producing the records (the worker is already running)
until their view counts them all. Prints one JSON object. Absolute rates are noise on shared
2-core machines; the ratios are what we track. Run:
`.venv/bin/python -m bench.counter_throughput [--records N] [--cells N] [--guarantee G]`.
See :mod:`bench.cells_throughput` for the cells runtime against the same loop and plain Faust.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
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
from bench.apps.model import MARKED_MESSAGES, MarkedCount, apply_marked
from stream_app.testing import WorkerProcess, wait_for
from stream_app.testing.counts import cell_counts
from stream_app.testing.dev_broker import kafka_broker

MAX_MESSAGE_BYTES = 1_048_576


def baseline_step(
    key: bytes, value: bytes, partition: int, offset: int, stored: bytes | None
) -> bytes:
    """The deduplicating counter's update, applied by the hand-written loop."""
    decoded = MARKED_MESSAGES.decode(key, value, max_bytes=MAX_MESSAGE_BYTES)
    state = MarkedCount.model_validate_json(stored) if stored is not None else None
    outcome = apply_marked(state, decoded, partition=partition, offset=offset)
    assert outcome.state is not None
    return outcome.state.model_dump_json().encode()


def run_baseline(
    bootstrap: str, workdir: Path, records: list[tuple[bytes, bytes]]
) -> dict[str, Any]:
    """The hand-written loop over ``records`` on a fresh app id (records pre-produced)."""
    settings = setup_app(bootstrap, workdir, "baseline")
    produce_all(bootstrap, settings.input_topic("counter"), records)
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


def run_worker(
    bootstrap: str,
    workdir: Path,
    records: list[tuple[bytes, bytes]],
    *,
    module: str,
    applied: Callable[[WorkerProcess], int],
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The worker ``module`` on a fresh app id, fed ``records`` once it is ready; timed until
    ``applied(worker)`` counts them all."""
    name = module.rsplit(".", 1)[-1]
    settings = setup_app(bootstrap, workdir, name)
    with running_worker(
        module, worker_env(settings, **(env or {})), workdir / f"{name}.log"
    ) as worker:
        cpu_before = process_cpu_seconds(worker.pid)
        started = time.perf_counter()
        produce_all(bootstrap, settings.input_topic("counter"), records)
        wait_for(
            lambda: applied(worker),
            lambda total: total >= len(records),
            timeout=900,
            interval=0.25,
            what=f"all records applied by {module}",
        )
        elapsed = time.perf_counter() - started
        cpu = process_cpu_seconds(worker.pid) - cpu_before
    return {
        "records_per_s": round(len(records) / elapsed, 1),
        "seconds": round(elapsed, 3),
        "cpu_us_per_event": round(cpu * 1e6 / len(records), 1),
    }


def dedup_applied(worker: WorkerProcess) -> int:
    """Increments the deduplicating Faust counter has applied (its ``/counter/`` view)."""
    counts: dict[str, int] = worker.get_json("/counter/")
    return sum(counts.values())


def counter_applied(worker: WorkerProcess) -> int:
    """Increments the counter example has applied (the runtime's cells view)."""
    return sum(cell_counts(worker, "counter").values())


def main() -> None:
    """Run both sides and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--cells", type=int, default=1_000)
    parser.add_argument(
        "--guarantee",
        choices=["at_least_once", "exactly_once"],
        default="at_least_once",
        help="STREAM_APP_PROCESSING_GUARANTEE of the counter example's worker",
    )
    args = parser.parse_args()
    records = make_records(args.records, args.cells)
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        baseline = run_baseline(broker.bootstrap, workdir, records)
        dedup = run_worker(
            broker.bootstrap,
            workdir,
            records,
            module="bench.apps.faust_counter_dedup",
            applied=dedup_applied,
        )
        counter = run_worker(
            broker.bootstrap,
            workdir,
            records,
            module="stream_app.examples.counter",
            applied=counter_applied,
            env={"STREAM_APP_PROCESSING_GUARANTEE": args.guarantee},
        )
    print(
        json.dumps(
            {
                "benchmark": "counter_throughput",
                "records": args.records,
                "cells": args.cells,
                "partitions": PARTITIONS,
                "broker": broker.source,
                "guarantee": args.guarantee,
                "baseline_hand_written_loop": baseline,
                "faust_dedup_worker": dedup,
                "counter_worker": counter,
                "ratio_counter_to_baseline": round(
                    counter["records_per_s"] / baseline["records_per_s"], 3
                ),
                "ratio_counter_to_faust_dedup": round(
                    counter["records_per_s"] / dedup["records_per_s"], 3
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
