"""How long a partition stops after its worker is SIGKILLed: failover to another worker (with
and without a standby), and a restart of the same worker (with and without static membership).

Every subject runs the counter cell (``bench.apps.cell_counter``, ``at_least_once``) on
``--partitions`` partitions (2) whose ``counter`` changelog holds ``--cells-per-partition``
cells each (100,000; written before the workers start, exactly as the engine writes them, as
``bench.restore`` does), with two workers, each on its own state dir, and the settings'
session timeout (``--session-timeout``, 30 s, the default). A subject:

1. starts worker 1 alone (it restores every partition), then worker 2 (a rebalance gives it
   some partitions, which it restores from the changelog); the *victim partition* is one that
   stays with worker 1, so worker 2 never held it as an active partition;
2. sends an increment to a marker cell of the victim partition, waits until its changelog
   record is written and the group has committed the input to its end (nothing to replay);
3. SIGKILLs worker 1 and at once sends the marker another increment;
4. times it from the kill to the marker's new changelog record: the first record processed on
   the victim partition after the kill (``kill_to_processed_s``), read by a consumer assigned to
   that changelog partition (joining no group). From worker 2's log it also takes when the
   rebalance reached it (aiokafka's "Revoking previously assigned partitions"), which splits
   the time into ``detected_s`` (kill -> rebalance: the session timeout, unless the worker
   comes back) and ``takeover_s`` (rebalance -> processing: assignment, recovery, boot). A
   restarted worker's log gives ``to_started_s`` (kill -> Faust's first line: the process is up
   and its imports done) and ``to_ready_s`` (kill -> ``[^Worker]: Ready``: joined, tables open
   and recovered).

The subjects:

- **failover**, ``STREAM_APP_STANDBY_REPLICAS`` 0 and 1: worker 1 stays dead, worker 2 takes
  the victim partition. Without a standby it restores the partition from its changelog; with
  one (worker 2 waited for until its standby restore has logged) it only catches up.
- **restart**, without and with ``STREAM_APP_GROUP_INSTANCE_ID`` (standbys 1): worker 1 is
  started again at once on its state dir and web port. A dynamic member that restarts must
  wait for the group to expire its dead predecessor's session; a static one (same instance id)
  takes its partitions back at once and keeps its local state. ``restart_static_eos`` is the
  static restart under ``exactly_once``, where a worker that did not stop cleanly rebuilds its
  tables from the changelogs (so its partition is restored, not just reopened).

Headlines: ``R_standby`` = takeover with a standby / takeover without; ``restart_s_static``
(kill -> processed, goal <= 5 s, issue 16) and ``R_static`` = static / dynamic restart; every
subject's seconds under ``subjects`` and in a table. Medians over ``--rounds``. Prints one JSON
object; ``--save`` keeps it in ``bench/results/failover.json``.

Run: ``.venv/bin/python -m bench.failover [--cells-per-partition 100000] [--partitions 2]
[--session-timeout 30] [--rounds N] [--keep DIR] [--save]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench._common import INCREMENT, save_result, setup_app, wait_committed, worker_env
from bench.restore import fill
from stream_app.core.partitioner import partition_for
from stream_app.settings import Settings
from stream_app.testing import READY_MARKER, WorkerProcess, keyed_producer, wait_for
from stream_app.testing.dev_broker import find_free_port, kafka_broker

#: The goal of issue 16 for a restart with static membership, in seconds.
GOAL_RESTART_STATIC_S = 5.0
#: The worker module (its behaviour and table ``counter``).
MODULE = "bench.apps.cell_counter"
BEHAVIOUR = TABLE = "counter"
#: A worker log line's timestamp (Faust's log format, local time).
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
#: Faust's first line of a worker process (its imports done).
STARTED = "[^Worker]: Starting..."
#: aiokafka's line when a rebalance reaches a member.
REBALANCE = "Revoking previously assigned partitions"
#: The restore's summary line for standby partitions.
STANDBY_RESTORED = re.compile(r"restored \d+ records into \d+ standby partition")
#: Longest a subject's step may take.
STEP_TIMEOUT_S = 300.0


class Subject:
    """Two workers of one fresh app on a filled changelog, and the measurement of a kill.

    Args:
        bootstrap: The broker.
        workdir: Where state dirs and logs go.
        args: The command line (partitions, cells, session timeout).
        extra: Settings (``STREAM_APP_*``) of both workers beyond the app's.
        static: Give each worker a group instance id (``worker-1``, ``worker-2``).
    """

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        args: argparse.Namespace,
        extra: dict[str, str],
        *,
        static: bool,
    ) -> None:
        self.bootstrap = bootstrap
        self.settings: Settings = setup_app(
            bootstrap, workdir, "failover", partitions=args.partitions
        )
        self.fill_s = fill(
            bootstrap,
            self.settings.changelog_topic(TABLE),
            args.cells,
            args.cells,
            args.partitions,
        )
        self.workers = [
            WorkerProcess(
                MODULE,
                env={
                    **worker_env(self.settings, **extra),
                    "STREAM_APP_DATA_DIR": str(workdir / f"{self.settings.app_id}-{n}"),
                    "STREAM_APP_SESSION_TIMEOUT_S": str(args.session_timeout),
                    **({"STREAM_APP_GROUP_INSTANCE_ID": f"worker-{n}"} if static else {}),
                },
                log_path=workdir / f"{self.settings.app_id}-{n}.log",
                web_port=find_free_port(),
            )
            for n in (1, 2)
        ]
        self.producer = keyed_producer(bootstrap)

    def owned(self, worker: WorkerProcess) -> list[int]:
        """The partitions of the counter behaviour ``worker`` owns now."""
        parts: list[int] = worker.get_json("/stream-app/metrics/")["behaviours"][BEHAVIOUR][
            "partitions"
        ]
        return parts

    def start_both(self, partitions: int) -> int:
        """Start worker 1, then worker 2; wait until they split the partitions; return the
        victim partition (one of worker 1's)."""
        first, second = self.workers
        first.start()
        first.wait_ready(timeout=STEP_TIMEOUT_S)
        second.start()
        second.wait_ready(timeout=STEP_TIMEOUT_S)
        split = wait_for(
            lambda: (self.owned(first), self.owned(second)),
            lambda pair: (
                bool(pair[0])
                and bool(pair[1])
                and sorted(pair[0] + pair[1]) == list(range(partitions))
            ),
            timeout=STEP_TIMEOUT_S,
            what="the partitions split between the two workers",
        )
        return split[0][0]

    def marker(self, partition: int, partitions: int) -> bytes:
        """A cell id on ``partition`` that no filled cell uses."""
        return next(
            key
            for n in range(10_000)
            if partition_for(key := f"marker-{n}".encode(), partitions) == partition
        )

    def increment(self, key: bytes) -> None:
        """Send one increment to cell ``key`` (acknowledged before it returns)."""
        self.producer.produce(self.settings.input_topic(BEHAVIOUR), key=key, value=INCREMENT)
        if self.producer.flush(30):
            raise RuntimeError("increment not acknowledged in 30 s")

    def close(self) -> None:
        """Stop both workers and delete the app's topics."""
        for worker in self.workers:
            worker.stop(timeout=60)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        prefix = self.settings.app_id
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if names:
            for future in admin.delete_topics(names, operation_timeout=30).values():
                future.result()


@contextmanager
def changelog_reader(bootstrap: str, topic: str, partition: int) -> Iterator[Any]:
    """A consumer assigned to partition ``partition`` of ``topic`` at its current end, reading
    committed records only."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-failover-reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            # Under exactly_once a record is processed once its transaction commits.
            "isolation.level": "read_committed",
        }
    )
    try:
        tp = TopicPartition(topic, partition)
        _, high = consumer.get_watermark_offsets(tp, timeout=30)
        consumer.assign([TopicPartition(topic, partition, high)])
        yield consumer
    finally:
        consumer.close()


def wait_for_key(consumer: Any, key: bytes, timeout: float) -> float:
    """Read until a record with ``key`` arrives; return when it was read (``time.time()``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(0.05)
        if message is not None and not message.error() and message.key() == key:
            return time.time()
    raise TimeoutError(f"no changelog record of {key!r} within {timeout:.0f}s")


def first_after(log: str, marker: str, after: float) -> float | None:
    """When the first line of ``log`` holding ``marker`` at or after ``after`` (epoch
    seconds, to the log's millisecond) was written."""
    for line in log.splitlines():
        stamp = STAMP.match(line)
        if stamp and marker in line:
            at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at >= after - 0.001:
                return at
    return None


def measure_kill(
    subject: Subject, args: argparse.Namespace, *, restart: bool, standby: bool
) -> dict[str, Any]:
    """Steps 1-4 of the module docstring on ``subject``; its figures. With ``standby``, step 2
    first waits until worker 2 has restored its standby partitions."""
    victim = subject.start_both(args.partitions)
    first, second = subject.workers
    if standby:
        wait_for(
            second.log_text,
            lambda text: STANDBY_RESTORED.search(text) is not None,
            timeout=STEP_TIMEOUT_S,
            what="worker 2's standby restored",
        )
    marker = subject.marker(victim, args.partitions)
    changelog = subject.settings.changelog_topic(TABLE)
    with changelog_reader(subject.bootstrap, changelog, victim) as reader:
        subject.increment(marker)
        wait_for_key(reader, marker, STEP_TIMEOUT_S)
    wait_committed(
        subject.bootstrap,
        subject.settings.app_id,
        subject.settings.input_topic(BEHAVIOUR),
        timeout=STEP_TIMEOUT_S,
    )
    with changelog_reader(subject.bootstrap, changelog, victim) as reader:
        killed = time.time()
        first.kill()
        if restart:
            first.start()
        subject.increment(marker)
        processed = wait_for_key(reader, marker, STEP_TIMEOUT_S)
    rebalanced = first_after(second.log_text(), REBALANCE, killed)
    figures: dict[str, Any] = {
        "victim_partition": victim,
        "processed_by": "worker 2",
        "kill_to_processed_s": round(processed - killed, 3),
        "detected_s": since(killed, rebalanced),
        "takeover_s": since(rebalanced, processed),
        "fill_s": round(subject.fill_s, 3),
    }
    if restart:
        log = first.log_text()
        figures["processed_by"] = "worker 1" if victim in subject.owned(first) else "worker 2"
        # A restart, step by step: the Python process up to Faust's first line (imports), then
        # the group's answer, the tables opened and recovered.
        figures["to_started_s"] = since(killed, first_after(log, STARTED, killed))
        figures["to_ready_s"] = since(killed, first_after(log, READY_MARKER, killed))
    return figures


def since(start: float | None, end: float | None) -> float | None:
    """Seconds from ``start`` to ``end`` (``None`` without both)."""
    return None if start is None or end is None else round(end - start, 3)


#: Each subject: standby replicas, static membership, whether the killed worker restarts, and
#: the processing guarantee.
SUBJECTS: dict[str, tuple[int, bool, bool, str]] = {
    "failover_standby0": (0, False, False, "at_least_once"),
    "failover_standby1": (1, False, False, "at_least_once"),
    "restart_dynamic": (1, False, True, "at_least_once"),
    "restart_static": (1, True, True, "at_least_once"),
    "restart_static_eos": (1, True, True, "exactly_once"),
}


def run_subject(
    name: str, bootstrap: str, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One round of subject ``name`` on a fresh app."""
    standbys, static, restart, guarantee = SUBJECTS[name]
    extra = {
        "STREAM_APP_STANDBY_REPLICAS": str(standbys),
        "STREAM_APP_PROCESSING_GUARANTEE": guarantee,
    }
    subject = Subject(bootstrap, workdir, args, extra, static=static)
    try:
        return measure_kill(subject, args, restart=restart, standby=not restart and standbys > 0)
    finally:
        subject.close()


#: The seconds every subject reports (the last two for restarts only).
FIELDS = ("kill_to_processed_s", "detected_s", "takeover_s", "to_started_s", "to_ready_s")


def median(rounds: list[dict[str, Any]], field: str) -> float | None:
    """The median of ``field`` over ``rounds`` (``None`` if a round lacks it)."""
    values = [r[field] for r in rounds]
    if any(v is None for v in values):
        return None
    return round(float(statistics.median(values)), 3)


def ratio(top: float | None, bottom: float | None) -> float | None:
    """``top / bottom``, or ``None`` without both."""
    return None if top is None or not bottom else round(top / bottom, 3)


def main() -> None:
    """Run every subject ``--rounds`` times and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells-per-partition", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--session-timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every subject (median)")
    parser.add_argument("--subjects", nargs="+", choices=sorted(SUBJECTS), default=list(SUBJECTS))
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep worker logs")
    parser.add_argument(
        "--save", action="store_true", help="also write the report to bench/results/failover.json"
    )
    args = parser.parse_args()
    if args.partitions < 2:
        parser.error("--partitions must be at least 2 (two workers share them)")
    args.cells = args.cells_per_partition * args.partitions
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in args.subjects}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(args.rounds):
            for name in args.subjects:
                rounds[name].append(run_subject(name, broker.bootstrap, workdir, args))
    figures = {
        name: {field: median(done, field) for field in FIELDS if field in done[0]}
        for name, done in rounds.items()
    }

    def figure(name: str, field: str) -> float | None:
        return figures.get(name, {}).get(field)

    restart_static = figure("restart_static", "kill_to_processed_s")
    report: dict[str, Any] = {
        "benchmark": "failover",
        "cells_per_partition": args.cells_per_partition,
        "partitions": args.partitions,
        "session_timeout_s": args.session_timeout,
        "rounds": args.rounds,
        "broker": broker.source,
        # A restart is mostly a Python process starting: on a loaded machine, imports dominate.
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "timed": "SIGKILL of the worker owning the victim partition -> the changelog record of "
        "the first increment sent after the kill (the partition processing again); "
        "detected_s: kill -> the rebalance reaching worker 2; takeover_s: rebalance -> "
        "processing",
        "R_standby": ratio(
            figure("failover_standby1", "takeover_s"), figure("failover_standby0", "takeover_s")
        ),
        "restart_s_static": restart_static,
        "R_static": ratio(restart_static, figure("restart_dynamic", "kill_to_processed_s")),
        "subjects": figures,
        "rounds_detail": rounds,
        "tables": [
            {
                "title": "Seconds from the SIGKILL (medians)",
                "columns": [
                    "subject",
                    "to processing again",
                    "to the rebalance",
                    "takeover",
                    "restart: process started",
                    "restart: ready",
                ],
                "rows": [
                    [name, *(f.get(field) for field in FIELDS)] for name, f in figures.items()
                ],
            }
        ],
        "goals": {
            "restart_s_static": {
                "goal": f"<= {GOAL_RESTART_STATIC_S:g}",
                "met": restart_static is not None and restart_static <= GOAL_RESTART_STATIC_S,
            }
        },
    }
    if args.save:
        save_result("failover", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
