"""Atomic logs against entities: throughput, round trips, and the cost of a long history.

Every part runs ``faust -A bench.apps.atomic_bids worker`` (its subjects are in
:mod:`bench.apps.atomic_model`) under ``exactly_once`` (atomic logs refuse anything else, so
the entity runs it too), one fresh app id per worker, :data:`~bench._common.PARTITIONS`
partitions, on one broker in one run.

**Throughput** (``R_atomic``, goal >= 0.5). Three subjects, the same shape: ``--scopes`` scopes
(1,000), ``--per-scope`` bids each (20), amounts rising within a scope so that every bid is
accepted, produced at once (:func:`~bench._common.produce_all`, keyed by scope) to an idle,
ready worker:

1. **atomic**: ``store`` envelopes (no ``reply_to``: no client waits) to the ``bids`` log,
   whose fold keeps the highest bid and whose in-worker validator accepts a bid above it. Each
   scope has one validation in flight and the rest of its bids queued behind it.
2. **inline**: the same to the ``quick`` log, whose validator (the same function) runs
   inline: each store is decided in its own invocation, one step, as an entity decides.
3. **entity**: ``bid`` messages (a ``tell`` each) to the ``lots`` entity, whose ``handle``
   applies the same rule.

Each is timed from the first record produced to the moment a ``read_committed`` consumer has
seen every accepted event on the subject's event topic (``<app>.bids.events``,
``<app>.lots.events``); worker CPU (user + system, every thread) over the same interval. Every
scope's events are checked: ``--per-scope`` each, and for the log ``seq`` 1, 2, ... in order.
After an untimed warm-up round of each, ``--rounds`` rounds; medians reported.
``R_atomic`` = inline accepted events/s ÷ entity events/s (the in-worker validator as a
quick, pure function is registered: ``@log.validator(inline=True)``); ``R_atomic_served`` =
atomic ÷ entity (the validator served from the validation topic, as a slow or async one is:
two messages and a hop through Kafka per store).

**Round trips**, in the first measured round's workers, after the throughput: ``--calls``
sequential ``store_if_valid`` calls from one :class:`~stream_app.AtomicClient` and as many
entity ``send`` calls (:class:`~stream_app.clients.entities.EntityClient`, the same bid
message), each timed from the call to its result, p50/p99; then the same with
``--concurrency`` callers at once (an :class:`~stream_app.AsyncAtomicClient` and an
:class:`~stream_app.clients.entities.AsyncEntityClient`, each caller on a scope of its own).
Under ``exactly_once`` a result is visible when its transaction commits: an entity's after
one commit, an atomic log's after two (the validation request's and the decision's).

**History** (full history against a fold). One worker holds the ``full`` log (no fold: every
past event in the scope's record and in every validation request) and the ``bids`` log (fold
+ the last 10 events). Scopes are given ``--histories`` accepted events (0, 1,000, 10,000) by
writing their cell records to the logs' changelogs before the worker starts (the record the
engine writes after that many acceptances: ``seq``, the events or the last 10 and the
summary, the ``accepted`` count); filling a scope through 10,000 sequential validations would
take most of an hour, and the history's cost does not depend on how it got there. The worker
restores them, and the first event it then accepts in each scope must be ``seq`` = history +
1 (checked). Per log and history: ``--history-stores`` bids to each of ``--history-scopes``
scopes produced at once, timed as above (accepted events/s, worker CPU per event), then
``--history-calls`` sequential ``store_if_valid`` round trips on one more such scope. The
table shows the O(n) growth of a log without a fold.

Run: ``.venv/bin/python -m bench.atomic [--scopes N] [--per-scope N] [--rounds N]
[--calls N] [--concurrency N] [--histories N ...] [--skip-history] [--save]`` (``--save``
keeps the report in ``bench/results/atomic.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench._common import (
    PARTITIONS,
    DurableMeasurement,
    Measurement,
    WorkerOptions,
    add_worker_arguments,
    check_worker_arguments,
    median_of,
    process_cpu_seconds,
    produce_all,
    running_worker,
    save_result,
    subject_figures,
    worker_env,
)
from bench.apps.atomic_model import KEEP_LAST, Bid, bids, full, quick
from stream_app import AtomicLog
from stream_app.clients.atomic import AsyncAtomicClient, AtomicClient
from stream_app.clients.entities import AsyncEntityClient, EntityClient
from stream_app.core.atomic import AtomicEventRecord, AtomicScope, StoreRequest
from stream_app.core.envelope import envelope_bytes
from stream_app.core.partitioner import partition_for
from stream_app.engine.cells import encode_record
from stream_app.settings import Settings
from stream_app.testing import ConditionTimeout, WorkerProcess
from stream_app.testing.dev_broker import kafka_broker

MODULE = "bench.apps.atomic_bids"
GOAL_R_ATOMIC = 0.5
#: Longest a phase (events committed, round trips) may take before the run fails.
PHASE_TIMEOUT_S = 900.0
#: The entity subject's name, and the atomic logs' (see :mod:`bench.apps.atomic_bids`).
ENTITY = "lots"
#: The atomic subjects' logs: the validator served from the validation topic, and inline.
LOGS: dict[str, AtomicLog[Bid, Any]] = {"atomic": bids, "inline": quick}

Records = list[tuple[bytes, bytes]]


def _settings(bootstrap: str, workdir: Path, name: str) -> Settings:
    return Settings(
        app_id=f"bench-atomic-{name}-{uuid.uuid4().hex[:6]}",
        bootstrap_servers=bootstrap,
        partitions=PARTITIONS,
        data_dir=workdir / "data",
        processing_guarantee="exactly_once",
    )


def _env(settings: Settings, options: WorkerOptions, workdir: Path) -> tuple[dict[str, str], Path]:
    extra, log = options.files(settings.app_id, workdir)
    env = worker_env(settings, STREAM_APP_PROCESSING_GUARANTEE="exactly_once", **extra)
    return env, log


def _bid(scope: str, amount: int) -> dict[str, Any]:
    return Bid(scope=scope, amount=amount).model_dump(mode="json")


def store_record(scope: str, amount: int) -> tuple[bytes, bytes]:
    """A ``store`` of the bid ``amount`` on ``scope`` (no reply address: nobody waits)."""
    body = StoreRequest(event=_bid(scope, amount))
    return scope.encode(), envelope_bytes("store", body, id=f"{scope}:{amount}")


def entity_record(scope: str, amount: int) -> tuple[bytes, bytes]:
    """A ``bid`` message of ``amount`` to the entity ``scope``."""
    return scope.encode(), envelope_bytes("bid", _bid(scope, amount), id=f"{scope}:{amount}")


def workload(
    make: Callable[[str, int], tuple[bytes, bytes]], scopes: list[str], per_scope: int, first: int
) -> Records:
    """``per_scope`` bids on each scope, amounts ``first``, ``first + 1``, ... in each scope,
    interleaved across the scopes (each scope's bids in order on its partition)."""
    return [make(scope, first + i) for i in range(per_scope) for scope in scopes]


class EventWatch:
    """Counts the records committed to a topic from now on (``read_committed``), in a thread.

    :meth:`start` notes the topic's end offsets and starts reading there; :meth:`wait` returns
    when ``expected`` records were seen, with ``time.time()`` at the last of them. The records'
    keys and values are kept for the checks.
    """

    def __init__(self, bootstrap: str, topic: str, expected: int) -> None:
        self.topic = topic
        self.expected = expected
        self.records: list[tuple[bytes, bytes]] = []
        self.done_at: float | None = None
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-atomic-watch-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        self._thread = threading.Thread(target=self._run, name=f"watch {topic}", daemon=True)

    def start(self) -> EventWatch:
        """Start reading at the topic's current end."""
        tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        ends = [self._consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in tps]
        self._consumer.assign([TopicPartition(self.topic, p, end) for p, end in enumerate(ends)])
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and len(self.records) < self.expected:
                for message in self._consumer.consume(num_messages=1000, timeout=0.05):
                    if message.error() is None:
                        self.records.append((message.key() or b"", message.value() or b""))
                if len(self.records) >= self.expected:
                    self.done_at = time.time()
        finally:
            self._consumer.close()

    def wait(self, worker: WorkerProcess, what: str, timeout: float = PHASE_TIMEOUT_S) -> float:
        """When the ``expected``-th record was seen.

        Raises:
            ConditionTimeout: Not all seen within ``timeout``, or the worker died.
        """
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline and worker.alive():
            self._thread.join(0.1)
        if self.done_at is None:
            self._stop.set()
            raise ConditionTimeout(
                f"{what}: {len(self.records)} of {self.expected} events committed to "
                f"{self.topic} (worker alive: {worker.alive()})\n--- worker log tail ---\n"
                f"{worker.log_text()[-4000:]}"
            )
        return self.done_at


def check_events(subject: str, records: Records, per_scope: dict[str, int], first_seq: int) -> None:
    """Each scope got its ``per_scope`` events; a log's numbered ``first_seq``, ``first_seq +
    1``, ... in order.

    Raises:
        AssertionError: A scope missed an event, got one twice, or out of order.
    """
    counts = Counter(key.decode() for key, _ in records)
    if dict(counts) != per_scope:
        wrong = {s: counts.get(s, 0) for s, n in per_scope.items() if counts.get(s) != n}
        raise AssertionError(f"{subject}: events per scope {dict(list(wrong.items())[:5])}...")
    if subject == ENTITY:
        return
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, value in records:
        record = AtomicEventRecord.model_validate_json(value)
        seqs[record.scope].append(record.seq)
    for scope, seen in seqs.items():
        if seen != list(range(first_seq, first_seq + per_scope[scope])):
            raise AssertionError(f"{subject}: scope {scope} events numbered {seen[:5]}...")


def timed_events(
    worker: WorkerProcess,
    bootstrap: str,
    *,
    input_topic: str,
    events_topic: str,
    records: Records,
    what: str,
) -> tuple[Measurement, Records]:
    """Produce ``records`` to the running worker and time them until as many events are
    committed (one each); the measurement and the events."""
    watch = EventWatch(bootstrap, events_topic, len(records)).start()
    cpu_start, started = process_cpu_seconds(worker.pid), time.time()
    produce_all(bootstrap, input_topic, records)
    done = watch.wait(worker, what)
    cpu = process_cpu_seconds(worker.pid) - cpu_start
    return Measurement(events=len(records), seconds=done - started, cpu_seconds=cpu), watch.records


# -- round trips ---------------------------------------------------------------------------


def _percentiles(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    return {
        "calls": len(ordered),
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "max": round(ordered[-1], 1),
    }


def _sequential(call: Callable[[int], object], calls: int) -> list[float]:
    call(0)  # warm-up: the reply reader is running, the scope exists
    times = []
    for i in range(1, calls + 1):
        sent = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - sent) * 1000)
    return times


