"""Reactor handlers across a real broker: where each resumes after a crash; injected records.

The guarantee (``stream_app/engine/reactor.py``): the handlers of a topic run one record at a
time, in registration order, in one Faust agent, and a record's offset is acknowledged only
after every handler is done with it. Faust commits the acknowledged offsets every
``STREAM_APP_COMMIT_INTERVAL_S`` (and when the worker stops or loses the partition). After a
SIGKILL the next worker starts at the partition's last committed offset, for *every* handler:

- the record a handler was inside when the worker died is handled again, by every handler
  (also by those that had finished it: the commit covers a record, not a handler);
- so is every record after the last commit, even one every handler had finished;
- no record before the last commit is handled again, and none is skipped.

Records injected from inside the worker (``Runtime.inject_record``, from a handler and from a
timer) are produced to the handlers' topic and reach them like any record, also after a crash.

The worker runs ``tests.apps.reactor_probe``: two handlers logging ``start``/``done`` lines to a
file per worker run, holding a chosen record while a file the test controls exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream_app.core.partitioner import partition_for
from stream_app.testing import WorkerProcess, read_topic, wait_for

MODULE = "tests.apps.reactor_probe"
HANDLERS = ("first", "second")
#: Records produced without a key go to this partition of the work topic, so offsets order them.
PARTITION = 0
#: The partitions of the work topic (``STREAM_APP_PARTITIONS`` of ``cells_env``).
PARTITIONS = 4


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the probe's log: a handler starting or finishing a record."""

    handler: str
    phase: str
    partition: int
    offset: int
    value: str


@dataclass(frozen=True)
class ReactorProbe:
    """A fresh app id running ``tests.apps.reactor_probe``: settings, hold files, run logs.

    Attributes:
        env: The workers' settings and the probe's variables (tests may add to it).
        tmp_path: Where the hold files, the injection file and the run logs are.
    """

    env: dict[str, str]
    tmp_path: Path
    bootstrap: str
    start_worker: Callable[..., WorkerProcess]

    @property
    def group(self) -> str:
        """The workers' consumer group (the app id)."""
        return self.env["STREAM_APP_APP_ID"]

    @property
    def topic(self) -> str:
        """The topic both handlers read."""
        return f"{self.group}.work"

    def hold(self, handler: str, value: str) -> Path:
        """Make ``handler`` wait inside the record ``value`` until the returned file goes."""
        path = Path(self.env["REACTOR_HOLD_DIR"]) / f"{handler}-{value}"
        path.touch()
        return path

    def start(self, name: str, **extra: str) -> tuple[WorkerProcess, Path]:
        """Start a worker (settings plus ``extra``) logging to its own run log ``<name>.handled``;
        the worker and its run log."""
        log = self.tmp_path / f"{name}.handled"
        env = {**self.env, **extra, "REACTOR_LOG": str(log)}
        return self.start_worker(MODULE, env, name=name), log

    def produce(
        self, values: list[str], *, key: bytes | None = None, partition: int = PARTITION
    ) -> dict[str, int]:
        """Produce ``values`` in order to one partition of the topic (the key's if there is a
        key, else ``partition``); their offsets by value."""
        if key is not None:
            partition = partition_for(key, PARTITIONS)
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all"})
        placed: dict[str, int] = {}

        def delivered(error: object, message: object) -> None:
            assert error is None, error
            placed[message.value().decode()] = message.offset()  # type: ignore[attr-defined]

        for value in values:
            producer.produce(
                self.topic,
                key=key,
                value=value.encode(),
                partition=partition,
                on_delivery=delivered,
            )
        assert producer.flush(30) == 0
        assert sorted(placed) == sorted(values)
        return placed

    def committed(self, partition: int = PARTITION) -> int | None:
        """The offset the group committed for ``partition`` of the topic (``None``: none)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            (tp,) = consumer.committed([TopicPartition(self.topic, partition)], timeout=10)
            return tp.offset if tp.offset >= 0 else None
        finally:
            consumer.close()

    def resume_points(self) -> dict[int, int]:
        """Where a worker taking each partition starts: the committed offset, or 0 (the app
        reads from the earliest offset when nothing is committed)."""
        return {p: self.committed(p) or 0 for p in range(PARTITIONS)}


@pytest.fixture
def probe(
    cells_env: dict[str, str],
    tmp_path: Path,
    bootstrap: str,
    start_worker: Callable[..., WorkerProcess],
) -> ReactorProbe:
    """A :class:`ReactorProbe` on ``cells_env``, its files under ``tmp_path``."""
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    env = {
        **cells_env,
        "REACTOR_HOLD_DIR": str(hold_dir),
        "REACTOR_INJECT_FILE": str(tmp_path / "inject"),
    }
    return ReactorProbe(env, tmp_path, bootstrap, start_worker)


def entries(path: Path) -> list[Entry]:
    """The lines a worker run logged so far."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    parsed = []
    for line in text.splitlines():
        handler, phase, partition, offset, value = line.split()
        parsed.append(Entry(handler, phase, int(partition), int(offset), value))
    return parsed


