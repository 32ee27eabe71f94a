"""What ``exactly_once``'s transactional producer per input partition costs a worker that reads
many partitions: one worker, ``--partitions`` (64) input partitions, under ``exactly_once``
against ``at_least_once``.

Each guarantee gets its own app id (``bench.apps.cell_counter``, topics from
``topics/counter.toml``, all with ``--partitions`` partitions) and the same records, produced
before the worker starts (``--records`` increments over ``--cells`` cells, murmur2). Measured:

- **Kafka clients and threads**: librdkafka clients alive in the worker (each runs one
  ``rdk:main`` thread: under ``exactly_once`` one transactional producer per input partition,
  plus the input consumer and the restore and admin clients) and its OS threads
  (``/proc/<pid>/status``), sampled every 0.5 s; peak and once drained.
- **Memory**: RSS at ready, peak, once drained.
- **Start**: process start to Faust's ``Ready``, and to the first record applied (under
  ``exactly_once`` the ``init_transactions`` of every partition come between).
- **Commits**: the batched input's commit count and the time the loop spent in commits
  (``commit_seconds``, mean and longest; from ``GET /stream-app/metrics/``): under
  ``exactly_once`` each commit sends offsets and commits one transaction per partition with
  input, on :data:`~stream_app.kafka.batch_input.TXN_THREADS` threads.
- **Throughput** to durability (first record -> the group's offsets committed to the end).
- **Idle cost**: the worker's CPU over ``--idle-s`` seconds once drained (every client polls
  its brokers).

``R_eos`` = exactly_once events/s ÷ at_least_once (goal >= 0.75, as for ``bench.peers``);
``R_threads`` (drained) and ``R_rss`` (peak) = exactly_once ÷ at_least_once. Prints one JSON object;
``--save`` keeps it in ``bench/results/eos_partitions.json``. Run: ``.venv/bin/python -m
bench.eos_partitions [--partitions 64] [--records N] [--cells N] [--idle-s S] [--save]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    WorkerOptions,
    WorkerSampler,
    add_worker_arguments,
    check_worker_arguments,
    delete_app_topics,
    make_records,
    process_cpu_seconds,
    produce_all,
    save_result,
    setup_app,
    worker_durable,
    worker_env,
)
from bench.apps.model import BEHAVIOUR
from stream_app.testing import WorkerProcess
from stream_app.testing.dev_broker import find_free_port, kafka_broker

MODULE = "bench.apps.cell_counter"
GUARANTEES = ("at_least_once", "exactly_once")
GOAL_R_EOS = 0.75
MIB = 1024 * 1024
#: Longest a subject may take to process the records before the run fails.
PROCESS_TIMEOUT_S = 1800.0


def run_subject(
    bootstrap: str,
    workdir: Path,
    records: list[tuple[bytes, bytes]],
    *,
    partitions: int,
    guarantee: str,
    idle_s: float,
    options: WorkerOptions,
) -> dict[str, Any]:
    """One worker under ``guarantee`` on fresh topics of ``partitions`` partitions."""
    short = "alo" if guarantee == "at_least_once" else "eos"
    settings = setup_app(bootstrap, workdir, f"eosp-{short}", partitions=partitions)
    topic = settings.input_topic(BEHAVIOUR)
    try:
        produce_all(bootstrap, topic, records)
        extra, log = options.files(settings.app_id, workdir)
        env = worker_env(
            settings,
            BENCH_EXPECTED=str(len(records)),
            STREAM_APP_PROCESSING_GUARANTEE=guarantee,
            **extra,
        )
        worker = WorkerProcess(MODULE, env=env, log_path=log, web_port=find_free_port())
        started = time.time()
        worker.start()
        sampler = WorkerSampler(worker.pid, bootstrap).start()
        try:
            worker.wait_ready(timeout=300)
            ready = time.time()
            measured, progress = worker_durable(
                worker,
                events=len(records),
                bootstrap=bootstrap,
                group=settings.app_id,
                topic=topic,
                what=f"{guarantee}: all {len(records)} records applied",
                timeout=PROCESS_TIMEOUT_S,
            )
            drained = time.time()
            cpu_before = process_cpu_seconds(worker.pid)
            time.sleep(idle_s)  # the idle cost is measured over a fixed span, not awaited
            idle_cpu = process_cpu_seconds(worker.pid) - cpu_before
            stats: dict[str, Any] = worker.get_json("/stream-app/metrics/")["batch_input"]
        finally:
            sampler.stop()
            code = worker.stop()
    finally:
        delete_app_topics(bootstrap, settings.app_id)
    if progress["count"] != len(records):
        raise AssertionError(f"{guarantee}: applied {progress['count']} of {len(records)}")
    samples = sampler.samples
    after = [s for s in samples if s.t >= drained] or samples[-1:]
    calls = stats["commit_calls"]
    return {
        **measured.as_json(),
        "ready_s": round(ready - started, 2),
        "first_record_s": round(progress["first_wall"] - started, 2),
        "transactional_producers": stats["transactional_producers"],
        "kafka_clients_peak": max(s.clients for s in samples),
        "kafka_clients_drained": after[-1].clients,
        "threads_peak": max(s.threads for s in samples),
        "threads_drained": after[-1].threads,
        "rss_at_ready_mib": round(next((s.rss for s in samples if s.t >= ready), 0) / MIB, 1),
        "rss_peak_mib": round(max(s.rss for s in samples) / MIB, 1),
        "rss_drained_mib": round(after[-1].rss / MIB, 1),
        "commits": stats["commits"],
        "commit_calls": calls,
        "commit_ms_mean": round(1000 * stats["commit_seconds"] / calls, 2) if calls else None,
        "commit_ms_max": round(1000 * stats["commit_seconds_max"], 2),
        "commit_share_of_durable": round(stats["commit_seconds"] / measured.durable.seconds, 3),
        "idle_cpu_percent": round(100 * idle_cpu / idle_s, 1),
        "worker_exit": code,
        "errors_in_log": len(worker.error_lines()),
    }


def main() -> None:
    """Run both guarantees on the same records and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=64, help="input partitions")
    parser.add_argument("--records", type=int, default=200_000, help="increments to process")
    parser.add_argument("--cells", type=int, default=20_000, help="distinct cells")
    parser.add_argument(
        "--idle-s", type=float, default=10.0, help="seconds the drained worker's CPU is measured"
    )
    parser.add_argument(
        "--save", action="store_true", help="also write bench/results/eos_partitions.json"
    )
    add_worker_arguments(parser)
    args = parser.parse_args()
    check_worker_arguments(parser, args)
    options = WorkerOptions.from_args(args)
    records = make_records(args.records, args.cells)
    subjects: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        for guarantee in GUARANTEES:
            subjects[guarantee] = run_subject(
                broker.bootstrap,
                Path(tmp),
                records,
                partitions=args.partitions,
                guarantee=guarantee,
                idle_s=args.idle_s,
                options=options,
            )
    eos, alo = subjects["exactly_once"], subjects["at_least_once"]
    r_eos = eos["events_per_s"] / alo["events_per_s"]
    report = {
        "benchmark": "eos_partitions",
        "partitions": args.partitions,
        "records": args.records,
        "cells": args.cells,
        "idle_s": args.idle_s,
        "broker": broker.source,
        **options.as_json(),
        "R_eos": round(r_eos, 3),
        "R_threads": round(eos["threads_drained"] / alo["threads_drained"], 3),
        "R_rss": round(eos["rss_peak_mib"] / alo["rss_peak_mib"], 3),
        "R_commit_ms": round(eos["commit_ms_mean"] / alo["commit_ms_mean"], 3)
        if eos["commit_ms_mean"] and alo["commit_ms_mean"]
        else None,
        "goals": {"R_eos": {"goal": f">= {GOAL_R_EOS}", "met": r_eos >= GOAL_R_EOS}},
        **subjects,
        "tables": [
            {
                "title": f"One worker, {args.partitions} input partitions (RSS in MiB)",
                "columns": [
                    "guarantee",
                    "Kafka clients",
                    "threads",
                    "RSS drained",
                    "RSS peak",
                    "first record (s)",
                    "commit ms mean",
                    "commit ms max",
                    "idle CPU %",
                ],
                "rows": [
                    [
                        guarantee,
                        figures["kafka_clients_drained"],
                        figures["threads_drained"],
                        figures["rss_drained_mib"],
                        figures["rss_peak_mib"],
                        figures["first_record_s"],
                        figures["commit_ms_mean"],
                        figures["commit_ms_max"],
                        figures["idle_cpu_percent"],
                    ]
                    for guarantee, figures in subjects.items()
                ],
            }
        ],
    }
    if args.save:
        save_result("eos_partitions", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
