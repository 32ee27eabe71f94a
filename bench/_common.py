"""Pieces the benchmarks share: records, topics, the hand-written loop, workers, CPU, offsets.

Every benchmark measures its subjects in one run, on one broker, over the same records and the
same partition count, and reports ratios; these helpers keep the subjects' setup identical.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rocksdict import Rdict, WriteBatch

from stream_app.kafka.topics import apply_changes, load_definitions, plan_changes
from stream_app.settings import Settings
from stream_app.testing import ConditionTimeout, ProbeFailed, WorkerProcess, wait_for
from stream_app.testing.dev_broker import find_free_port, project_root

__all__ = [
    "INCREMENT",
    "PARTITIONS",
    "RESULTS_DIR",
    "Codec",
    "DurableMeasurement",
    "MachineLoad",
    "Measurement",
    "Parse",
    "Sample",
    "WorkerOptions",
    "WorkerSampler",
    "add_worker_arguments",
    "check_worker_arguments",
    "committed_lag",
    "cpu_seconds_self",
    "delete_app_topics",
    "environment",
    "kafka_clients",
    "make_records",
    "median_of",
    "proc_status",
    "process_cpu_seconds",
    "produce_all",
    "run_careful_loop",
    "running_worker",
    "save_result",
    "setup_app",
    "subject_figures",
    "wait_committed",
    "worker_durable",
    "worker_env",
]

#: Partition count of every topic the benchmarks create (inputs, changelogs).
PARTITIONS = 4
#: The one record value every counter benchmark sends: an ``increment`` envelope.
INCREMENT = b'{"type": "increment", "body": {"by": 1}}'


def make_records(count: int, cells: int, *, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """``count`` increments of 1 to cells ``cell-0`` .. ``cell-<cells-1>``, keys drawn at random
    (seeded, so every subject of a run and every run gets the same records)."""
    rng = random.Random(seed)
    return [(f"cell-{rng.randrange(cells)}".encode(), INCREMENT) for _ in range(count)]


def produce_all(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    *,
    murmur2: bool = True,
    timestamps: Callable[[int], int] | None = None,
) -> None:
    """Produce ``records`` to ``topic`` and wait until the broker has acknowledged all of them.

    With ``murmur2`` (the default) keys are partitioned as Kafka's Java client and the stream_app
    workers do, so a cell worker receives no misrouted records to forward; every subject gets
    the same partitioning so that they see the same per-partition load. ``timestamps(i)``, if
    given, is the timestamp (ms) of record ``i`` (else the producer's clock).
    """
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"}
    if murmur2:
        config["partitioner"] = "murmur2_random"
    producer = Producer(config)
    for index, (key, value) in enumerate(records):
        stamp = timestamps(index) if timestamps is not None else 0
        while True:
            try:
                producer.produce(topic, key=key, value=value, timestamp=stamp)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} record(s) to {topic} not acknowledged after 120s")


def setup_app(
    bootstrap: str, workdir: Path, name: str, *, partitions: int = PARTITIONS
) -> Settings:
    """Settings for a fresh app id (its own topics and consumer group) and its counter topics.

    Creates ``<app>.counter.in``, ``<app>-counter-changelog`` and ``<app>.dead-letters`` from
    ``topics/counter.toml``, all with ``partitions`` partitions (:data:`PARTITIONS`).
    """
    app_id = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    # One data dir for every app of the run: each app id keeps its state in its own subfolder.
    settings = Settings(
        app_id=app_id, bootstrap_servers=bootstrap, partitions=partitions, data_dir=workdir / "data"
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    definitions = load_definitions([project_root() / "topics" / "counter.toml"], settings)
    apply_changes(admin, plan_changes(admin, definitions))
    return settings


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The ``STREAM_APP_*`` environment of a worker running with ``settings`` (plus ``extra``)."""
    return {
        "STREAM_APP_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAM_APP_APP_ID": settings.app_id,
        "STREAM_APP_DATA_DIR": str(settings.data_dir),
        "STREAM_APP_PARTITIONS": str(settings.partitions),
        **extra,
    }


@contextlib.contextmanager
def running_worker(
    module: str, env: Mapping[str, str], log_path: Path, *, ready_timeout: float = 180.0
) -> Iterator[WorkerProcess]:
    """A ``faust -A <module> worker`` subprocess, ready (partitions assigned, tables recovered),
    stopped by pid when the block ends."""
    worker = WorkerProcess(module, env=env, log_path=log_path, web_port=find_free_port())
    worker.start()
    try:
        worker.wait_ready(timeout=ready_timeout)
        yield worker
    finally:
        worker.stop()


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How the benchmarks start their workers (from :func:`add_worker_arguments`).

    Attributes:
        faust_options: JSON object of extra :class:`faust.App` options for every worker.
        keep: Folder that keeps each worker's log (``<app_id>.log``); ``None``: a temporary one.
        profile: Run each worker under cProfile, its stats kept as ``<keep>/<app_id>.prof``.
    """

    faust_options: str = ""
    keep: Path | None = None
    profile: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WorkerOptions:
        """The options parsed by a parser set up with :func:`add_worker_arguments`."""
        return cls(faust_options=args.faust_options, keep=args.keep, profile=args.profile)

    def as_json(self) -> dict[str, Any]:
        """The options as reported."""
        return {
            "faust_options": json.loads(self.faust_options) if self.faust_options else {},
            "profiled": self.profile,
        }

    def files(self, app_id: str, workdir: Path) -> tuple[dict[str, str], Path]:
        """The worker's extra environment and its log file."""
        folder = self.keep or workdir
        folder.mkdir(parents=True, exist_ok=True)
        env = {"BENCH_FAUST_OPTIONS": self.faust_options}
        if self.profile:
            env["BENCH_PROFILE"] = str(folder / f"{app_id}.prof")
        return env, folder / f"{app_id}.log"


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--faust-options``, ``--keep`` and ``--profile`` (see :class:`WorkerOptions`)."""
    parser.add_argument(
        "--faust-options",
        default="",
        metavar="JSON",
        help="extra faust.App options for the workers, e.g. '{\"producer_linger\": 0.005}'",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, metavar="DIR", help="keep the worker logs in DIR"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the workers under cProfile (stats kept with --keep; inflates timings)",
    )


def check_worker_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option combinations that would lose what was asked for."""
    if args.profile and args.keep is None:
        parser.error("--profile needs --keep DIR to keep the stats in")
    if args.faust_options:
        try:
            options = json.loads(args.faust_options)
        except ValueError as exc:
            parser.error(f"--faust-options is not JSON: {exc}")
        if not isinstance(options, dict):
            parser.error("--faust-options must be a JSON object")


def cpu_seconds_self() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (from ``/proc/<pid>/stat``)."""
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass(frozen=True, slots=True)
class Measurement:
    """One subject's processing of ``events`` records.

    Attributes:
        events: Records processed.
        seconds: Wall time from the first record taken to the last one applied.
        cpu_seconds: User + system CPU of the processing process over the same interval.
    """

    events: int
    seconds: float
    cpu_seconds: float

    @property
    def events_per_s(self) -> float:
        """Throughput."""
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    @property
    def cpu_us_per_event(self) -> float:
        """CPU microseconds per record."""
        return self.cpu_seconds * 1e6 / self.events

    def as_json(self) -> dict[str, Any]:
        """The figures as printed (rounded)."""
        return {
            "events_per_s": round(self.events_per_s, 1),
            "seconds": round(self.seconds, 3),
            "cpu_us_per_event": round(self.cpu_us_per_event, 1),
        }


def median_of(measurements: list[Measurement]) -> Measurement:
    """The median of several rounds of one subject (throughput and CPU taken separately)."""
    events = measurements[0].events
    return Measurement(
        events=events,
        seconds=statistics.median(m.seconds for m in measurements),
        cpu_seconds=statistics.median(m.cpu_seconds for m in measurements),
    )


#: ``parse(key, value) -> increment`` of the careful loop (raises on a record it refuses).
Parse = Callable[[bytes, bytes], int]
#: ``(load(stored) -> count, dump(count) -> stored)`` of the careful loop's cell values.
Codec = tuple[Callable[[bytes | None], int], Callable[[int], bytes]]


@dataclass(frozen=True, slots=True)
class DurableMeasurement:
    """A subject timed to durability, and to its last record applied.

    Attributes:
        durable: First record taken -> the commit covering the last record returned (everything
            produced for the records acknowledged first); CPU over the same interval.
        applied_s: First record taken -> last record applied to state.
    """

    durable: Measurement
    applied_s: float

    def as_json(self) -> dict[str, Any]:
        """The figures as printed."""
        return {**self.durable.as_json(), "applied_s": round(self.applied_s, 3)}


def subject_figures(rounds: list[DurableMeasurement]) -> dict[str, Any]:
    """One subject's figures over its rounds: the medians, the median ``applied_s``, and with
    more than one round each round's events/s and CPU per event."""
    figures = median_of([m.durable for m in rounds]).as_json()
    figures["applied_s"] = round(statistics.median_low(m.applied_s for m in rounds), 3)
    if len(rounds) > 1:
        figures["rounds_events_per_s"] = [round(m.durable.events_per_s, 1) for m in rounds]
        figures["rounds_cpu_us_per_event"] = [round(m.durable.cpu_us_per_event, 1) for m in rounds]
    return figures


def worker_durable(
    worker: WorkerProcess,
    *,
    events: int,
    bootstrap: str,
    group: str,
    topic: str,
    what: str,
    timeout: float,
) -> tuple[DurableMeasurement, dict[str, Any]]:
    """Time a benchmark worker to durability: wait until its ``GET /bench/progress/`` (a
    :class:`bench.apps.harness.Progress`) says the ``events`` are applied, then until ``group``
    has committed to the end of ``topic``. Returns the measurement (from the worker's first
    record) and the worker's last progress snapshot.

    Raises:
        ProbeFailed: The worker died.
        ConditionTimeout: Not done within ``timeout`` (with the worker's log tail).
    """

    def progress() -> dict[str, Any]:
        if not worker.alive():
            raise ProbeFailed(f"{what}: the worker died:\n{worker.log_text()[-4000:]}")
        snapshot: dict[str, Any] = worker.get_json("/bench/progress/")
        return snapshot

    try:
        done = wait_for(
            progress,
            lambda s: s["done_wall"] is not None,
            timeout=timeout,
            interval=0.1,
            what=what,
        )
        committed_at = wait_committed(bootstrap, group, topic)
        committed_cpu = process_cpu_seconds(worker.pid)
    except ConditionTimeout as exc:
        raise ConditionTimeout(
            f"{exc}\n--- worker log tail ---\n{worker.log_text()[-4000:]}"
        ) from None
    durable = Measurement(
        events=events,
        seconds=committed_at - done["first_wall"],
        cpu_seconds=committed_cpu - done["first_cpu"],
    )
    return DurableMeasurement(durable, done["done_wall"] - done["first_wall"]), progress()


def run_careful_loop(
    *,
    bootstrap: str,
    group: str,
    topic: str,
    changelog: str,
    db_path: Path,
    expected: int,
    parse: Parse,
    codec: Codec,
    commit_interval_s: float,
    batch: int = 500,
    exactly_once: bool = False,
) -> DurableMeasurement:
    """A careful hand-written stateful worker, in this process: the fair baseline of a cell.

    1. Consume up to ``batch`` records (confluent-kafka, manual commits, offsets stored by hand).
    2. Parse each (``parse``: the same pydantic envelope as the cell, or stdlib ``json``).
    3. Read every key of the batch with one RocksDB multi-get, apply the batch's increments in
       memory, and write the new values with one ``WriteBatch``.
    4. Produce one changelog record per key changed in the batch, to the key's partition
       (``linger.ms`` 5, idempotent, ``acks=all``: the cell's producer settings).
    5. Every ``commit_interval_s`` (the cell's commit interval), and whenever a fetch finds the
       input drained (a careful loop does not sit on processed records while idle): flush the
       producer, then commit the offsets processed, synchronously (at least once: state is
       durable before its input is marked done). The loop never uses ``expected`` to decide
       when to commit, only to know when to stop.

    With ``exactly_once`` the producer is transactional (``transactional.id`` from ``group``):
    the changelog records of a commit interval are produced in one transaction, and the commit
    of step 5 sends the offsets processed into it (``send_offsets_to_transaction``) and commits
    it (which waits for everything produced in it), then begins the next one. Everything else is
    the same.

    Timed from the first record taken to the return of the commit that covers the last record
    (to durability), with the time to the last record applied beside it; CPU is this process's
    user + system time over the durable interval, librdkafka's threads included.
    """
    load, dump = codec
    db = Rdict(str(db_path))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer_config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "acks": "all",
        "enable.idempotence": True,
    }
    if exactly_once:
        producer_config["transactional.id"] = f"{group}-careful"
    producer = Producer(producer_config)
    if exactly_once:
        producer.init_transactions(60)
        producer.begin_transaction()
    consumer.subscribe([topic])
    done = 0
    started: float | None = None
    cpu_start = 0.0
    applied = 0.0
    last_commit = 0.0
    cpu_end = 0.0
    pending: dict[int, int] = {}
    deadline = time.monotonic() + 900
    try:
        while True:
            if time.monotonic() > deadline:
                raise ConditionTimeout(f"careful loop: {done} of {expected} after 900s")
            messages = [m for m in consumer.consume(batch, timeout=0.1) if not m.error()]
            if messages and started is None:
                started, cpu_start = time.perf_counter(), cpu_seconds_self()
                last_commit = started
            if messages:
                changed: dict[bytes, int] = {}
                partition_of: dict[bytes, int] = {}
                increments: list[tuple[bytes, int]] = []
                for message in messages:
                    key, value = message.key(), message.value()
                    partition, offset = message.partition(), message.offset()
                    assert key is not None and value is not None
                    assert partition is not None and offset is not None
                    increments.append((key, parse(key, value)))
                    partition_of[key] = partition
                    pending[partition] = offset + 1
                keys = list(partition_of)
                for key, stored in zip(keys, db[keys], strict=True):
                    changed[key] = load(stored)
                for key, by in increments:
                    changed[key] += by
                writes = WriteBatch()
                for key, count in changed.items():
                    value = dump(count)
                    writes.put(key, value)
                    while True:
                        try:
                            producer.produce(
                                changelog, key=key, value=value, partition=partition_of[key]
                            )
                            break
                        except BufferError:
                            producer.poll(0.01)
                db.write(writes)
                producer.poll(0)
                done += len(messages)
                if done >= expected:
                    applied = time.perf_counter()
            now = time.perf_counter()
            idle = not messages
            if pending and (idle or now - last_commit >= commit_interval_s):
                offsets = [TopicPartition(topic, p, o) for p, o in sorted(pending.items())]
                if exactly_once:
                    producer.send_offsets_to_transaction(
                        offsets, consumer.consumer_group_metadata(), 60
                    )
                    producer.commit_transaction(60)
                else:
                    if producer.flush(60):
                        raise RuntimeError("careful loop: changelog records not acknowledged")
                    consumer.commit(offsets=offsets, asynchronous=False)
                pending.clear()
                last_commit = time.perf_counter()
                if done >= expected:
                    cpu_end = cpu_seconds_self()
                    break
                if exactly_once:
                    producer.begin_transaction()
    finally:
        consumer.close()
        db.close()
    assert started is not None
    durable = Measurement(
        events=expected, seconds=last_commit - started, cpu_seconds=cpu_end - cpu_start
    )
    return DurableMeasurement(durable=durable, applied_s=applied - started)


