"""SIGKILL the counter worker at random moments while records flow: nothing is lost or doubled.

The worker runs under ``exactly_once`` (the guarantee that applies every message once across
crashes), and the records come from a plain confluent-kafka producer with librdkafka's default
partitioner, so most of them arrive on another partition than their cell's and are forwarded
(inside the transaction of the partition they arrived on).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from stream_app.testing import WorkerProcess, settings_from_env, wait_for
from stream_app.testing.counts import cell_counts, wait_counts

pytestmark = pytest.mark.integration

RECORDS = 20_000
CELLS = 200
BATCH = 200
PAUSE_S = 0.1  # ~1,700 records/s offered: a little under what one worker applies


class AckedProducer(threading.Thread):
    """Produces increments in the background; counts only what the broker acknowledged."""

    def __init__(self, bootstrap: str, topic: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rng = bootstrap, topic, random.Random(seed)
        self.acked: Counter[str] = Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5})
        for _batch in range(RECORDS // BATCH):
            for _ in range(BATCH):
                cell = f"cell-{self.rng.randrange(CELLS)}"
                by = self.rng.randint(1, 5)
                value = json.dumps({"type": "increment", "body": {"by": by}}).encode()
                producer.produce(
                    self.topic,
                    key=cell.encode(),
                    value=value,
                    on_delivery=lambda err, _m, cell=cell, by=by: self._ack(err, cell, by),
                )
            producer.flush(60)
            # Pacing, not synchronisation: keep records flowing across all kill rounds.
            time.sleep(PAUSE_S)
        producer.flush(60)

    def _ack(self, err: object, cell: str, by: int) -> None:
        with self.lock:
            if err is None:
                self.acked[cell] += by
            else:
                self.failures.append(str(err))


def applied(worker: WorkerProcess) -> int:
    """The sum of the counts the worker holds (in RocksDB: ahead of its last commit)."""
    return sum(cell_counts(worker, "counter").values())


def test_random_sigkills_lose_nothing_and_apply_nothing_twice(
    bootstrap: str, app_env: dict[str, str], workers: Callable[..., WorkerProcess]
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1_000_000)))
    print(f"\nchaos seed {seed} (rerun with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    app_env = {**app_env, "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once"}
    settings = settings_from_env(app_env)
    producer = AckedProducer(bootstrap, settings.input_topic("counter"), seed)
    producer.start()

    kills = []
    for round_ in range(4):
        worker = workers(app_env, name=f"worker-{round_}")
        if round_ == 1:
            kills.append("right after ready (recovery just finished)")
        else:
            progress = applied(worker)
            target = progress + rng.randint(200, 3_000)
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
    assert sum(producer.acked.values()) > 0

    final = workers(app_env, name="worker-final")
    print(f"kills: {kills}")
    assert wait_counts(final, "counter", producer.acked, timeout=180) == dict(producer.acked)
