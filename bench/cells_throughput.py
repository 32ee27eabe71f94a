"""Throughput and CPU of a stateful counter cell, timed to durability, as ratios to careful
hand-written loops and to Faust.

One run measures four subjects on one broker, each on its own app id (its own input topic,
changelog and consumer group), all with :data:`~bench._common.PARTITIONS` partitions and the same
records (``--records`` increments of 1 over ``--cells`` cells, keys partitioned with murmur2):

1. **careful**: a careful hand-written worker in this process (:func:`bench._common.
   run_careful_loop`): confluent-kafka batches of 500, the same pydantic envelope and data model
   as the cell, one RocksDB multi-get and one ``WriteBatch`` per batch, one changelog record per
   key changed in the batch (``linger.ms`` 5, idempotent, ``acks=all``), offsets committed on
   the cell's commit interval, and when the input runs dry, after the changelog is
   acknowledged.
2. **careful_json**: the same loop parsing with stdlib ``json`` (the floor of what parsing
   costs in Python).
3. **faust**: a plain Faust agent with a Table doing the same update
   (``faust -A bench.apps.faust_counter worker``).
4. **cell**: the counter as a stream_app Behaviour on a Runtime
   (``faust -A bench.apps.cell_counter worker``), at least once.

**What is timed: durability.** All records are in the input topic before a subject starts. Its
time runs from the moment it takes its first record to the moment the commit covering the last
record is done (everything it produced for the records acknowledged before): for the loops,
the return of their final synchronous commit; for the workers, the moment their group's
committed offsets are seen at the end of the input topic (polled every 50 ms). The time to the
last record applied to state is reported beside it (``applied_s``). CPU is the processing
process's user + system time (every thread) over the durable interval. Before the timed rounds
every subject runs once on ``--warmup`` records (a fresh app id each; not reported), so that the
broker, the page cache and the interpreter are warm for all of them.

Prints one JSON object: each subject's figures (median over ``--rounds``), ``R_state`` = cell /
careful (events per second to durability), ``R_state_json`` = cell / careful_json,
``R_faust`` = cell / faust, the CPU per event ratios, and whether the goals are met
(R_state >= 0.6, R_faust >= 1.0). Absolute rates are noise on shared 2-core machines; the ratios
are what we track.

Run: ``.venv/bin/python -m bench.cells_throughput [--records N] [--cells N] [--rounds N]
[--save]`` (``--save`` keeps the report in ``bench/results/cells_throughput.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench._common import (
    PARTITIONS,
    Codec,
    DurableMeasurement,
    MachineLoad,
    Parse,
    WorkerOptions,
    add_worker_arguments,
    check_worker_arguments,
    make_records,
    median_of,
    produce_all,
    run_careful_loop,
    running_worker,
    save_result,
    setup_app,
    subject_figures,
    worker_durable,
    worker_env,
)
from bench.apps.model import BEHAVIOUR, MESSAGES, Count, Increment
from stream_app.settings import Settings
from stream_app.testing.dev_broker import kafka_broker

GOAL_R_STATE = 0.6
GOAL_R_FAUST = 1.0
MAX_MESSAGE_BYTES = 1_048_576
#: Longest a subject may take to process the records before the run fails.
PROCESS_TIMEOUT_S = 1800.0


def parse_pydantic(key: bytes, value: bytes) -> int:
    """The cell's parse: the envelope decoded and validated by the same ``MessageTypes``."""
    body = MESSAGES.decode(key, value, max_bytes=MAX_MESSAGE_BYTES).body
    assert isinstance(body, Increment)
    return body.by


def parse_json(key: bytes, value: bytes) -> int:
    """The floor: stdlib ``json`` and the same checks by hand."""
    doc = json.loads(value)
    if doc.get("type") != "increment":
        raise ValueError(f"not an increment: {doc.get('type')!r}")
    by = (doc.get("body") or {}).get("by", 1)
    if type(by) is not int or not 1 <= by <= 1_000_000_000:
        raise ValueError(f"bad increment: {by!r}")
    return by


