"""An operator alerts on ERROR: a healthy worker's life logs none.

A clean start, steady processing past Faust's stream watchdog interval, a second worker joining
(a rebalance), that worker stopping again (another), and a clean stop: neither worker may log an
ERROR line. Faust's watchdog is shortened to :data:`WATCHDOG_S` so that it runs many times here;
before stream_app told it which partitions the batched input reads, it logged "Stream has not
started processing" as an ERROR for each of them on every round. (A broker outage the worker
rides out is tested in ``tests/chaos/test_broker_outage.py``.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream_app.testing import SteadyLoad, WorkerProcess, settings_from_env, wait_for

pytestmark = pytest.mark.integration

#: Faust's stream_processing_timeout in these workers (300 s by default).
WATCHDOG_S = 4.0
#: How long the workers process past the watchdog interval at each stage.
PAST_WATCHDOG_S = 2.5 * WATCHDOG_S
CELLS = 20


def _applied(worker: WorkerProcess) -> int:
    cells: dict[str, Any] = worker.get_json("/stream-app/cells/probe/", timeout=10)
    return sum(data["count"] for data in cells.values())


def _partitions(worker: WorkerProcess) -> list[int]:
    metrics = worker.get_json("/stream-app/metrics/", timeout=10)
    partitions: list[int] = metrics["behaviours"]["probe"]["partitions"]
    return partitions


def _keeps_processing(worker: WorkerProcess, what: str) -> None:
    """Wait until the worker has processed for :data:`PAST_WATCHDOG_S` more seconds (the
    watchdog's interval is the condition here, not a stand-in for one)."""
    start, first = time.monotonic(), _applied(worker)
    wait_for(
        lambda: (time.monotonic() - start, _applied(worker)),
        lambda seen: seen[0] >= PAST_WATCHDOG_S and seen[1] > first,
        timeout=PAST_WATCHDOG_S + 60,
        what=f"{what}: processing for {PAST_WATCHDOG_S:.0f}s past the watchdog",
    )


def test_start_steady_processing_rebalances_and_stop_log_no_error(
    cells_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    bootstrap: str,
    tmp_path: Path,
) -> None:
    env = {
        **cells_env,
        "PROBE_WATCHDOG_S": str(WATCHDOG_S),
        "STREAM_APP_COMMIT_INTERVAL_S": "0.5",  # Faust's watchdog runs every 2.5 intervals
    }
    first = start_worker("tests.apps.probe", env, name="first")
    # About 200 messages a second.
    traffic = SteadyLoad(
        bootstrap,
        settings_from_env(env).input_topic("probe"),
        "add",
        cells=CELLS,
        per_round=10,
        pause=0.05,
    )
    traffic.start()
    try:
        _keeps_processing(first, "one worker")
        # Each worker keeps its RocksDB in a data dir of its own, as on separate machines.
        elsewhere = {**env, "STREAM_APP_DATA_DIR": str(tmp_path / "second-data")}
        second = start_worker("tests.apps.probe", elsewhere, name="second")
        wait_for(
            lambda: (_partitions(first), _partitions(second)),
            lambda seen: bool(seen[0]) and bool(seen[1]),
            timeout=60,
            what="the partitions shared by two workers",
        )
        _keeps_processing(first, "two workers")
        assert second.stop() == 0, second.log_text()[-4000:]
        wait_for(
            lambda: _partitions(first),
            lambda seen: len(seen) == 4,
            timeout=60,
            what="every partition back on the first worker",
        )
        _keeps_processing(first, "one worker again")
    finally:
        traffic.halt.set()
        traffic.join(timeout=60)
    assert not traffic.is_alive() and traffic.failed == 0, "not every message was delivered"
    wait_for(
        lambda: _applied(first),
        lambda applied: applied >= traffic.total(),
        timeout=60,
        what=f"all {traffic.total()} messages applied",
    )
    assert first.stop() == 0, first.log_text()[-4000:]
    for worker in (first, second):
        errors = worker.error_lines()
        assert not errors, f"{worker.log_path.name}: {len(errors)} ERROR lines:\n" + "\n".join(
            errors[:20]
        )
