"""Three workers under steady load of cell messages, entity requests and timers; random workers
are SIGKILLed and restarted. Afterwards every acknowledged message and deposit is applied (at
least once, or exactly once under ``exactly_once``), every acknowledged timer fired, and the
state equals the reference model of the acknowledged ids (:mod:`stream_app.testing.chaos`).
Under ``exactly_once`` the entities' committed event log also holds each deposit once, without
sequence gaps, and folds to the cached states.

The seed of each run is printed (rerun with ``CHAOS_SEED=<seed>``), with the summary table.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from bench.apps.chaos_app import purse
from stream_app.ops.fold import fold_log
from stream_app.testing import settings_from_env
from stream_app.testing.chaos import (
    ChaosConfig,
    ChaosReport,
    delete_app_topics,
    run_chaos,
    summary_table,
)

pytestmark = pytest.mark.integration

MODULE = "bench.apps.chaos_app"
#: Seconds of load and kills per guarantee: two to four kills (each recovery takes seconds),
#: about 90 s per guarantee with the start and the checks.
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
        print(summary_table(report))
        check(report, seed)
        if guarantee == "exactly_once":
            check_event_log(env, report)
    finally:
        delete_app_topics(bootstrap, env["STREAM_APP_APP_ID"])


def check(report: ChaosReport, seed: int) -> None:
    """Every acknowledged id applied (once under exactly-once), nothing else, no worker lost."""
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
    if report.config.guarantee == "exactly_once":
        assert report.duplicated == 0, context


def check_event_log(env: dict[str, str], report: ChaosReport) -> None:
    """Under exactly-once the purses' committed event log has each deposit once, without gaps,
    and folds to the cached states."""
    log = fold_log(purse, settings_from_env(env))
    assert not log.duplicates, f"events in the log twice: {dict(list(log.duplicates.items())[:5])}"
    assert not log.gaps, f"sequence gaps: {dict(list(log.gaps.items())[:5])}"
    assert not log.mismatched, f"folded != cached: {log.mismatched[:5]}"
    deposited = sorted(n for _seq, state in log.folded.values() for n in state["deposits"])
    assert deposited == sorted(report.outcomes["deposits"].acked)
