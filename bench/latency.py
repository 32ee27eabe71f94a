"""End-to-end latency at fixed rates: a cell, an entity ``send``, and a raw loop as the floor.

One run, one broker, the same partitions (:data:`~bench._common.PARTITIONS`) and the same keys
for every subject. For each ``--rates`` value a paced producer in this process sends that many
records per second for ``--seconds`` seconds, each timed from the moment just before its
``produce`` call to the moment its output is seen by a consumer in this process:

1. **cell**: a counter cell (:mod:`bench.apps.latency_cell`, a ``faust worker`` under
   ``--guarantee``) that adds 1 to its count and **publishes a record** per event (its
   ``seq``) to ``<app_id>.counter.out``: the output a user of the cell observes. Seen by a
   ``read_committed`` consumer of that topic.
2. **entity**: ``EntityClient.request_future`` ``send`` calls to the ledger's ``counter``
   entities (:mod:`bench.apps.entity_counter`, the same entity declared ``fencing=False`` so it
   may run ``at_least_once``; same guarantee), timed from the call to its reply.
3. **raw**: a raw confluent-kafka consume -> produce loop (:mod:`bench.apps.raw_echo`, its own
   process, at least once): the floor any worker on this broker could reach. Its bulk CPU per
   event is measured as the cell's, so ``R_cpu_1000_raw`` shows what the per-wake cost of any
   consume -> produce process at that rate is, against its own bulk cost.

The paced producer keeps to a schedule (the ``n``-th record is due at ``start + n / rate``) so
a late wake does not shift every later record; the keys cycle over ``--cells`` cells (murmur2
partitioned, as the workers route). Each subject's worker runs through every rate in turn
after a warm-up; its CPU per event at a rate is the process's user + system CPU over the
window (from the first record sent to the last output seen) divided by the records sent. The
**bulk** CPU per event of the cell and of the raw loop is then measured on the same process:
``--bulk`` records produced at once, CPU to the last output seen.

Prints one JSON object: per subject and rate the record count and p50/p99/p99.9/max latency in
ms and the CPU per event, and the headline figures ``p99_ms_cell_<rate>``,
``R_latency_p99`` (cell p99 / raw p99 at 1,000/s, goal <= 3, and the cell's p99 <= 50 ms) and
``R_cpu_1000`` (cell CPU per event at 1,000/s / its bulk CPU per event, goal <= 2), with
``goals``. Under ``exactly_once`` an output becomes visible when its transaction commits, so
the cell's and the entity's latency follow the commit interval; the goals are for
``at_least_once``.

Run: ``.venv/bin/python -m bench.latency [--rates 100 1000 5000] [--seconds 60]
[--guarantee at_least_once|exactly_once] [--input-linger-ms MS] [--save]`` (``--save`` keeps the
report in ``bench/results/latency.json``; ``--input-linger-ms`` sets the workers'
``input_linger_ms``, default 0).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench._common import (
    PARTITIONS,
    MachineLoad,
    WorkerOptions,
    add_worker_arguments,
    check_worker_arguments,
    process_cpu_seconds,
    running_worker,
    save_result,
    setup_app,
    worker_env,
)
from bench.apps.latency_cell import output_topic
from stream_app.clients.entities import EntityClient
from stream_app.core.replies import Reply
from stream_app.settings import Settings
from stream_app.testing import ConditionTimeout, wait_for
from stream_app.testing.dev_broker import kafka_broker

GOAL_R_LATENCY = 3.0
GOAL_P99_MS = 50.0
GOAL_R_CPU = 2.0
#: The rate the goals are stated at.
GOAL_RATE = 1000
#: Records sent (and waited for) before a subject's first timed rate.
WARMUP = 200
#: Longest the outputs of a window may take to arrive after its last record was sent.
DRAIN_TIMEOUT_S = 120.0


def _value(seq: int) -> bytes:
    return b'{"type": "tick", "body": {"seq": %d}}' % seq


def envelope_seq(value: bytes) -> int:
    """The ``seq`` of a tick envelope (what the raw loop copies)."""
    return int(json.loads(value)["body"]["seq"])


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies_ms: list[float]) -> dict[str, Any]:
    """Record count and p50/p99/p99.9/max of ``latencies_ms``, rounded to 0.01 ms."""
    ordered = sorted(latencies_ms)
    return {
        "records": len(ordered),
        "p50_ms": round(_percentile(ordered, 0.5), 2),
        "p99_ms": round(_percentile(ordered, 0.99), 2),
        "p999_ms": round(_percentile(ordered, 0.999), 2),
        "max_ms": round(ordered[-1], 2),
    }


def paced(rate: float, seconds: float, send: Callable[[int], None]) -> int:
    """Call ``send(n)`` for ``n = 0, 1, ...`` at ``rate`` per second for ``seconds``, each at
    its due time ``start + n / rate`` (late calls are made at once, not pushed back); return
    how many were made."""
    count = int(rate * seconds)
    start = time.perf_counter()
    for n in range(count):
        due = start + n / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        send(n)
    return count


@dataclass
class Outputs:
    """Reads an output topic whose values are the ``seq`` of the record that caused them, and
    notes when each ``seq`` was first seen (``time.perf_counter()``).

    It reads as a careful consumer would for latency: wait for one record, then take what else
    is already fetched (``consume`` with a time-out waits for a full batch).
    """

    bootstrap: str
    topic: str
    #: The ``seq`` an output value carries.
    seq_of: Callable[[bytes], int] = int
    seen: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Outputs:
        """Start reading the topic from its beginning, in a thread."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-latency-observer-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
        )

        def run() -> None:
            seen = self.seen
            while not self._stop.is_set():
                first = consumer.poll(0.05)
                if first is None:
                    continue
                now = time.perf_counter()
                for message in [first, *consumer.consume(500, 0)]:
                    value = message.value()
                    if message.error() is None and value is not None:
                        seen.setdefault(self.seq_of(value), now)
            consumer.close()

        self._thread = threading.Thread(target=run, name="bench-outputs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def wait(self, seqs: range) -> None:
        """Wait until every ``seq`` in ``seqs`` was seen."""
        wait_for(
            lambda: sum(1 for s in seqs if s not in self.seen),
            lambda missing: missing == 0,
            timeout=DRAIN_TIMEOUT_S,
            interval=0.05,
            what=f"outputs of {self.topic} for seq {seqs.start}..{seqs.stop - 1}",
        )


class Ticks:
    """The paced producer of the cell and raw subjects: ``tick`` envelopes carrying a ``seq``,
    keyed over ``cells`` cells; notes when each was handed to the client."""

    def __init__(self, bootstrap: str, topic: str, cells: int) -> None:
        self.topic = topic
        self.cells = cells
        self.sent: dict[int, float] = {}
        self.next_seq = 0
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "partitioner": "murmur2_random",
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
            }
        )

    def send(self, seq: int) -> None:
        """Produce the tick ``seq``."""
        self.sent[seq] = time.perf_counter()
        self._producer.produce(self.topic, _value(seq), f"cell-{seq % self.cells}".encode())
        self._producer.poll(0)

    def window(self, rate: float, seconds: float) -> range:
        """Send ticks at ``rate`` for ``seconds``; the ``seq`` range sent."""
        first = self.next_seq
        count = paced(rate, seconds, lambda n: self.send(first + n))
        self.next_seq = first + count
        self._producer.flush(30)
        return range(first, first + count)

    def burst(self, count: int) -> range:
        """Send ``count`` ticks at once; the ``seq`` range sent."""
        first = self.next_seq
        for seq in range(first, first + count):
            while True:
                try:
                    self.send(seq)
                    break
                except BufferError:
                    self._producer.poll(0.05)
        self.next_seq = first + count
        self._producer.flush(60)
        return range(first, first + count)