PYDANTIC_CODEC: Codec = (
    lambda stored: Count.model_validate_json(stored).count if stored is not None else 0,
    lambda count: Count(count=count).model_dump_json().encode(),
)
JSON_CODEC: Codec = (
    lambda stored: int(json.loads(stored)["count"]) if stored is not None else 0,
    lambda count: json.dumps({"count": count}, separators=(",", ":")).encode(),
)


def run_careful(
    bootstrap: str,
    workdir: Path,
    records: list[tuple[bytes, bytes]],
    *,
    name: str,
    parse: Parse,
    codec: Codec,
) -> DurableMeasurement:
    """Subjects 1 and 2: the careful loop on a fresh app id, records pre-produced."""
    settings = setup_app(bootstrap, workdir, name)
    produce_all(bootstrap, settings.input_topic(BEHAVIOUR), records)
    return run_careful_loop(
        bootstrap=bootstrap,
        group=settings.app_id,
        topic=settings.input_topic(BEHAVIOUR),
        changelog=settings.changelog_topic(BEHAVIOUR),
        db_path=workdir / f"{settings.app_id}-rocksdb",
        expected=len(records),
        parse=parse,
        codec=codec,
        commit_interval_s=settings.commit_interval_s,
    )


def run_worker(
    bootstrap: str,
    workdir: Path,
    records: list[tuple[bytes, bytes]],
    *,
    module: str,
    name: str,
    options: WorkerOptions,
    settings: Settings | None = None,
    env_extra: Mapping[str, str] | None = None,
) -> tuple[DurableMeasurement, dict[str, Any]]:
    """Subjects 3 and 4: a ``faust worker`` of ``module`` on a fresh app id (``settings``, or
    new ones from :func:`~bench._common.setup_app`), records pre-produced; timed to its group's
    offsets committed to the end of the input. ``env_extra`` is added to the worker's
    environment (e.g. ``STREAM_APP_PROCESSING_GUARANTEE``).

    Returns the measurement and extra figures (``misrouted``).
    """
    settings = settings or setup_app(bootstrap, workdir, name)
    topic = settings.input_topic(BEHAVIOUR)
    produce_all(bootstrap, topic, records)
    extra, log = options.files(settings.app_id, workdir)
    env = worker_env(settings, BENCH_EXPECTED=str(len(records)), **{**extra, **(env_extra or {})})
    with running_worker(module, env, log) as worker:
        measured, final = worker_durable(
            worker,
            events=len(records),
            bootstrap=bootstrap,
            group=settings.app_id,
            topic=topic,
            what=f"{name}: all {len(records)} records applied",
            timeout=PROCESS_TIMEOUT_S,
        )
    if final["count"] != len(records):
        raise AssertionError(f"{name} applied {final['count']} records, sent {len(records)}")
    figures = {"misrouted": final["misrouted"]} if "misrouted" in final else {}
    return measured, figures


