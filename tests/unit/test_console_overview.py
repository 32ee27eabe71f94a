"""The overview's pure parts: snapshots of the collector, rates, merged workers, charts,
partitions and formatting, without a broker."""

from __future__ import annotations

import math
import re
from typing import Any, cast

import pytest
from faust.types import TP
from pydantic import BaseModel

from stream_app.console import series
from stream_app.console.overview import (
    WorkerView,
    behaviour_rows,
    dead_letter_chart,
    format_count,
    format_rate,
    format_seconds,
    overview_context,
    partition_groups,
    throughput_chart,
    worker_partitions,
)
from stream_app.console.series import Snapshot, bar_chart, line_chart
from stream_app.console.server import BehaviourInfo, Console
from stream_app.core.envelope import MessageTypes
from stream_app.settings import Settings
from stream_app.web.prometheus import WorkerCollector
from tests.unit.test_prometheus import FakeSource


class Add(BaseModel):
    """A message of the cart."""


def at(
    t: float, records_in: float = 0, dead: dict[str, float] | None = None, **gauges: float
) -> Snapshot:
    """A snapshot at ``t`` with ``records_in`` on topic ``a.cart.in``."""
    snap = series.empty_snapshot(t)
    snap["records_in"] = {"a.cart.in": records_in}
    snap["records_out"] = {"a.out": records_in * 2}
    snap["dead_letters"] = dict(dead or {})
    snap["parked"] = {"cart": gauges.get("parked", 0.0)}
    snap["overdue_s"] = {"cart": gauges.get("overdue", 0.0)}
    return snap


def cart() -> BehaviourInfo:
    return BehaviourInfo("cart", "cells", "a.cart.in", MessageTypes("cart", {"add": Add}))


def test_a_snapshot_reads_the_collectors_families() -> None:
    source = FakeSource()
    source.batch_input.inputs["a.cart.in"].records = 12
    for seconds in (0.0001, 0.002, 0.3):
        source.batch_input.inputs["a.cart.in"].latency.observe(seconds)
    snap = series.snapshot(WorkerCollector(source).collect(), 5.0)
    assert snap["t"] == 5.0
    assert snap["records_in"] == {"a.cart.in": 10, "a.effects": 2}, "control records left out"
    assert snap["records_out"] == {"a-cart-changelog": 7, "a.effects": 3, "a.cart.in": 2}
    assert snap["lag"] == {"a.cart.in": 4}, "the partitions' lags added up per topic"
    assert snap["dead_letters"] == {"schema": 2, "malformed-json": 1}
    assert snap["parked"] == {"cart": 1}
    assert snap["timers"] == {"cart": 6}
    assert snap["overdue_s"] == {"cart": 1.5}
    assert snap["latency"]["buckets"]["0.0025"] == 2
    assert snap["latency"]["buckets"]["+Inf"] == 3
    assert snap["latency"]["sum"] == pytest.approx(0.3021)


def test_the_ring_keeps_the_newest_samples() -> None:
    ring = series.SampleRing(capacity=3)
    for t in range(5):
        ring.add(at(t))
    assert [s["t"] for s in ring.samples()] == [2, 3, 4]


def test_rates_are_taken_from_the_oldest_sample_of_the_window() -> None:
    samples = [at(0, 0), at(50, 100), at(80, 400)]
    summary = series.summarise(samples, at(110, 1000), window_s=60)
    assert summary["in_per_s"] == pytest.approx((1000 - 100) / 60)
    assert summary["out_per_s"] == pytest.approx(2 * (1000 - 100) / 60)


def test_a_worker_with_one_snapshot_has_no_rate_yet() -> None:
    summary = series.summarise([], at(10, 5))
    assert summary["in_per_s"] is None
    assert summary["buckets"] == []


def test_a_reset_counter_counts_from_zero() -> None:
    summary = series.summarise([at(0, 500)], at(10, 30), window_s=60)
    assert summary["in_per_s"] == pytest.approx(3.0), "a worker restarted: 30 since"


def test_increments_fall_in_clock_aligned_buckets() -> None:
    samples = [at(5, 0), at(25, 10, {"schema": 1}), at(35, 30, {"schema": 4})]
    summary = series.summarise(samples, at(65, 30, {"schema": 4, "bad": 2}), bucket_s=30)
    assert summary["buckets"] == [
        (0.0, {"in": 10, "out": 20, "dead:schema": 1}),
        (30.0, {"in": 20, "out": 40, "dead:schema": 3}),
        (60.0, {"in": 0, "out": 0, "dead:schema": 0, "dead:bad": 2}),
    ]


