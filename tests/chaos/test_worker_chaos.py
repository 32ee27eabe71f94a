"""Three workers under steady load of cell messages, entity requests and timers; random workers
are SIGKILLed and restarted. Afterwards every acknowledged message and deposit is applied (at
least once, or exactly once under ``exactly_once``), every acknowledged timer fired, and the
state equals the reference model of the acknowledged ids (:mod:`stream_app.testing.chaos`).

The seed of each run is printed (rerun with ``CHAOS_SEED=<seed>``), with the summary table.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from stream_app.testing.chaos import ChaosConfig, delete_app_topics, run_chaos, summary_table

pytestmark = pytest.mark.integration

MODULE = "bench.apps.chaos_app"
#: Seconds of load and kills per guarantee: three or four kills, within CI's time.
DURATION_S = 40.0


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_random_sigkills_of_three_workers_lose_nothing_acknowledged(
    guarantee: str, bootstrap: str, cells_env: dict[str, str], tmp_path: Path
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1_000_000)))
    print(f"\nchaos seed {seed} (rerun with CHAOS_SEED={seed})")
    env = {**cells_env, "STREAM_APP_PARTITIONS": "6"}
    config = ChaosConfig(
        duration_s=DURATION_S, guarantee=guarantee, seed=seed, max_kills=4, gap_s=(3.0, 6.0)
    )
    try:
        report = run_chaos(env, tmp_path, config, module=MODULE)
    finally:
        delete_app_topics(bootstrap, env["STREAM_APP_APP_ID"])
    print(summary_table(report))
    figures = report.as_json()
    context = f"seed {seed}: {figures}"

    assert report.kills, context
    assert not report.exited, f"workers that died on their own: {context}"
    assert figures["messages"] > 0 and all(o.acked for o in report.outcomes.values()), context
    assert report.failed_deliveries == 0, context
    assert report.unanswered == 0, context
    assert report.recoveries == len(report.kills), context
    assert report.converged, context
    assert report.lost == 0, context
    for kind, outcome in report.outcomes.items():
        # The state holds nothing but what was acknowledged: the reference model.
        assert set(outcome.applied) == outcome.acked, f"{kind}: {context}"
    if guarantee == "exactly_once":
        assert report.duplicated == 0, context