#: Where each benchmark keeps its latest full result (committed with the code).
RESULTS_DIR = project_root() / "bench" / "results"


def environment() -> dict[str, Any]:
    """The machine, the versions and the date a result was measured on."""
    import platform
    from datetime import UTC, datetime
    from importlib.metadata import version

    import confluent_kafka

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=project_root(),
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit or None,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "versions": {
            "python": platform.python_version(),
            "stream_app": version("stream_app"),
            "faust-streaming": version("faust-streaming"),
            "confluent-kafka": version("confluent-kafka"),
            "librdkafka": confluent_kafka.libversion()[0],
            "rocksdict": version("rocksdict"),
            "pydantic": version("pydantic"),
        },
    }


def save_result(name: str, report: dict[str, Any]) -> Path:
    """Write ``report`` with :func:`environment` as ``bench/results/<name>.json``; return the
    path. The headline ratios stay at the top level of the report, under their names."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({**report, "environment": environment()}, indent=2) + "\n")
    return path


def committed_lag(consumer: Consumer, topic: str) -> int:
    """Records of ``topic`` not yet covered by the committed offsets of ``consumer``'s group."""
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
    committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
    lag = 0
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        position = committed[tp.partition]
        lag += high - (position if position >= 0 else low)
    return lag


def wait_committed(bootstrap: str, group: str, topic: str, *, timeout: float = 300.0) -> float:
    """Wait until group ``group`` has committed offsets up to the end of ``topic``; return when
    that was seen (``time.time()``). Polls every 50 ms, without joining the group."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        wait_for(
            lambda: committed_lag(consumer, topic),
            lambda lag: lag == 0,
            timeout=timeout,
            interval=0.05,
            what=f"group {group} committed to the end of {topic}",
        )
        return time.time()
    finally:
        consumer.close()


def delete_app_topics(bootstrap: str, app_id: str) -> None:
    """Delete every topic of ``app_id`` (``<app_id>.*`` and ``<app_id>-*``): the development
    broker keeps a folder per partition, and its open files are finite."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [
        name
        for name in admin.list_topics(timeout=30).topics
        if name.startswith((f"{app_id}.", f"{app_id}-"))
    ]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(60)


