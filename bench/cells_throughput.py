"""Throughput and CPU of a stateful counter cell, as ratios to a hand-written loop and to Faust.

One run measures three subjects on one broker, each on its own app id (its own input topic,
changelog and consumer group), all with :data:`~bench._common.PARTITIONS` partitions and the same
records (``--records`` increments of 1 over ``--cells`` cells, keys partitioned with murmur2):

1. **loop**: the ideal hand-written worker, in this process (confluent-kafka batch consume, the
   same pydantic envelope and data models, rocksdict get/put, changelog produce, commit per
   batch); see :func:`bench._common.run_hand_written_loop`.
2. **faust**: a plain Faust agent with a Table doing the same update
   (``faust -A bench.apps.faust_counter worker``).
3. **cell**: the counter as a stream_app Behaviour on a Runtime
   (``faust -A bench.apps.cell_counter worker``).

**What is timed.** All records are in the input topic before the subject starts. A subject's
time is the wall time from the moment it takes its first record to the moment it has applied
the last one to its state (its table / RocksDB), both noted inside the processing process.
Its CPU is that process's user + system time (every thread: librdkafka's, aiokafka's, RocksDB's)
over the same interval, read inside the process with ``getrusage``. Worker start-up, group join
and table recovery are outside the interval; the changelog and offset commits of the last
records may fall after it (the loop's are synchronous, the workers' asynchronous), so for the
workers the time from the last record applied to their committed offsets reaching the end of
the input topic is reported as ``commit_tail_s``, and the run fails if it never happens.

Prints one JSON object: the raw figures of every subject (the median over ``--rounds``),
``R_state`` = cell / loop and ``R_faust`` = cell / faust (events per second), the CPU per event
ratios, and whether the goals of issue 3 are met (R_state >= 0.5, R_faust >= 1.0). Absolute
rates are noise on shared 2-core machines; the ratios are what we track.

Run: ``.venv/bin/python -m bench.cells_throughput [--records N] [--cells N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench._common import (
    PARTITIONS,
    Measurement,
    WorkerOptions,
    add_worker_arguments,
    check_worker_arguments,
    make_records,
    median_of,
    produce_all,
    run_hand_written_loop,
    running_worker,
    setup_app,
    wait_committed,
    worker_env,
)
from bench.apps.model import BEHAVIOUR, MESSAGES, Count, Increment, apply_increment
from stream_app.testing import ConditionTimeout, ProbeFailed, WorkerProcess, wait_for
from stream_app.testing.dev_broker import kafka_broker

GOAL_R_STATE = 0.5
GOAL_R_FAUST = 1.0
MAX_MESSAGE_BYTES = 1_048_576
#: Longest a subject may take to process the records before the run fails.
PROCESS_TIMEOUT_S = 1800.0


def loop_step(key: bytes, value: bytes, partition: int, offset: int, stored: bytes | None) -> bytes:
    """The hand-written loop's update: the same envelope decode and data model as the workers."""
    message = MESSAGES.decode(key, value, max_bytes=MAX_MESSAGE_BYTES)
    assert isinstance(message.body, Increment)
    data = Count.model_validate_json(stored) if stored is not None else None
    return apply_increment(data, message.body).model_dump_json().encode()


def run_loop(bootstrap: str, workdir: Path, records: list[tuple[bytes, bytes]]) -> Measurement:
    """Subject 1: the hand-written loop on a fresh app id, records pre-produced."""
    settings = setup_app(bootstrap, workdir, "loop")
    produce_all(bootstrap, settings.input_topic(BEHAVIOUR), records)
    return run_hand_written_loop(
        bootstrap=bootstrap,
        group=settings.app_id,
        topic=settings.input_topic(BEHAVIOUR),
        changelog=settings.changelog_topic(BEHAVIOUR),
        db_path=workdir / f"{settings.app_id}-rocksdb",
        expected=len(records),
        step=loop_step,
    )


