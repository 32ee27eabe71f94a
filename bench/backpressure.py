"""Backpressure: a worker draining a backlog of a million messages, with oversized records and a
slow effect handler. Its memory stays bounded, nothing is dropped, the lag drains.

One subject per guarantee (``at_least_once``, ``exactly_once``), each on its own app id:

1. The backlog is produced before the worker starts, as fast as a producer goes: ``--messages``
   cell messages (small values, ``--cells`` cells, keys partitioned with murmur2), of which
   ``--effects`` are ``work`` messages whose effect handler takes ``--effect-ms`` (a slow
   outside service; they come first, so their effects queue up in ``<app_id>.effects`` while
   the cells drain the rest), and ``--oversized`` records of ``--oversized-bytes`` (larger
   than ``max_message_bytes``, 1 MiB by default, produced by a producer and to an input topic
   whose ``max.message.bytes`` allow them: the runtime's own limit rejects them).
2. A worker (``bench.apps.backpressure_cell``) starts and drains it. Every 0.5 s the harness
   samples the worker's RSS and thread count (``/proc/<pid>/status``) and the input's lag (the
   records not covered by the group's committed offsets).
3. Done when every message is applied, every effect handled, every oversized record
   dead-lettered and the group has committed to the end of the input. Then the checks:
   the cells' final state, read back from the changelog (``read_committed``), accounts for every
   message (each cell's count equals the messages sent to it: none lost, none applied twice);
   every effect id was handled; the dead-letter topic holds each oversized record with reason
   ``oversized``; the worker never stopped.

Each subject runs twice: on the full backlog and, first, on a baseline backlog of
``--messages / 20`` (and as many fewer effects), same cells and oversized records. ``R_rss`` =
peak RSS on the full backlog ÷ peak RSS on the baseline (goal <= 1.5): a worker that kept a
share of what it drained in memory grows with the backlog. What does grow with the writes are
RocksDB's memtables, up to their share of the workers' ``STREAM_APP_ROCKSDB_MEMORY_BYTES``
(half of it; ``--rocksdb-memory-mib`` sets it for the run), so ``R_growth`` = (peak RSS full
- peak RSS baseline) ÷ that budget (goal <= 1: the backlog costs no more memory than the
budget it was given). ``R_eos`` = drain rate under exactly_once ÷ at_least_once, for
reference.

Prints one JSON object; ``--save`` keeps it in ``bench/results/backpressure.json``. Run:
``.venv/bin/python -m bench.backpressure [--messages N] [--cells N] [--effects N]
[--effect-ms MS] [--oversized N] [--oversized-bytes N] [--guarantees G ...]
[--rocksdb-memory-mib MIB] [--save]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench._common import (
    INCREMENT,
    PARTITIONS,
    WorkerOptions,
    WorkerSampler,
    add_worker_arguments,
    check_worker_arguments,
    delete_app_topics,
    process_cpu_seconds,
    save_result,
    wait_committed,
    worker_env,
)
from bench.apps.model import BEHAVIOUR
from stream_app.core.dead_letters import DeadLetter
from stream_app.kafka.reading import read_to_end
from stream_app.settings import Settings
from stream_app.testing import ConditionTimeout, ProbeFailed, WorkerProcess, wait_for
from stream_app.testing.dev_broker import find_free_port, kafka_broker

MODULE = "bench.apps.backpressure_cell"
GUARANTEES = ("at_least_once", "exactly_once")
#: The input topic's (and the backlog producer's) largest record: room for the oversized ones.
INPUT_MAX_BYTES = 4 * 1_048_576
#: The baseline backlog is this many times smaller than the full one.
BASELINE_DIVISOR = 20
GOAL_R_RSS = 1.5
GOAL_R_GROWTH = 1.0
#: Longest a subject may take to drain its backlog before the run fails.
PROCESS_TIMEOUT_S = 1800.0
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Backlog:
    """What is produced before the worker starts.

    Attributes:
        messages: Cell messages (each adds 1 to its cell), ``effects`` of them ``work``.
        cells: Distinct cells (``cell-0`` ...), each message's cell chosen round-robin.
        effects: ``work`` messages, the first of the backlog: their effects are all emitted
            within seconds of the start and queue up in front of the slow handler.
        oversized: Records larger than ``max_message_bytes``, spread evenly, the ``n``-th to
            ``cell-<n>`` (so to several partitions).
        oversized_bytes: The size of each oversized value.
    """

    messages: int
    cells: int
    effects: int
    oversized: int
    oversized_bytes: int

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """The backlog in the order it is produced."""
        oversized_every = self.messages // self.oversized if self.oversized else 0
        big = b'{"type": "increment", "body": {"by": 1}, "pad": "' + b"x" * self.oversized_bytes
        made_oversized = 0
        for index in range(self.messages):
            key = f"cell-{index % self.cells}".encode()
            if index < self.effects:
                yield key, f'{{"type": "work", "body": {{"n": {index}}}}}'.encode()
            else:
                yield key, INCREMENT
            if oversized_every and index % oversized_every == 0 and made_oversized < self.oversized:
                big_key = f"cell-{made_oversized % self.cells}".encode()
                yield big_key, big + f'-{made_oversized}"}}'.encode()
                made_oversized += 1

    def expected_counts(self) -> collections.Counter[bytes]:
        """Each cell's count once every message is applied once."""
        per_cell, extra = divmod(self.messages, self.cells)
        return collections.Counter(
            {f"cell-{c}".encode(): per_cell + (1 if c < extra else 0) for c in range(self.cells)}
        )

    def scaled_down(self, divisor: int) -> Backlog:
        """The same backlog with ``divisor`` times fewer messages and effects (at least one
        effect when there were any), as many cells and oversized records."""
        return Backlog(
            messages=max(self.cells, self.messages // divisor),
            cells=self.cells,
            effects=max(1, self.effects // divisor) if self.effects else 0,
            oversized=self.oversized,
            oversized_bytes=self.oversized_bytes,
        )


def produce_backlog(bootstrap: str, topic: str, backlog: Backlog) -> float:
    """Produce ``backlog`` to ``topic``, acknowledged by the broker; return the seconds taken."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "partitioner": "murmur2_random",
            "message.max.bytes": INPUT_MAX_BYTES,
        }
    )
    started = time.monotonic()
    for key, value in backlog.records():
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(300)
    if left:
        raise RuntimeError(f"{left} record(s) to {topic} not acknowledged after 300s")
    return time.monotonic() - started


def create_input(bootstrap: str, settings: Settings) -> None:
    """The input topic, allowing records up to :data:`INPUT_MAX_BYTES`; the worker creates the
    app's other topics."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(
        settings.input_topic(BEHAVIOUR),
        num_partitions=settings.partitions,
        replication_factor=1,
        config={"max.message.bytes": str(INPUT_MAX_BYTES)},
    )
    for future in admin.create_topics([topic]).values():
        future.result(30)


def changelog_counts(bootstrap: str, topic: str) -> tuple[int, dict[bytes, int]]:
    """The committed changelog of the counter table: its records, and each cell's last count."""
    last: dict[bytes, int] = {}
    records = 0
    for message in read_to_end(bootstrap, topic, timeout=300):
        key, value = message.key(), message.value()
        if key is None:
            continue
        records += 1
        if value is None:
            last.pop(key, None)
        else:
            last[key] = int(json.loads(value)["data"]["count"])
    return records, last


def dead_letter_reasons(bootstrap: str, topic: str) -> tuple[collections.Counter[str], bool]:
    """The reasons of the dead letters in ``topic``, and whether every oversized one says it
    was truncated (the original is larger than the dead letter keeps)."""
    reasons: collections.Counter[str] = collections.Counter()
    truncated = True
    for message in read_to_end(bootstrap, topic, timeout=120):
        letter = DeadLetter.from_record(message.key(), message.value(), message.headers())
        reasons[letter.reason] += 1
        if letter.reason == "oversized":
            truncated = truncated and letter.truncated
    return reasons, truncated


def run_subject(
    bootstrap: str,
    workdir: Path,
    backlog: Backlog,
    *,
    guarantee: str,
    effect_ms: int,
    rocksdb_memory_mib: int | None,
    options: WorkerOptions,
    name: str,
) -> dict[str, Any]:
    """Produce ``backlog``, drain it with a worker under ``guarantee`` (and a RocksDB budget of
    ``rocksdb_memory_mib``, if given), check and measure."""
    app_id = f"bench-bp-{name}-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        app_id=app_id, bootstrap_servers=bootstrap, partitions=PARTITIONS, data_dir=workdir / "data"
    )
    topic = settings.input_topic(BEHAVIOUR)
    create_input(bootstrap, settings)
    try:
        produce_s = produce_backlog(bootstrap, topic, backlog)
        figures = _drain(
            bootstrap,
            workdir,
            settings,
            backlog,
            guarantee=guarantee,
            effect_ms=effect_ms,
            rocksdb_memory_mib=rocksdb_memory_mib,
            options=options,
        )
        records, counts = changelog_counts(bootstrap, settings.changelog_topic(BEHAVIOUR))
        expected = backlog.expected_counts()
        wrong = sorted(k for k in expected.keys() | counts.keys() if counts.get(k) != expected[k])
        reasons, truncated = dead_letter_reasons(bootstrap, settings.dead_letter_topic)
    finally:
        delete_app_topics(bootstrap, app_id)
    applied = sum(counts.values())
    checks = {
        "applied_in_state": applied,
        "lost": max(0, backlog.messages - applied),
        "duplicated": max(0, applied - backlog.messages),
        "cells_wrong": len(wrong),
        "changelog_records": records,
        "dead_letters": dict(reasons),
        "oversized_dead_lettered_truncated": truncated,
    }
    ok = (
        not wrong
        and figures["effects_handled"] == backlog.effects
        and reasons.get("oversized", 0) == backlog.oversized
        and sum(reasons.values()) == backlog.oversized
    )
    if not ok:
        raise AssertionError(f"{name}: the backlog was not accounted for: {checks} {figures}")
    return {
        "messages": backlog.messages,
        "effects": backlog.effects,
        "oversized": backlog.oversized,
        "produce_s": round(produce_s, 2),
        **figures,
        **checks,
    }


