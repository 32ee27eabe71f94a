"""Worker chaos: three workers of one app under steady load, SIGKILLed and restarted at random.

Shared by the chaos test (``tests/chaos/test_worker_chaos.py``) and the benchmark
(``python -m bench.chaos``), which run the same :func:`run_chaos` and differ only in how long
and what they assert. The app is :mod:`bench.apps.chaos_app` (named by module, started as
``faust -A <module> worker`` subprocesses):

- :class:`CellLoad` sends ``add`` and ``arm`` messages with unique ids to ``tally`` cells and
  records which ids the broker acknowledged;
- :class:`EntityLoad` deposits ids into ``purse`` entities with request/reply and records the
  ids that were answered;
- :class:`ChaosWorkers` runs the three workers, each with its own data dir (its local state
  survives its restart), a static group instance id ``chaos-w<i>`` and standby replicas, and
  restarts a worker that dies while starting, as a supervisor would;
- the chaos loop SIGKILLs a random worker at random intervals, restarts it at once, and times
  its recovery: from the SIGKILL to the first record processed again on each of the partitions
  it had, by any worker (the app's ``/chaos/progress/`` view);
- at the end, with the load stopped and the input topics committed to their ends, the state
  of every cell and entity (the runtime's cells views) is compared with the reference model:
  the ids acknowledged. :class:`Outcome` counts what was lost and what was applied twice.

The randomness (which worker, when, which cells) comes from one seed, printed by the callers.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from stream_app.core.envelope import envelope_bytes
from stream_app.settings import Settings
from stream_app.testing import (
    ConditionTimeout,
    ProbeFailed,
    WorkerProcess,
    committed_to_end,
    keyed_producer,
    settings_from_env,
    wait_for,
)
from stream_app.testing.dev_broker import find_free_port

__all__ = [
    "CellLoad",
    "ChaosConfig",
    "ChaosReport",
    "ChaosWorkers",
    "EntityLoad",
    "Kill",
    "Outcome",
    "compare",
    "delete_app_topics",
    "run_chaos",
    "summary_table",
]

#: Seconds a restarted worker may take to be ready, and a killed one's partitions to resume.
RECOVERY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ChaosConfig:
    """What one chaos run does.

    Attributes:
        duration_s: Seconds of load and kills (the drain and the checks come after).
        guarantee: ``at_least_once`` or ``exactly_once`` (``STREAM_APP_PROCESSING_GUARANTEE``).
        seed: Seeds every random choice: the workers killed, the gaps, the cells.
        workers: Worker processes of the app.
        max_kills: Most SIGKILLs in the run.
        gap_s: The pause before each kill is drawn from this range (after the previous
            recovery), so that load flows on every worker between kills.
        cells: ``tally`` cells the messages go to.
        purses: ``purse`` entities the deposits go to.
        messages_per_s: Cell messages sent per second (one in five an ``arm``).
        timer_ms: The range of the timers' delays.
        entity_senders: Threads sending deposits, each waiting for its reply before the next.
        standby_replicas: ``STREAM_APP_STANDBY_REPLICAS`` of the workers.
    """

    duration_s: float
    guarantee: str = "at_least_once"
    seed: int = 0
    workers: int = 3
    max_kills: int = 10
    gap_s: tuple[float, float] = (4.0, 10.0)
    cells: int = 60
    purses: int = 12
    messages_per_s: int = 100
    timer_ms: tuple[int, int] = (200, 3_000)
    entity_senders: int = 2
    standby_replicas: int = 1


@dataclass
class Kill:
    """One SIGKILL: whom, the partitions it had, and how long until they processed again.

    Attributes:
        worker: The killed worker's index.
        partitions: The input partitions it had when killed.
        recover_s: Seconds from the SIGKILL to the first record processed again on the last
            of those partitions to resume (``None``: not within the timeout, or it had none).
        restarts: Extra starts the restarted worker needed (it died while starting).
    """

    worker: int
    partitions: list[int]
    recover_s: float | None = None
    restarts: int = 0


@dataclass
class Outcome:
    """The ids of one kind of work, as acknowledged and as applied.

    Attributes:
        acked: Ids the broker acknowledged (entity deposits: that were answered).
        applied: How many times each id shows in the final state.
    """

    acked: set[int]
    applied: Counter[int]

    @property
    def lost(self) -> int:
        """Acknowledged ids not applied."""
        return len(self.acked - set(self.applied))

    @property
    def duplicated(self) -> int:
        """Applications beyond the first, over every id."""
        return sum(count - 1 for count in self.applied.values() if count > 1)

    @property
    def unacknowledged(self) -> int:
        """Ids applied that were never acknowledged (a delivery reported failed)."""
        return len(set(self.applied) - self.acked)

    def figures(self) -> dict[str, int]:
        """Counts for the report."""
        return {
            "acked": len(self.acked),
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unacknowledged": self.unacknowledged,
        }


@dataclass
class ChaosReport:
    """Everything a chaos run measured; :meth:`as_json` is the benchmark's report.

    Attributes:
        config: What the run did.
        kills: Every SIGKILL, in order.
        outcomes: Per kind of work (``adds``, ``timers``, ``deposits``), the ids acknowledged
            and their applications in the final state.
        unanswered: Deposits with no reply within the timeout.
        failed_deliveries: Messages whose delivery failed, and entity requests that failed
            otherwise than by a timeout.
        worker_restarts: Extra starts of workers that died while starting.
        exited: Workers not running at the end (none should be).
        drain_s: Seconds from the end of the load to both input topics committed to their ends.
        converged: Whether nothing acknowledged was missing from the state before the deadline.
    """

    config: ChaosConfig
    kills: list[Kill] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    unanswered: int = 0
    failed_deliveries: int = 0
    worker_restarts: int = 0
    exited: list[int] = field(default_factory=list)
    drain_s: float | None = None
    converged: bool = False

    @property
    def recover_s(self) -> list[float]:
        """Recovery seconds of the kills that recovered."""
        return [k.recover_s for k in self.kills if k.recover_s is not None]

    @property
    def recoveries(self) -> int:
        """Kills whose partitions processed again within the timeout (or that had none)."""
        return sum(1 for k in self.kills if k.recover_s is not None or not k.partitions)

    @property
    def lost(self) -> int:
        """Acknowledged messages, timers and deposits not applied."""
        return sum(o.lost for o in self.outcomes.values())

    @property
    def duplicated(self) -> int:
        """Applications beyond the first, over every kind."""
        return sum(o.duplicated for o in self.outcomes.values())

    def as_json(self) -> dict[str, Any]:
        """The figures, the kills and the config, JSON-ready."""
        times = self.recover_s
        return {
            "guarantee": self.config.guarantee,
            "seed": self.config.seed,
            "messages": sum(len(o.acked) for o in self.outcomes.values()),
            "kills": len(self.kills),
            "recoveries": self.recoveries,
            "recover_s_p50": round(statistics.median(times), 2) if times else None,
            "recover_s_max": round(max(times), 2) if times else None,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unanswered": self.unanswered,
            "failed_deliveries": self.failed_deliveries,
            "worker_restarts": self.worker_restarts,
            "exited": self.exited,
            "drain_s": self.drain_s,
            "converged": self.converged,
            "by_kind": {kind: o.figures() for kind, o in self.outcomes.items()},
            "kill_log": [asdict(k) for k in self.kills],
            "config": asdict(self.config),
        }


class CellLoad(threading.Thread):
    """Sends ``add`` and ``arm`` messages with unique ids to ``tally`` cells at a steady pace
    until :attr:`halt` is set, then flushes; records the ids the broker acknowledged.

    Attributes:
        adds: Acknowledged ``add`` ids.
        arms: Acknowledged ``arm`` ids (each a timer that must fire).
        failed: Deliveries that failed.
        halt: Set it to stop sending; :meth:`join` then waits for the final flush.
    """

    def __init__(self, settings: Settings, config: ChaosConfig, rng: random.Random) -> None:
        super().__init__(daemon=True, name="chaos.cells")
        self.topic = settings.input_topic("tally")
        self.bootstrap, self.config, self.rng = settings.bootstrap_servers, config, rng
        self.adds: set[int] = set()
        self.arms: set[int] = set()
        self.failed = 0
        self.halt = threading.Event()
        self._lock = threading.Lock()

    def _ack(self, error: object, kind: set[int], ident: int) -> None:
        with self._lock:
            if error is None:
                kind.add(ident)
            else:
                self.failed += 1

    def _record(self, ident: int) -> tuple[str, bytes, set[int]]:
        """The key, value and acknowledgement set of message ``ident``."""
        cell = f"cell-{self.rng.randrange(self.config.cells)}"
        if self.rng.random() < 0.2:
            after = self.rng.randint(*self.config.timer_ms)
            return cell, envelope_bytes("arm", {"id": ident, "after_ms": after}), self.arms
        return cell, envelope_bytes("add", {"id": ident}), self.adds

    def run(self) -> None:
        """Send ten rounds a second until halted, then flush."""
        producer = keyed_producer(self.bootstrap)
        per_round = max(1, self.config.messages_per_s // 10)
        ident = 0
        next_round = time.monotonic()
        while not self.halt.is_set():
            for _ in range(per_round):
                ident += 1
                cell, value, kind = self._record(ident)
                with contextlib.suppress(BufferError):
                    producer.produce(
                        self.topic,
                        key=cell.encode(),
                        value=value,
                        on_delivery=lambda err, _m, kind=kind, ident=ident: self._ack(
                            err, kind, ident
                        ),
                    )
            producer.poll(0)
            next_round += 0.1
            self.halt.wait(max(0.0, next_round - time.monotonic()))
        producer.flush(120)

    def acknowledged(self) -> tuple[set[int], set[int]]:
        """Copies of the acknowledged ``add`` and ``arm`` ids."""
        with self._lock:
            return set(self.adds), set(self.arms)


class EntityLoad(threading.Thread):
    """Deposits unique ids into ``purse`` entities with request/reply until :attr:`halt` is
    set: each request waits for its reply (``EntityClient.request``) before the next.

    Ids are ``first, first + step, ...`` so that several senders never share one.

    Attributes:
        answered: Ids whose deposit was answered (the reply says it was applied).
        unanswered: Ids with no reply within the timeout (they were still acknowledged by the
            broker, which reports a failed delivery as an error rather than a timeout).
        errors: Other failures, as text.
    """

    def __init__(
        self,
        settings: Settings,
        config: ChaosConfig,
        rng: random.Random,
        *,
        first: int,
        step: int,
        reply_timeout: float = RECOVERY_TIMEOUT_S,
    ) -> None:
        super().__init__(daemon=True, name=f"chaos.entities.{first}")
        self.settings, self.config, self.rng = settings, config, rng
        self.first, self.step, self.reply_timeout = first, step, reply_timeout
        self.answered: set[int] = set()
        self.unanswered: set[int] = set()
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        """Send deposits one after another until halted."""
        from stream_app.clients.entities import EntityClient
        from stream_app.errors import ReplyTimeoutError

        ident = self.first
        with EntityClient(self.settings, timeout=self.reply_timeout) as client:
            while not self.halt.is_set():
                purse = f"purse-{self.rng.randrange(self.config.purses)}"
                try:
                    client.request(("purse", purse), "deposit", {"id": ident})
                except ReplyTimeoutError:
                    self.unanswered.add(ident)
                except Exception as exc:
                    self.errors.append(f"{ident}: {exc!r}")
                else:
                    self.answered.add(ident)
                ident += self.step


class ChaosWorkers:
    """The app's workers: worker ``i`` keeps its data dir, its group instance id and its web
    port across its restarts, as a StatefulSet's pod keeps its volume and its name.

    The port matters beyond the views: a static member that rejoins gets its previous
    assignment back, with the metadata it joined with, and Faust's assignor requires that
    metadata's URL to be the worker's own (a restart on another port fails in the consumer's
    coordinator and never becomes ready).

    Args:
        module: The app module.
        env: The app's ``STREAM_APP_*`` settings, shared by every worker.
        workdir: Where the workers' data dirs and logs go.
        config: The worker count and the standby replicas.
    """

    def __init__(
        self, module: str, env: Mapping[str, str], workdir: Path, config: ChaosConfig
    ) -> None:
        self.module, self.env, self.workdir, self.config = module, dict(env), workdir, config
        self.current: list[WorkerProcess | None] = [None] * config.workers
        self.ports = [find_free_port() for _ in range(config.workers)]
        self.restarts = 0

    def worker_env(self, index: int) -> dict[str, str]:
        """Worker ``index``'s environment: its own data dir and static group membership."""
        return {
            **self.env,
            "STREAM_APP_DATA_DIR": str(self.workdir / f"data-w{index}"),
            "STREAM_APP_GROUP_INSTANCE_ID": f"chaos-w{index}",
            "STREAM_APP_STANDBY_REPLICAS": str(self.config.standby_replicas),
        }

    def start(self, index: int) -> WorkerProcess:
        """Start worker ``index`` (not waiting until it is ready)."""
        worker = WorkerProcess(
            self.module,
            env=self.worker_env(index),
            log_path=self.workdir / f"w{index}.log",
            web_port=self.ports[index],
        )
        self.current[index] = worker.start()
        return worker

    def wait_ready(self, index: int, *, attempts: int = 3) -> int:
        """Wait until worker ``index`` is ready, starting it again (as a supervisor would) if it
        died while starting; return how many extra starts that took.

        Raises:
            ProbeFailed: It died while starting ``attempts`` times.
        """
        worker = self.current[index] or self.start(index)
        extra = 0
        while True:
            try:
                worker.wait_ready(timeout=RECOVERY_TIMEOUT_S)
                return extra
            except ProbeFailed:
                if extra == attempts - 1:
                    raise
                extra += 1
                self.restarts += 1
                worker = self.start(index)

    def start_all(self) -> None:
        """Start every worker: the first alone (it creates the topics), then the others."""
        self.start(0)
        self.wait_ready(0)
        for index in range(1, self.config.workers):
            self.start(index)
        for index in range(1, self.config.workers):
            self.wait_ready(index)

    def alive(self) -> list[WorkerProcess]:
        """The workers running now."""
        return [w for w in self.current if w is not None and w.alive()]

    def any(self) -> WorkerProcess:
        """A running worker (for the views, which gather from every worker)."""
        running = self.alive()
        if not running:
            raise ProbeFailed("no worker is running")
        return running[0]

    def kill_all(self) -> None:
        """SIGKILL every worker still running (teardown)."""
        for worker in self.current:
            if worker is not None:
                worker.kill()

    def exited(self) -> list[int]:
        """The workers that are not running (none should be: every kill is restarted)."""
        return [i for i, w in enumerate(self.current) if w is None or not w.alive()]

    def stop_all(self) -> None:
        """Stop every worker gracefully."""
        for worker in self.current:
            if worker is not None:
                worker.stop()