def _latency_table(report: dict[str, Any], rates: list[float]) -> dict[str, Any]:
    """Every subject's latency and CPU per event at each rate, as one table for the README
    (:mod:`bench.report`)."""
    rows = []
    for subject in ("raw", "cell", "entity"):
        for rate in rates:
            figures = report[subject].get(_rate_key(rate))
            if figures is None:
                continue
            rows.append(
                [
                    subject,
                    rate,
                    figures.get("p50_ms"),
                    figures.get("p99_ms"),
                    figures.get("p999_ms"),
                    figures.get("max_ms"),
                    figures.get("cpu_us_per_event"),
                ]
            )
        bulk = report[subject].get("bulk")
        if bulk is not None:
            rows.append([subject, "bulk", None, None, None, None, bulk.get("cpu_us_per_event")])
    columns = ["subject", "rate/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "CPU µs/event"]
    return {
        "title": "Latency (produce -> output seen) and worker CPU",
        "columns": columns,
        "rows": rows,
    }


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def measure_records(
    pid: int, ticks: Ticks, outputs: Outputs, rates: list[float], seconds: float, bulk: int
) -> dict[str, Any]:
    """The cell and raw subjects: a warm-up, each rate in turn, then (``bulk`` > 0) a burst."""
    outputs.wait(ticks.burst(WARMUP))
    figures: dict[str, Any] = {}
    for rate in rates:
        cpu = process_cpu_seconds(pid)
        seqs = ticks.window(rate, seconds)
        outputs.wait(seqs)
        used = process_cpu_seconds(pid) - cpu
        latencies = [(outputs.seen[s] - ticks.sent[s]) * 1000 for s in seqs]
        figures[_rate_key(rate)] = {
            **summary(latencies),
            "cpu_us_per_event": round(used * 1e6 / len(seqs), 1),
        }
    if bulk:
        cpu = process_cpu_seconds(pid)
        started = time.perf_counter()
        seqs = ticks.burst(bulk)
        outputs.wait(seqs)
        figures["bulk"] = {
            "records": bulk,
            "seconds": round(time.perf_counter() - started, 3),
            "cpu_us_per_event": round((process_cpu_seconds(pid) - cpu) * 1e6 / bulk, 1),
        }
    return figures


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)