def _drain(
    bootstrap: str,
    workdir: Path,
    settings: Settings,
    backlog: Backlog,
    *,
    guarantee: str,
    effect_ms: int,
    rocksdb_memory_mib: int | None,
    options: WorkerOptions,
) -> dict[str, Any]:
    """Start the worker on the backlog, sample it until everything is done, stop it."""
    topic = settings.input_topic(BEHAVIOUR)
    extra, log = options.files(settings.app_id, workdir)
    env = worker_env(
        settings,
        BENCH_EXPECTED=str(backlog.messages),
        BACKPRESSURE_EFFECT_MS=str(effect_ms),
        STREAM_APP_PROCESSING_GUARANTEE=guarantee,
        **extra,
    )
    if rocksdb_memory_mib is not None:
        env["STREAM_APP_ROCKSDB_MEMORY_BYTES"] = str(rocksdb_memory_mib * MIB)
    worker = WorkerProcess(MODULE, env=env, log_path=log, web_port=find_free_port())
    started = time.time()
    worker.start()
    sampler = WorkerSampler(worker.pid, bootstrap, settings.app_id, topic).start()
    effects_at: list[float] = []

    def status() -> dict[str, Any]:
        if not worker.alive():
            raise ProbeFailed(f"the worker stopped:\n{worker.log_text()[-4000:]}")
        snapshot: dict[str, Any] = worker.get_json("/bench/backpressure/")
        if not effects_at and snapshot["effects_handled"] >= backlog.effects:
            effects_at.append(time.time())
        return snapshot

    def finished(s: dict[str, Any]) -> bool:
        return (
            s["done_wall"] is not None
            and s["effects_handled"] >= backlog.effects
            and s["dead_letters"].get("oversized", 0) >= backlog.oversized
        )

    try:
        worker.wait_ready(timeout=180)
        ready = time.time()
        try:
            done = wait_for(status, finished, timeout=PROCESS_TIMEOUT_S, interval=0.2, what="drain")
            committed = wait_committed(bootstrap, settings.app_id, topic)
        except ConditionTimeout as exc:
            raise ConditionTimeout(
                f"{exc}\n--- worker log ---\n{worker.log_text()[-4000:]}"
            ) from None
        cpu = process_cpu_seconds(worker.pid)
        final = status()
    finally:
        sampler.stop()
        code = worker.stop()
    first, applied = done["first_wall"], done["done_wall"]
    samples = sampler.samples
    drain_rss = [s.rss for s in sampler.between(first, applied)]
    lags = [(s.t, s.lag) for s in samples if s.lag is not None]
    return {
        "ready_s": round(ready - started, 2),
        "drain_s": round(applied - first, 2),
        "durable_s": round(committed - first, 2),
        "effects_done_s": round(effects_at[0] - first, 2) if effects_at else None,
        "drain_rate_per_s": round(backlog.messages / (applied - first), 1),
        "cpu_us_per_message": round(cpu * 1e6 / backlog.messages, 1),
        "rss_peak_mib": round(max(s.rss for s in samples) / MIB, 1),
        "rss_at_ready_mib": round(next((s.rss for s in samples if s.t >= ready), 0) / MIB, 1),
        "rss_steady_mib": round(statistics.median(drain_rss) / MIB, 1) if drain_rss else None,
        "threads_peak": max(s.threads for s in samples),
        "kafka_clients_peak": max(s.clients for s in samples),
        "lag_peak": max((lag for _, lag in lags), default=None),
        "lag_over_time": _every(lags, started, seconds=5.0),
        "rss_mib_over_time": _every(
            [(s.t, round(s.rss / MIB, 1)) for s in samples], started, seconds=5.0
        ),
        "effects_handled": final["effects_handled"],
        "effect_calls": final["effect_calls"],
        "rocksdb_mib_drained": round(final["rocksdb_bytes"] / MIB, 1),
        "batches": final["batch_input"]["batches"],
        "commits": final["batch_input"]["commits"],
        "worker_exit": code,
        "errors_in_log": len(worker.error_lines()),
    }


