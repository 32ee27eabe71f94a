"""100,000 pending timers on one worker fire, each once, in due order per partition."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from stream_app.core.partitioner import partition_for
from stream_app.testing import WorkerProcess, settings_from_env, wait_for

CELLS = 10_000
PER_CELL = 10
LEAD_S = 60  # time to set 100,000 timers (10,000 messages) before the first comes due
WINDOW_MS = 10_000


def test_100k_pending_timers_fire_in_due_order(
    cells_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    bootstrap: str,
    tmp_path: Path,
) -> None:
    log = tmp_path / "timers.log"
    env = {**cells_env, "PROBE_TIMER_LOG": str(log)}
    worker = start_worker("tests.apps.probe", env)
    settings = settings_from_env(env)
    base = int(time.time() * 1000) + LEAD_S * 1000
    step = WINDOW_MS / (CELLS * PER_CELL)
    due: dict[tuple[str, str], int] = {}
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 20}
    )
    for c in range(CELLS):
        cell = f"tm{c}"
        # Later messages carry later due times, so even on a machine too slow to set them all
        # within LEAD_S no timer is set after a later one has fired: due order stays checkable.
        times = [base + int((c * PER_CELL + i) * step) for i in range(PER_CELL)]
        due.update({(cell, f"t{i}"): t for i, t in enumerate(times)})
        value = json.dumps({"type": "timers", "body": {"count": PER_CELL, "at_ms": times}})
        while True:
            try:
                producer.produce(settings.input_topic("probe"), key=cell.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0

    def fired() -> list[list[str]]:
        try:
            return [line.split() for line in log.read_text().splitlines() if line]
        except FileNotFoundError:
            return []

    wait_for(
        lambda: worker.get_json(f"/stream-app/cells/probe/tm{CELLS - 1}/"),
        lambda c: len(c["timers"]) == PER_CELL or (c["data"] or {}).get("fired", 0) > 0,
        timeout=LEAD_S + 240,
        interval=1.0,
        what="the last cell's timers set",
    )
    early = len(fired())
    print(f"\n{CELLS * PER_CELL - early} timers pending when the last was set ({early} fired)")

    rows = wait_for(
        fired,
        lambda rows: len(rows) >= CELLS * PER_CELL,
        timeout=LEAD_S + WINDOW_MS / 1000 + 240,
        interval=1.0,
        what=f"{CELLS * PER_CELL} timers fired",
    )
    seen = [(cell, name) for _due, cell, name, _missed in rows]
    assert len(seen) == len(set(seen)) == len(due), "each timer fires exactly once"
    assert all(int(d) == due[(cell, name)] for d, cell, name, _ in rows)
    by_partition: dict[int, list[int]] = defaultdict(list)
    for d, cell, _name, _missed in rows:
        by_partition[partition_for(cell.encode(), settings.partitions)].append(int(d))
    for partition, dues in by_partition.items():
        assert dues == sorted(dues), f"partition {partition} fired out of due order"
    lag = worker.get_json("/stream-app/metrics/")["timer_lag_ms"]
    print(f"\nfiring lag over {lag['count']} timers: p50 {lag['p50']} ms, p99 {lag['p99']} ms")
