"""Three workers share the partitions as they come and go: state, boots and timers move with them.

Real ``faust worker`` processes of ``tests.apps.probe`` on one fresh app id (6 partitions), each
with its own state dir, its own timer log, a driven clock (so the timers come due when the test
says, after the partitions have moved) and static group membership
(``STREAM_APP_GROUP_INSTANCE_ID``), as a StatefulSet deploys them. One worker starts and its
cells get state and a pending timer; two more join and take partitions; a SIGKILLed worker
restarted with its instance id takes its own partitions back; a worker stopped for good hands
its partitions to the others once its session expires. After each move the test checks, through
the owner-routed views and the timer logs, that every cell's state is there, that ``on_boot``
ran for the live cells of each partition on its new owner (and only there), and that each
pending timer fired once, on the worker that owned its cell when it came due.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from stream_app.clients.cells import CellClient
from stream_app.core.partitioner import partition_for
from stream_app.testing import (
    DrivenClock,
    WorkerProcess,
    committed_to_end,
    settings_from_env,
    wait_for,
)

MODULE = "tests.apps.probe"
#: Divisible by 1, 2 and 3 workers. With standbys, Faust's assignor keeps a worker's partitions
#: up to ceil(partitions / workers) each: 4 partitions over 3 workers would stay 2 + 2 + 0.
PARTITIONS = 6
CELLS = [f"r{i}" for i in range(24)]
HOUR_MS = 3_600_000
#: Long enough for a SIGKILLed worker to start again on a loaded machine before its session
#: ends; a worker stopped for good holds its partitions this long (a static member does not
#: leave the group).
SESSION_TIMEOUT_S = "12"


@pytest.fixture
def app_topics_deleted(bootstrap: str, cells_env: dict[str, str]) -> Iterator[None]:
    """Delete the app's topics after the test (its workers are stopped by then: the worker
    fixture's teardown runs first, having been set up after this one)."""
    yield
    admin = AdminClient({"bootstrap.servers": bootstrap})
    prefix = cells_env["STREAM_APP_APP_ID"]
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()


def send(env: dict[str, str], type_: str, body: dict[str, Any]) -> None:
    """Send one message of ``type_`` to every cell (acknowledged before it returns)."""
    with CellClient(settings_from_env(env)) as client:
        for cell_id in CELLS:
            client.send("probe", cell_id, type_, body)


def owned(worker: WorkerProcess) -> list[int]:
    """The probe partitions ``worker`` owns."""
    parts: list[int] = worker.get_json("/stream-app/metrics/")["behaviours"]["probe"]["partitions"]
    return parts


def ownership(workers: dict[str, WorkerProcess]) -> dict[int, str]:
    """Which worker owns each partition, once every partition has exactly one owner."""

    def seen() -> dict[str, list[int]]:
        return {name: owned(worker) for name, worker in workers.items()}

    settled = wait_for(
        seen,
        lambda by: (
            all(by.values())
            and sorted(p for parts in by.values() for p in parts) == list(range(PARTITIONS))
        ),
        timeout=90,
        what=f"the {PARTITIONS} partitions split between {sorted(workers)}",
    )
    return {p: name for name, parts in settled.items() for p in parts}


def cells(worker: WorkerProcess) -> dict[str, dict[str, Any]]:
    """Every live probe cell, gathered from every worker by ``worker``."""
    found: dict[str, dict[str, Any]] = worker.get_json("/stream-app/cells/probe/")
    return found


def wait_cells(
    worker: WorkerProcess, want: Callable[[str, dict[str, Any]], bool], what: str
) -> dict[str, dict[str, Any]]:
    """Wait until every cell is live and ``want(cell_id, data)`` holds for each."""
    return wait_for(
        lambda: cells(worker),
        lambda seen: sorted(seen) == sorted(CELLS) and all(want(c, seen[c]) for c in CELLS),
        timeout=90,
        what=what,
    )


def pending(worker: WorkerProcess, cell_id: str) -> list[str]:
    """Names of the cell's pending timers, from its owner (the view is routed there)."""
    described = worker.get_json(f"/stream-app/cells/probe/{cell_id}/")
    return [timer["name"] for timer in described["timers"]]


def firings(log: Path, timer: str) -> list[str]:
    """The cells whose timer ``timer`` the worker with timer log ``log`` fired."""
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines() if line.strip()]
    return [row[1] for row in rows if row[2] == timer]


def partition_of(cell_id: str) -> int:
    return partition_for(cell_id.encode(), PARTITIONS)


def settle(
    viewer: WorkerProcess,
    workers: dict[str, WorkerProcess],
    before: dict[int, str],
    boots: dict[int, int],
    state: Callable[[dict[str, Any]], bool],
) -> dict[int, str]:
    """Wait until ``workers`` share the partitions, count a boot for each partition whose owner
    changed since ``before`` (in ``boots``), and wait until every cell has been booted that
    many times and its data passes ``state``; the new owners."""
    after = ownership(workers)
    for p, owner in after.items():
        boots[p] += int(owner != before[p])
    wait_cells(
        viewer,
        lambda c, d: state(d) and d["boots"] == boots[partition_of(c)],
        f"cells booted {boots} times by partition, on their owners {after}",
    )
    return after