def _worker_settings(args: argparse.Namespace) -> dict[str, str]:
    """The settings the cell and entity workers run with."""
    return {
        "STREAM_APP_PROCESSING_GUARANTEE": args.guarantee,
        "STREAM_APP_INPUT_LINGER_MS": str(args.input_linger_ms),
    }


def run_cell(
    bootstrap: str,
    workdir: Path,
    args: argparse.Namespace,
    options: WorkerOptions,
) -> dict[str, Any]:
    """Subject 1: the publishing counter cell."""
    settings = setup_app(bootstrap, workdir, "lat-cell")
    out = output_topic(settings.app_id)
    _create_topic(bootstrap, out)
    extra, log = options.files(settings.app_id, workdir)
    env = worker_env(settings, **_worker_settings(args), **extra)
    outputs = Outputs(bootstrap, out).start()
    try:
        with running_worker("bench.apps.latency_cell", env, log) as worker:
            ticks = Ticks(bootstrap, settings.input_topic("counter"), args.cells)
            try:
                return measure_records(
                    worker.pid, ticks, outputs, args.rates, args.seconds, args.bulk
                )
            except ConditionTimeout as exc:
                raise ConditionTimeout(f"{exc}\n{worker.log_text()[-4000:]}") from None
    finally:
        outputs.stop()


@contextmanager
def raw_loop(bootstrap: str, source: str, target: str, group: str) -> Iterator[int]:
    """The raw echo loop as a subprocess; yields its pid, stopped (SIGTERM, by pid) after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.apps.raw_echo", bootstrap, source, target, group],
        stdin=subprocess.DEVNULL,
    )
    try:
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def run_raw(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    """Subject 3: the raw consume -> produce loop (at least once), and its bulk CPU."""
    name = f"bench-lat-raw-{uuid.uuid4().hex[:6]}"
    source, target = f"{name}.in", f"{name}.out"
    _create_topic(bootstrap, source)
    _create_topic(bootstrap, target)
    outputs = Outputs(bootstrap, target, envelope_seq).start()
    try:
        with raw_loop(bootstrap, source, target, name) as pid:
            ticks = Ticks(bootstrap, source, args.cells)
            return measure_records(pid, ticks, outputs, args.rates, args.seconds, args.bulk)
    finally:
        outputs.stop()


def run_entity(bootstrap: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Subject 2: ``send`` round trips to the ledger's ``counter`` entities."""
    app_id = f"bench-lat-ent-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        app_id=app_id,
        bootstrap_servers=bootstrap,
        partitions=PARTITIONS,
        data_dir=workdir / "data",
        processing_guarantee=args.guarantee,
    )
    env = worker_env(settings, **_worker_settings(args))
    figures: dict[str, Any] = {}
    with (
        running_worker("bench.apps.entity_counter", env, workdir / f"{app_id}.log") as worker,
        EntityClient(settings, timeout=60) as client,
    ):

        def send(n: int, out: list[float]) -> Future[Reply]:
            sent = time.perf_counter()
            future = client.request_future(
                ("counter", f"cell-{n % args.cells}"), "increment", {"by": 1}
            )
            future.add_done_callback(lambda _f: out.append((time.perf_counter() - sent) * 1000))
            return future

        warm: list[float] = []
        for future in [send(n, warm) for n in range(WARMUP)]:
            future.result(60)
        for rate in args.rates:
            latencies: list[float] = []
            futures: list[Future[Reply]] = []

            def call(n: int, lat: list[float] = latencies, out: list[Any] = futures) -> None:
                out.append(send(n, lat))

            cpu = process_cpu_seconds(worker.pid)
            count = paced(rate, args.seconds, call)
            try:
                wait_for(
                    lambda pending=futures: sum(1 for f in pending if not f.done()),
                    lambda missing: missing == 0,
                    timeout=DRAIN_TIMEOUT_S,
                    interval=0.05,
                    what=f"replies to the {count} sends at {rate:g}/s",
                )
            except ConditionTimeout as exc:
                raise ConditionTimeout(f"{exc}\n{worker.log_text()[-4000:]}") from None
            used = process_cpu_seconds(worker.pid) - cpu
            figures[_rate_key(rate)] = {
                **summary(latencies),
                "cpu_us_per_event": round(used * 1e6 / count, 1),
            }
    return figures


