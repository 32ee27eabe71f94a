"""The Prometheus view's collector, its histogram and the restore's progress, without a broker.

The collector reads a fake worker (:class:`FakeSource`); what it serves is parsed with
prometheus-client's own parser, as a scraper would read it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_app.core.records import InputRecord
from stream_app.engine.ports import LatencyHistogram, RuntimeMetrics
from stream_app.kafka.batch_input import InputTopic, PartitionWork
from stream_app.kafka.restore import RestoreJob, RestoreProgress, _log_progress
from stream_app.web.prometheus import BehaviourSample, WorkerCollector

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _ignore(record: InputRecord, work: PartitionWork) -> None:
    """A handler that is never called (the collector only reads the counts)."""


class FakeInput:
    """The batched input's counters, set by hand."""

    def __init__(self) -> None:
        self.inputs: dict[str, InputTopic] = {"a.cart.in": InputTopic(_ignore)}
        self.acknowledged: Counter[str] = Counter({"a-cart-changelog": 7, "a.effects": 2})
        self.commits = 3
        self.transactions_committed = 5
        self.transactions_failed = 1

    def lags(self) -> Mapping[TP, int]:
        return {TP("a.cart.in", 1): 4, TP("a.cart.in", 0): 0}


class FakeSource:
    """A worker as the collector sees it."""

    def __init__(self) -> None:
        self.metrics = RuntimeMetrics(timers_fired=4, effect_failures=3, effect_retries=2)
        self.batch_input = FakeInput()
        self.next_due_ms: int | None = 9_000

    def dead_letter_counts(self) -> Mapping[str, int]:
        return Counter({"schema": 2, "malformed-json": 1})

    def behaviours(self) -> list[BehaviourSample]:
        return [
            BehaviourSample(
                name="cart",
                topic="a.cart.in",
                control_records=2,
                parked_cells=1,
                timers_pending=6,
                next_due_ms=self.next_due_ms,
            )
        ]

    def faust_counts(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        return Counter({"a.effects": 2}), Counter({"a.cart.in": 2, "a.effects": 1})

    def restore_progress(self) -> list[tuple[str, int, int, int]]:
        return [("a-cart-changelog", 0, 100, 20)]

    def now_ms(self) -> int:
        return 10_500


def scrape(source: Any) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(source))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def test_a_histogram_counts_each_duration_in_the_first_bucket_that_holds_it() -> None:
    histogram = LatencyHistogram((0.01, 0.1, 1.0))
    for seconds in (0.005, 0.01, 0.05, 0.5, 3.0):
        histogram.observe(seconds)
    assert histogram.counts == [2, 1, 1, 1], "a bound holds the durations equal to it"
    assert histogram.cumulative() == [(0.01, 2), (0.1, 3), (1.0, 4), (float("inf"), 5)]
    assert histogram.total == pytest.approx(3.565)


def test_a_timer_lag_is_counted_in_seconds_and_never_below_zero() -> None:
    metrics = RuntimeMetrics()
    metrics.record_lag(40)
    metrics.record_lag(-5)
    assert sum(metrics.timer_lag.counts) == 2
    assert metrics.timer_lag.total == pytest.approx(0.04)
    assert list(metrics.lags_ms) == [40, 0]


def test_records_in_split_messages_from_the_runtimes_control_records() -> None:
    source = FakeSource()
    cart = source.batch_input.inputs["a.cart.in"]
    cart.records = 12
    samples = scrape(source)
    assert value(samples, "stream_app_records_in_total", topic="a.cart.in", kind="message") == 10
    assert value(samples, "stream_app_records_in_total", topic="a.cart.in", kind="control") == 2
    # Topics Faust's consumer reads come from its monitor.
    assert value(samples, "stream_app_records_in_total", topic="a.effects", kind="message") == 2


def test_records_out_add_the_batched_inputs_and_fausts_producer() -> None:
    samples = scrape(FakeSource())
    assert value(samples, "stream_app_records_out_total", topic="a.effects") == 3
    assert value(samples, "stream_app_records_out_total", topic="a-cart-changelog") == 7
    assert value(samples, "stream_app_records_out_total", topic="a.cart.in") == 2


