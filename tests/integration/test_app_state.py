"""Two app ids started from one data dir keep their state apart (issue 10).

Faust's ``datadir`` was the data dir itself, so every app started with the same
``STREAM_APP_DATA_DIR`` opened the same RocksDB files: a second app served the first one's
cells, took the first app's counts for its own, or refused to start because the offsets
persisted by the first app were past the end of its own changelog.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stream_app.kafka.topics import apply_changes, load_definitions, plan_changes
from stream_app.testing import WorkerProcess, keyed_producer, settings_from_env
from stream_app.testing.counts import cell_counts, produce_acked, wait_counts
from stream_app.testing.dev_broker import project_root, session_name

pytestmark = pytest.mark.integration

INCREMENT = b'{"type": "increment", "body": {"by": %d}}'


def second_app(bootstrap: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` with another app id (its counter topics applied), the same data dir."""
    from confluent_kafka.admin import AdminClient

    other = {**env, "STREAM_APP_APP_ID": session_name("t")}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    definitions = load_definitions(
        [project_root() / "topics" / "counter.toml"], settings_from_env(other)
    )
    apply_changes(admin, plan_changes(admin, definitions))
    return other


def counts_become(worker: WorkerProcess, expected: dict[str, int]) -> dict[str, int]:
    """Wait until the worker's counter cells are exactly ``expected``."""
    return wait_counts(worker, "counter", expected, timeout=60)


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Produce ``records`` with murmur2 partitioning; return once all are acknowledged."""
    produce_acked(keyed_producer(bootstrap), topic, records)


def test_two_app_ids_in_one_data_dir_keep_their_own_state(
    bootstrap: str, app_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    first_env = app_env
    second_env = second_app(bootstrap, first_env)
    assert first_env["STREAM_APP_DATA_DIR"] == second_env["STREAM_APP_DATA_DIR"]
    first, second = settings_from_env(first_env), settings_from_env(second_env)

    # The first app counts alice to 3 and stops cleanly, leaving its RocksDB files behind.
    worker = workers(first_env, name="first")
    produce(bootstrap, first.input_topic("counter"), [(b"alice", INCREMENT % 3)])
    counts_become(worker, {"alice": 3})
    assert worker.stop() == 0

    # The second app starts (no ConsistencyError from the first app's offsets: workers() waits
    # for it to be ready and fails if it exits), sees none of the first app's cells, and
    # counts its own alice from 0 (sharing the files, it would have counted on from 3).
    other = workers(second_env, name="second")
    assert cell_counts(other, "counter") == {}, "the second app serves the first app's cells"
    produce(bootstrap, second.input_topic("counter"), [(b"alice", INCREMENT % 5)])
    counts_become(other, {"alice": 5})
    assert "ConsistencyError" not in other.log_text()

    # Side by side, each on its own web port: the first app still has its own alice.
    again = workers(first_env, name="first-again")
    counts_become(again, {"alice": 3})
    assert cell_counts(other, "counter") == {"alice": 5}

    # Each app id has its own folder in the shared data dir.
    data_dir = Path(first_env["STREAM_APP_DATA_DIR"])
    assert sorted(p.name for p in data_dir.iterdir()) == sorted([first.app_id, second.app_id])
    assert first.app_data_dir == data_dir / first.app_id
