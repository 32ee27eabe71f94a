"""The chaos harness's reference model and report, without a broker: what counts as lost, as
duplicated and as applied without an acknowledgement, and how kills add up."""

from __future__ import annotations

from collections import Counter

from bench.chaos import goals
from stream_app.testing.chaos import ChaosConfig, ChaosReport, Kill, Outcome, compare, summary_table


def test_an_outcome_counts_lost_duplicated_and_unacknowledged_ids() -> None:
    outcome = Outcome(acked={1, 2, 3, 4}, applied=Counter({1: 1, 2: 3, 3: 1, 9: 1}))
    assert outcome.lost == 1  # 4
    assert outcome.duplicated == 2  # 2 applied three times
    assert outcome.unacknowledged == 1  # 9
    assert outcome.figures() == {"acked": 4, "lost": 1, "duplicated": 2, "unacknowledged": 1}


def test_compare_pairs_every_acknowledged_kind_with_its_applications() -> None:
    found = compare({"adds": {1, 2}, "timers": {5}}, {"adds": Counter([1, 2, 2])})
    assert found["adds"].duplicated == 1 and found["adds"].lost == 0
    assert found["timers"].lost == 1, "a kind missing from the state lost all of its ids"


def test_a_report_adds_up_kills_recoveries_and_the_kinds() -> None:
    report = ChaosReport(
        ChaosConfig(duration_s=10, guarantee="exactly_once", seed=3),
        kills=[Kill(0, [0, 1], 2.0), Kill(1, [2], 4.0), Kill(2, [3], None), Kill(0, [])],
        outcomes={
            "adds": Outcome({1, 2}, Counter([1, 2])),
            "deposits": Outcome({7, 8}, Counter([7, 7])),
        },
        converged=True,
    )
    figures = report.as_json()
    assert figures["messages"] == 4
    assert (figures["kills"], figures["recoveries"]) == (4, 3)
    assert (figures["recover_s_p50"], figures["recover_s_max"]) == (3.0, 4.0)
    assert (figures["lost"], figures["duplicated"]) == (1, 1)
    assert goals(figures) == {
        "lost": {"goal": "== 0", "met": False},
        "recover_s_max": {"goal": "<= 5", "met": True},
        "duplicated": {"goal": "== 0", "met": False},
    }
    table = summary_table(report)
    assert "recover s max    4.0" in table and "duplicated       1" in table
