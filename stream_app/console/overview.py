"""The overview page: the app, its workers and their partitions, lag, throughput, latency,
dead letters, parked cells and timers, refreshed live.

Each worker samples its own metrics (the Prometheus collector's families, see
:mod:`stream_app.console.series`) every :data:`~stream_app.console.series.SAMPLE_INTERVAL_S`
seconds and serves its partitions and its summary at ``/console/overview/worker.json``. The
page's live part, ``/console/fragments/overview``, asks every worker of the app for that view
(the hosts the partition assignor knows), adds the summaries up and renders them; htmx polls
it every two seconds.

The samples keep only what the rates and charts need, the counters: they leave the pending
timers uncounted (counting scans the timers tables, half a second per million timers). The
gauges shown (lag, parked cells, pending timers, overdue timers) are read when the page asks,
so a worker pays for them only while someone watches its overview.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from faust.types import TP

from stream_app.console.series import (
    BUCKET_S,
    HISTORY_S,
    SAMPLE_INTERVAL_S,
    Chart,
    SampleRing,
    Snapshot,
    Summary,
    bar_chart,
    empty_snapshot,
    line_chart,
    mean,
    merge,
    quantile,
    snapshot,
    summarise,
)
from stream_app.console.server import PREFIX, BehaviourInfo, Console
from stream_app.web.prometheus import WorkerCollector

__all__ = [
    "BehaviourRow",
    "PartitionGroup",
    "WorkerView",
    "behaviour_rows",
    "dead_letter_chart",
    "format_count",
    "format_rate",
    "format_seconds",
    "install",
    "overview_context",
    "partition_groups",
    "throughput_chart",
    "worker_partitions",
]

#: How long the page waits for another worker's view (seconds).
_WORKER_TIMEOUT_S = 3.0
#: Where each worker serves its own part of the overview.
_WORKER_VIEW = "/overview/worker.json"


def worker_partitions(
    behaviours: Iterable[BehaviourInfo],
    actives: Iterable[TP],
    standbys: Iterable[TP],
    changelog_of: Mapping[str, str],
) -> dict[str, dict[str, list[int]]]:
    """The partitions a worker holds of each behaviour: ``active`` (its input topic's
    partitions assigned to the worker, with the co-partitioned tables) and ``standby`` (its
    cells table's changelog partitions the worker keeps a standby copy of).

    Args:
        behaviours: The behaviours.
        actives: The worker's active topic partitions (Faust's assignor).
        standbys: The worker's standby topic partitions.
        changelog_of: The changelog topic of each behaviour's cells table, by behaviour name.
    """
    active, standby = set(actives), set(standbys)
    return {
        info.name: {
            "active": sorted(tp.partition for tp in active if tp.topic == info.input_topic),
            "standby": sorted(
                tp.partition for tp in standby if tp.topic == changelog_of.get(info.name)
            ),
        }
        for info in behaviours
    }


@dataclass(frozen=True)
class PartitionGroup:
    """Behaviours a worker holds the same partitions of (co-partitioned topics are assigned
    together, so usually all of them).

    Attributes:
        behaviours: The behaviours' names.
        active: The partitions the worker owns.
        standby: The partitions the worker keeps standby copies of.
    """

    behaviours: list[str]
    active: list[int]
    standby: list[int]


def partition_groups(partitions: Mapping[str, Mapping[str, list[int]]]) -> list[PartitionGroup]:
    """A worker's ``partitions`` (see :func:`worker_partitions`), behaviours with the same
    active and standby partitions together, in the order of their first behaviour."""
    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[str]] = {}
    for name, held in partitions.items():
        groups.setdefault((tuple(held["active"]), tuple(held["standby"])), []).append(name)
    return [
        PartitionGroup(behaviours=names, active=list(active), standby=list(standby))
        for (active, standby), names in groups.items()
    ]


@dataclass(frozen=True)
class WorkerView:
    """One worker as the overview shows it.

    Attributes:
        url: Its web server.
        partitions: Its partitions by behaviour (see :func:`worker_partitions`).
        summary: Its summary (``None`` when it did not answer).
        error: Why it did not answer.
        serving: Whether it is the worker serving the page.
    """

    url: str
    partitions: dict[str, dict[str, list[int]]]
    summary: Summary | None
    error: str | None = None
    serving: bool = False

    @property
    def groups(self) -> list[PartitionGroup]:
        """Its partitions, behaviours holding the same ones together."""
        return partition_groups(self.partitions)


@dataclass(frozen=True)
class BehaviourRow:
    """One behaviour's line in the overview's table.

    Attributes:
        info: The behaviour.
        lag: Its input topic's consumer lag, over every worker.
        records_in: Messages its cells handled (since the workers started).
        parked: Its cells parked now.
        timers: Its timers pending now.
        overdue_s: How long ago its earliest pending timer came due (0: none due).
    """

    info: BehaviourInfo
    lag: float
    records_in: float
    parked: float
    timers: float
    overdue_s: float


def behaviour_rows(behaviours: Iterable[BehaviourInfo], now: Snapshot) -> list[BehaviourRow]:
    """The table's rows of ``behaviours`` from the app's merged snapshot ``now``."""
    return [
        BehaviourRow(
            info=info,
            lag=now["lag"].get(info.input_topic, 0.0),
            records_in=now["records_in"].get(info.input_topic, 0.0),
            parked=now["parked"].get(info.name, 0.0),
            timers=now["timers"].get(info.name, 0.0),
            overdue_s=now["overdue_s"].get(info.name, 0.0),
        )
        for info in behaviours
    ]


def throughput_chart(summary: Summary, *, now: float, bucket_s: float = BUCKET_S) -> Chart:
    """Records in and out per second, per bucket of the summary (from 0 a bucket before the
    first: the counters start at 0)."""
    buckets = summary["buckets"]
    lead = [(buckets[0][0] - bucket_s, 0.0)] if buckets else []
    return line_chart(
        {
            name: lead + [(start, grown.get(name, 0.0) / bucket_s) for start, grown in buckets]
            for name in ("in", "out")
        },
        now=now,
    )


def dead_letter_chart(summary: Summary, *, now: float, bucket_s: float = BUCKET_S) -> Chart:
    """Dead letters per bucket of the summary, stacked by reason."""
    return bar_chart(
        [
            (start, {key[5:]: n for key, n in grown.items() if key.startswith("dead:")})
            for start, grown in summary["buckets"]
        ],
        now=now,
        bucket_s=bucket_s,
    )


def format_count(value: float) -> str:
    """A count for people: ``1234567`` -> ``1,234,567``."""
    return f"{round(value):,}"


def format_rate(value: float | None) -> str:
    """A rate per second (``—`` when unknown)."""
    if value is None:
        return "—"
    return f"{value:,.0f}/s" if value >= 10 else f"{value:.1f}/s"


def format_seconds(value: float | None) -> str:
    """A duration for people: ``0.0042`` -> ``4.2 ms``; ``—`` when unknown, ``> max`` above the
    histogram's last bound."""
    if value is None:
        return "—"
    if math.isinf(value):
        return "> max"
    if value < 1:
        return f"{value * 1000:.3g} ms"
    if value < 120:
        return f"{value:.3g} s"
    return f"{value / 60:.3g} min"