class MachineLoad:
    """How busy the whole machine was over an interval, from ``/proc/stat``: the share of CPU
    time spent working (``busy_pct``) and the share the hypervisor gave to other guests
    (``steal_pct``: a virtual machine's CPUs were ready to run and did not). Steal makes a
    run's absolute times, and its ratios between subjects measured at different moments,
    noisy: it is reported beside the figures it may have moved. Empty where ``/proc/stat``
    is not there.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> list[int] | None:
        try:
            with open("/proc/stat") as stat:
                fields = stat.readline().split()
        except OSError:
            return None
        # cpu user nice system idle iowait irq softirq steal ...
        return [int(value) for value in fields[1:9]] if fields[:1] == ["cpu"] else None

    def figures(self) -> dict[str, float]:
        """``busy_pct`` and ``steal_pct`` since this was made, and the load average now."""
        end = self._read()
        if self._start is None or end is None:
            return {}
        spent = [after - before for before, after in zip(self._start, end, strict=True)]
        total = sum(spent) or 1
        user, nice, system, _idle, _iowait, irq, softirq, steal = spent
        return {
            "busy_pct": round(100 * (user + nice + system + irq + softirq) / total, 1),
            "steal_pct": round(100 * steal / total, 1),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }


def proc_status(pid: int) -> tuple[int, int]:
    """The resident memory (bytes, ``VmRSS``) and thread count of process ``pid``, from
    ``/proc/<pid>/status``."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