def _concurrent(
    call: Callable[[int, int], Awaitable[object]], calls: int, callers: int
) -> list[float]:
    """``callers`` coroutines, each making ``calls // callers`` calls in turn on its own scope."""
    times: list[float] = []

    async def caller(index: int) -> None:
        await call(index, 0)
        for i in range(1, calls // callers + 1):
            sent = time.perf_counter()
            await call(index, i)
            times.append((time.perf_counter() - sent) * 1000)

    async def run() -> None:
        # The async clients wait in threads: one per caller.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(callers))
        await asyncio.gather(*(caller(index) for index in range(callers)))

    asyncio.run(run())
    return times


def atomic_round_trips(
    settings: Settings, calls: int, callers: int, log: AtomicLog[Bid, Any]
) -> dict[str, Any]:
    """``store_if_valid`` p50/p99 on ``log``: sequential from one client, then ``callers`` at
    once."""

    def store(i: int) -> None:
        result = client.store_if_valid(Bid(scope="rt-seq", amount=i + 1), timeout=60)
        assert result.was_accepted, result

    with AtomicClient(log, settings, timeout=60) as client:
        sequential = _sequential(store, calls)
    async_client = AsyncAtomicClient(log, settings, timeout=60)

    async def store_async(index: int, i: int) -> None:
        bid = Bid(scope=f"rt-c{index}", amount=i + 1)
        result = await async_client.store_if_valid(bid, timeout=60)
        assert result.was_accepted, result

    try:
        concurrent = _concurrent(store_async, calls, callers)
    finally:
        asyncio.run(async_client.close())
    return {"sequential": _percentiles(sequential), "concurrent": _percentiles(concurrent)}


def entity_round_trips(settings: Settings, calls: int, callers: int) -> dict[str, Any]:
    """Entity ``send`` p50/p99, measured as :func:`atomic_round_trips`."""

    def send(i: int) -> None:
        client.send((ENTITY, "rt-seq"), "bid", _bid("rt-seq", i + 1), timeout=60)

    with EntityClient(settings, timeout=60) as client:
        sequential = _sequential(send, calls)
    async_client = AsyncEntityClient(settings, timeout=60)

    async def send_async(index: int, i: int) -> None:
        scope = f"rt-c{index}"
        await async_client.send((ENTITY, scope), "bid", _bid(scope, i + 1), timeout=60)

    try:
        concurrent = _concurrent(send_async, calls, callers)
    finally:
        asyncio.run(async_client.close())
    return {"sequential": _percentiles(sequential), "concurrent": _percentiles(concurrent)}


# -- throughput ----------------------------------------------------------------------------


def run_throughput(
    bootstrap: str,
    workdir: Path,
    subject: str,
    args: argparse.Namespace,
    *,
    per_scope: int,
    round_trips: bool,
) -> tuple[DurableMeasurement, dict[str, Any] | None]:
    """One subject (``atomic``, ``inline`` or ``entity``), once, on a fresh worker: its events
    timed; then, if asked, its round trips."""
    settings = _settings(bootstrap, workdir, subject)
    env, log = _env(settings, WorkerOptions.from_args(args), workdir)
    scopes = [f"scope-{i}" for i in range(args.scopes)]
    atomic_log = LOGS.get(subject)
    name = atomic_log.name if atomic_log is not None else ENTITY
    make = store_record if atomic_log is not None else entity_record
    records = workload(make, scopes, per_scope, first=1)
    with running_worker(MODULE, env, log) as worker:
        measured, events = timed_events(
            worker,
            bootstrap,
            input_topic=settings.input_topic(name),
            events_topic=settings.events_topic(name),
            records=records,
            what=f"{subject}: {len(records)} bids on {args.scopes} scopes",
        )
        check_events(name, events, dict.fromkeys(scopes, per_scope), first_seq=1)
        trips = None
        if round_trips and atomic_log is not None:
            trips = atomic_round_trips(settings, args.calls, args.concurrency, atomic_log)
        elif round_trips:
            trips = entity_round_trips(settings, args.calls, args.concurrency)
    # Timed to the last event committed: "applied" is the same moment here.
    return DurableMeasurement(measured, measured.seconds), trips


def throughput(bootstrap: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up, rounds, medians, ``R_atomic`` and the round trips."""
    subjects = ("entity", "atomic", "inline")
    if args.warmup:
        for subject in subjects:
            run_throughput(
                bootstrap, workdir, subject, args, per_scope=args.warmup, round_trips=False
            )
    results: dict[str, list[DurableMeasurement]] = {subject: [] for subject in subjects}
    trips: dict[str, Any] = {}
    for round_ in range(args.rounds):
        for subject in subjects:
            measured, round_trips = run_throughput(
                bootstrap, workdir, subject, args, per_scope=args.per_scope, round_trips=round_ == 0
            )
            results[subject].append(measured)
            if round_trips is not None:
                trips[subject] = round_trips
    entity, atomic, inline = (median_of([m.durable for m in results[s]]) for s in subjects)
    return {
        "subjects": {subject: subject_figures(results[subject]) for subject in subjects},
        "R_atomic": round(inline.events_per_s / entity.events_per_s, 3),
        "R_atomic_served": round(atomic.events_per_s / entity.events_per_s, 3),
        "cpu_per_event_atomic_over_entity": round(
            inline.cpu_us_per_event / entity.cpu_us_per_event, 3
        ),
        "cpu_per_event_served_over_entity": round(
            atomic.cpu_us_per_event / entity.cpu_us_per_event, 3
        ),
        "round_trips_ms": trips,
    }


# -- history -------------------------------------------------------------------------------


def seeded_scope(history: int, scope: str, *, folded: bool) -> bytes:
    """The stored cell record of ``scope`` after ``history`` accepted bids of amounts 1, 2, ...
    (what the engine writes: the events, or the fold's summary and the last ``KEEP_LAST``)."""
    events = [_bid(scope, amount) for amount in range(1, history + 1)]
    if folded:
        data = AtomicScope(
            seq=history,
            summary={"highest": history},
            recent=events[-KEEP_LAST:] if history else [],
            accepted=history,
        )
    else:
        data = AtomicScope(seq=history, recent=events, accepted=history)
    return encode_record(bids.version, data.model_dump_json().encode(), {})


def seed(bootstrap: str, settings: Settings, groups: dict[tuple[str, int], list[str]]) -> None:
    """Write every group's scopes to its log's changelog (``(log, history) -> scopes``)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for (log, history), scopes in groups.items():
        topic = settings.changelog_topic(log)
        for scope in scopes:
            key = scope.encode()
            value = seeded_scope(history, scope, folded=log == bids.name)
            producer.produce(topic, value, key, partition_for(key, settings.partitions))
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("seeded scope records not acknowledged after 120s")


def history(bootstrap: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Per log and history: accepted events/s, CPU per event, round trips (see the module)."""
    settings = _settings(bootstrap, workdir, "history")
    env, log_path = _env(settings, WorkerOptions.from_args(args), workdir)
    logs = (full.name, bids.name)
    groups = {
        (log, h): [f"{log}-h{h}-{i}" for i in range(args.history_scopes + 1)]
        for log in logs
        for h in args.histories
    }
    # A first start creates the topics; the scopes are written to the changelogs while it is
    # stopped, and the second start restores them.
    with running_worker(MODULE, env, log_path):
        pass
    seed(bootstrap, settings, groups)
    rows: list[dict[str, Any]] = []
    with (
        running_worker(MODULE, env, log_path) as worker,
        AtomicClient(bids, settings, timeout=120) as fold_client,
        AtomicClient(full, settings, timeout=120) as full_client,
    ):
        for (log, h), (*scopes, trip_scope) in groups.items():
            records = workload(store_record, scopes, args.history_stores, first=h + 1)
            measured, events = timed_events(
                worker,
                bootstrap,
                input_topic=settings.input_topic(log),
                events_topic=settings.events_topic(log),
                records=records,
                what=f"{log} at {h} events: {len(records)} bids",
            )
            check_events(log, events, dict.fromkeys(scopes, args.history_stores), first_seq=h + 1)
            client = fold_client if log == bids.name else full_client
            times = []
            for i in range(args.history_calls):
                sent = time.perf_counter()
                result = client.store_if_valid(Bid(scope=trip_scope, amount=h + 1 + i))
                times.append((time.perf_counter() - sent) * 1000)
                if not result.was_accepted or result.seq != h + 1 + i:
                    raise AssertionError(f"{log} at {h}: {result}")
            rows.append(
                {
                    "log": "full history" if log == full.name else f"fold, last {KEEP_LAST}",
                    "history": h,
                    **measured.as_json(),
                    "round_trip_ms": _percentiles(times),
                }
            )
    return {
        "scopes_per_history": args.history_scopes,
        "stores_per_scope": args.history_stores,
        "round_trip_calls": args.history_calls,
        "rows": rows,
    }


def _history_table(part: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": "Validation cost by history (events already in the scope)",
        "columns": [
            "log",
            "history",
            "accepted/s",
            "CPU µs/event",
            "round trip p50 ms",
            "round trip max ms",
        ],
        "rows": [
            [
                row["log"],
                row["history"],
                row["events_per_s"],
                row["cpu_us_per_event"],
                row["round_trip_ms"]["p50"],
                row["round_trip_ms"]["max"],
            ]
            for row in part["rows"]
        ],
    }


def _round_trip_table(trips: dict[str, Any]) -> dict[str, Any]:
    rows = [
        [subject, mode, figures["calls"], figures["p50"], figures["p99"], figures["max"]]
        for subject, modes in trips.items()
        for mode, figures in modes.items()
    ]
    return {
        "title": "Round trips (call -> result), exactly once",
        "columns": ["subject", "callers", "calls", "p50 ms", "p99 ms", "max ms"],
        "rows": rows,
    }


def main() -> None:
    """Run the parts asked for and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scopes", type=int, default=1_000, help="scopes (and entities)")
    parser.add_argument("--per-scope", type=int, default=20, help="bids on each scope")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each subject (median)")
    parser.add_argument("--warmup", type=int, default=2, help="bids per scope of the warm-up")
    parser.add_argument("--calls", type=int, default=200, help="round trips timed per mode")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent callers")
    parser.add_argument("--histories", type=int, nargs="+", default=[0, 1_000, 10_000], metavar="N")
    parser.add_argument("--history-scopes", type=int, default=8, help="scopes per history")
    parser.add_argument("--history-stores", type=int, default=10, help="bids on each of them")
    parser.add_argument("--history-calls", type=int, default=10, help="round trips per history")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-throughput", action="store_true", help="only the history part")
    skip.add_argument("--skip-history", action="store_true", help="only throughput, round trips")
    parser.add_argument(
        "--save", action="store_true", help="also write the report to bench/results/atomic.json"
    )
    add_worker_arguments(parser)
    args = parser.parse_args()
    check_worker_arguments(parser, args)
    report: dict[str, Any] = {"benchmark": "atomic"}
    goals: dict[str, dict[str, Any]] = {}
    tables: list[dict[str, Any]] = []
    body: dict[str, Any] = {"partitions": PARTITIONS, "guarantee": "exactly_once"}
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        body["broker"] = broker.source
        body.update(WorkerOptions.from_args(args).as_json())
        if not args.skip_throughput:
            part = throughput(broker.bootstrap, workdir, args)
            report["R_atomic"] = part.pop("R_atomic")
            report["R_atomic_served"] = part.pop("R_atomic_served")
            report["cpu_per_event_served_over_entity"] = part.pop(
                "cpu_per_event_served_over_entity"
            )
            report["cpu_per_event_atomic_over_entity"] = part.pop(
                "cpu_per_event_atomic_over_entity"
            )
            goals["R_atomic"] = {
                "goal": f">= {GOAL_R_ATOMIC}",
                "met": report["R_atomic"] >= GOAL_R_ATOMIC,
            }
            body.update(
                scopes=args.scopes,
                per_scope=args.per_scope,
                rounds=args.rounds,
                warmup_per_scope=args.warmup,
            )
            body["subjects"] = part["subjects"]
            body["round_trips_ms"] = part["round_trips_ms"]
            tables.append(_round_trip_table(part["round_trips_ms"]))
        if not args.skip_history:
            part = history(broker.bootstrap, workdir, args)
            body["history"] = part
            tables.append(_history_table(part))
    body["timed"] = (
        "throughput and history: first record produced -> every accepted event committed to "
        "the event topic (read_committed), worker CPU over the same interval; round trips: "
        "call -> result"
    )
    report.update(body)
    report["tables"] = tables
    report["goals"] = goals
    if args.save:
        save_result("atomic", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
