"""The overview's numbers over time: samples of a worker's metrics, rates and small charts.

A worker samples its Prometheus collector (:class:`~stream_app.web.prometheus.WorkerCollector`,
the same families ``GET /metrics`` serves) every few seconds into a bounded ring
(:class:`SampleRing`, an hour). Counters only grow, so what happened between two samples is
their difference: :func:`summarise` turns a worker's ring into its rates over the last minute
and its increments per time bucket; :func:`merge` adds the summaries of every worker (buckets
are aligned on the clock, so they add up); :func:`line_chart` lays a series out as SVG
polylines, drawn by the template.

Everything here is pure and JSON-shaped: a worker's summary crosses the network as it is.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypedDict

__all__ = [
    "BUCKET_S",
    "HISTORY_S",
    "RATE_WINDOW_S",
    "SAMPLE_INTERVAL_S",
    "Bar",
    "Chart",
    "Histogram",
    "Legend",
    "Line",
    "SampleRing",
    "Snapshot",
    "Summary",
    "bar_chart",
    "empty_snapshot",
    "line_chart",
    "mean",
    "merge",
    "quantile",
    "snapshot",
    "summarise",
]

#: How often a worker samples its metrics (seconds).
SAMPLE_INTERVAL_S = 5.0
#: How far back the samples go (seconds).
HISTORY_S = 3600.0
#: The span the rates are taken over (seconds).
RATE_WINDOW_S = 60.0
#: The width of a chart's time bucket (seconds).
BUCKET_S = 30.0

#: A histogram as sampled: cumulative counts by upper bound (Prometheus' ``le``), and the sum.
Histogram = dict[str, Any]


class Snapshot(TypedDict):
    """A worker's counters and gauges at one time (JSON-shaped).

    Keys:
        t: When (seconds since the epoch).
        records_in: Messages read and handled, by topic (control records left out).
        records_out: Records produced, by topic.
        latency: Processing time, all behaviours together (:data:`Histogram`).
        timer_lag: Seconds from a timer's due time to its firing (:data:`Histogram`).
        lag: Consumer lag, by input topic (its partitions read here added up).
        dead_letters: Dead letters published, by reason.
        parked: Cells parked now, by behaviour.
        timers: Timers pending now, by behaviour.
        overdue_s: How long ago the earliest pending timer came due, by behaviour.
    """

    t: float
    records_in: dict[str, float]
    records_out: dict[str, float]
    latency: Histogram
    timer_lag: Histogram
    lag: dict[str, float]
    dead_letters: dict[str, float]
    parked: dict[str, float]
    timers: dict[str, float]
    overdue_s: dict[str, float]


class Summary(TypedDict):
    """What one worker (or, merged, the app) did lately (JSON-shaped).

    Keys:
        now: The latest snapshot (merged: gauges and counters added, overdue the largest).
        in_per_s: Records in per second over the rate window (``None``: one sample only).
        out_per_s: Records out per second over the rate window.
        latency: The processing histogram of the records of the rate window.
        timer_lag: The timer lag histogram of the timers fired in the rate window.
        buckets: Increments per time bucket: ``[bucket start, {series: increment}]`` ascending;
            series ``in``, ``out`` and ``dead:<reason>``.
    """

    now: Snapshot
    in_per_s: float | None
    out_per_s: float | None
    latency: Histogram
    timer_lag: Histogram
    buckets: list[tuple[float, dict[str, float]]]


def _empty_histogram() -> Histogram:
    return {"buckets": {}, "sum": 0.0}


def empty_snapshot(t: float) -> Snapshot:
    """A snapshot of nothing at ``t``."""
    return Snapshot(
        t=t,
        records_in={},
        records_out={},
        latency=_empty_histogram(),
        timer_lag=_empty_histogram(),
        lag={},
        dead_letters={},
        parked={},
        timers={},
        overdue_s={},
    )


_GAUGES = {
    "stream_app_consumer_lag": ("lag", "topic"),
    "stream_app_dead_letters_total": ("dead_letters", "reason"),
    "stream_app_records_out_total": ("records_out", "topic"),
    "stream_app_parked_cells": ("parked", "behaviour"),
    "stream_app_timers_pending": ("timers", "behaviour"),
}
_HISTOGRAMS = {
    "stream_app_processing_seconds": "latency",
    "stream_app_timer_lag_seconds": "timer_lag",
}


def snapshot(families: Iterable[Any], t: float) -> Snapshot:
    """Read the metric families of :class:`~stream_app.web.prometheus.WorkerCollector` into a
    :class:`Snapshot` taken at ``t``."""
    snap = empty_snapshot(t)
    for family in families:
        for sample in family.samples:
            _read_sample(snap, sample.name, sample.labels, float(sample.value))
    return snap


def _read_sample(snap: Snapshot, name: str, labels: Mapping[str, str], value: float) -> None:
    if name in _GAUGES:
        key, label = _GAUGES[name]
        series: dict[str, float] = snap[key]  # type: ignore[literal-required]
        series[labels[label]] = series.get(labels[label], 0.0) + value
    elif name == "stream_app_records_in_total":
        if labels["kind"] == "message":
            snap["records_in"][labels["topic"]] = value
    elif name == "stream_app_timers_overdue_seconds":
        snap["overdue_s"][labels["behaviour"]] = value
    else:
        base, _, part = name.rpartition("_")
        if base in _HISTOGRAMS:
            histogram: Histogram = snap[_HISTOGRAMS[base]]  # type: ignore[literal-required]
            if part == "bucket":
                buckets = histogram["buckets"]
                buckets[labels["le"]] = buckets.get(labels["le"], 0.0) + value
            elif part == "sum":
                histogram["sum"] += value


class SampleRing:
    """A worker's snapshots of the last :data:`HISTORY_S` seconds, oldest first.

    Args:
        capacity: How many snapshots it keeps (the oldest go first).
    """

    def __init__(self, capacity: int = int(HISTORY_S / SAMPLE_INTERVAL_S)) -> None:
        self._samples: deque[Snapshot] = deque(maxlen=capacity)

    def add(self, snap: Snapshot) -> None:
        """Keep ``snap`` (the newest)."""
        self._samples.append(snap)

    def samples(self) -> list[Snapshot]:
        """The snapshots kept, oldest first."""
        return list(self._samples)


def _total(counts: Mapping[str, float]) -> float:
    return sum(counts.values())


def _grown(after: float, before: float) -> float:
    """What a counter grew by (a counter smaller than before was reset: it grew by itself)."""
    return after - before if after >= before else after


def _histogram_delta(after: Histogram, before: Histogram) -> Histogram:
    return {
        "buckets": {
            le: _grown(count, before["buckets"].get(le, 0.0))
            for le, count in after["buckets"].items()
        },
        "sum": max(0.0, after["sum"] - before["sum"]),
    }


def _add_histograms(histograms: Iterable[Histogram]) -> Histogram:
    total = _empty_histogram()
    for histogram in histograms:
        for le, count in histogram["buckets"].items():
            total["buckets"][le] = total["buckets"].get(le, 0.0) + count
        total["sum"] += histogram["sum"]
    return total


def _count(histogram: Histogram) -> float:
    return max(histogram["buckets"].values(), default=0.0)


def mean(histogram: Histogram) -> float | None:
    """The mean of the observations of ``histogram`` (``None``: none)."""
    count = _count(histogram)
    return histogram["sum"] / count if count else None


def quantile(histogram: Histogram, q: float) -> float | None:
    """The upper bound of the bucket holding the ``q`` quantile of ``histogram``'s
    observations (``math.inf`` when above every bound; ``None``: no observation)."""
    count = _count(histogram)
    if not count:
        return None
    ranked = sorted((float(le), cumulative) for le, cumulative in histogram["buckets"].items())
    for bound, cumulative in ranked:
        if cumulative >= q * count:
            return bound
    return math.inf


def _increments(before: Snapshot, after: Snapshot) -> dict[str, float]:
    grown = {
        "in": _grown(_total(after["records_in"]), _total(before["records_in"])),
        "out": _grown(_total(after["records_out"]), _total(before["records_out"])),
    }
    for reason, count in after["dead_letters"].items():
        grown[f"dead:{reason}"] = _grown(count, before["dead_letters"].get(reason, 0.0))
    return grown


def _bucketed(samples: Sequence[Snapshot], bucket_s: float) -> list[tuple[float, dict[str, float]]]:
    buckets: dict[float, dict[str, float]] = {}
    for before, after in pairwise(samples):
        into = buckets.setdefault(math.floor(after["t"] / bucket_s) * bucket_s, {})
        for series, grown in _increments(before, after).items():
            into[series] = into.get(series, 0.0) + grown
    return sorted(buckets.items())


def summarise(
    samples: Sequence[Snapshot],
    now: Snapshot,
    *,
    window_s: float = RATE_WINDOW_S,
    bucket_s: float = BUCKET_S,
) -> Summary:
    """One worker's summary from its ring's ``samples`` (oldest first) and a snapshot taken
    ``now``: rates over the last ``window_s`` seconds (from the oldest sample in that span),
    and increments per ``bucket_s`` bucket over the whole ring."""
    series = [*samples, now]
    recent = [s for s in samples if s["t"] >= now["t"] - window_s and s["t"] < now["t"]]
    start = recent[0] if recent else None
    elapsed = now["t"] - start["t"] if start else 0.0
    if start is None or elapsed <= 0:
        in_per_s = out_per_s = None
        latency, timer_lag = _empty_histogram(), _empty_histogram()
    else:
        grown = _increments(start, now)
        in_per_s, out_per_s = grown["in"] / elapsed, grown["out"] / elapsed
        latency = _histogram_delta(now["latency"], start["latency"])
        timer_lag = _histogram_delta(now["timer_lag"], start["timer_lag"])
    return Summary(
        now=now,
        in_per_s=in_per_s,
        out_per_s=out_per_s,
        latency=latency,
        timer_lag=timer_lag,
        buckets=_bucketed(series, bucket_s),
    )


def _add_counts(counts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for each in counts:
        for key, value in each.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _add_rates(rates: Iterable[float | None]) -> float | None:
    known = [rate for rate in rates if rate is not None]
    return sum(known) if known else None


def _merge_snapshots(snaps: Sequence[Snapshot]) -> Snapshot:
    merged = empty_snapshot(max((s["t"] for s in snaps), default=0.0))
    for key in ("records_in", "records_out", "lag", "dead_letters", "parked", "timers"):
        merged[key] = _add_counts(s[key] for s in snaps)
    for key in ("latency", "timer_lag"):
        merged[key] = _add_histograms(s[key] for s in snaps)  # type: ignore[literal-required]
    for snap in snaps:
        for behaviour, late in snap["overdue_s"].items():
            merged["overdue_s"][behaviour] = max(late, merged["overdue_s"].get(behaviour, 0.0))
    return merged


def merge(summaries: Sequence[Summary]) -> Summary:
    """The app's summary: the workers' ``summaries`` added up (rates, counts, histograms and
    buckets added; the overdue time of a behaviour the largest)."""
    buckets: dict[float, list[Mapping[str, float]]] = {}
    for summary in summaries:
        for start, grown in summary["buckets"]:
            buckets.setdefault(start, []).append(grown)
    return Summary(
        now=_merge_snapshots([s["now"] for s in summaries]),
        in_per_s=_add_rates(s["in_per_s"] for s in summaries),
        out_per_s=_add_rates(s["out_per_s"] for s in summaries),
        latency=_add_histograms(s["latency"] for s in summaries),
        timer_lag=_add_histograms(s["timer_lag"] for s in summaries),
        buckets=[(start, _add_counts(each)) for start, each in sorted(buckets.items())],
    )


@dataclass(frozen=True)
class Legend:
    """One series of a chart, as its legend lists it.

    Attributes:
        name: The series' name.
        index: Its position in the chart (its CSS class ``series-<index % 6>``).
        total: The sum of its values.
    """

    name: str
    index: int
    total: float


@dataclass(frozen=True)
class Line:
    """One series of a line chart.

    Attributes:
        index: The series' position (see :class:`Legend`).
        name: The series' name.
        points: The SVG ``points`` of its polyline.
    """

    index: int
    name: str
    points: str


@dataclass(frozen=True)
class Bar:
    """One series' part of one bucket of a bar chart (stacked on the series before it).

    Attributes:
        index: The series' position (see :class:`Legend`).
        x: The bar's left edge.
        y: Its top edge.
        width: Its width.
        height: Its height.
        title: What it stands for (``reason: count``).
    """

    index: int
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Chart:
    """A chart laid out for an SVG ``viewBox="0 0 width height"`` (y grows downwards).

    Attributes:
        width: The view box's width.
        height: The view box's height.
        legend: The series, in order.
        lines: The polylines of a line chart.
        bars: The rectangles of a bar chart.
        y_max: The value at the top edge.
        span_s: The seconds from the left edge to the right edge (now).
    """

    width: int
    height: int
    legend: list[Legend]
    lines: list[Line]
    bars: list[Bar]
    y_max: float
    span_s: float


@dataclass(frozen=True)
class _Frame:
    """The time and value ranges of a chart, and how they map onto its view box."""

    start: float
    span: float
    y_max: float
    width: int
    height: int

    def x(self, t: float) -> float:
        return (t - self.start) / self.span * self.width

    def y(self, value: float) -> float:
        return self.height - value / self.y_max * self.height


def _frame(
    times: Iterable[float], peak: float, now: float, min_span_s: float, width: int, height: int
) -> _Frame:
    start = min([now - min_span_s, *times])
    return _Frame(start, max(now - start, 1e-9), max(1.0, peak), width, height)


def _legend(series: Mapping[str, Sequence[tuple[float, float]]]) -> list[Legend]:
    return [
        Legend(name=name, index=index, total=sum(v for _, v in points))
        for index, (name, points) in enumerate(sorted(series.items()))
    ]


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    now: float,
    min_span_s: float = 300.0,
    width: int = 600,
    height: int = 120,
) -> Chart:
    """Lay ``series`` (``name -> [(time, value)]``) out as lines, between the earliest time (at
    least ``min_span_s`` before ``now``) on the left and ``now`` on the right, 0 at the bottom
    and the largest value (at least 1) at the top."""
    frame = _frame(
        (t for points in series.values() for t, _ in points),
        max((v for points in series.values() for _, v in points), default=0.0),
        now,
        min_span_s,
        width,
        height,
    )
    legend = _legend(series)
    lines = [
        Line(
            index=entry.index,
            name=entry.name,
            points=" ".join(f"{frame.x(t):.1f},{frame.y(v):.1f}" for t, v in series[entry.name]),
        )
        for entry in legend
    ]
    return Chart(width, height, legend, lines, [], frame.y_max, now - frame.start)


def bar_chart(
    buckets: Sequence[tuple[float, Mapping[str, float]]],
    *,
    now: float,
    bucket_s: float,
    min_span_s: float = 300.0,
    width: int = 600,
    height: int = 120,
) -> Chart:
    """Lay ``buckets`` (``[(bucket start, {series: value})]``) out as stacked bars, one per
    bucket ``bucket_s`` wide, the time axis as :func:`line_chart`'s and the tallest stack at
    the top."""
    frame = _frame(
        [start for start, _ in buckets],
        max((sum(values.values()) for _, values in buckets), default=0.0),
        now,
        min_span_s,
        width,
        height,
    )
    names = sorted({name for _, values in buckets for name in values})
    legend = _legend(
        {name: [(start, values.get(name, 0.0)) for start, values in buckets] for name in names}
    )
    bars = []
    for start, values in buckets:
        below = 0.0
        for entry in legend:
            value = values.get(entry.name, 0.0)
            if value > 0:
                top = frame.y(below + value)
                x = frame.x(start)
                bars.append(
                    Bar(
                        index=entry.index,
                        x=round(x, 1),
                        y=round(top, 1),
                        width=round(max(frame.x(start + bucket_s), x + 1) - x, 1),
                        height=round(frame.y(below) - top, 1),
                        title=f"{entry.name}: {value:g}",
                    )
                )
                below += value
    return Chart(width, height, legend, [], bars, frame.y_max, now - frame.start)