def kafka_clients(pid: int) -> int:
    """The librdkafka clients (confluent-kafka producers, consumers, admin clients) alive in
    process ``pid``: each runs one thread named ``rdk:main``."""
    count = 0
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        with contextlib.suppress(OSError):
            count += comm.read_text().strip() == "rdk:main"
    return count


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at a worker process.

    Attributes:
        t: ``time.time()`` of the look.
        rss: Resident memory, bytes.
        threads: OS threads.
        clients: librdkafka clients (:func:`kafka_clients`).
        lag: Input records not covered by the group's committed offsets (``None``: not asked,
            or the broker did not answer).
    """

    t: float
    rss: int
    threads: int
    clients: int
    lag: int | None


@dataclass
class WorkerSampler:
    """Looks at a worker process every ``interval`` seconds, in a thread, from :meth:`start`
    to :meth:`stop`: its memory, threads and Kafka clients, and (with ``group`` and ``topic``)
    the lag of its input (:func:`committed_lag`).

    Attributes:
        samples: The looks, in order.
    """

    pid: int
    bootstrap: str
    group: str | None = None
    topic: str | None = None
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _halt: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> WorkerSampler:
        """Start sampling."""
        self._thread = threading.Thread(target=self._run, name="worker-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        consumer = None
        if self.group is not None and self.topic is not None:
            consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": self.group,
                    "enable.auto.commit": False,
                }
            )
        try:
            while not self._halt.is_set():
                began = time.monotonic()
                try:
                    rss, threads = proc_status(self.pid)
                    clients = kafka_clients(self.pid)
                except OSError:
                    return
                lag: int | None = None
                if consumer is not None and self.topic is not None:
                    with contextlib.suppress(Exception):
                        lag = committed_lag(consumer, self.topic)
                self.samples.append(Sample(time.time(), rss, threads, clients, lag))
                self._halt.wait(max(0.0, self.interval - (time.monotonic() - began)))
        finally:
            if consumer is not None:
                consumer.close()

    def between(self, start: float, end: float) -> list[Sample]:
        """The samples taken from ``start`` to ``end`` (``time.time()``)."""
        return [s for s in self.samples if start <= s.t <= end]
