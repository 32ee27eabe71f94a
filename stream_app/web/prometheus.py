"""The worker's metrics in Prometheus text format, at ``GET /metrics`` on its web port.

Every metric is read at scrape time from counters the worker keeps anyway (the engine's
:class:`~stream_app.engine.ports.RuntimeMetrics`, the batched input's counts, the dead-letter
sink's counts by reason, Faust's monitor, the restore's progress) by one
:class:`WorkerCollector` on a registry of the worker's own (not the process-wide default
registry: two runtimes in one process, as in the tests, do not mix). The hot path pays for no
metrics library call: a record costs the batched input an increment and a histogram bucket
(:class:`~stream_app.engine.ports.LatencyHistogram`), nothing else.

What each metric means, with its labels, is listed in ``docs/operations.md`` ("Metrics") and
in the HELP line of each.

Reading the pending timers counts the keys of the timers tables of the partitions this worker
owns, at about half a microsecond per timer, on the event loop: a worker with a million pending
timers spends half a second per scrape on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from stream_app.engine.ports import LatencyHistogram, RuntimeMetrics
from stream_app.kafka.batch_input import InputTopic

__all__ = [
    "BehaviourSample",
    "InputCounters",
    "MetricsSource",
    "WorkerCollector",
    "install_metrics",
]


@dataclass(frozen=True, slots=True)
class BehaviourSample:
    """What the metrics read of one behaviour's cells on this worker, at a scrape.

    Attributes:
        name: The behaviour's name.
        topic: Its input topic.
        control_records: Control records (wakes, releases) read from the input topic so far.
        parked_cells: Cells parked now in the partitions this worker owns.
        timers_pending: Timers pending now in the partitions this worker owns.
        next_due_ms: The due time of the earliest pending timer there (``None``: none).
    """

    name: str
    topic: str
    control_records: int
    parked_cells: int
    timers_pending: int
    next_due_ms: int | None


class InputCounters(Protocol):
    """What the metrics read of the batched input
    (:class:`~stream_app.kafka.batch_input.BatchInput`)."""

    @property
    def inputs(self) -> Mapping[str, InputTopic]:
        """The input topics read, with their record counts and latency histograms."""
        ...

    @property
    def acknowledged(self) -> Mapping[str, int]:
        """Outputs the broker acknowledged, by topic."""
        ...

    @property
    def commits(self) -> int:
        """Offset commits made."""
        ...

    @property
    def transactions_committed(self) -> int:
        """Partition transactions committed (``exactly_once``)."""
        ...

    @property
    def transactions_failed(self) -> int:
        """Partition transactions whose commit failed (``exactly_once``)."""
        ...

    def lags(self) -> Mapping[TP, int]:
        """Records not yet taken, per partition read."""
        ...


class MetricsSource(Protocol):
    """Everything :class:`WorkerCollector` reads, filled by the runtime."""

    @property
    def metrics(self) -> RuntimeMetrics:
        """The engine's counters."""
        ...

    @property
    def batch_input(self) -> InputCounters:
        """The batched input's counters."""
        ...

    def dead_letter_counts(self) -> Mapping[str, int]:
        """Dead letters published, by reason."""
        ...

    def behaviours(self) -> list[BehaviourSample]:
        """A sample of each behaviour's cells on this worker."""
        ...

    def faust_counts(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        """Records Faust's consumer delivered to agents and records sent through Faust's
        producer, by topic (Faust's monitor)."""
        ...

    def restore_progress(self) -> list[tuple[str, int, int, int]]:
        """``(changelog topic, partition, records restored, records remaining)`` of every
        changelog partition restored by this worker."""
        ...

    def now_ms(self) -> int:
        """The engines' clock."""
        ...


class WorkerCollector(Collector):
    """Reads a worker's counters into Prometheus metric families at each scrape."""

    def __init__(self, source: MetricsSource) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        """No description ahead of a scrape (the labels depend on what the worker runs)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metric families of this worker now."""
        source = self._source
        behaviours = sorted(source.behaviours(), key=lambda b: b.name)
        yield from self._records(source, behaviours)
        yield from self._behaviours(behaviours, source.now_ms())
        yield from self._engine(source.metrics)
        yield from self._commits(source.batch_input)
        yield from self._restore(source)

    def _records(
        self, source: MetricsSource, behaviours: list[BehaviourSample]
    ) -> Iterator[Metric]:
        batch = source.batch_input
        control = {b.topic: b.control_records for b in behaviours}
        received, sent = source.faust_counts()
        records_in = CounterMetricFamily(
            "stream_app_records_in",
            "Records read and handled, by topic; kind=control counts the runtime's wake and "
            "release records of a cell input topic, kind=message everything else",
            labels=["topic", "kind"],
        )
        for topic, counted in sorted(batch.inputs.items()):
            controls = control.get(topic, 0)
            records_in.add_metric([topic, "message"], counted.records - controls)
            records_in.add_metric([topic, "control"], controls)
        for topic, count in sorted(received.items()):
            if topic not in batch.inputs:
                records_in.add_metric([topic, "message"], count)
        yield records_in
        records_out = CounterMetricFamily(
            "stream_app_records_out",
            "Records produced, by topic: outputs of cells acknowledged by the broker (under "
            "exactly_once possibly in a transaction not yet committed), and records sent "
            "through Faust's producer (effect and reactor handlers, dead letters, wakes)",
            labels=["topic"],
        )
        out: dict[str, int] = dict(batch.acknowledged)
        for topic, count in sent.items():
            out[topic] = out.get(topic, 0) + count
        for topic, count in sorted(out.items()):
            records_out.add_metric([topic], count)
        yield records_out
        latency = HistogramMetricFamily(
            "stream_app_processing_seconds",
            "Seconds from a cell input record's batch being taken from the consumer to the end "
            "of the record's handling (waiting behind the records before it in the batch "
            "included), by behaviour",
            labels=["behaviour"],
        )
        names = {b.topic: b.name for b in behaviours}
        for topic, counted in sorted(batch.inputs.items()):
            _add_histogram(latency, [names.get(topic, topic)], counted.latency)
        yield latency
        lag = GaugeMetricFamily(
            "stream_app_consumer_lag",
            "Records of a cell input partition read by this worker that it has not yet taken "
            "(the partition's end at the last fetch less the consumer's position)",
            labels=["topic", "partition"],
        )
        for tp, records in sorted(batch.lags().items()):
            lag.add_metric([tp.topic, str(tp.partition)], records)
        yield lag
        dead = CounterMetricFamily(
            "stream_app_dead_letters",
            "Dead letters published by this worker, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(source.dead_letter_counts().items()):
            dead.add_metric([reason], count)
        yield dead

    def _behaviours(self, behaviours: list[BehaviourSample], now_ms: int) -> Iterator[Metric]:
        parked = GaugeMetricFamily(
            "stream_app_parked_cells",
            "Cells parked now in the partitions this worker owns, by behaviour",
            labels=["behaviour"],
        )
        pending = GaugeMetricFamily(
            "stream_app_timers_pending",
            "Timers pending now in the partitions this worker owns, by behaviour",
            labels=["behaviour"],
        )
        overdue = GaugeMetricFamily(
            "stream_app_timers_overdue_seconds",
            "How long ago the earliest pending timer of the partitions this worker owns came "
            "due (0 when none is due yet), by behaviour; a timer is normally fired within a "
            "sweep interval of its due time, so a value that grows means timers are behind",
            labels=["behaviour"],
        )
        for b in behaviours:
            parked.add_metric([b.name], b.parked_cells)
            pending.add_metric([b.name], b.timers_pending)
            late = 0 if b.next_due_ms is None else max(0, now_ms - b.next_due_ms)
            overdue.add_metric([b.name], late / 1000)
        yield parked
        yield pending
        yield overdue

    def _engine(self, metrics: RuntimeMetrics) -> Iterator[Metric]:
        counters: list[tuple[str, str, int]] = [
            ("timers_fired", "Timer occurrences delivered to on_timeout", metrics.timers_fired),
            (
                "timers_skipped",
                "Due timers retired without firing (misfire policy skip)",
                metrics.timers_skipped,
            ),
            ("effects_emitted", "Effects produced by cells", metrics.effects_emitted),
            ("effects_done", "Effects whose handler succeeded", metrics.effects_done),
            ("effect_failures", "Failed effect handler attempts", metrics.effect_failures),
            (
                "effect_retries",
                "Failed effect handler attempts that were tried again",
                metrics.effect_retries,
            ),
            ("cells_parked", "Cells parked by this worker", metrics.parked),
            ("cells_released", "Parked cells released and their work run again", metrics.released),
            ("cells_booted", "on_boot calls", metrics.booted),
            (
                "records_misrouted",
                "Cell messages forwarded because they arrived on another partition than murmur2's",
                metrics.misrouted,
            ),
        ]
        for name, documentation, value in counters:
            yield CounterMetricFamily(f"stream_app_{name}", documentation, value=value)
        lag = HistogramMetricFamily(
            "stream_app_timer_lag_seconds",
            "Seconds between a timer's due time and its firing (timers due while the worker "
            "owned their partition)",
        )
        _add_histogram(lag, [], metrics.timer_lag)
        yield lag

    def _commits(self, batch: InputCounters) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "stream_app_offset_commits",
            "Commits of the cell input offsets (each covers every partition read here)",
            value=batch.commits,
        )
        transactions = CounterMetricFamily(
            "stream_app_transactions",
            "Partition transactions of the cell inputs under exactly_once, by outcome "
            "(failed: the commit failed and the worker stopped; the broker aborts them)",
            labels=["outcome"],
        )
        transactions.add_metric(["committed"], batch.transactions_committed)
        transactions.add_metric(["failed"], batch.transactions_failed)
        yield transactions

    def _restore(self, source: MetricsSource) -> Iterator[Metric]:
        restored = GaugeMetricFamily(
            "stream_app_restore_records_restored",
            "Changelog records read into a table partition by its latest restore",
            labels=["topic", "partition"],
        )
        remaining = GaugeMetricFamily(
            "stream_app_restore_records_remaining",
            "Changelog records its latest restore has still to read (0: restored)",
            labels=["topic", "partition"],
        )
        for topic, partition, done, left in source.restore_progress():
            restored.add_metric([topic, str(partition)], done)
            remaining.add_metric([topic, str(partition)], left)
        yield restored
        yield remaining


def _add_histogram(
    family: HistogramMetricFamily, labels: list[str], histogram: LatencyHistogram
) -> None:
    family.add_metric(
        labels,
        [(_bound(bound), count) for bound, count in histogram.cumulative()],
        histogram.total,
    )


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def install_metrics(app: faust.App, source: MetricsSource) -> CollectorRegistry:
    """Serve ``GET /metrics`` on ``app``'s web server from a registry of its own, holding a
    :class:`WorkerCollector` of ``source``; returns the registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(source))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(
            generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
        )

    return registry
