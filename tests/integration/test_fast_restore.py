"""Table restore through the fast path (stream_app.kafka.restore): a fresh worker with an empty
state dir rebuilds exactly the state its predecessor had, byte for byte, from the changelogs;
tombstones delete, and under exactly_once an aborted transaction's changelog records are not
restored. Standby partitions of a second worker are restored the same way."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import rocksdict
from confluent_kafka import Producer

from stream_app.kafka.faust_patches import FAUST_OFFSET_KEY
from stream_app.testing import (
    WorkerProcess,
    keyed_producer,
    read_topic,
    settings_from_env,
    wait_for,
)
from stream_app.testing.counts import produce_acked, wait_counts

pytestmark = pytest.mark.integration

#: The summary line a fast restore logs (stream_app.kafka.restore).
RESTORED = re.compile(r"restored (\d+) records into (\d+) (active|standby) partition")


def fast_restores(worker: WorkerProcess) -> dict[str, int]:
    """Records the fast path applied in this start of ``worker``, by ``active``/``standby``."""
    totals = {"active": 0, "standby": 0}
    for records, _, title in RESTORED.findall(worker.log_text()):
        totals[title] += int(records)
    return totals


def table_contents(data_dir: Path, table: str) -> dict[bytes, bytes]:
    """Every key and value of every partition database of ``table`` under ``data_dir`` (the
    worker must be stopped), without Faust's offset key."""
    found: dict[bytes, bytes] = {}
    paths = sorted(data_dir.glob(f"**/tables/{table}-*.db"))
    assert paths, f"no databases of {table} under {data_dir}"
    for path in paths:
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        try:
            for key, value in db.items():
                if key != FAUST_OFFSET_KEY:
                    assert key not in found, f"{key!r} in two partitions"
                    found[key] = value
        finally:
            db.close()
    return found


def build_state(bootstrap: str, topic: str) -> dict[str, int]:
    """Increment 40 counters, then reset ten of them (their changelog ends in a tombstone);
    the counts the live cells must have."""
    increment = json.dumps({"type": "increment", "body": {"by": 2}}).encode()
    records: list[tuple[bytes | None, bytes | None]] = []
    for round_ in range(5):
        records += [(f"c-{i}".encode(), increment) for i in range(40)]
        if round_ == 2:
            records += [(f"c-{i}".encode(), b'{"type": "reset"}') for i in range(10)]
    produce_acked(keyed_producer(bootstrap), topic, records)
    return {f"c-{i}": 4 if i < 10 else 10 for i in range(40)}


def state_built_and_stopped(
    bootstrap: str, env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> dict[str, int]:
    """A first worker builds :func:`build_state`, its changelog holds it, and it stops cleanly;
    the counts the live cells have."""
    settings = settings_from_env(env)
    changelog = settings.changelog_topic("counter")
    first = workers(env, name="first")
    expected = build_state(bootstrap, settings.input_topic("counter"))
    assert wait_counts(first, "counter", expected) == expected
    wait_for(
        lambda: changelog_has(bootstrap, changelog, expected),
        lambda ok: ok,
        timeout=60,
        what="the state in the changelog",
    )
    assert first.stop() == 0
    return expected


def changelog_has(bootstrap: str, topic: str, expected: dict[str, int]) -> bool:
    """Whether the latest changelog record of every cell gives ``expected`` (tombstones too)."""
    latest: dict[str, int | None] = {}
    for record in read_topic(bootstrap, topic):
        assert record.key is not None
        latest[record.key.decode()] = (
            None if record.value is None else json.loads(record.value)["data"]["count"]
        )
    return {k: v for k, v in latest.items() if v is not None} == expected


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_fresh_worker_restores_the_same_state_through_the_fast_path(
    guarantee: str,
    bootstrap: str,
    app_env: dict[str, str],
    workers: Callable[..., WorkerProcess],
) -> None:
    env = {**app_env, "STREAM_APP_PROCESSING_GUARANTEE": guarantee}
    settings = settings_from_env(env)
    changelog = settings.changelog_topic("counter")
    expected = state_built_and_stopped(bootstrap, env, workers)
    built = table_contents(Path(env["STREAM_APP_DATA_DIR"]), "counter")
    assert len(built) == len(expected)

    fresh_dir = env["STREAM_APP_DATA_DIR"] + "-fresh"
    fresh = workers({**env, "STREAM_APP_DATA_DIR": fresh_dir}, name="fresh")
    restored = fast_restores(fresh)
    # Every changelog record (the last value of each cell per batch, tombstones) came through
    # it...
    written = len(read_topic(bootstrap, changelog))
    assert written >= len(expected)
    assert restored["active"] >= written, fresh.log_text()[-3000:]
    # ...and left Faust's recovery nothing to read.
    assert "Restoring state from changelog topics" not in fresh.log_text()
    assert wait_counts(fresh, "counter", expected) == expected
    assert fresh.stop() == 0
    # Byte for byte what the first worker wrote, reset cells deleted.
    assert table_contents(Path(fresh_dir), "counter") == built


def test_aborted_changelog_records_are_not_restored(
    bootstrap: str, app_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    env = {**app_env, "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once"}
    settings = settings_from_env(env)
    changelog = settings.changelog_topic("counter")
    expected = state_built_and_stopped(bootstrap, env, workers)
    live = {r.key: r for r in read_topic(bootstrap, changelog) if r.value is not None}
    donor = live[b"c-20"]

    # A transaction that overwrites a cell, deletes another, adds one, and aborts; then one
    # that adds a copy of c-20's record under a new key and commits.
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"test-abort-{uuid.uuid4().hex[:8]}",
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    other = live[b"c-30"]
    producer.produce(changelog, key=b"c-30", value=live[b"c-11"].value, partition=other.partition)
    producer.produce(changelog, key=b"c-31", value=None, partition=live[b"c-31"].partition)
    producer.produce(changelog, key=b"ghost", value=donor.value, partition=donor.partition)
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(changelog, key=b"copy", value=donor.value, partition=donor.partition)
    producer.commit_transaction(30)

    fresh = workers({**env, "STREAM_APP_DATA_DIR": env["STREAM_APP_DATA_DIR"] + "-2"}, name="2")
    # Every committed record came through the fast path (read_committed: not the aborted).
    assert fast_restores(fresh)["active"] >= len(read_topic(bootstrap, changelog))
    want = {**expected, "copy": expected["c-20"]}
    assert wait_counts(fresh, "counter", want) == want


def test_a_second_worker_restores_its_standbys_through_the_fast_path(
    bootstrap: str, app_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    settings = settings_from_env(app_env)
    first = workers(app_env, name="first")
    expected = build_state(bootstrap, settings.input_topic("counter"))
    assert wait_counts(first, "counter", expected) == expected
    wait_for(
        lambda: changelog_has(bootstrap, settings.changelog_topic("counter"), expected),
        lambda ok: ok,
        timeout=60,
        what="the state in the changelog",
    )
    second_env = {**app_env, "STREAM_APP_DATA_DIR": app_env["STREAM_APP_DATA_DIR"] + "-2"}
    second = workers(second_env, name="second")
    # The group now shares the partitions: the second worker restored its actives and the
    # standbys of the first one's partitions (Faust's default: one standby replica).
    restored = wait_for(
        lambda: fast_restores(second),
        lambda seen: seen["active"] > 0 and seen["standby"] > 0,
        timeout=60,
        what="active and standby restores in the second worker",
    )
    written = len(read_topic(bootstrap, settings.changelog_topic("counter")))
    assert restored["active"] + restored["standby"] >= written
    assert wait_counts(second, "counter", expected) == expected
