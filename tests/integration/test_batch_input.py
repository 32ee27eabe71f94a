"""Batched input across Kafka: commits on stop and on rebalance.

With the commit interval set to an hour, the only commits are the ones batched input makes
when Faust takes the partitions away (a graceful stop, a rebalance). If they were missing, the
next owner would read the input again from offset 0 and the probe's counters (``add`` is not
idempotent) would show every message applied twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_app.clients.cells import CellClient
from stream_app.testing import WorkerProcess, committed_to_end, settings_from_env, wait_for

MODULE = "tests.apps.probe"

CELLS = [f"b{i}" for i in range(24)]


@pytest.fixture
def slow_commit_env(cells_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """cells_env with periodic commits an hour apart, and the probe's files under tmp_path."""
    return {
        **cells_env,
        "STREAM_APP_COMMIT_INTERVAL_S": "3600",
        "PROBE_TIMER_LOG": str(tmp_path / "timers.log"),
        "PROBE_EFFECT_LOG": str(tmp_path / "effects.log"),
        "PROBE_HANDLER_LOG": str(tmp_path / "handler.log"),
        "PROBE_FIX_FILE": str(tmp_path / "fixed"),
    }


def counts(worker: WorkerProcess) -> dict[str, int]:
    """Every probe cell's count, gathered by ``worker`` from all workers."""
    cells: dict[str, Any] = worker.get_json("/stream-app/cells/probe/", timeout=15)
    return {cid: data["count"] for cid, data in cells.items()}


def add_rounds(env: dict[str, str], rounds: int) -> None:
    """``rounds`` messages ``add 1`` to every cell of :data:`CELLS`, acknowledged."""
    with CellClient(settings_from_env(env)) as client:
        for _ in range(rounds):
            for cid in CELLS:
                client.send("probe", cid, "add", {"by": 1})


def wait_counts(worker: WorkerProcess, expected: int, what: str) -> dict[str, int]:
    return wait_for(
        lambda: counts(worker),
        lambda seen: len(seen) == len(CELLS) and all(n >= expected for n in seen.values()),
        timeout=90,
        what=what,
    )


def test_a_graceful_stop_commits_what_was_processed(
    slow_commit_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    bootstrap: str,
) -> None:
    env = slow_commit_env
    worker = start_worker(MODULE, env, name="first")
    add_rounds(env, 5)
    wait_counts(worker, 5, "5 adds applied to every cell")
    stats = worker.get_json("/stream-app/metrics/")["batch_input"]
    assert stats["records"] >= 5 * len(CELLS), stats
    group, topic = env["STREAM_APP_APP_ID"], f"{env['STREAM_APP_APP_ID']}.probe.in"
    assert worker.stop() == 0
    assert committed_to_end(bootstrap, group, topic), "the stop committed the processed input"

    worker = start_worker(MODULE, env, name="second")
    add_rounds(env, 1)
    seen = wait_counts(worker, 6, "the sixth add applied after the restart")
    assert seen == dict.fromkeys(CELLS, 6), "nothing read before the stop was applied again"


def test_a_rebalance_hands_partitions_over_without_replaying_them(
    slow_commit_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = slow_commit_env
    first = start_worker(MODULE, env, name="first")
    add_rounds(env, 4)
    wait_counts(first, 4, "4 adds applied by the first worker")
    own_disk = {**env, "STREAM_APP_DATA_DIR": env["STREAM_APP_DATA_DIR"] + "-2"}
    second = start_worker(MODULE, own_disk, name="second")

    def owned(worker: WorkerProcess) -> list[int]:
        parts: list[int] = worker.get_json("/stream-app/metrics/")["behaviours"]["probe"][
            "partitions"
        ]
        return parts

    wait_for(
        lambda: (owned(first), owned(second)),
        lambda pair: bool(pair[0]) and bool(pair[1]) and sorted(pair[0] + pair[1]) == [0, 1, 2, 3],
        timeout=90,
        what="the partitions split between the two workers",
    )
    add_rounds(env, 3)
    wait_counts(first, 7, "7 adds applied to every cell, by both workers")
    assert counts(second) == dict.fromkeys(CELLS, 7), "no input was applied twice"
    taken = second.get_json("/stream-app/metrics/")["batch_input"]
    assert taken["records"] > 0 and taken["partitions"], taken


def test_interval_commits_cover_the_input_while_the_worker_runs_with_an_input_linger(
    cells_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    bootstrap: str,
    tmp_path: Path,
) -> None:
    """The interval's commit sends the offsets to the group in the background, and the broker
    holds the input's fetches (``input_linger_ms``): every record is still applied once, and
    the commits made while the worker runs (no stop, no rebalance) reach the end of the input."""
    env = {
        **cells_env,
        "STREAM_APP_COMMIT_INTERVAL_S": "0.3",
        "STREAM_APP_INPUT_LINGER_MS": "20",
        "PROBE_TIMER_LOG": str(tmp_path / "timers.log"),
        "PROBE_EFFECT_LOG": str(tmp_path / "effects.log"),
        "PROBE_HANDLER_LOG": str(tmp_path / "handler.log"),
        "PROBE_FIX_FILE": str(tmp_path / "fixed"),
    }
    worker = start_worker(MODULE, env, name="linger")
    group, topic = env["STREAM_APP_APP_ID"], f"{env['STREAM_APP_APP_ID']}.probe.in"
    for round_ in range(1, 4):
        add_rounds(env, 1)
        wait_counts(worker, round_, f"{round_} adds applied to every cell")
        wait_for(
            lambda: committed_to_end(bootstrap, group, topic),
            bool,
            timeout=60,
            what=f"the interval commits covering round {round_}",
        )
    assert counts(worker) == dict.fromkeys(CELLS, 3), "every add applied exactly once"
    stats = worker.get_json("/stream-app/metrics/")["batch_input"]
    assert stats["commits"] >= 3, stats
    assert worker.alive()