def overview_context(
    workers: list[WorkerView],
    behaviours: Iterable[BehaviourInfo],
    *,
    guarantee: str,
    partitions: int,
    now: float,
) -> dict[str, Any]:
    """What ``overview_live.html`` shows: the ``workers``, their summaries added up, the rows
    of the ``behaviours``, the charts up to ``now``, and the formatting helpers.

    Args:
        workers: Every worker's view.
        behaviours: The app's behaviours.
        guarantee: The processing guarantee the workers run under.
        partitions: The partition count of the input topics.
        now: The time at the charts' right edge (seconds since the epoch).
    """
    merged = merge([w.summary for w in workers if w.summary is not None])
    return {
        "workers": workers,
        "summary": merged,
        "rows": behaviour_rows(behaviours, merged["now"]),
        "throughput": throughput_chart(merged, now=now),
        "dead_chart": dead_letter_chart(merged, now=now),
        "latency_mean": mean(merged["latency"]),
        "latency_p95": quantile(merged["latency"], 0.95),
        "timer_lag_mean": mean(merged["timer_lag"]),
        "timer_lag_p95": quantile(merged["timer_lag"], 0.95),
        "guarantee": guarantee,
        "partitions": partitions,
        "count": format_count,
        "rate": format_rate,
        "seconds": format_seconds,
    }