def _progress(worker: WorkerProcess, after_ms: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = worker.get_json(f"/chaos/progress/?after={after_ms}")
    return body


def resumed_ms(
    workers: Iterable[WorkerProcess], partitions: list[int], after_ms: int
) -> dict[int, int]:
    """Per partition of ``partitions``, the earliest record processed after ``after_ms`` by any
    of ``workers`` (partitions with none yet are left out)."""
    first: dict[int, int] = {}
    for worker in workers:
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            for key, ms in _progress(worker, after_ms)["first_after"].items():
                partition = int(key)
                if partition in partitions:
                    first[partition] = min(ms, first.get(partition, ms))
    return first


def kill_and_recover(workers: ChaosWorkers, index: int) -> Kill:
    """SIGKILL worker ``index``, restart it at once, and time its partitions' recovery."""
    victim = workers.current[index]
    assert victim is not None
    try:
        partitions: list[int] = _progress(victim)["assigned"]
    except (OSError, ValueError):
        partitions = []
    killed_ms = int(time.time() * 1000)
    victim.kill()
    workers.start(index)
    kill = Kill(worker=index, partitions=partitions)
    if partitions:
        try:
            first = wait_for(
                lambda: resumed_ms(workers.alive(), partitions, killed_ms),
                lambda seen: len(seen) == len(partitions),
                timeout=RECOVERY_TIMEOUT_S,
                interval=0.1,
                what=f"partitions {partitions} of worker {index} processing again",
            )
            kill.recover_s = (max(first.values()) - killed_ms) / 1000
        except ConditionTimeout:
            kill.recover_s = None
    kill.restarts = workers.wait_ready(index)
    return kill


def chaos_loop(
    workers: ChaosWorkers, config: ChaosConfig, rng: random.Random, stop: threading.Event
) -> list[Kill]:
    """Kill random workers, each after a random gap, until ``config.duration_s`` has passed
    (``stop`` set) or ``config.max_kills`` were done."""
    kills: list[Kill] = []
    while len(kills) < config.max_kills:
        # Pacing, not synchronisation: the load runs on every worker during the gap.
        if stop.wait(rng.uniform(*config.gap_s)):
            break
        kills.append(kill_and_recover(workers, rng.randrange(config.workers)))
    return kills


def _cells(worker: WorkerProcess, name: str) -> dict[str, Any]:
    found: dict[str, Any] = worker.get_json(f"/stream-app/cells/{name}/", timeout=30)
    return found


def applied_ids(workers: ChaosWorkers) -> dict[str, Counter[int]]:
    """How many times each id shows in the state: ``adds``, ``timers`` and ``deposits``."""
    worker = workers.any()
    adds: Counter[int] = Counter()
    fired: Counter[int] = Counter()
    for data in _cells(worker, "tally").values():
        adds.update(data.get("applied", []))
        fired.update(data.get("fired", []))
    deposits: Counter[int] = Counter()
    for entity in _cells(worker, "purse").values():
        deposits.update(entity["state"]["deposits"])
    return {"adds": adds, "timers": fired, "deposits": deposits}


def compare(
    acked: Mapping[str, set[int]], applied: Mapping[str, Counter[int]]
) -> dict[str, Outcome]:
    """The reference model (the acknowledged ids, each applied once) against the state."""
    return {kind: Outcome(set(ids), applied.get(kind, Counter())) for kind, ids in acked.items()}


def wait_drained(settings: Settings, timeout: float) -> float:
    """Wait until the app's group has committed both input topics to their ends; the seconds
    it took."""
    started = time.monotonic()
    for behaviour in ("tally", "purse"):
        topic = settings.input_topic(behaviour)
        wait_for(
            partial(committed_to_end, settings.bootstrap_servers, settings.app_id, topic),
            bool,
            timeout=timeout,
            what=f"{topic} committed to its end",
        )
    return time.monotonic() - started


def converge(
    workers: ChaosWorkers, acked: Mapping[str, set[int]], timeout: float
) -> tuple[dict[str, Outcome], bool]:
    """Wait until nothing acknowledged is missing from the state (timers fire late); the
    comparison, and whether it got there before ``timeout``."""
    try:
        applied = wait_for(
            lambda: applied_ids(workers),
            lambda seen: all(not compare(acked, seen)[k].lost for k in acked),
            timeout=timeout,
            what="every acknowledged id applied",
        )
        return compare(acked, applied), True
    except ConditionTimeout:
        return compare(acked, applied_ids(workers)), False


def run_chaos(
    env: Mapping[str, str],
    workdir: Path,
    config: ChaosConfig,
    *,
    module: str,
    drain_timeout: float = 180.0,
) -> ChaosReport:
    """One chaos run: start the workers, load them, kill and restart them for
    ``config.duration_s``, stop the load, let it drain, and compare the state with the
    acknowledged ids. Every worker is stopped before it returns.

    Args:
        env: The app's ``STREAM_APP_*`` settings (a fresh app id); the guarantee is set from
            ``config``.
        workdir: Where the workers' data dirs and logs go.
        config: What the run does.
        module: The app module: ``bench.apps.chaos_app`` or one with the same behaviour,
            entity and view.
        drain_timeout: Seconds the input topics may take to be committed to their ends.
    """
    rng = random.Random(config.seed)
    env = {
        **env,
        "STREAM_APP_PROCESSING_GUARANTEE": config.guarantee,
        "STREAM_APP_SESSION_TIMEOUT_S": env.get("STREAM_APP_SESSION_TIMEOUT_S", "6"),
    }
    settings = settings_from_env(env)
    workers = ChaosWorkers(module, env, workdir, config)
    report = ChaosReport(config)
    try:
        workers.start_all()
        cells = CellLoad(settings, config, random.Random(rng.random()))
        senders = [
            EntityLoad(
                settings, config, random.Random(rng.random()), first=i, step=config.entity_senders
            )
            for i in range(config.entity_senders)
        ]
        loads: list[CellLoad | EntityLoad] = [cells, *senders]
        for load in loads:
            load.start()
        stop = threading.Event()
        timer = threading.Timer(config.duration_s, stop.set)
        timer.start()
        try:
            report.kills = chaos_loop(workers, config, rng, stop)
            stop.wait()
        finally:
            timer.cancel()
            for load in loads:
                load.halt.set()
            for load in loads:
                load.join(timeout=RECOVERY_TIMEOUT_S + 60)
        adds, arms = cells.acknowledged()
        deposits = set().union(*(s.answered | s.unanswered for s in senders))
        acked = {"adds": adds, "timers": arms, "deposits": deposits}
        report.unanswered = sum(len(s.unanswered) for s in senders)
        report.failed_deliveries = cells.failed + sum(len(s.errors) for s in senders)
        report.drain_s = round(wait_drained(settings, drain_timeout), 2)
        report.outcomes, report.converged = converge(workers, acked, timeout=60)
        report.worker_restarts = workers.restarts
        report.exited = workers.exited()
        workers.stop_all()
    finally:
        workers.kill_all()
    return report


def delete_app_topics(bootstrap: str, app_id: str) -> None:
    """Delete every topic of ``app_id`` (its name starts with it): the broker's partition
    directories would otherwise pile up run after run."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(app_id)]
    for future in admin.delete_topics(topics, operation_timeout=30).values() if topics else ():
        with contextlib.suppress(Exception):
            future.result(timeout=60)


def summary_table(report: ChaosReport) -> str:
    """The run's figures as a small text table."""
    figures = report.as_json()
    rows = [
        ("guarantee", figures["guarantee"]),
        ("seed", figures["seed"]),
        ("messages", figures["messages"]),
        *((f"  {kind}", o["acked"]) for kind, o in figures["by_kind"].items()),
        ("kills", figures["kills"]),
        ("recoveries", figures["recoveries"]),
        ("recover s p50", figures["recover_s_p50"]),
        ("recover s max", figures["recover_s_max"]),
        ("lost", figures["lost"]),
        ("duplicated", figures["duplicated"]),
        ("unanswered", figures["unanswered"]),
        ("worker restarts", figures["worker_restarts"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