def offsets(log: list[Entry], handler: str, phase: str, partition: int = PARTITION) -> list[int]:
    """The offsets of ``partition`` that ``handler`` logged ``phase`` for, in log order."""
    return [
        e.offset
        for e in log
        if e.handler == handler and e.phase == phase and e.partition == partition
    ]


def wait_logged(path: Path, want: Callable[[list[Entry]], bool], what: str) -> list[Entry]:
    """Wait until the log at ``path`` satisfies ``want``."""
    return wait_for(lambda: entries(path), want, timeout=90, what=what)


def has(
    handler: str, phase: str, offset: int, partition: int = PARTITION
) -> Callable[[list[Entry]], bool]:
    """A predicate: the log shows ``handler`` logging ``phase`` for ``offset`` of ``partition``."""
    return lambda log: offset in offsets(log, handler, phase, partition)


def all_done(offsets_wanted: range, partition: int = PARTITION) -> Callable[[list[Entry]], bool]:
    """A predicate: every handler logged ``done`` for every offset in ``offsets_wanted`` of
    ``partition``."""
    return lambda log: all(
        set(offsets_wanted) <= set(offsets(log, h, "done", partition)) for h in HANDLERS
    )


def assert_resumed_at(
    after_kill: list[Entry], committed: int, end: int, partition: int = PARTITION
) -> None:
    """Each handler's run after the kill handled exactly ``committed .. end-1`` of
    ``partition``, in order, each record once and completely: it resumed at the committed
    offset, redid nothing before it and skipped nothing after it."""
    for handler in HANDLERS:
        started = offsets(after_kill, handler, "start", partition)
        assert started == list(range(committed, end)), (handler, partition, started)
        assert offsets(after_kill, handler, "done", partition) == started, (handler, partition)


def assert_every_record_done(logs: list[list[Entry]], end: int) -> None:
    """Over all the runs, every handler finished every record ``0 .. end-1`` at least once."""
    for handler in HANDLERS:
        done = {o for log in logs for o in offsets(log, handler, "done")}
        assert done == set(range(end)), (handler, sorted(set(range(end)) - done))


def test_kill_inside_the_second_handler_redoes_only_the_held_record(probe: ReactorProbe) -> None:
    """Commits every 0.3 s: everything before the held record is committed before the kill,
    so after it both handlers start again at the held record, ``first`` too (it had finished
    it), and nothing before it is handled twice."""
    probe.env["STREAM_APP_COMMIT_INTERVAL_S"] = "0.3"
    values = [f"m{i}" for i in range(1, 11)]
    held = probe.hold("second", "m6")

    worker, before_log = probe.start("before")
    placed = probe.produce(values)
    k, end = placed["m6"], placed["m10"] + 1
    assert sorted(placed.values()) == list(range(end)), "a fresh topic: offsets 0 .. N-1"

    wait_logged(before_log, has("second", "start", k), "second inside m6")
    # Everything before the held record is acknowledged; wait for the commit to cover it.
    wait_for(
        probe.committed,
        lambda offset: offset == k,
        timeout=30,
        what=f"offsets committed up to the held record ({k})",
    )
    worker.kill()
    before = entries(before_log)
    assert offsets(before, "first", "done") == list(range(k + 1)), "first had finished m6"
    assert offsets(before, "second", "done") == list(range(k)), "second was inside m6"
    assert offsets(before, "second", "start") == list(range(k + 1))
    committed = probe.committed()
    assert committed == k, "the held record was never committed"

    held.unlink()
    _, after_log = probe.start("after")
    after = wait_logged(after_log, all_done(range(k, end)), "both handlers done with m6..m10")
    assert_resumed_at(after, committed, end)
    assert_every_record_done([before, after], end)