def install(console: Console) -> None:
    """Register ``/console/``, its live fragment and each worker's part of it, and sample this
    worker's metrics."""
    ring = SampleRing()
    ring.add(empty_snapshot(time.time()))
    collector = WorkerCollector(console.source.metrics_source())
    counters = WorkerCollector(console.source.metrics_source(count_timers=False))

    def take() -> Snapshot:
        return snapshot(collector.collect(), time.time())

    async def sample() -> None:
        ring.add(snapshot(counters.collect(), time.time()))

    console.app.timer(SAMPLE_INTERVAL_S, name="stream_app.console.overview.sample")(sample)

    def local() -> dict[str, Any]:
        assignor: Any = console.app.assignor
        behaviours = console.source.behaviours().values()
        return {
            "worker": _own_url(console),
            "partitions": worker_partitions(
                behaviours,
                assignor.assigned_actives(),
                assignor.assigned_standbys(),
                {info.name: console.settings.changelog_topic(info.name) for info in behaviours},
            ),
            "summary": summarise(ring.samples(), take()),
        }

    @console.page(_WORKER_VIEW)
    async def worker(web: Any, request: Any) -> Any:
        return web.json(local())

    async def live_context() -> dict[str, Any]:
        return overview_context(
            await _workers(console, local()),
            console.source.behaviours().values(),
            guarantee=console.source.guarantee(),
            partitions=console.settings.partitions,
            now=time.time(),
        )

    @console.page("/", title="Overview")
    async def overview(web: Any, request: Any) -> Any:
        return console.render(
            web,
            request,
            "overview.html",
            sample_s=SAMPLE_INTERVAL_S,
            history_s=HISTORY_S,
            **await live_context(),
        )

    @console.page("/fragments/overview")
    async def fragment(web: Any, request: Any) -> Any:
        return console.render(web, request, "overview_live.html", **await live_context())


def _own_url(console: Console) -> str:
    return str(console.app.conf.canonical_url).rstrip("/")


async def _workers(console: Console, mine: dict[str, Any]) -> list[WorkerView]:
    """Every worker's view, this worker's ``mine`` included, by URL."""
    me = mine["worker"]
    try:
        hosts = {str(h).rstrip("/") for h in console.app.router.tables_metadata()}
    except (KeyError, AttributeError):
        hosts = set()
    others = sorted(hosts - {me})
    answers = await asyncio.gather(*(_fetch(console, host) for host in others))
    views = [_worker_view(mine, me)] + [
        _worker_view(answer, me) if isinstance(answer, dict) else WorkerView(host, {}, None, answer)
        for host, answer in zip(others, answers, strict=True)
    ]
    return sorted(views, key=lambda view: view.url)


def _worker_view(answer: dict[str, Any], me: str) -> WorkerView:
    return WorkerView(
        url=answer["worker"],
        partitions=answer["partitions"],
        summary=answer["summary"],
        serving=answer["worker"] == me,
    )


async def _fetch(console: Console, host: str) -> dict[str, Any] | str:
    """Another worker's view, or why it gave none."""
    try:
        async with console.app.http_client.get(
            f"{host}{PREFIX}{_WORKER_VIEW}",
            timeout=aiohttp.ClientTimeout(total=_WORKER_TIMEOUT_S),
        ) as response:
            response.raise_for_status()
            answer: dict[str, Any] = await response.json()
            return answer
    except (TimeoutError, aiohttp.ClientError, ValueError) as error:
        return f"did not answer: {type(error).__name__}"