def _every(samples: list[tuple[float, Any]], origin: float, *, seconds: float) -> list[Any]:
    """``[seconds since origin, value]`` pairs, one per ``seconds`` (the first sample of each)."""
    kept: list[Any] = []
    next_t = origin
    for t, value in samples:
        if t >= next_t:
            kept.append([round(t - origin, 1), value])
            next_t = t + seconds
    return kept


def main() -> None:
    """Run the baseline and the full backlog under each guarantee; print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="cell messages")
    parser.add_argument("--cells", type=int, default=10_000, help="distinct cells")
    parser.add_argument("--effects", type=int, default=1_000, help="messages emitting an effect")
    parser.add_argument("--effect-ms", type=int, default=50, help="the effect handler's time")
    parser.add_argument("--oversized", type=int, default=20, help="oversized records")
    parser.add_argument(
        "--oversized-bytes", type=int, default=1_572_864, help="size of each (> 1 MiB)"
    )
    parser.add_argument(
        "--guarantees", nargs="+", choices=GUARANTEES, default=list(GUARANTEES), metavar="G"
    )
    parser.add_argument(
        "--rocksdb-memory-mib",
        type=int,
        default=None,
        metavar="MIB",
        help="the workers' STREAM_APP_ROCKSDB_MEMORY_BYTES, in MiB (default: the setting's)",
    )
    parser.add_argument(
        "--save", action="store_true", help="also write bench/results/backpressure.json"
    )
    add_worker_arguments(parser)
    args = parser.parse_args()
    check_worker_arguments(parser, args)
    if args.oversized_bytes + 1024 > INPUT_MAX_BYTES:
        parser.error(f"--oversized-bytes must leave room under {INPUT_MAX_BYTES}")
    options = WorkerOptions.from_args(args)
    full = Backlog(args.messages, args.cells, args.effects, args.oversized, args.oversized_bytes)
    baseline = full.scaled_down(BASELINE_DIVISOR)
    subjects: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        for guarantee in args.guarantees:
            short = "alo" if guarantee == "at_least_once" else "eos"
            subjects[guarantee] = {
                "baseline": run_subject(
                    broker.bootstrap,
                    workdir,
                    baseline,
                    guarantee=guarantee,
                    effect_ms=args.effect_ms,
                    rocksdb_memory_mib=args.rocksdb_memory_mib,
                    options=options,
                    name=f"{short}-base",
                ),
                "full": run_subject(
                    broker.bootstrap,
                    workdir,
                    full,
                    guarantee=guarantee,
                    effect_ms=args.effect_ms,
                    rocksdb_memory_mib=args.rocksdb_memory_mib,
                    options=options,
                    name=short,
                ),
            }
    budget_mib = args.rocksdb_memory_mib or Settings().rocksdb_memory_bytes / MIB
    ratios: dict[str, float] = {}
    goals: dict[str, dict[str, Any]] = {}
    for guarantee, runs in subjects.items():
        short = "alo" if guarantee == "at_least_once" else "eos"
        full_peak, base_peak = runs["full"]["rss_peak_mib"], runs["baseline"]["rss_peak_mib"]
        r_rss = full_peak / base_peak
        r_growth = (full_peak - base_peak) / budget_mib
        ratios[f"R_rss_{short}"] = round(r_rss, 3)
        ratios[f"R_growth_{short}"] = round(r_growth, 3)
        goals[f"R_rss_{short}"] = {"goal": f"<= {GOAL_R_RSS}", "met": r_rss <= GOAL_R_RSS}
        goals[f"R_growth_{short}"] = {
            "goal": f"<= {GOAL_R_GROWTH}",
            "met": r_growth <= GOAL_R_GROWTH,
        }
    if len(subjects) == len(GUARANTEES):
        eos, alo = subjects["exactly_once"]["full"], subjects["at_least_once"]["full"]
        ratios["R_eos"] = round(eos["drain_rate_per_s"] / alo["drain_rate_per_s"], 3)
    rows = [
        [
            f"{guarantee} / {run}",
            figures["messages"],
            figures["drain_s"],
            figures["drain_rate_per_s"],
            figures["rss_at_ready_mib"],
            figures["rss_steady_mib"],
            figures["rss_peak_mib"],
            figures["threads_peak"],
            figures["effects_handled"],
            sum(figures["dead_letters"].values()),
            figures["lost"],
            figures["duplicated"],
        ]
        for guarantee, runs in subjects.items()
        for run, figures in runs.items()
    ]
    table = {
        "title": "Backlogs drained (RSS in MiB)",
        "columns": [
            "subject",
            "messages",
            "drain (s)",
            "messages/s",
            "RSS at ready",
            "RSS steady",
            "RSS peak",
            "threads",
            "effects run",
            "dead letters",
            "lost",
            "applied twice",
        ],
        "rows": rows,
    }
    report = {
        "benchmark": "backpressure",
        "messages": args.messages,
        "cells": args.cells,
        "effects": args.effects,
        "effect_ms": args.effect_ms,
        "oversized": args.oversized,
        "oversized_bytes": args.oversized_bytes,
        "rocksdb_memory_mib": budget_mib,
        "baseline_messages": baseline.messages,
        "partitions": PARTITIONS,
        "broker": broker.source,
        **options.as_json(),
        **ratios,
        "lost": sum(run["lost"] for runs in subjects.values() for run in runs.values()),
        "duplicated": sum(run["duplicated"] for runs in subjects.values() for run in runs.values()),
        "goals": goals,
        **subjects,
        "tables": [table],
    }
    if args.save:
        save_result("backpressure", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
