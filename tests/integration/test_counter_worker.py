"""The counter example (a Behaviour on the runtime) as a real `faust worker` process on a real
broker: counts, the changelog, a crash under exactly_once, dead letters, misrouted keys."""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from stream_app.core.dead_letters import DeadLetter
from stream_app.core.partitioner import partition_for
from stream_app.testing import (
    WorkerProcess,
    keyed_producer,
    read_topic,
    settings_from_env,
    wait_for,
)
from stream_app.testing.counts import cell_counts, produce_acked, wait_counts

pytestmark = pytest.mark.integration

EXACTLY_ONCE = {"STREAM_APP_PROCESSING_GUARANTEE": "exactly_once"}


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    """Produce ``records`` as a careful client does (murmur2, acks=all, idempotent)."""
    produce_acked(keyed_producer(bootstrap), topic, records)


def increments(cells: int, count: int, seed: int) -> tuple[list[tuple[bytes, bytes]], Counter[str]]:
    """``count`` increment records spread over ``cells`` cells, and the counts they must give."""
    rng = random.Random(seed)
    records = []
    expected: Counter[str] = Counter()
    for _ in range(count):
        cell = f"cell-{rng.randrange(cells)}"
        by = rng.randint(1, 3)
        expected[cell] += by
        records.append(
            (cell.encode(), json.dumps({"type": "increment", "body": {"by": by}}).encode())
        )
    return records, expected


def changelog_state(bootstrap: str, topic: str) -> dict[str, int]:
    """The latest count per live cell as recorded in the changelog topic (read_committed)."""
    latest: dict[str, int | None] = {}
    for record in read_topic(bootstrap, topic):
        assert record.key is not None
        latest[record.key.decode()] = (
            None if record.value is None else json.loads(record.value)["data"]["count"]
        )
    return {k: v for k, v in latest.items() if v is not None}


