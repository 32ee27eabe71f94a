"""The cells runtime across a real broker: real `faust worker` processes running tests.apps.probe.

Each test starts its own worker(s) on a fresh app id (its own topics), talks to them through
Kafka (CellClient) and reads back through the worker's HTTP views, the changelog topics, the
dead-letter topic and the probe's log files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from stream_app.clients.cells import CellClient
from stream_app.core.dead_letters import DeadLetter
from stream_app.core.partitioner import partition_for
from stream_app.testing import (
    WorkerProcess,
    committed_to_end,
    read_topic,
    settings_from_env,
    wait_for,
)

MODULE = "tests.apps.probe"
PARTITIONS = 4


@pytest.fixture
def probe_env(cells_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """cells_env plus the probe's log files and fix flag, all under tmp_path."""
    return {
        **cells_env,
        "PROBE_TIMER_LOG": str(tmp_path / "timers.log"),
        "PROBE_EFFECT_LOG": str(tmp_path / "effects.log"),
        "PROBE_HANDLER_LOG": str(tmp_path / "handler.log"),
        "PROBE_FIX_FILE": str(tmp_path / "fixed"),
    }


def send(env: dict[str, str], *messages: tuple[str, str, dict[str, Any]]) -> None:
    """Send (cell, type, body) messages to the probe behaviour and wait for their acks."""
    with CellClient(settings_from_env(env)) as client:
        for cell, type_, body in messages:
            client.send("probe", cell, type_, body)


def cell(worker: WorkerProcess, cell_id: str) -> dict[str, Any]:
    """The probe cell as the worker describes it."""
    result: dict[str, Any] = worker.get_json(f"/stream-app/cells/probe/{cell_id}/")
    return result


def data_of(worker: WorkerProcess, cell_id: str) -> dict[str, Any] | None:
    described = cell(worker, cell_id)
    data: dict[str, Any] | None = described.get("data")
    return data