def test_kill_inside_the_first_handler_redoes_everything_after_the_last_commit(
    probe: ReactorProbe,
) -> None:
    """Commits an hour apart: the only commit is the graceful stop of a first worker. A second
    worker finishes more records (both handlers) and is killed inside ``first`` on a later
    one; the third worker redoes every record after the stop's commit, for both handlers,
    including those the killed worker had finished, and none before it."""
    probe.env["STREAM_APP_COMMIT_INTERVAL_S"] = "3600"
    worker, stopped_log = probe.start("stopped")
    early = probe.produce([f"m{i}" for i in range(1, 5)])
    wait_logged(stopped_log, all_done(range(4)), "both handlers done with m1..m4")
    assert probe.committed() is None, "no periodic commit yet"
    assert worker.stop() == 0
    committed = probe.committed()
    assert committed == 4 and sorted(early.values()) == [0, 1, 2, 3], committed

    held = probe.hold("first", "m8")
    worker, killed_log = probe.start("killed")
    placed = probe.produce([f"m{i}" for i in range(5, 11)])
    k, end = placed["m8"], placed["m10"] + 1
    assert (k, end) == (7, 10)
    wait_logged(killed_log, has("first", "start", k), "first inside m8")
    worker.kill()
    killed = entries(killed_log)
    for handler in HANDLERS:
        assert offsets(killed, handler, "done")[:3] == [4, 5, 6], "m5..m7 were finished"
    assert offsets(killed, "first", "done") == [4, 5, 6], "first was inside m8"
    assert k not in offsets(killed, "second", "start"), "second never reached m8"
    assert probe.committed() == committed, "nothing committed since"

    held.unlink()
    _, after_log = probe.start("after")
    after = wait_logged(after_log, all_done(range(committed, end)), "m5..m10 done again")
    assert_resumed_at(after, committed, end)
    assert_every_record_done([entries(stopped_log), killed, after], end)


def test_records_injected_in_the_worker_reach_the_handlers_and_survive_a_kill(
    probe: ReactorProbe,
) -> None:
    """``first`` injects ``x1`` while handling ``relay:x1``; the worker is killed while
    ``second`` is inside ``relay:x1``, before anyone handled ``x1``. The injected record is in
    the topic (acknowledged before ``first`` finished), the next worker handles it with both
    handlers, and redoing ``relay:x1`` injects a second ``x1`` (at least once). A timer of the
    worker injects ``t1``, outside any record: both handlers get it too."""
    key = b"relay-key"
    partition = partition_for(key, PARTITIONS)
    held = probe.hold("second", "relay:x1")

    worker, killed_log = probe.start("killed")
    relay = probe.produce(["relay:x1"], key=key)["relay:x1"]
    wait_logged(killed_log, has("second", "start", relay, partition), "second inside relay:x1")
    worker.kill()
    killed = entries(killed_log)
    assert offsets(killed, "first", "done", partition) == [relay], "first injected x1"
    assert [e.value for e in killed if e.phase == "done"] == ["relay:x1"], "nobody handled x1"
    injected = [r for r in read_topic(probe.bootstrap, probe.topic) if r.value == b"x1"]
    assert [(r.key, r.partition, r.offset) for r in injected] == [(key, partition, relay + 1)]

    held.unlink()
    _, after_log = probe.start("after")
    # The relay is redone (it was not committed), so x1 is injected again after it.
    after = wait_logged(
        after_log, all_done(range(relay, relay + 3), partition), "relay:x1, x1, x1 again done"
    )
    for handler in HANDLERS:
        done = [(e.offset, e.value) for e in after if e.handler == handler and e.phase == "done"]
        assert done == [(relay, "relay:x1"), (relay + 1, "x1"), (relay + 2, "x1")], handler

    staged = probe.tmp_path / "inject.tmp"
    staged.write_text("t1")
    staged.rename(probe.env["REACTOR_INJECT_FILE"])  # the timer never sees a half-written file
    (t1,) = wait_for(
        lambda: [r for r in read_topic(probe.bootstrap, probe.topic) if r.value == b"t1"],
        bool,
        timeout=60,
        what="the timer's t1 in the topic",
    )
    assert (t1.key, t1.partition) == (b"timer", partition_for(b"timer", PARTITIONS))
    wait_logged(
        after_log,
        lambda log: all(Entry(h, "done", t1.partition, t1.offset, "t1") in log for h in HANDLERS),
        "both handlers done with t1",
    )