def test_ten_thousand_messages_over_a_hundred_cells(
    bootstrap: str, app_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    settings = settings_from_env(app_env)
    worker = workers(app_env)
    records, expected = increments(100, 10_000, seed=1)
    produce(bootstrap, settings.input_topic("counter"), records)

    seen = wait_counts(worker, "counter", expected)
    assert len(seen) == 100
    assert sum(seen.values()) == sum(expected.values())
    # The state is in Kafka too, not only in the worker's RocksDB.
    changelog = wait_for(
        lambda: changelog_state(bootstrap, settings.changelog_topic("counter")),
        lambda state: state == dict(expected),
        timeout=60,
        what="changelog state",
    )
    assert changelog == dict(expected)
    assert worker.alive()


def test_sigkill_and_restart_continue_from_restored_state(
    bootstrap: str, app_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    # exactly_once: the killed worker's uncommitted transactions are aborted, its tables rebuilt
    # from the changelog on restart, and the records after its last commit applied again once.
    app_env = {**app_env, **EXACTLY_ONCE}
    settings = settings_from_env(app_env)
    topic = settings.input_topic("counter")
    first, expected = increments(100, 6_000, seed=2)

    worker = workers(app_env, name="worker-1")
    produce(bootstrap, topic, first)
    # Kill mid-stream: some of the records applied, some not, offsets partly committed.
    wait_for(
        lambda: sum(cell_counts(worker, "counter").values()),
        lambda total: total >= sum(expected.values()) // 4,
        timeout=120,
        what="a quarter of the first batch applied",
    )
    worker.kill()
    assert not worker.alive()

    second, more = increments(100, 4_000, seed=3)
    produce(bootstrap, topic, second)  # acknowledged while no worker runs
    expected += more

    restarted = workers(app_env, name="worker-2")
    seen = wait_counts(restarted, "counter", expected)
    assert seen == dict(expected), "exactly_once: a replay after the kill must not double-apply"

    # A worker that lost its disk rebuilds every cell from the changelog alone.
    restarted.kill()
    third, more = increments(100, 1_000, seed=4)
    produce(bootstrap, topic, third)
    expected += more
    fresh_env = {**app_env, "STREAM_APP_DATA_DIR": app_env["STREAM_APP_DATA_DIR"] + "-fresh"}
    rebuilt = workers(fresh_env, name="worker-3")
    assert wait_counts(rebuilt, "counter", expected) == dict(expected)


BAD_RECORDS: list[tuple[str, bytes | None, bytes | None]] = [
    ("malformed-json", b"bad-1", b"{not json"),
    ("malformed-json", b"bad-2", b"\xff\xfe\x00garbage"),
    ("malformed-json", b"bad-3", None),
    ("schema", b"bad-4", b'{"type": "increment", "body": {"by": "lots"}}'),
    ("schema", b"bad-5", b'{"type": "increment", "body": {"by": -3}}'),
    ("schema", b"bad-6", b'{"body": {"by": 1}}'),
    ("schema", b"bad-7", b"[1, 2, 3]"),
    ("schema", b"bad-8", b'{"type": "increment", "surprise": true}'),
    ("unknown-type", b"bad-9", b'{"type": "decrement"}'),
    ("oversized", b"bad-10", b'{"type": "increment", "pad": "' + b"x" * 70_000 + b'"}'),
    ("invalid-key", None, b'{"type": "increment"}'),
    ("invalid-key", b"\xc3\x28", b'{"type": "increment"}'),
]


def test_bad_input_goes_to_dead_letters_and_valid_input_still_counts(
    bootstrap: str, app_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    env = {**app_env, "STREAM_APP_MAX_MESSAGE_BYTES": "65536"}
    settings = settings_from_env(env)
    worker = workers(env)

    good, expected = increments(10, 300, seed=5)
    mixed: list[tuple[bytes | None, bytes | None]] = []
    for i, (key, value) in enumerate(good):
        mixed.append((key, value))
        if i % 25 == 0 and i // 25 < len(BAD_RECORDS):
            _, bad_key, bad_value = BAD_RECORDS[i // 25]
            mixed.append((bad_key, bad_value))
    produce(bootstrap, settings.input_topic("counter"), mixed)

    assert wait_counts(worker, "counter", expected) == dict(expected)
    letters = wait_for(
        lambda: read_topic(bootstrap, settings.dead_letter_topic),
        lambda records: len(records) >= len(BAD_RECORDS),
        timeout=60,
        what="all dead letters",
    )
    assert len(letters) == len(BAD_RECORDS)
    by_original = {
        (r.key, r.value): DeadLetter.from_record(r.key, r.value, r.headers) for r in letters
    }
    for reason, key, value in BAD_RECORDS:
        letter = by_original.get((key, value))
        assert letter is not None, f"no dead letter kept the original {key!r} {value!r:.80}"
        assert letter.reason == reason, (key, letter.reason, letter.error)
        assert not letter.truncated
        assert letter.error, letter
        assert letter.behaviour == "counter"
        assert letter.app == settings.app_id
        assert letter.source_topic == settings.input_topic("counter")
        assert letter.source_offset >= 0
    oversized = by_original[(b"bad-10", BAD_RECORDS[9][2])]
    assert "70" in oversized.error and "65536" in oversized.error
    # The dead letter points back at the very record that was rejected.
    source = {
        (r.partition, r.offset): (r.key, r.value)
        for r in read_topic(bootstrap, settings.input_topic("counter"))
    }
    for (key, value), letter in by_original.items():
        assert source[(letter.source_partition, letter.source_offset)] == (key, value)
    assert worker.get_json("/stream-app/dead-letters/") == dict(
        Counter(reason for reason, _, _ in BAD_RECORDS)
    )
    assert worker.alive()


#: Bodies the published JSON Schema rejects ("by" is an integer) that lax pydantic would coerce.
LAX_BODIES = [b'{"by": "2"}', b'{"by": true}', b'{"by": 2.0}']


def test_what_the_published_schema_rejects_is_a_schema_dead_letter(
    bootstrap: str, app_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    settings = settings_from_env(app_env)
    worker = workers(app_env)
    lax = [b'{"type": "increment", "body": ' + body + b"}" for body in LAX_BODIES]
    valid = b'{"type": "increment", "body": {"by": 3}}'
    # One cell, so one partition: the valid increment is read after the three others.
    produce(bootstrap, settings.input_topic("counter"), [(b"strict", v) for v in [*lax, valid]])

    letters = wait_for(
        lambda: read_topic(bootstrap, settings.dead_letter_topic),
        lambda records: len(records) >= len(lax),
        timeout=60,
        what="a dead letter per body the schema rejects",
    )
    found = [DeadLetter.from_record(r.key, r.value, r.headers) for r in letters]
    assert sorted(r.value or b"" for r in letters) == sorted(lax), "originals kept byte for byte"
    assert [d.reason for d in found] == ["schema"] * len(lax)
    assert all("increment.body.by: Input should be a valid integer" in d.error for d in found)
    # Only the valid increment counted (lax validation would have made it 2 + 1 + 2 + 3 = 8).
    assert wait_counts(worker, "counter", {"strict": 3}) == {"strict": 3}
    assert worker.get_json("/stream-app/dead-letters/") == {"schema": len(lax)}


#: Keys the two partitioners place apart over 4 partitions: librdkafka's default
#: (``consistent_random``: CRC32 of the key) and murmur2 (Kafka's Java client, the runtime).
SPLIT_KEYS = [
    key
    for key in (f"split-{i}".encode() for i in range(40))
    if zlib.crc32(key) % 4 != partition_for(key, 4)
][:5]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_key_produced_with_two_partitioners_is_one_cell(
    guarantee: str,
    bootstrap: str,
    app_env: dict[str, str],
    workers: Callable[..., WorkerProcess],
) -> None:
    env = {**app_env, "STREAM_APP_PROCESSING_GUARANTEE": guarantee}
    settings = settings_from_env(env)
    assert settings.partitions == 4 and len(SPLIT_KEYS) == 5
    topic = settings.input_topic("counter")
    worker = workers(env)

    # A plain confluent-kafka producer, librdkafka's default partitioner: 2 per key...
    plain = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    placed: dict[bytes, set[int]] = {key: set() for key in SPLIT_KEYS}

    def on_delivery(err: object, msg: Any) -> None:
        assert err is None, err
        placed[msg.key()].add(msg.partition())

    for key in SPLIT_KEYS:
        for _ in range(2):
            plain.produce(
                topic,
                key=key,
                value=b'{"type": "increment", "body": {"by": 2}}',
                on_delivery=on_delivery,
            )
    assert plain.flush(60) == 0
    # ...landed on another partition than murmur2's for every key (the premise of the test),
    assert all(placed[key] == {zlib.crc32(key) % 4} for key in SPLIT_KEYS), placed
    assert all(partition_for(key, 4) not in placed[key] for key in SPLIT_KEYS), placed
    # and a murmur2 producer (a careful client, the runtime's own partitioning): 3 per key.
    produce(
        bootstrap, topic, [(key, b'{"type": "increment"}') for key in SPLIT_KEYS for _ in range(3)]
    )

    # One cell per key, with the sum of both producers' increments.
    expected = {key.decode(): 2 * 2 + 3 for key in SPLIT_KEYS}
    assert wait_counts(worker, "counter", expected) == expected
    metrics = worker.get_json("/stream-app/metrics/")
    assert metrics["misrouted"] >= 2 * len(SPLIT_KEYS), metrics
    assert metrics["dead_letters"] == {}, metrics
