"""Backpressure on a real broker: a worker drains a backlog with oversized records and a slow
effect handler (``bench.apps.backpressure_cell``), and accounts for every record.

A smaller version of ``bench.backpressure`` (which drains a million messages and reports the
figures), under each guarantee: 30,000 cell messages produced before the worker starts, the
first 200 emitting an effect whose handler takes 25 ms (5 s of effects queued in front of the
slow handler while the cells drain the rest), and 5 records over the worker's
``max_message_bytes``. One worker and one drain per guarantee; the assertions share it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench._common import WorkerSampler, delete_app_topics
from bench.apps.model import BEHAVIOUR
from bench.backpressure import Backlog, changelog_counts, produce_backlog
from stream_app import DeadLetter
from stream_app.testing import (
    ProbeFailed,
    WorkerProcess,
    committed_to_end,
    read_topic,
    settings_from_env,
    wait_for,
)

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
MODULE = "bench.apps.backpressure_cell"
MAX_MESSAGE_BYTES = 65_536
BACKLOG = Backlog(messages=50_000, cells=2_000, effects=400, oversized=5, oversized_bytes=100_000)
#: A generous bound on the worker's peak RSS while it drains. About 120 MiB is measured here;
#: the bound catches gross growth (some 10 KiB kept per record drained), not drifts of a few
#: MiB, which ``bench.backpressure`` measures on a million records.
RSS_BOUND_MIB = 400


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_backlog_with_oversized_records_and_slow_effects_drains_completely(
    start_worker: StartWorker, app_env: dict[str, str], bootstrap: str, guarantee: str
) -> None:
    env = {
        **app_env,
        "STREAM_APP_PROCESSING_GUARANTEE": guarantee,
        "STREAM_APP_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "BENCH_EXPECTED": str(BACKLOG.messages),
        "BACKPRESSURE_EFFECT_MS": "25",
    }
    settings = settings_from_env(env)
    try:
        produce_backlog(bootstrap, settings.input_topic(BEHAVIOUR), BACKLOG)
        worker = start_worker(MODULE, env, ready=False)
        sampler = WorkerSampler(worker.pid, bootstrap).start()
        try:
            worker.wait_ready()

            def status() -> dict[str, Any]:
                if not worker.alive():
                    raise ProbeFailed(f"the worker stopped:\n{worker.log_text()[-4000:]}")
                snapshot: dict[str, Any] = worker.get_json("/bench/backpressure/")
                return snapshot

            final = wait_for(
                status,
                lambda s: (
                    s["count"] == BACKLOG.messages
                    and s["effects_handled"] == BACKLOG.effects
                    and s["dead_letters"].get("oversized", 0) == BACKLOG.oversized
                ),
                timeout=120,
                what="every message applied, every effect handled, every oversized record "
                "dead-lettered",
            )
            wait_for(
                lambda: committed_to_end(
                    bootstrap, settings.app_id, settings.input_topic(BEHAVIOUR)
                ),
                bool,
                timeout=30,
                what="the input's lag drained (offsets committed to the end)",
            )
        finally:
            sampler.stop()
        assert worker.alive()
        assert worker.error_lines() == []
        # Each effect ran once: no retries, no dead letters other than the oversized records.
        assert final["effect_calls"] == BACKLOG.effects
        assert final["dead_letters"] == {"oversized": BACKLOG.oversized}

        _, counts = changelog_counts(bootstrap, settings.changelog_topic(BEHAVIOUR))
        assert counts == dict(BACKLOG.expected_counts())

        letters = [
            DeadLetter.from_record(r.key, r.value, r.headers)
            for r in read_topic(bootstrap, settings.dead_letter_topic)
        ]
        assert [letter.reason for letter in letters] == ["oversized"] * BACKLOG.oversized
        assert all(str(MAX_MESSAGE_BYTES) in letter.error for letter in letters), letters[0].error

        peak_mib = max(s.rss for s in sampler.samples) / 2**20
        print(f"{guarantee}: worker RSS peak {peak_mib:.0f} MiB (bound {RSS_BOUND_MIB} MiB)")
        assert peak_mib < RSS_BOUND_MIB
    finally:
        delete_app_topics(bootstrap, settings.app_id)