def lines(path: str) -> list[list[str]]:
    try:
        return [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def wait_input_committed(bootstrap: str, env: dict[str, str]) -> None:
    """Wait until the worker's group has committed the probe's input to its end (what it did is
    durable then: its changelog records were acknowledged first)."""
    app_id = env["STREAM_APP_APP_ID"]
    wait_for(
        lambda: committed_to_end(bootstrap, app_id, f"{app_id}.probe.in"),
        bool,
        timeout=60,
        what="input offsets committed",
    )


def same_partition_cells(count: int, *, prefix: str = "c") -> list[str]:
    """``count`` cell ids that murmur2 puts on one partition."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        cid = f"{prefix}{i}"
        if partition_for(cid.encode(), PARTITIONS) == 0:
            found.append(cid)
        i += 1
    return found


def test_lifecycle_dead_alive_dead_leaves_a_tombstone(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess], bootstrap: str
) -> None:
    worker = start_worker(MODULE, probe_env)
    send(
        probe_env, ("life", "add", {"by": 3}), ("life", "timer", {"name": "t", "after_ms": 60_000})
    )
    seen = wait_for(
        lambda: cell(worker, "life"),
        lambda c: c["alive"] and [t["name"] for t in c["timers"]] == ["t"],
        timeout=60,
        what="cell alive with its timer",
    )
    assert seen["data"]["count"] == 3
    send(probe_env, ("life", "clear", {}))
    wait_for(lambda: cell(worker, "life"), lambda c: not c["alive"], timeout=60, what="cell dead")

    # The view shows RocksDB, which is ahead of the changelog records still in the producer
    # (they are acknowledged by the next commit): wait for the tombstones to arrive.
    app_id = probe_env["STREAM_APP_APP_ID"]
    changelog = wait_for(
        lambda: [r for r in read_topic(bootstrap, f"{app_id}-probe-changelog") if r.key == b"life"],
        lambda records: bool(records) and records[-1].value is None,
        timeout=60,
        what="the cell's tombstone in its changelog",
    )
    assert changelog[0].value is not None and json.loads(changelog[0].value)["data"]["count"] == 3
    timers = wait_for(
        lambda: [
            r for r in read_topic(bootstrap, f"{app_id}-probe-timers-changelog") if b"life" in r.key
        ],
        lambda records: len(records) >= 2,
        timeout=60,
        what="the timer and its tombstone in the timers changelog",
    )
    assert [r.value is None for r in timers] == [False, True], "the timer dies with the cell"


def test_boot_runs_once_per_live_cell_per_assignment(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess], bootstrap: str
) -> None:
    worker = start_worker(MODULE, probe_env, name="first")
    live = [f"b{i}" for i in range(20)]
    dead = [f"d{i}" for i in range(5)]
    send(
        probe_env,
        *[(c, "add", {"by": 1}) for c in live + dead],
        *[(c, "clear", {}) for c in dead],
    )
    wait_for(
        lambda: worker.get_json("/stream-app/cells/probe/"),
        lambda cells: sorted(cells) == sorted(live),
        timeout=60,
        what="20 live cells",
    )
    assert all(v["boots"] == 0 for v in worker.get_json("/stream-app/cells/probe/").values())
    # The cells are durable once their input is committed (their changelog records are then
    # acknowledged): a worker killed before that rebuilds its tables from the changelog without
    # them, and the messages read again make the cells anew, with no boot.
    wait_input_committed(bootstrap, probe_env)

    worker.kill()
    worker = start_worker(MODULE, probe_env, name="second")
    boots = wait_for(
        lambda: {c: v["boots"] for c, v in worker.get_json("/stream-app/cells/probe/").items()},
        lambda seen: seen == {c: 1 for c in live},
        timeout=60,
        what="each live cell booted once after SIGKILL",
    )
    assert sorted(boots) == sorted(live), "dead cells are not booted (nor revived)"

    assert worker.stop() == 0
    worker = start_worker(MODULE, probe_env, name="third")
    wait_for(
        lambda: {c: v["boots"] for c, v in worker.get_json("/stream-app/cells/probe/").items()},
        lambda seen: seen == {c: 2 for c in live},
        timeout=60,
        what="each live cell booted once more after a graceful restart",
    )
    # A later message is not a boot: boots stay at 2.
    before = data_of(worker, "b0")
    assert before is not None
    send(probe_env, ("b0", "add", {"by": 1}))
    after = wait_for(
        lambda: data_of(worker, "b0"),
        lambda d: d is not None and d["count"] == before["count"] + 1,
        timeout=60,
    )
    assert after is not None and after["boots"] == 2


def test_timer_set_before_sigkill_fires_after_restart(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess], bootstrap: str
) -> None:
    worker = start_worker(MODULE, probe_env, name="first")
    send(probe_env, ("sleeper", "timer", {"name": "wake", "after_ms": 8000}))
    wait_for(
        lambda: cell(worker, "sleeper"),
        lambda c: [t["name"] for t in c["timers"]] == ["wake"],
        timeout=60,
        what="timer pending",
    )
    # Once the message's offset is committed the timer is durable; a SIGKILL before that would
    # replay the message (at least once) and set the timer again.
    wait_input_committed(bootstrap, probe_env)
    worker.kill()
    assert lines(probe_env["PROBE_TIMER_LOG"]) == [], "the timer must not have fired yet"

    worker = start_worker(MODULE, probe_env, name="second")
    fired = wait_for(
        lambda: lines(probe_env["PROBE_TIMER_LOG"]),
        lambda rows: len(rows) >= 1,
        timeout=60,
        what="timer fired after restart",
    )
    assert [row[1:3] for row in fired] == [["sleeper", "wake"]]
    described = wait_for(
        lambda: cell(worker, "sleeper"), lambda c: c["data"]["fired"] == 1, timeout=30
    )
    assert described["timers"] == [], "a fired one-shot timer is no longer pending"


def test_named_timers_replace_and_cancel(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(MODULE, probe_env)
    send(
        probe_env,
        ("named", "timer", {"name": "a", "after_ms": 120_000}),
        ("named", "timer", {"name": "a", "after_ms": 500}),  # replaces the first "a"
        ("named", "timer", {"name": "b", "after_ms": 1000}),
        ("named", "cancel", {"name": "b"}),
        ("named", "timer", {"name": "c", "after_ms": 2000}),  # fires after b would have
    )
    fired = wait_for(
        lambda: lines(probe_env["PROBE_TIMER_LOG"]),
        lambda rows: any(row[2] == "c" for row in rows),
        timeout=60,
        what="sentinel timer c fired",
    )
    assert [row[2] for row in fired] == ["a", "c"], f"fired: {fired}"
    described = cell(worker, "named")
    assert described["timers"] == [] and described["data"]["fired"] == 2


def test_misfire_policies_for_timers_due_while_unowned(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(MODULE, probe_env)
    # Recurring every 60 s with occurrences 150, 90 and 30 s ago: all came due before this
    # worker owned the partition (it started well under 30 s ago).
    start = int(time.time() * 1000) - 150_000
    timer = {"name": "r", "at_ms": start, "every_ms": 60_000}
    send(
        probe_env,
        ("once", "timer", {**timer, "misfire": "fire_once"}),
        ("catch", "timer", {**timer, "misfire": "catch_up", "max_catch_up": 2}),
        ("skip", "timer", {**timer, "misfire": "skip"}),
        ("late", "timer", {"name": "r", "at_ms": start, "misfire": "skip"}),  # one-shot
        ("marker", "timer", {"name": "m", "after_ms": 1500}),
    )
    rows = wait_for(
        lambda: lines(probe_env["PROBE_TIMER_LOG"]),
        lambda rows: any(r[1] == "marker" for r in rows),
        timeout=60,
        what="the marker timer fired after the misfired ones were handled",
    )
    by_cell: dict[str, list[tuple[int, str]]] = {}
    for due, cell_id, _name, missed in rows:
        by_cell.setdefault(cell_id, []).append((int(due), missed))
    assert by_cell["once"] == [(start + 120_000, "2")], "fire once: the latest, 2 coalesced"
    assert by_cell["catch"] == [(start + 60_000, "0"), (start + 120_000, "1")]
    assert "skip" not in by_cell and "late" not in by_cell
    skipped = cell(worker, "skip")
    assert [t["due_ms"] for t in skipped["timers"]] == [start + 180_000], "re-armed, not fired"
    assert cell(worker, "late")["timers"] == [], "a misfired one-shot under skip is dropped"
    metrics = worker.get_json("/stream-app/metrics/")
    assert metrics["timers_skipped"] == 2


def test_effects_are_retried_with_the_same_id_and_dead_lettered_when_they_keep_failing(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess], bootstrap: str
) -> None:
    start_worker(MODULE, probe_env)
    send(
        probe_env,
        ("fx", "emit", {"kind": "flaky", "payload": {"n": 1}}),
        ("fx", "emit", {"kind": "broken"}),
    )
    rows = wait_for(
        lambda: lines(probe_env["PROBE_EFFECT_LOG"]),
        lambda rows: (
            sum(r[0] == "flaky" for r in rows) >= 3 and sum(r[0] == "broken" for r in rows) >= 3
        ),
        timeout=60,
        what="effect attempts",
    )
    flaky = [r for r in rows if r[0] == "flaky"]
    assert [r[2] for r in flaky] == ["1", "2", "3"]
    assert len({r[1] for r in flaky}) == 1, "every retry sees the same effect id"

    app_id = probe_env["STREAM_APP_APP_ID"]
    letters = wait_for(
        lambda: [
            DeadLetter.from_record(r.key, r.value, r.headers)
            for r in read_topic(bootstrap, f"{app_id}.dead-letters")
        ],
        lambda found: len(found) >= 1,
        timeout=60,
        what="dead letter of the broken effect",
    )
    assert [(d.reason, d.behaviour) for d in letters] == [("effect-failed", "effect:broken")]
    assert "broken effect handler" in letters[0].error
    assert letters[0].source_topic == f"{app_id}.effects"
    broken_id = next(r[1] for r in rows if r[0] == "broken")
    assert letters[0].value is not None and json.loads(letters[0].value)["id"] == broken_id


def test_parked_cell_holds_its_messages_while_its_partition_flows(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(MODULE, probe_env)
    sick, healthy = same_partition_cells(2)
    send(
        probe_env,
        (sick, "note", {"tag": "before"}),
        (sick, "poison", {"tag": "p1"}),
        (sick, "note", {"tag": "n2"}),
        (healthy, "add", {"by": 5}),
        (sick, "note", {"tag": "n3"}),
        (healthy, "add", {"by": 5}),
    )
    wait_for(
        lambda: data_of(worker, healthy),
        lambda d: d is not None and d["count"] == 10,
        timeout=60,
        what="the other cell on the partition keeps being served",
    )
    parked = wait_for(
        lambda: worker.get_json("/stream-app/parked/probe/"),
        lambda p: p.get(sick, {}).get("waiting") == 3,
        timeout=60,
        what="poisoned cell parked with 3 waiting",
    )
    assert "poison p1" in parked[sick]["error"]
    described = cell(worker, sick)
    assert described["data"]["applied"] == ["before"]
    assert [item["kind"] for item in described["parked"]["items"]] == ["message"] * 3

    Path(probe_env["PROBE_FIX_FILE"]).touch()
    with CellClient(settings_from_env(probe_env)) as client:
        client.release("probe", sick)
    released = wait_for(
        lambda: cell(worker, sick),
        lambda c: c["parked"] is None,
        timeout=60,
        what="released cell replayed",
    )
    assert released["data"]["applied"] == ["before", "p1", "n2", "n3"]
    assert worker.get_json("/stream-app/parked/probe/") == {}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_bad_input_goes_to_dead_letters_with_its_reason(
    probe_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    bootstrap: str,
    guarantee: str,
) -> None:
    """Under exactly_once the dead letters go out in the input partition's transaction, and
    are read back read_committed like the others."""
    probe_env = {
        **probe_env,
        "STREAM_APP_MAX_MESSAGE_BYTES": "100000",
        "STREAM_APP_PROCESSING_GUARANTEE": guarantee,
    }
    worker = start_worker(MODULE, probe_env)
    app_id = probe_env["STREAM_APP_APP_ID"]
    topic = f"{app_id}.probe.in"
    bad: list[tuple[bytes | None, bytes, str]] = [
        (b"k1", b"{not json", "malformed-json"),
        (b"k2", b'{"type": "add", "body": {"by": "many"}}', "schema"),
        (b"k2", b'{"type": "add", "body": {"by": "2"}}', "schema"),  # strict: not coerced
        (b"k3", b'{"type": "explode"}', "unknown-type"),
        (b"k4", b'{"type": "add", "body": {}, "pad": "' + b"x" * 150_000 + b'"}', "oversized"),
        (None, b'{"type": "add"}', "invalid-key"),
        (b"k5", b'{"type": "reject"}', "rejected"),
    ]
    failures: list[str] = []
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value, _ in bad:
        producer.produce(
            topic,
            key=key,
            value=value,
            partition=0,
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
        )
    assert producer.flush(30) == 0 and failures == []
    send(probe_env, ("after", "add", {"by": 1}))
    wait_for(
        lambda: data_of(worker, "after"), lambda d: d is not None and d["count"] == 1, timeout=60
    )
    letters = wait_for(
        lambda: [
            DeadLetter.from_record(r.key, r.value, r.headers)
            for r in read_topic(bootstrap, f"{app_id}.dead-letters")
        ],
        lambda found: len(found) >= len(bad),
        timeout=60,
        what="one dead letter per bad record",
    )
    # Dead letters are keyed like their originals, so they spread over partitions: sort.
    letters.sort(key=lambda d: d.source_offset)
    assert [d.reason for d in letters] == [reason for _, _, reason in bad]
    assert all(d.behaviour == "probe" and d.source_topic == topic for d in letters)
    assert len({d.source_offset for d in letters}) == len(bad)
    assert all(d.source_partition == 0 for d in letters)
    assert worker.alive()
    assert worker.get_json("/stream-app/metrics/")["dead_letters"]["schema"] == 2
    assert data_of(worker, "k2") is None, "no body of k2 was applied"


def test_reactor_handlers_each_get_every_record(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess], bootstrap: str
) -> None:
    start_worker(MODULE, probe_env)
    app_id = probe_env["STREAM_APP_APP_ID"]
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(40):
        producer.produce(f"{app_id}.audit", key=f"k{i}".encode(), value=b"x")
    assert producer.flush(30) == 0
    rows = wait_for(
        lambda: lines(probe_env["PROBE_HANDLER_LOG"]),
        lambda rows: len(rows) >= 80,
        timeout=60,
        what="both handlers saw all 40 records",
    )
    first = {(r[1], r[2]) for r in rows if r[0] == "first"}
    second = {(r[1], r[2]) for r in rows if r[0] == "second"}
    assert len(first) == 40 and first == second
    for row_first, row_second in zip(rows[0::2], rows[1::2], strict=True):
        assert row_first[0] == "first" and row_second[0] == "second"
        assert row_first[1:] == row_second[1:], "handlers run in registration order per record"


def test_misrouted_records_are_forwarded_and_injected_messages_arrive(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess], bootstrap: str
) -> None:
    worker = start_worker(MODULE, probe_env)
    app_id = probe_env["STREAM_APP_APP_ID"]
    home = partition_for(b"stray", PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(
        f"{app_id}.probe.in",
        key=b"stray",
        value=b'{"type": "add", "body": {"by": 7}}',
        partition=(home + 1) % PARTITIONS,
    )
    assert producer.flush(30) == 0
    send(probe_env, ("stray", "add", {"by": 1}))
    wait_for(
        lambda: data_of(worker, "stray"), lambda d: d is not None and d["count"] == 8, timeout=60
    )
    assert worker.get_json("/stream-app/metrics/")["misrouted"] == 1

    send(probe_env, ("relay", "relay", {"to": "target", "by": 4}))
    wait_for(
        lambda: data_of(worker, "target"),
        lambda d: d is not None and d["count"] == 4,
        timeout=60,
        what="injected message applied",
    )


def test_two_workers_share_the_partitions_and_route_inspection_to_the_owner(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    first = start_worker(MODULE, probe_env, name="first")
    # Each worker keeps its RocksDB files on its own disk.
    own_disk = {**probe_env, "STREAM_APP_DATA_DIR": probe_env["STREAM_APP_DATA_DIR"] + "-2"}
    second = start_worker(MODULE, own_disk, name="second")
    ids = [f"w{i}" for i in range(40)]
    send(probe_env, *[(c, "add", {"by": 2}) for c in ids])

    def owned(worker: WorkerProcess) -> list[int]:
        parts: list[int] = worker.get_json("/stream-app/metrics/")["behaviours"]["probe"][
            "partitions"
        ]
        return parts

    split = wait_for(
        lambda: (owned(first), owned(second)),
        lambda pair: bool(pair[0]) and bool(pair[1]) and sorted(pair[0] + pair[1]) == [0, 1, 2, 3],
        timeout=60,
        what="the four partitions split between the two workers",
    )
    everything = wait_for(
        lambda: first.get_json("/stream-app/cells/probe/"),
        lambda cells: sorted(cells) == sorted(ids),
        timeout=60,
        what="the listing gathers the cells of both workers",
    )
    assert all(data["count"] == 2 for data in everything.values())
    local = first.get_json("/stream-app/cells/probe/?local=1")
    assert 0 < len(local) < len(ids), "each worker holds only its own partitions' cells"
    remote = next(c for c in ids if c not in local)
    assert partition_for(remote.encode(), PARTITIONS) in split[1]
    assert cell(first, remote)["data"]["count"] == 2, "routed to the worker that owns it"

    # A page: the first ids of both workers' cells, in order, and the count of them all.
    page = second.get_json("/stream-app/cells/probe/?limit=5")
    assert page == {"total": len(ids), "cells": {c: everything[c] for c in sorted(ids)[:5]}}
    mine = second.get_json("/stream-app/cells/probe/?limit=5&local=1")
    assert mine["total"] == len(ids) - len(local)


def test_a_parked_cell_stays_parked_across_a_restart(
    probe_env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(MODULE, probe_env, name="first")
    send(probe_env, ("stuck", "poison", {"tag": "p1"}), ("stuck", "note", {"tag": "n1"}))
    wait_for(
        lambda: worker.get_json("/stream-app/parked/probe/"),
        lambda p: p.get("stuck", {}).get("waiting") == 2,
        timeout=60,
        what="cell parked with 2 waiting",
    )
    worker.kill()
    worker = start_worker(MODULE, probe_env, name="second")
    send(probe_env, ("stuck", "note", {"tag": "n2"}))
    wait_for(
        lambda: worker.get_json("/stream-app/parked/probe/"),
        lambda p: p.get("stuck", {}).get("waiting") == 3,
        timeout=60,
        what="after the restart, the cell's next message waits behind the parked ones",
    )
    assert cell(worker, "stuck")["data"] is None, "nothing was applied while parked"
    Path(probe_env["PROBE_FIX_FILE"]).touch()
    with CellClient(settings_from_env(probe_env)) as client:
        client.release("probe", "stuck")
    released = wait_for(lambda: cell(worker, "stuck"), lambda c: c["parked"] is None, timeout=60)
    # Records replayed after the SIGKILL are recognised by their origin and not queued twice.
    assert released["data"]["applied"] == ["p1", "n1", "n2"]