def test_merging_workers_adds_their_rates_counts_and_buckets() -> None:
    one = series.summarise([at(0, 0)], at(10, 100, {"schema": 1}, parked=2, overdue=3), bucket_s=30)
    two = series.summarise([at(2, 0)], at(12, 50, parked=1, overdue=7), bucket_s=30)
    idle = series.summarise([], at(12))
    merged = series.merge([one, two, idle])
    assert merged["in_per_s"] == pytest.approx(10 + 5)
    assert merged["now"]["records_in"] == {"a.cart.in": 150}
    assert merged["now"]["parked"] == {"cart": 3}
    assert merged["now"]["overdue_s"] == {"cart": 7}, "the most overdue worker"
    assert merged["now"]["dead_letters"] == {"schema": 1}
    assert merged["buckets"] == [(0.0, {"in": 150, "out": 300, "dead:schema": 1})]


def test_merging_no_worker_knows_no_rate() -> None:
    merged = series.merge([])
    assert merged["in_per_s"] is None
    assert merged["buckets"] == []


def test_latency_mean_and_quantile_of_the_window() -> None:
    before, after = at(0), at(10)
    before["latency"] = {"buckets": {"0.01": 5, "0.1": 5, "+Inf": 5}, "sum": 0.02}
    after["latency"] = {"buckets": {"0.01": 6, "0.1": 14, "+Inf": 15}, "sum": 1.02}
    window = series.summarise([before], after)["latency"]
    assert window["buckets"] == {"0.01": 1, "0.1": 9, "+Inf": 10}
    assert series.mean(window) == pytest.approx(0.1)
    assert series.quantile(window, 0.5) == 0.1
    assert series.quantile(window, 0.95) == math.inf, "above every bound"
    assert series.quantile(window, 0.1) == 0.01
    assert series.mean(series.summarise([], after)["latency"]) is None
    assert series.quantile(series.summarise([], after)["latency"], 0.5) is None


def test_a_chart_spans_from_its_earliest_point_to_now_and_from_zero_to_its_largest() -> None:
    chart = line_chart(
        {"b": [(400.0, 5.0), (1000.0, 10.0)], "a": [(700.0, 0.0)]},
        now=1000.0,
        min_span_s=60,
        width=600,
        height=100,
    )
    assert chart.span_s == 600
    assert chart.y_max == 10
    assert [(entry.name, entry.index, entry.total) for entry in chart.legend] == [
        ("a", 0, 0),
        ("b", 1, 15),
    ]
    assert [(line.index, line.points) for line in chart.lines] == [
        (0, "300.0,100.0"),
        (1, "0.0,50.0 600.0,0.0"),
    ]
    assert chart.bars == []


def test_a_short_or_flat_chart_keeps_its_minimum_span_and_height() -> None:
    chart = line_chart({"in": [(990.0, 0.0)]}, now=1000.0, min_span_s=600, width=600, height=100)
    assert chart.span_s == 600
    assert chart.y_max == 1
    assert chart.lines[0].points == "590.0,100.0"


def test_bars_stack_the_series_of_a_bucket_one_bucket_wide() -> None:
    chart = bar_chart(
        [(0.0, {"schema": 1.0}), (30.0, {"schema": 2.0, "bad": 2.0})],
        now=60.0,
        bucket_s=30,
        min_span_s=60,
        width=600,
        height=100,
    )
    assert chart.y_max == 4, "the tallest stack"
    assert [(e.name, e.total) for e in chart.legend] == [("bad", 2), ("schema", 3)]
    assert [(b.index, b.x, b.y, b.width, b.height) for b in chart.bars] == [
        (1, 0.0, 75.0, 300.0, 25.0),
        (0, 300.0, 50.0, 300.0, 50.0),
        (1, 300.0, 0.0, 300.0, 50.0),
    ]
    assert chart.bars[1].title == "bad: 2"