def _subject(
    rounds: list[DurableMeasurement], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {**subject_figures(rounds), **(extra or {})}


#: The order each round runs them in: the cell right after the careful loop it is compared with
#: (``R_state``), so that a change in the machine's speed between them is as small as it can be.
SUBJECTS = ("careful", "cell", "careful_json", "faust")


def run_round(
    bootstrap: str, workdir: Path, records: list[tuple[bytes, bytes]], options: WorkerOptions
) -> dict[str, tuple[DurableMeasurement, dict[str, Any]]]:
    """Every subject once, in the order of :data:`SUBJECTS`, on the same records."""
    results: dict[str, tuple[DurableMeasurement, dict[str, Any]]] = {}
    results["careful"] = (
        run_careful(
            bootstrap, workdir, records, name="careful", parse=parse_pydantic, codec=PYDANTIC_CODEC
        ),
        {},
    )
    results["cell"] = run_worker(
        bootstrap, workdir, records, module="bench.apps.cell_counter", name="cell", options=options
    )
    results["careful_json"] = (
        run_careful(
            bootstrap, workdir, records, name="careful-json", parse=parse_json, codec=JSON_CODEC
        ),
        {},
    )
    results["faust"] = run_worker(
        bootstrap,
        workdir,
        records,
        module="bench.apps.faust_counter",
        name="faust",
        options=options,
    )
    return results


def main() -> None:
    """Warm every subject up, run them ``--rounds`` times each and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="increments to process")
    parser.add_argument("--cells", type=int, default=10_000, help="distinct cells they go to")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every subject (median)")
    parser.add_argument(
        "--warmup", type=int, default=5_000, help="records of the untimed first round (0: none)"
    )
    parser.add_argument(
        "--save",
        action="store_true",
        help="also write the report to bench/results/cells_throughput.json",
    )
    add_worker_arguments(parser)
    args = parser.parse_args()
    check_worker_arguments(parser, args)
    options = WorkerOptions.from_args(args)
    records = make_records(args.records, args.cells)
    results: dict[str, list[DurableMeasurement]] = {name: [] for name in SUBJECTS}
    misrouted = 0
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        if args.warmup:
            run_round(broker.bootstrap, workdir, records[: args.warmup], options)
        load = MachineLoad()
        for _ in range(args.rounds):
            for name, (measured, extra) in run_round(
                broker.bootstrap, workdir, records, options
            ).items():
                results[name].append(measured)
                misrouted += extra.get("misrouted", 0)
    machine_load = load.figures()
    median = {name: median_of([m.durable for m in rounds]) for name, rounds in results.items()}
    cell = median["cell"]

    def ratio(other: str) -> float:
        return cell.events_per_s / median[other].events_per_s

    def cpu_ratio(other: str) -> float:
        return cell.cpu_us_per_event / median[other].cpu_us_per_event

    r_state, r_faust = ratio("careful"), ratio("faust")
    # Each round's own ratio: the cell against the careful loop run just before it.
    round_ratios = [
        cell_round.durable.events_per_s / careful_round.durable.events_per_s
        for cell_round, careful_round in zip(results["cell"], results["careful"], strict=True)
    ]
    report = {
        "benchmark": "cells_throughput",
        "records": args.records,
        "cells": args.cells,
        "partitions": PARTITIONS,
        "rounds": args.rounds,
        "warmup_records": args.warmup,
        "broker": broker.source,
        **options.as_json(),
        "timed": "first record taken -> the commit covering the last record (everything "
        "produced acknowledged); applied_s: -> last record applied to state. CPU = user+sys of "
        "the processing process over the durable interval",
        **{name: _subject(rounds) for name, rounds in results.items() if name != "cell"},
        "cell": _subject(results["cell"], {"misrouted": misrouted}),
        "machine_load": machine_load,
        "R_state": round(r_state, 3),
        "R_state_round_median": round(statistics.median(round_ratios), 3),
        "R_state_json": round(ratio("careful_json"), 3),
        "R_faust": round(r_faust, 3),
        "cpu_per_event_cell_over_careful": round(cpu_ratio("careful"), 3),
        "cpu_per_event_cell_over_careful_json": round(cpu_ratio("careful_json"), 3),
        "cpu_per_event_cell_over_faust": round(cpu_ratio("faust"), 3),
        "tables": [
            {
                "title": "Each round (the cell right after the careful loop)",
                "columns": ["round", "careful events/s", "cell events/s", "cell ÷ careful"],
                "rows": [
                    [i + 1, base.durable.events_per_s, mine.durable.events_per_s, round(r, 3)]
                    for i, (base, mine, r) in enumerate(
                        zip(results["careful"], results["cell"], round_ratios, strict=True)
                    )
                ],
            }
        ],
        "goals": {
            "R_state": {"goal": f">= {GOAL_R_STATE}", "met": r_state >= GOAL_R_STATE},
            "R_faust": {"goal": f">= {GOAL_R_FAUST}", "met": r_faust >= GOAL_R_FAUST},
        },
    }
    if args.save:
        save_result("cells_throughput", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