def main() -> None:
    """Run the three subjects at every rate and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 1000.0, 5000.0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds at each rate")
    parser.add_argument(
        "--guarantee", choices=["at_least_once", "exactly_once"], default="at_least_once"
    )
    parser.add_argument("--cells", type=int, default=1000, help="distinct cells the keys cycle")
    parser.add_argument(
        "--bulk", type=int, default=20_000, help="records of the cell's bulk CPU burst"
    )
    parser.add_argument(
        "--input-linger-ms",
        type=int,
        default=0,
        help="the cell and entity workers' STREAM_APP_INPUT_LINGER_MS (default 0)",
    )
    parser.add_argument(
        "--save", action="store_true", help="also write the report to bench/results/latency.json"
    )
    add_worker_arguments(parser)
    args = parser.parse_args()
    check_worker_arguments(parser, args)
    options = WorkerOptions.from_args(args)
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        # The machine's load over each subject's runs (they run one after the other, so a
        # busier machine during one of them moves its latencies, not the others').
        whole, by_subject = MachineLoad(), {}
        since = MachineLoad()
        raw = run_raw(broker.bootstrap, args)
        by_subject["raw"], since = since.figures(), MachineLoad()
        cell = run_cell(broker.bootstrap, workdir, args, options)
        by_subject["cell"], since = since.figures(), MachineLoad()
        entity = run_entity(broker.bootstrap, workdir, args)
        by_subject["entity"] = since.figures()
    report: dict[str, Any] = {
        "benchmark": "latency",
        "guarantee": args.guarantee,
        "input_linger_ms": args.input_linger_ms,
        "rates_per_s": args.rates,
        "seconds_per_rate": args.seconds,
        "cells": args.cells,
        "partitions": PARTITIONS,
        "broker": broker.source,
        **options.as_json(),
        "machine_load": whole.figures(),
        "machine_load_by_subject": by_subject,
        "timed": "just before the paced producer's produce -> output seen by a consumer in this "
        "process (read_committed). cell: the record the cell publishes per event "
        "(<app_id>.counter.out); entity: the send's reply; raw: the record a raw confluent-kafka "
        "consume->produce loop copies (its own process, at least once, linger.ms 5 like the "
        "workers' output producer). CPU = the worker's user+sys over the window / records; "
        "bulk (cell, raw) = records produced at once to the same process, CPU to the last output "
        "seen",
        "raw": raw,
        "cell": cell,
        "entity": entity,
    }
    for rate in args.rates:
        report[f"p99_ms_cell_{rate:g}"] = cell[_rate_key(rate)]["p99_ms"]
    goals: dict[str, Any] = {}
    key = _rate_key(GOAL_RATE)
    if key in cell and "bulk" in cell:
        p99 = cell[key]["p99_ms"]
        r_latency = p99 / raw[key]["p99_ms"]
        r_cpu = cell[key]["cpu_us_per_event"] / cell["bulk"]["cpu_us_per_event"]
        report["R_latency_p99"] = round(r_latency, 3)
        report["R_cpu_1000"] = round(r_cpu, 3)
        # The same ratio for the floor: how much of the cell's is the per-wake cost any
        # consume -> produce process pays at this rate.
        report["R_cpu_1000_raw"] = round(
            raw[key]["cpu_us_per_event"] / raw["bulk"]["cpu_us_per_event"], 3
        )
        goals = {
            "R_latency_p99": {"goal": f"<= {GOAL_R_LATENCY}", "met": r_latency <= GOAL_R_LATENCY},
            f"p99_ms_cell_{key}": {"goal": f"<= {GOAL_P99_MS}", "met": p99 <= GOAL_P99_MS},
            "R_cpu_1000": {"goal": f"<= {GOAL_R_CPU}", "met": r_cpu <= GOAL_R_CPU},
        }
    report["goals"] = goals
    report["tables"] = [_latency_table(report, args.rates)]
    if args.save:
        save_result("latency", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