def run_worker(
    bootstrap: str,
    workdir: Path,
    records: list[tuple[bytes, bytes]],
    *,
    module: str,
    name: str,
    options: WorkerOptions,
) -> tuple[Measurement, dict[str, Any]]:
    """Subjects 2 and 3: a ``faust worker`` of ``module`` on a fresh app id, records pre-produced.

    Returns the measurement and extra figures (``commit_tail_s``, ``misrouted``).
    """
    settings = setup_app(bootstrap, workdir, name)
    topic = settings.input_topic(BEHAVIOUR)
    produce_all(bootstrap, topic, records)
    extra, log = options.files(settings.app_id, workdir)
    env = worker_env(settings, BENCH_EXPECTED=str(len(records)), **extra)
    with running_worker(module, env, log) as worker:

        def progress() -> dict[str, Any]:
            if not worker.alive():
                raise ProbeFailed(f"{name} worker died:\n{worker.log_text()[-4000:]}")
            snapshot: dict[str, Any] = worker.get_json("/bench/progress/")
            return snapshot

        try:
            done = wait_for(
                progress,
                lambda s: s["done_wall"] is not None,
                timeout=PROCESS_TIMEOUT_S,
                interval=0.25,
                what=f"{name}: all {len(records)} records applied",
            )
            committed_at = wait_committed(bootstrap, settings.app_id, topic)
        except ConditionTimeout as exc:
            raise ConditionTimeout(f"{exc}\n--- worker log tail ---\n{_tail(worker)}") from None
        final = progress()
    if final["count"] != len(records):
        raise AssertionError(f"{name} applied {final['count']} records, sent {len(records)}")
    measurement = Measurement(
        events=len(records),
        seconds=done["done_wall"] - done["first_wall"],
        cpu_seconds=done["done_cpu"] - done["first_cpu"],
    )
    figures = {"commit_tail_s": round(committed_at - done["done_wall"], 3)}
    if "misrouted" in final:
        figures["misrouted"] = final["misrouted"]
    return measurement, figures


def _tail(worker: WorkerProcess) -> str:
    return worker.log_text()[-4000:]


def _subject(rounds: list[Measurement], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    figures = median_of(rounds).as_json()
    if len(rounds) > 1:
        figures["rounds_events_per_s"] = [round(m.events_per_s, 1) for m in rounds]
        figures["rounds_cpu_us_per_event"] = [round(m.cpu_us_per_event, 1) for m in rounds]
    return {**figures, **(extra or {})}


def main() -> None:
    """Run the subjects ``--rounds`` times each and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="increments to process")
    parser.add_argument("--cells", type=int, default=10_000, help="distinct cells they go to")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all three (median)")
    add_worker_arguments(parser)
    args = parser.parse_args()
    check_worker_arguments(parser, args)
    options = WorkerOptions.from_args(args)
    records = make_records(args.records, args.cells)
    loop: list[Measurement] = []
    faust: list[Measurement] = []
    cell: list[Measurement] = []
    extras: dict[str, list[dict[str, Any]]] = {"faust": [], "cell": []}
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        for _ in range(args.rounds):
            loop.append(run_loop(broker.bootstrap, workdir, records))
            m, extra = run_worker(
                broker.bootstrap,
                workdir,
                records,
                module="bench.apps.faust_counter",
                name="faust",
                options=options,
            )
            faust.append(m)
            extras["faust"].append(extra)
            m, extra = run_worker(
                broker.bootstrap,
                workdir,
                records,
                module="bench.apps.cell_counter",
                name="cell",
                options=options,
            )
            cell.append(m)
            extras["cell"].append(extra)
    loop_m, faust_m, cell_m = median_of(loop), median_of(faust), median_of(cell)
    r_state = cell_m.events_per_s / loop_m.events_per_s
    r_faust = cell_m.events_per_s / faust_m.events_per_s
    report = {
        "benchmark": "cells_throughput",
        "records": args.records,
        "cells": args.cells,
        "partitions": PARTITIONS,
        "rounds": args.rounds,
        "broker": broker.source,
        **options.as_json(),
        "timed": "first record taken -> last record applied to state, inside the process; "
        "CPU = user+sys of that process over the same interval",
        "loop": _subject(loop),
        "faust": _subject(faust, {"commit_tail_s": [e["commit_tail_s"] for e in extras["faust"]]}),
        "cell": _subject(
            cell,
            {
                "commit_tail_s": [e["commit_tail_s"] for e in extras["cell"]],
                "misrouted": sum(e.get("misrouted", 0) for e in extras["cell"]),
            },
        ),
        "R_state": round(r_state, 3),
        "R_faust": round(r_faust, 3),
        "cpu_per_event_cell_over_loop": round(cell_m.cpu_us_per_event / loop_m.cpu_us_per_event, 3),
        "cpu_per_event_cell_over_faust": round(
            cell_m.cpu_us_per_event / faust_m.cpu_us_per_event, 3
        ),
        "goals": {
            "R_state": {"goal": f">= {GOAL_R_STATE}", "met": r_state >= GOAL_R_STATE},
            "R_faust": {"goal": f">= {GOAL_R_FAUST}", "met": r_faust >= GOAL_R_FAUST},
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