def contiguous_done(log: list[Entry], partition: int) -> int:
    """How many records of ``partition``, from offset 0 on, every handler finished."""
    done = set.intersection(*(set(offsets(log, h, "done", partition)) for h in HANDLERS))
    count = 0
    while count in done:
        count += 1
    return count


def test_a_surviving_worker_takes_over_at_the_killed_workers_last_commit(
    probe: ReactorProbe,
) -> None:
    """Two workers share the partitions; the one that owns partition 0 is killed while
    ``second`` is inside a record there. The survivor, in the rebalance that gives it the dead
    worker's partitions, resumes each of them at its last committed offset (for both
    handlers) and handles none of its own partitions again."""
    probe.env["STREAM_APP_COMMIT_INTERVAL_S"] = "0.3"
    data_dir = probe.env["STREAM_APP_DATA_DIR"]
    started = {name: probe.start(name, STREAM_APP_DATA_DIR=f"{data_dir}-{name}") for name in "ab"}
    workers = {name: worker for name, (worker, _) in started.items()}
    logs = {name: log for name, (_, log) in started.items()}

    def owned() -> dict[str, list[int]]:
        return {name: w.get_json("/reactor-probe/partitions/") for name, w in workers.items()}

    owners = wait_for(
        owned,
        lambda o: bool(o["a"]) and bool(o["b"]) and sorted(o["a"] + o["b"]) == [0, 1, 2, 3],
        timeout=90,
        what="the work topic's partitions split between the two workers",
    )
    holder = "a" if 0 in owners["a"] else "b"
    survivor = "b" if holder == "a" else "a"
    held = probe.hold("second", "p0-m4")
    per_partition = 6
    for p in range(PARTITIONS):
        probe.produce([f"p{p}-m{i}" for i in range(1, per_partition + 1)], partition=p)

    wait_logged(logs[holder], has("second", "start", 3), "second inside p0-m4")
    for p in owners[survivor]:
        wait_logged(logs[survivor], all_done(range(per_partition), p), f"the survivor did {p}")
    before_kill = entries(logs[holder])
    # What the holder finished (before the held record, and of its other partitions) is
    # acknowledged; wait for the periodic commits to cover it, then kill it.
    done = {p: contiguous_done(before_kill, p) for p in owners[holder]}
    done.update(dict.fromkeys(owners[survivor], per_partition))
    assert done[0] == 3, "p0-m1..m3 finished, p0-m4 held"
    wait_for(
        probe.resume_points,
        lambda seen: seen == done,
        timeout=30,
        what=f"commits covering every finished record {done}",
    )
    mark = len(entries(logs[survivor]))
    workers[holder].kill()
    assert entries(logs[holder]) == before_kill, "the holder was stuck in p0-m4"
    assert probe.resume_points() == done

    held.unlink()
    taken_over = wait_for(
        lambda: entries(logs[survivor])[mark:],
        lambda log: all(all_done(range(done[p], per_partition), p)(log) for p in range(PARTITIONS)),
        timeout=90,
        what="the survivor done with the rest of every partition",
    )
    for p in range(PARTITIONS):
        assert_resumed_at(taken_over, done[p], per_partition, p)