def test_the_dead_letter_chart_has_a_bar_per_reason_and_bucket_with_letters() -> None:
    summary = series.merge(
        [series.summarise([at(0), at(30, 0, {"schema": 2})], at(60, 0, {"bad": 1}))]
    )
    chart = dead_letter_chart(summary, now=60.0)
    assert [(e.name, e.total) for e in chart.legend] == [("bad", 1), ("schema", 2)]
    assert [(b.index, b.title) for b in chart.bars] == [(1, "schema: 2"), (0, "bad: 1")]


def test_the_throughput_chart_rises_from_zero_a_bucket_before_its_first() -> None:
    summary = series.summarise([at(0)], at(40, 60), bucket_s=30)
    chart = throughput_chart(summary, now=40.0, bucket_s=30)
    assert [e.name for e in chart.legend] == ["in", "out"]
    assert chart.y_max == 4, "out: 120 records in the 30 s bucket"
    assert chart.lines[0].points.count(" ") == 1, "the zero before, and the bucket"


def test_a_workers_partitions_per_behaviour_active_and_standby() -> None:
    held = worker_partitions(
        [cart()],
        actives=[TP("a.cart.in", 2), TP("a-cart-changelog", 2), TP("a.cart.in", 0)],
        standbys=[TP("a-cart-changelog", 1), TP("a-cart-timers-changelog", 1)],
        changelog_of={"cart": "a-cart-changelog"},
    )
    assert held == {"cart": {"active": [0, 2], "standby": [1]}}


def test_behaviours_holding_the_same_partitions_are_grouped() -> None:
    groups = partition_groups(
        {
            "a": {"active": [0, 1], "standby": [2]},
            "b": {"active": [3], "standby": []},
            "c": {"active": [0, 1], "standby": [2]},
        }
    )
    assert [(g.behaviours, g.active, g.standby) for g in groups] == [
        (["a", "c"], [0, 1], [2]),
        (["b"], [3], []),
    ]


def test_a_behaviours_row_reads_the_merged_snapshot() -> None:
    now = at(0, 42, parked=3, overdue=2.5)
    now["lag"] = {"a.cart.in": 7}
    (row,) = behaviour_rows([cart()], now)
    assert (row.lag, row.records_in, row.parked, row.timers, row.overdue_s) == (7, 42, 3, 0, 2.5)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "—"), (0.0042, "4.2 ms"), (1.5, "1.5 s"), (600.0, "10 min"), (math.inf, "> max")],
)
def test_durations_are_shown_in_a_readable_unit(value: float | None, shown: str) -> None:
    assert format_seconds(value) == shown


def test_counts_and_rates_are_shown_for_people() -> None:
    assert format_count(1234567.0) == "1,234,567"
    assert format_rate(None) == "—"
    assert format_rate(2.345) == "2.3/s"
    assert format_rate(12345.6) == "12,346/s"


def render_live(workers: list[WorkerView], behaviours: list[BehaviourInfo]) -> str:
    """The overview's live fragment as the console's templates render it."""
    console = Console(cast(Any, None), cast(Any, None), Settings())
    context = overview_context(
        workers, behaviours, guarantee="exactly_once", partitions=4, now=100.0
    )
    return console.templates.get_template("overview_live.html").render(**context)


def test_the_fragment_shows_each_worker_and_one_that_did_not_answer() -> None:
    busy = series.summarise([at(0, 0)], at(60, 120, {"<script>x</script>": 1}, parked=1))
    workers = [
        WorkerView("http://a:1", {"cart": {"active": [0, 2], "standby": [1]}}, busy, serving=True),
        WorkerView("http://b:2", {}, None, "did not answer: TimeoutError"),
    ]
    html = render_live(workers, [cart()])
    assert html.count('data-testid="worker"') == 2
    assert "did not answer: TimeoutError" in html and "unreachable" in html
    assert re.search(r'data-testid="active-partitions">.*active</span> 0, 2<', html)
    assert re.search(r'data-testid="records-processed">120<', html)
    assert re.search(r'data-testid="throughput">2.0/s', html)
    assert "exactly once" in html
    assert "<script>" not in html, "a dead letter's reason is escaped"
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<rect" in html and "<polyline" in html


def test_the_fragment_of_a_quiet_app_says_so() -> None:
    html = render_live([WorkerView("http://a:1", {}, series.summarise([], at(5)))], [cart()])
    assert "No dead letters in the last hour." in html
    assert "Collecting samples" in html
    assert "no partitions" in html