def test_three_workers_move_state_boots_and_timers_as_they_come_and_go(
    bootstrap: str,
    cells_env: dict[str, str],
    app_topics_deleted: None,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    assert {partition_of(c) for c in CELLS} == set(range(PARTITIONS)), "cells on every partition"
    app = {**cells_env, "STREAM_APP_PARTITIONS": str(PARTITIONS)}
    app_id = app["STREAM_APP_APP_ID"]
    clock = DrivenClock(bootstrap, app_id)
    clock.set(clock.now_ms)  # a driven worker starts at the latest time of the clock topic
    logs = {name: tmp_path / f"{name}.timers" for name in "abc"}

    def env(name: str) -> dict[str, str]:
        return {
            **app,
            "STREAM_APP_CLOCK": "driven",
            "STREAM_APP_SESSION_TIMEOUT_S": SESSION_TIMEOUT_S,
            "STREAM_APP_GROUP_INSTANCE_ID": f"worker-{name}",
            "STREAM_APP_DATA_DIR": str(tmp_path / f"data-{name}"),
            "PROBE_TIMER_LOG": str(logs[name]),
        }

    def all_seen(clock_workers: list[WorkerProcess]) -> None:
        for worker in clock_workers:
            clock.wait_seen(worker)

    def fired_on_owners(timer: str, owners: dict[int, str]) -> None:
        """Each cell's ``timer`` fired once in all, on the owner of its partition."""
        by_worker = {name: firings(log, timer) for name, log in logs.items()}
        everywhere = Counter(c for fired in by_worker.values() for c in fired)
        assert everywhere == Counter(CELLS), f"{timer}: fired once per cell: {everywhere}"
        for name, fired in by_worker.items():
            strays = [c for c in fired if owners[partition_of(c)] != name]
            assert not strays, f"{timer} fired on worker {name}, not the owner: {strays}"

    # One worker: every cell gets a count and a timer due in an hour (driven time).
    a = start_worker(MODULE, env("a"), name="a")
    workers = {"a": a}
    send(app, "add", {"by": 3})
    send(app, "timer", {"name": "first", "after_ms": HOUR_MS})
    wait_cells(a, lambda _c, d: d["count"] == 3 and d["boots"] == 0, "3 in every cell on a")
    wait_for(
        lambda: [pending(a, c) for c in CELLS],
        lambda seen: all(names == ["first"] for names in seen),
        timeout=60,
        what="a first timer pending in every cell",
    )

    # Two workers join, one after the other: the partitions each takes boot there, once;
    # state and timers come along.
    owners = {p: "a" for p in range(PARTITIONS)}
    boots = dict.fromkeys(range(PARTITIONS), 0)
    for name in "bc":
        workers[name] = start_worker(MODULE, env(name), name=name)
        owners = settle(a, workers, owners, boots, lambda d: d["count"] == 3)
    assert set(owners.values()) == {"a", "b", "c"}
    assert all(pending(a, c) == ["first"] for c in CELLS), "the timers moved with the cells"

    clock.advance(2 * HOUR_MS / 1000)
    all_seen(list(workers.values()))
    wait_cells(a, lambda _c, d: d["fired"] == 1, "every first timer fired")
    fired_on_owners("first", owners)

    # A SIGKILLed worker restarted with its instance id gets its own partitions back (no
    # rebalance: the others keep theirs) with its state, and boots them again.
    assert wait_for(
        lambda: committed_to_end(bootstrap, app_id, f"{app_id}.probe.in"),
        lambda done: done,
        timeout=60,
        what="the input committed before the kill",
    )
    restarted = workers["c"]
    restarted.kill()
    restarted.start()
    restarted.wait_ready()
    assert ownership(workers) == owners, "the restarted static member took its partitions back"
    for p, owner in owners.items():
        boots[p] += int(owner == "c")
    wait_cells(
        a,
        lambda c, d: d["count"] == 3 and d["fired"] == 1 and d["boots"] == boots[partition_of(c)],
        "c's cells booted again after its restart, state intact",
    )

    # A worker stops for good: once its session ends, its partitions, state and pending timers
    # move to the other two.
    send(app, "timer", {"name": "second", "after_ms": HOUR_MS})
    wait_for(
        lambda: [pending(a, c) for c in CELLS],
        lambda seen: all(names == ["second"] for names in seen),
        timeout=60,
        what="a second timer pending in every cell",
    )
    assert workers.pop("b").stop() == 0
    before = owners
    owners = settle(a, workers, owners, boots, lambda d: d["count"] == 3)
    assert "b" in before.values() and "b" not in owners.values()
    assert all(pending(a, c) == ["second"] for c in CELLS), "b's timers moved with its cells"
    clock.advance(2 * HOUR_MS / 1000)
    all_seen(list(workers.values()))
    wait_cells(a, lambda _c, d: d["fired"] == 2, "every second timer fired")
    fired_on_owners("second", owners)
    fired_on_owners("first", before)

    # Nothing was lost, and the two workers left process every cell.
    send(app, "add", {"by": 1})
    wait_cells(a, lambda _c, d: d["count"] == 4, "4 in every cell")


def test_a_worker_started_with_an_instance_id_in_use_stops_saying_why(
    cells_env: dict[str, str],
    app_topics_deleted: None,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    app = {
        **cells_env,
        "STREAM_APP_PARTITIONS": str(PARTITIONS),
        "STREAM_APP_GROUP_INSTANCE_ID": "worker-a",
    }
    first = start_worker(MODULE, {**app, "STREAM_APP_DATA_DIR": str(tmp_path / "one")}, name="one")
    second = start_worker(
        MODULE, {**app, "STREAM_APP_DATA_DIR": str(tmp_path / "two")}, name="two", ready=False
    )
    assert second.process is not None
    status = wait_for(
        second.process.poll,
        lambda code: code is not None,
        timeout=90,
        what="the worker started with an instance id in use stops",
    )
    assert status != 0
    log = second.log_text()
    assert "ConfigError" in log and "STREAM_APP_GROUP_INSTANCE_ID" in log, log[-3000:]
    # The first worker carries on with every partition.
    send(app, "add", {"by": 1})
    wait_cells(first, lambda _c, d: d["count"] == 1, "every cell counted by the first worker")
    assert sorted(owned(first)) == list(range(PARTITIONS))