def test_processing_latency_is_a_histogram_per_behaviour() -> None:
    source = FakeSource()
    latency = source.batch_input.inputs["a.cart.in"].latency
    for seconds in (0.0001, 0.002, 0.3):
        latency.observe(seconds)
    samples = scrape(source)
    bucket = "stream_app_processing_seconds_bucket"
    assert value(samples, bucket, behaviour="cart", le="0.0005") == 1
    assert value(samples, bucket, behaviour="cart", le="0.0025") == 2
    assert value(samples, bucket, behaviour="cart", le="0.25") == 2
    assert value(samples, bucket, behaviour="cart", le="+Inf") == 3
    assert value(samples, "stream_app_processing_seconds_count", behaviour="cart") == 3
    assert value(samples, "stream_app_processing_seconds_sum", behaviour="cart") == pytest.approx(
        0.3021
    )


def test_lag_dead_letters_and_commits() -> None:
    samples = scrape(FakeSource())
    assert value(samples, "stream_app_consumer_lag", topic="a.cart.in", partition="1") == 4
    assert value(samples, "stream_app_consumer_lag", topic="a.cart.in", partition="0") == 0
    assert value(samples, "stream_app_dead_letters_total", reason="schema") == 2
    assert value(samples, "stream_app_dead_letters_total", reason="malformed-json") == 1
    assert value(samples, "stream_app_offset_commits_total") == 3
    assert value(samples, "stream_app_transactions_total", outcome="committed") == 5
    assert value(samples, "stream_app_transactions_total", outcome="failed") == 1


def test_engine_counters_and_behaviour_gauges() -> None:
    source = FakeSource()
    samples = scrape(source)
    assert value(samples, "stream_app_timers_fired_total") == 4
    assert value(samples, "stream_app_effect_failures_total") == 3
    assert value(samples, "stream_app_effect_retries_total") == 2
    assert value(samples, "stream_app_parked_cells", behaviour="cart") == 1
    assert value(samples, "stream_app_timers_pending", behaviour="cart") == 6
    assert value(samples, "stream_app_timers_overdue_seconds", behaviour="cart") == 1.5
    source.next_due_ms = 20_000
    assert value(scrape(source), "stream_app_timers_overdue_seconds", behaviour="cart") == 0
    source.next_due_ms = None
    assert value(scrape(source), "stream_app_timers_overdue_seconds", behaviour="cart") == 0


def test_restore_progress_per_changelog_partition() -> None:
    samples = scrape(FakeSource())
    labels = {"topic": "a-cart-changelog", "partition": "0"}
    assert value(samples, "stream_app_restore_records_restored", **labels) == 100
    assert value(samples, "stream_app_restore_records_remaining", **labels) == 20


def job(topic: str, partition: int, *, start: int, end: int) -> RestoreJob:
    restore_job = RestoreJob(
        topic=topic,
        partition=partition,
        start=start,
        db=None,
        offset_key=b"offset",
        still_ours=lambda: True,
    )
    restore_job._end = end
    return restore_job


def test_a_restore_job_knows_what_remains() -> None:
    restoring = job("c", 0, start=10, end=110)
    assert restoring.remaining == 100
    restoring._last, restoring.records = 59, 50
    assert restoring.remaining == 50
    restoring._at_end = True
    assert restoring.remaining == 0, "the end reported by the consumer (markers skipped)"
    assert job("c", 1, start=0, end=0).remaining == 0


def test_restore_progress_keeps_the_latest_note_of_each_partition() -> None:
    progress = RestoreProgress()
    first, other = job("c", 1, start=0, end=10), job("c", 0, start=0, end=5)
    progress.note(first)
    progress.note(other)
    again = job("c", 1, start=4, end=10)
    again.records, again._last = 2, 5
    progress.note(again)
    assert progress.partitions() == [("c", 0, 0, 5), ("c", 1, 2, 4)]
    progress.forget(other)
    assert progress.partitions() == [("c", 1, 2, 4)], "revoked while restoring"


def test_the_progress_line_names_each_changelog(caplog: pytest.LogCaptureFixture) -> None:
    cells = job("app-cart-changelog", 0, start=0, end=300)
    cells.records, cells._last = 200, 199
    timers = job("app-cart-timers-changelog", 0, start=0, end=100)
    with caplog.at_level(logging.INFO, logger="stream_app.kafka.restore"):
        _log_progress("active", [cells, timers], 200, 400, 2.0)
    [line] = caplog.messages
    assert line.startswith("restoring active changelogs: 200 of 400 records, 100 records/s")
    assert "app-cart-changelog: 200 restored, 100 left" in line
    assert "app-cart-timers-changelog: 0 restored, 100 left" in line
