"""Entities: tell throughput against the hand-written loop, send latency, and R_eos.

Every subject is a worker of the ledger's ``counter`` entity (:mod:`bench.apps.entity_counter`:
the same entity declared ``fencing=False``, so that it may run ``at_least_once`` too) on a
fresh app id, on one broker, with the same partitions and records:

1. **loop**: the careful hand-written confluent-kafka loop of ``bench._common``
   (:func:`~bench._common.run_careful_loop`: batch multi-get and ``WriteBatch``, one changelog
   record per key per batch, offsets committed on the cell's interval) over the same increments
   (pre-produced), timed to durability, the baseline.
2. **at_least_once / exactly_once**, at each ``--commit-intervals`` value (default 0.1 s and
   1 s), one worker each:

   - *tell throughput*: with the worker ready and idle, ``--records`` increments are produced
     at once (a ``tell`` each: durable when acknowledged); timed from the first produce to the
     group's committed offsets covering all of them, worker CPU over the same interval;
   - *send latency*: then ``--rate`` request/reply ``send`` calls per second for
     ``--seconds`` seconds from one :class:`~stream_app.clients.entities.EntityClient`, each timed
     from the call to its reply (the new state).

Reported ratios: ``tell_over_loop`` (at_least_once throughput / loop) and, per commit interval,
``R_eos`` = exactly_once throughput / at_least_once throughput (goal >= 0.75), with both modes'
send p50/p99 beside the interval. Under exactly_once a reply is visible only when its
transaction commits, so its latency follows the commit interval.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bench._common import (
    PARTITIONS,
    Measurement,
    make_records,
    process_cpu_seconds,
    produce_all,
    running_worker,
    save_result,
    wait_committed,
)
from bench.cells_throughput import PYDANTIC_CODEC, parse_pydantic, run_careful
from stream_app.clients.entities import EntityClient
from stream_app.core.replies import Reply
from stream_app.settings import Settings
from stream_app.testing.dev_broker import kafka_broker

GOAL_R_EOS = 0.75
MODULE = "bench.apps.entity_counter"


def _settings(
    bootstrap: str, workdir: Path, name: str, guarantee: str, interval: float
) -> Settings:
    app_id = f"bench-ent-{name}-{uuid.uuid4().hex[:6]}"
    return Settings(
        app_id=app_id,
        bootstrap_servers=bootstrap,
        partitions=PARTITIONS,
        data_dir=workdir / "data",
        processing_guarantee=guarantee,
        commit_interval_s=interval,
    )


def _env(settings: Settings) -> dict[str, str]:
    return {
        "STREAM_APP_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAM_APP_APP_ID": settings.app_id,
        "STREAM_APP_DATA_DIR": str(settings.data_dir),
        "STREAM_APP_PARTITIONS": str(settings.partitions),
        "STREAM_APP_PROCESSING_GUARANTEE": settings.processing_guarantee,
        "STREAM_APP_COMMIT_INTERVAL_S": str(settings.commit_interval_s),
    }


def _latencies(settings: Settings, *, rate: float, seconds: float, entities: int) -> list[float]:
    """Send ``rate`` requests per second for ``seconds``; the round trips in milliseconds."""
    done: list[float] = []
    lock = threading.Lock()
    pending: list[Future[Reply]] = []
    with EntityClient(settings, timeout=60) as client:
        # One round trip first: the reply partition's reader is running and the worker warm.
        client.send(("counter", "warm-up"), "increment", {"by": 1})
        interval = 1.0 / rate
        start = time.perf_counter()
        n = 0
        while (now := time.perf_counter()) - start < seconds:
            due = start + n * interval
            if now < due:
                time.sleep(due - now)
            sent = time.perf_counter()
            future = client.request_future(
                ("counter", f"lat-{n % entities}"), "increment", {"by": 1}
            )

            def record(_f: Future[Reply], sent: float = sent) -> None:
                with lock:
                    done.append((time.perf_counter() - sent) * 1000)

            future.add_done_callback(record)
            pending.append(future)
            n += 1
        for future in pending:
            future.result(timeout=60)
    return done


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_subject(
    bootstrap: str,
    workdir: Path,
    records: list[tuple[bytes, bytes]],
    *,
    guarantee: str,
    interval: float,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    """One worker: tell throughput on ``records``, then send latency at ``rate``."""
    name = f"{'eos' if guarantee == 'exactly_once' else 'alos'}-{int(interval * 1000)}ms"
    settings = _settings(bootstrap, workdir, name, guarantee, interval)
    log = workdir / f"{settings.app_id}.log"
    topic = settings.input_topic("counter")
    with running_worker(MODULE, _env(settings), log) as worker:
        assert worker.process is not None
        pid = worker.process.pid
        started, cpu_start = time.time(), process_cpu_seconds(pid)
        produce_all(bootstrap, topic, records)
        finished = wait_committed(bootstrap, settings.app_id, topic)
        cpu_end = process_cpu_seconds(pid)
        tell = Measurement(
            events=len(records), seconds=finished - started, cpu_seconds=cpu_end - cpu_start
        )
        lat = _latencies(settings, rate=rate, seconds=seconds, entities=100)
    return {
        "subject": name,
        "guarantee": guarantee,
        "commit_interval_s": interval,
        "tell": tell.as_json(),
        "send_latency_ms": {
            "requests": len(lat),
            "rate_per_s": rate,
            "p50": round(statistics.median(lat), 1),
            "p99": round(_percentile(lat, 0.99), 1),
            "max": round(max(lat), 1),
        },
        "_events_per_s": tell.events_per_s,
    }


def main() -> None:
    """Run the loop and the four worker subjects; print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="increments told at once")
    parser.add_argument("--entities", type=int, default=1_000, help="counters they go to")
    parser.add_argument("--rate", type=float, default=100.0, help="send calls per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of send calls")
    parser.add_argument(
        "--commit-intervals", type=float, nargs="+", default=[0.1, 1.0], metavar="S"
    )
    parser.add_argument(
        "--save", action="store_true", help="also write the report to bench/results/entities.json"
    )
    args = parser.parse_args()
    records = make_records(args.records, args.entities)
    subjects: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        loop = run_careful(
            broker.bootstrap,
            workdir,
            records,
            name="careful",
            parse=parse_pydantic,
            codec=PYDANTIC_CODEC,
        ).durable
        for interval in args.commit_intervals:
            for guarantee in ("at_least_once", "exactly_once"):
                subjects.append(
                    run_subject(
                        broker.bootstrap,
                        workdir,
                        records,
                        guarantee=guarantee,
                        interval=interval,
                        rate=args.rate,
                        seconds=args.seconds,
                    )
                )
    by = {(s["guarantee"], s["commit_interval_s"]): s for s in subjects}
    ratios = {}
    for interval in args.commit_intervals:
        alos, eos = by[("at_least_once", interval)], by[("exactly_once", interval)]
        ratios[f"{interval:g}s"] = {
            "R_eos": round(eos["_events_per_s"] / alos["_events_per_s"], 3),
            "tell_over_loop": round(alos["_events_per_s"] / loop.events_per_s, 3),
            "send_p50_p99_ms": {
                "at_least_once": [alos["send_latency_ms"]["p50"], alos["send_latency_ms"]["p99"]],
                "exactly_once": [eos["send_latency_ms"]["p50"], eos["send_latency_ms"]["p99"]],
            },
        }
    for subject in subjects:
        del subject["_events_per_s"]
    report = {
        "benchmark": "entities",
        "records": args.records,
        "entities": args.entities,
        "partitions": PARTITIONS,
        "broker": broker.source,
        "timed": "tell: first produce -> group committed to the end of the input; CPU = worker "
        "user+sys over that interval. loop: first record taken -> the commit covering the last "
        "record, in process",
        "loop": loop.as_json(),
        "subjects": subjects,
        "by_commit_interval": ratios,
    }
    headline = {f"R_eos_commit_{interval}": r["R_eos"] for interval, r in ratios.items()}
    report = {
        "benchmark": report.pop("benchmark"),
        **headline,
        **report,
        "goals": {
            name: {"goal": f">= {GOAL_R_EOS}", "met": value >= GOAL_R_EOS}
            for name, value in headline.items()
        },
    }
    if args.save:
        save_result("entities", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
