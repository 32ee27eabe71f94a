"""Exactly-once entities under SIGKILL and with a zombie, on a real broker.

The kill test SIGKILLs the worker four times at random moments while increments flow; afterwards
no event is in the log twice, sequence numbers have no gaps, every counter equals the number of
increments the broker acknowledged for it, and every cached state is the fold of its events.
The zombie test freezes a worker, lets another take its partitions, wakes it, and checks that
it is fenced: it stops on a failed commit and none of its events reach the log. It runs the
ledger with the default settings: an entity makes the runtime exactly-once by itself."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from stream_app.examples.ledger import counter
from stream_app.ops.fold import FoldReport, fold_log
from stream_app.testing import (
    ConditionTimeout,
    ProbeFailed,
    WorkerProcess,
    keyed_producer,
    settings_from_env,
    wait_for,
)

pytestmark = pytest.mark.integration

MODULE = "stream_app.examples.ledger"
MESSAGES = 4_000
ENTITIES = 100
BATCH = 100
PAUSE_S = 0.1
#: Most increments an open-ended producer sends (about 10 minutes of them).
MAX_MESSAGES = 600_000
#: A session timeout long enough for a start on a loaded machine.
SLOW_START_ENV = {"STREAM_APP_SESSION_TIMEOUT_S": "20"}
#: The scale-out test's workers.
EOS_ENV = {"STREAM_APP_PROCESSING_GUARANTEE": "exactly_once", **SLOW_START_ENV}


class IncrementProducer(threading.Thread):
    """Sends ``increment`` (by 1) to random counters in paced batches; counts acknowledgements.

    It sends ``messages`` increments, or keeps sending (up to :data:`MAX_MESSAGES`) until
    :meth:`finish` when ``messages`` is ``None``, so that every kill falls under load.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        seed: int,
        messages: int | None = MESSAGES,
        pause_s: float = PAUSE_S,
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rng = bootstrap, topic, random.Random(seed)
        self.messages, self.pause_s = messages, pause_s
        self.finished = threading.Event()
        self.acked: Counter[str] = Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        producer = keyed_producer(self.bootstrap)
        value = json.dumps({"type": "increment", "body": {"by": 1}}).encode()
        limit = MAX_MESSAGES if self.messages is None else self.messages
        for _ in range(limit // BATCH):
            if self.finished.is_set():
                break
            for _ in range(BATCH):
                entity = f"e{self.rng.randrange(ENTITIES)}"
                producer.produce(
                    self.topic,
                    key=entity.encode(),
                    value=value,
                    on_delivery=lambda err, _m, entity=entity: self._ack(err, entity),
                )
            producer.flush(60)
            time.sleep(self.pause_s)
        producer.flush(60)

    def finish(self) -> None:
        """Stop after the batch in flight (an open-ended producer)."""
        self.finished.set()

    @property
    def total(self) -> int:
        """Increments acknowledged so far."""
        with self.lock:
            return sum(self.acked.values())

    def wait_more(self, count: int, what: str) -> None:
        """Wait until ``count`` more increments than now are acknowledged."""
        start = self.total
        wait_for(lambda: self.total, lambda total: total >= start + count, timeout=120, what=what)

    def _ack(self, err: object, entity: str) -> None:
        with self.lock:
            if err is None:
                self.acked[entity] += 1
            else:
                self.failures.append(str(err))


def group_members(bootstrap: str, group: str) -> int:
    """Members the group coordinator still counts in ``group``."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return len(described.members)


def wait_group_empty(bootstrap: str, group: str, what: str) -> None:
    """Wait until the coordinator counts no member in ``group`` (sessions timed out)."""
    wait_for(
        lambda: group_members(bootstrap, group),
        lambda members: members == 0,
        timeout=60,
        what=what,
    )


def committed_fold(settings: Any, events: int = MESSAGES) -> FoldReport:
    """The fold of the counters once the log holds ``events`` committed events."""
    report: FoldReport = wait_for(
        lambda: fold_log(counter, settings),
        lambda found: found.events >= events,
        timeout=60,
        what=f"{events} committed events",
    )
    return report


def start_restarting(
    start_worker: Callable[..., WorkerProcess], env: dict[str, str], name: str, restarts: list[str]
) -> WorkerProcess:
    """Start a worker as a supervisor would: one that stops while starting is started again
    (at most three attempts, each noted in ``restarts``, which the tests print). A restart
    never costs data, which is what the assertions of these tests check."""
    for attempt in range(3):
        try:
            return start_worker(MODULE, env, name=f"{name}-{attempt}" if attempt else name)
        except ProbeFailed as exc:
            restarts.append(f"{name}: {str(exc).splitlines()[0]}")
    raise AssertionError(f"{name} did not start in 3 attempts: {restarts}")


def values(worker: WorkerProcess) -> dict[str, int]:
    """Every counter's cached value, from the worker's listing view."""
    cells: dict[str, Any] = worker.get_json("/stream-app/cells/counter/")
    return {ident: data["state"]["value"] for ident, data in cells.items()}


def wait_applied(worker: WorkerProcess, total: int, what: str) -> int:
    """Wait until the counters cached by ``worker`` add up to ``total`` or more."""
    reached: int = wait_for(
        lambda: sum(values(worker).values()), lambda seen: seen >= total, timeout=180, what=what
    )
    return reached


def test_random_sigkills_under_exactly_once_leave_a_clean_log_and_cache(
    bootstrap: str, cells_env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1_000_000)))
    print(f"\nchaos seed {seed} (rerun with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    env = {
        **cells_env,
        "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once",
        "STREAM_APP_COMMIT_INTERVAL_S": "0.5",
    }
    settings = settings_from_env(env)
    worker = start_worker(MODULE, env, name="worker-0")
    producer = IncrementProducer(
        bootstrap, settings.input_topic("counter"), seed, messages=None, pause_s=0.4
    )
    producer.start()

    kills: list[str] = []
    restarts: list[str] = []
    for round_ in range(4):
        if round_:
            worker = start_restarting(start_worker, env, f"worker-{round_}", restarts)
        if round_ == 2:
            kills.append("right after ready")
        else:
            target = sum(values(worker).values()) + rng.randint(100, 800)
            reached = wait_applied(worker, target, f"round {round_}: progress to {target}")
            kills.append(f"after {reached} applied")
        assert producer.is_alive(), "every kill falls while increments are sent"
        worker.kill()
        # The next worker starts once the coordinator has dropped the killed one (its session
        # timed out), so it joins alone and takes every partition.
        wait_group_empty(bootstrap, settings.app_id, "the killed worker gone from the group")

    final = start_restarting(start_worker, env, "worker-final", restarts)
    producer.finish()
    producer.join(timeout=60)
    assert not producer.is_alive(), "producer did not finish"
    assert not producer.failures, producer.failures[:5]
    sent = producer.total
    print(f"kills: {kills}; restarts while starting: {restarts}")
    expected = dict(producer.acked)
    try:
        wait_for(lambda: values(final), lambda seen: seen == expected, timeout=240, what="counts")
    except ConditionTimeout:
        seen = values(final)
        off = {e: (seen.get(e), n) for e, n in expected.items() if seen.get(e) != n}
        raise ConditionTimeout(
            f"{len(off)} of {len(expected)} counters differ (id: (cached, acked)): "
            f"{dict(list(off.items())[:20])}; total {sum(seen.values())} of {sent}\n"
            f"--- worker log tail ---\n{final.log_text()[-4000:]}"
        ) from None

    # The event log, read committed, folded with the entity's own update. The worker's view
    # above includes its open transaction; wait until the last one is committed.
    report = committed_fold(settings, sent)
    assert not report.duplicates, (
        f"events in the log twice: {dict(list(report.duplicates.items())[:10])}"
    )
    assert not report.gaps, f"sequence gaps: {dict(list(report.gaps.items())[:10])}"
    assert report.events == sent, "one event per acknowledged increment"
    assert not report.mismatched, [
        (i, report.folded.get(i), report.cached.get(i)) for i in report.mismatched[:10]
    ]
    assert {i: state["value"] for i, (_, state) in report.folded.items()} == expected

    # A clean stop keeps the table databases: the next start reuses them (no rebuild) and
    # finds the same counters.
    assert final.stop() == 0, final.log_text()[-3000:]
    again = start_worker(MODULE, env, name="worker-again")
    assert "rebuilding" not in again.log_text(), again.log_text()[-3000:]
    assert values(again) == expected


def test_under_the_default_settings_a_paused_worker_that_lost_its_partitions_cannot_commit(
    bootstrap: str,
    cells_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A zombie: worker A is frozen (SIGSTOP) with a transaction open, B takes its partitions
    and handles the same input again, then A wakes up. A's transactions are fenced by B's
    producers (same transactional ids): none of its events may reach the committed log.

    Neither worker is told a processing guarantee (``auto``, the default): the ledger's
    entities need fencing, so the runtime runs exactly-once.

    The increments are produced without pauses, far faster than A handles them, so A is frozen
    in the middle of a backlog: its input never runs dry (which commits at once), so it holds
    open transactions, and it is frozen before its commit interval ends."""
    messages = 3 * MESSAGES
    monkeypatch.delenv("STREAM_APP_PROCESSING_GUARANTEE", raising=False)
    env = {**cells_env, **SLOW_START_ENV, "STREAM_APP_COMMIT_INTERVAL_S": "30"}
    assert not any("GUARANTEE" in name for name in env), "the default settings"
    settings = settings_from_env(env)
    assert settings.processing_guarantee == "auto"
    topic = settings.input_topic("counter")
    zombie = start_worker(MODULE, env, name="zombie")
    metrics = zombie.get_json("/stream-app/metrics/")
    assert metrics["batch_input"]["exactly_once"] is True, "auto resolved for the entities"
    first = IncrementProducer(bootstrap, topic, seed=11, messages=messages, pause_s=0.0)
    first.start()
    wait_applied(zombie, 300, "the first worker handling increments")
    assert zombie.process is not None
    os.kill(zombie.process.pid, signal.SIGSTOP)  # frozen mid-stream, transactions open
    try:
        # The premise: frozen with input left, so with transactions open (not all committed).
        committed = fold_log(counter, settings).events
        assert committed < messages, f"the zombie committed all {committed} events before SIGSTOP"
        wait_group_empty(bootstrap, settings.app_id, "the frozen worker dropped from the group")
        # Another machine: its own data directory (the zombie still holds its databases).
        elsewhere = {**env, "STREAM_APP_DATA_DIR": env["STREAM_APP_DATA_DIR"] + "-successor"}
        restarts: list[str] = []
        successor = start_restarting(start_worker, elsewhere, "successor", restarts)
        first.join(timeout=300)
        assert not first.failures and sum(first.acked.values()) == messages
        wait_for(
            lambda: values(successor),
            lambda seen: seen == dict(first.acked),
            timeout=240,
            what="the successor handling every increment",
        )
        committed_fold(settings, messages)  # the successor's transactions committed
    finally:
        os.kill(zombie.process.pid, signal.SIGCONT)  # the zombie wakes up
    # Its next transaction call meets the successor's producers (same transactional ids, newer
    # epoch): fenced, it stops itself without committing anything.
    wait_for(
        zombie.alive,
        lambda alive: not alive,
        timeout=120,
        what="the fenced zombie stopping",
    )
    log = zombie.log_text()
    assert "fenced by a newer instance" in log and "stopping the worker" in log, log[-3000:]
    successor.kill()
    wait_group_empty(bootstrap, settings.app_id, "both workers gone from the group")
    report = committed_fold(settings, messages)
    assert not report.duplicates, (
        f"the zombie committed events: {list(report.duplicates.items())[:5]}"
    )
    assert not report.gaps, f"sequence gaps: {list(report.gaps.items())[:5]}"
    assert report.events == messages
    assert not report.mismatched
    assert {i: state["value"] for i, (_, state) in report.folded.items()} == dict(first.acked)


def test_scaling_out_and_back_in_under_load_moves_partitions_without_loss_or_repeat(
    bootstrap: str, cells_env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    """Rebalances of running workers: B joins A while increments flow (A gives up partitions,
    committing their transactions, and B fences A's producers for them), then A stops cleanly
    and B takes everything. The committed log must hold each increment exactly once."""
    env = {**cells_env, **EOS_ENV, "STREAM_APP_COMMIT_INTERVAL_S": "0.5"}
    settings = settings_from_env(env)
    producer = IncrementProducer(
        bootstrap, settings.input_topic("counter"), seed=23, messages=None, pause_s=0.3
    )
    first = start_worker(MODULE, env, name="a")
    producer.start()
    wait_applied(first, 300, "worker a handling increments")
    elsewhere = {**env, "STREAM_APP_DATA_DIR": env["STREAM_APP_DATA_DIR"] + "-b"}
    second = start_worker(MODULE, elsewhere, name="b")

    def owned(worker: WorkerProcess) -> list[int]:
        behaviours: dict[str, Any] = worker.get_json("/stream-app/metrics/")["behaviours"]
        partitions: list[int] = behaviours["counter"]["partitions"]
        return partitions

    # Both own partitions once the rebalance settles, and both handle increments there.
    split = wait_for(
        lambda: (owned(first), owned(second)),
        lambda parts: bool(parts[0]) and bool(parts[1]) and len(parts[0] + parts[1]) == 4,
        timeout=120,
        what="the partitions split between a and b",
    )
    producer.wait_more(600, "increments sent while both workers run")
    assert producer.is_alive()
    assert first.stop() == 0, first.log_text()[-3000:]
    wait_for(
        lambda: owned(second),
        lambda parts: len(parts) == 4,
        timeout=120,
        what="b owning every partition after a stopped",
    )
    producer.wait_more(300, "increments sent after a stopped")
    producer.finish()
    producer.join(timeout=60)
    assert not producer.is_alive() and not producer.failures, producer.failures[:5]
    sent = producer.total
    print(f"split {split}; sent {sent}")

    report = committed_fold(settings, sent)
    assert not report.duplicates, (
        f"events in the log twice: {dict(list(report.duplicates.items())[:10])}"
    )
    assert not report.gaps, f"sequence gaps: {dict(list(report.gaps.items())[:10])}"
    assert report.events == sent, "one event per acknowledged increment"
    assert {i: state["value"] for i, (_, state) in report.folded.items()} == dict(producer.acked)
    # The cached states (the changelog) catch up with the log at b's next commit.
    wait_for(
        lambda: fold_log(counter, settings),
        lambda found: not found.mismatched,
        timeout=60,
        what="every cached state equal to the fold of its events",
    )
    second.stop()
