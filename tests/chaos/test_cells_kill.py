"""SIGKILL a cells worker at random moments while 20,000 messages flow: every message is applied
at least once, and the state equals the reference model of idempotent updates."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from stream_app.testing import (
    ConditionTimeout,
    WorkerProcess,
    keyed_producer,
    settings_from_env,
    wait_for,
)

pytestmark = pytest.mark.integration

MODULE = "tests.apps.probe"
MESSAGES = 20_000
CELLS = 200
BATCH = 200
PAUSE_S = 0.1  # pacing so records keep flowing across every kill round


class StepProducer(threading.Thread):
    """Sends ``step`` messages (``value = seq``, ``count += 1``) with per-cell increasing seq,
    murmur2-partitioned like CellClient; records what the broker acknowledged."""

    def __init__(self, bootstrap: str, topic: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rng = bootstrap, topic, random.Random(seed)
        self.sent: Counter[str] = Counter()
        self.acked: Counter[str] = Counter()
        self.last_acked: dict[str, int] = {}
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        producer = keyed_producer(self.bootstrap)
        for _batch in range(MESSAGES // BATCH):
            for _ in range(BATCH):
                cell = f"cell-{self.rng.randrange(CELLS)}"
                self.sent[cell] += 1
                seq = self.sent[cell]
                value = json.dumps({"type": "step", "body": {"seq": seq}}).encode()
                producer.produce(
                    self.topic,
                    key=cell.encode(),
                    value=value,
                    on_delivery=lambda err, _m, cell=cell, seq=seq: self._ack(err, cell, seq),
                )
            producer.flush(60)
            time.sleep(PAUSE_S)
        producer.flush(60)

    def _ack(self, err: object, cell: str, seq: int) -> None:
        with self.lock:
            if err is None:
                self.acked[cell] += 1
                self.last_acked[cell] = max(seq, self.last_acked.get(cell, 0))
            else:
                self.failures.append(str(err))


def cells(worker: WorkerProcess) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = worker.get_json("/stream-app/cells/probe/")
    return result


def applied(worker: WorkerProcess) -> int:
    return sum(data["count"] for data in cells(worker).values())


def test_random_sigkills_apply_every_message_at_least_once(
    bootstrap: str,
    cells_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1_000_000)))
    print(f"\nchaos seed {seed} (rerun with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    env = {**cells_env, "PROBE_TIMER_LOG": str(tmp_path / "timers.log")}
    settings = settings_from_env(env)
    # The worker creates the input topic; start one before producing.
    worker = start_worker(MODULE, env, name="worker-0")
    producer = StepProducer(bootstrap, settings.input_topic("probe"), seed)
    producer.start()

    kills = []
    for round_ in range(4):
        if round_:
            worker = start_worker(MODULE, env, name=f"worker-{round_}")
        if round_ == 1:
            kills.append("right after ready (recovery just finished)")
        else:
            target = applied(worker) + rng.randint(200, 3_000)
            reached = wait_for(
                lambda worker=worker: applied(worker),
                lambda total, target=target: total >= target or not producer.is_alive(),
                timeout=180,
                what=f"round {round_}: progress to {target}",
            )
            kills.append(f"after {reached} applied")
        worker.kill()

    producer.join(timeout=300)
    assert not producer.is_alive(), "producer did not finish"
    assert not producer.failures, producer.failures[:5]
    assert sum(producer.acked.values()) == MESSAGES

    final = start_worker(MODULE, env, name="worker-final")
    print(f"kills: {kills}")
    expected = producer.last_acked

    def done(seen: dict[str, dict[str, int]]) -> bool:
        return {c: d["value"] for c, d in seen.items()} == expected

    try:
        seen = wait_for(lambda: cells(final), done, timeout=240, what="final state")
    except ConditionTimeout:
        seen = cells(final)
        off = {
            c: ((seen.get(c) or {}).get("value"), want)
            for c, want in expected.items()
            if (seen.get(c) or {}).get("value") != want
        }
        raise ConditionTimeout(
            f"{len(off)} of {len(expected)} cells differ (cell: (value, expected)): "
            f"{dict(list(off.items())[:20])}\n--- worker log tail ---\n{final.log_text()[-4000:]}"
        ) from None
    under = {c: (seen[c]["count"], n) for c, n in producer.acked.items() if seen[c]["count"] < n}
    assert not under, f"messages not applied (cell: (applied, acked)): {under}"
    replays = applied(final) - MESSAGES
    print(f"applied {MESSAGES + replays} for {MESSAGES} messages ({replays} replays)")
