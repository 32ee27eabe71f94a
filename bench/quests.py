"""Quests against plain cells: multicast throughput, and timer lag with a million contexts.

Both parts run ``faust -A bench.apps.quest_counter worker`` (:mod:`bench.apps.quest_counter`),
one fresh app id per subject and round, :data:`~bench._common.PARTITIONS` partitions.

**Throughput** (``R_quest``, goal >= 0.5). Two subjects, the same shape:

1. **cell**: ``--contexts`` cells of the plain behaviour are made (one ``touch`` each), then
   ``--events`` ``tick`` messages to them (keys drawn at random, seeded), each adding 1.
2. **quest**: ``--contexts`` contexts each take the quests ``q0``, ``q1`` and ``q2`` (three
   ``add_quest`` messages), then ``--events`` multicast events ``tick`` to them, each running
   the ``hit`` action of all three quests (three action calls, three instances' variables).

The setup records are produced and applied first (not timed); then the events are produced at
once to the running worker and timed from the first one applied to the moment the group's
committed offsets cover the last (everything the worker produced for them acknowledged), CPU
(user + system, every thread of the worker) over the same interval. Every tick must reach each
quest: the worker's count of calls per quest is checked against ``--events``. After an
untimed warm-up round of each, ``--rounds`` rounds; medians reported. ``R_quest`` = quest
events/s ÷ cell messages/s.

**Timer lag** (``quest_timer_lag_p99_ms``, goal <= 100 ms, the worker's RSS reported).
``--timer-contexts`` contexts (1,000,000 by default) each take the quest ``beat``, whose one
recurring timer comes due ``--beat-s`` seconds after the quest started and every ``--beat-s``
after: one worker holds that many pending timers. A quest starts at its add's time (the
record's timestamp), and the adds are stamped evenly over ``--window-s`` seconds (600), so
that once all are set the timers come due at a steady rate (1,667/s by default, as in
:mod:`bench.timer_lag`), as for users who joined over time. The lag of a firing is the
invocation's time (the wall time the runtime took as it started the wake that fired it) minus
the occurrence's due time, over every firing seen; the run ends when every context has fired
once. Reported: the time to set them
up, whether all were set before the first came due, the rate they come due at, the worker's
RSS (and peak) once all are set and once all have fired, and its CPU per firing.

Run: ``.venv/bin/python -m bench.quests [--contexts N] [--events N] [--rounds N]
[--timer-contexts N] [--beat-s S] [--window-s S] [--skip-throughput | --skip-timers] [--save]``
(``--save`` keeps the report in ``bench/results/quests.json``).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import (
    PARTITIONS,
    DurableMeasurement,
    WorkerOptions,
    add_worker_arguments,
    check_worker_arguments,
    median_of,
    process_cpu_seconds,
    produce_all,
    running_worker,
    save_result,
    subject_figures,
    worker_durable,
    worker_env,
)
from bench.timer_lag import memory_kib, rss_mib
from stream_app.settings import Settings
from stream_app.testing import ConditionTimeout, ProbeFailed, WorkerProcess, wait_for
from stream_app.testing.dev_broker import kafka_broker

MODULE = "bench.apps.quest_counter"
GOAL_R_QUEST = 0.5
GOAL_LAG_P99_MS = 100.0
COUNTING_QUESTS = ("q0", "q1", "q2")
#: Longest a phase (setup, processing, firing) may take before the run fails.
PHASE_TIMEOUT_S = 1800.0

Records = list[tuple[bytes, bytes]]


def _envelope(type_: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"type": type_, "body": body}, separators=(",", ":")).encode()


TOUCH = _envelope("touch", {})
TICK = _envelope("tick", {})
MULTICAST_TICK = _envelope("event", {"event_name": "tick"})


def add_quest(quest: str) -> bytes:
    """The ``add_quest`` envelope that starts ``quest`` in the context it is keyed by."""
    return _envelope("add_quest", {"quest": quest})


def workload(subject: str, contexts: int, events: int, *, seed: int = 7) -> tuple[Records, Records]:
    """``(setup, events)`` records of ``subject`` (``cell`` or ``quest``): the same keys, drawn
    at random (seeded), for both subjects."""
    keys = [f"ctx-{i}".encode() for i in range(contexts)]
    rng = random.Random(seed)
    drawn = [keys[rng.randrange(contexts)] for _ in range(events)]
    if subject == "cell":
        return [(key, TOUCH) for key in keys], [(key, TICK) for key in drawn]
    adds = [add_quest(name) for name in COUNTING_QUESTS]
    return [(key, add) for key in keys for add in adds], [(key, MULTICAST_TICK) for key in drawn]


def _settings(bootstrap: str, workdir: Path, name: str) -> Settings:
    return Settings(
        app_id=f"bench-{name}-{uuid.uuid4().hex[:6]}",
        bootstrap_servers=bootstrap,
        partitions=PARTITIONS,
        data_dir=workdir / "data",
    )


def _probe(worker: WorkerProcess, path: str) -> dict[str, Any]:
    if not worker.alive():
        raise ProbeFailed(f"quest bench worker died:\n{worker.log_text()[-4000:]}")
    answer: dict[str, Any] = worker.get_json(path)
    return answer


def run_throughput(
    bootstrap: str,
    workdir: Path,
    subject: str,
    contexts: int,
    events: int,
    options: WorkerOptions,
) -> DurableMeasurement:
    """One subject, once: setup applied, then the events timed to durability."""
    behaviour = "plain" if subject == "cell" else "quests"
    settings = _settings(bootstrap, workdir, subject)
    topic = settings.input_topic(behaviour)
    setup, ticks = workload(subject, contexts, events)
    extra, log = options.files(settings.app_id, workdir)
    env = worker_env(settings, BENCH_EXPECTED=str(events), **extra)
    with running_worker(MODULE, env, log) as worker:
        produce_all(bootstrap, topic, setup)
        try:
            wait_for(
                lambda: _probe(worker, "/bench/progress/"),
                lambda s: s["setup"] >= len(setup),
                timeout=PHASE_TIMEOUT_S,
                interval=0.1,
                what=f"{subject}: setup of {contexts} contexts applied",
            )
        except ConditionTimeout as exc:
            raise ConditionTimeout(
                f"{exc}\n--- worker log tail ---\n{worker.log_text()[-4000:]}"
            ) from None
        produce_all(bootstrap, topic, ticks)
        measured, final = worker_durable(
            worker,
            events=events,
            bootstrap=bootstrap,
            group=settings.app_id,
            topic=topic,
            what=f"{subject}: {events} events applied",
            timeout=PHASE_TIMEOUT_S,
        )
    _check_counts(subject, final, contexts, events)
    return measured


def _check_counts(subject: str, final: dict[str, Any], contexts: int, events: int) -> None:
    setup = contexts * (len(COUNTING_QUESTS) if subject == "quest" else 1)
    if final["count"] != events or final["setup"] != setup:
        raise AssertionError(f"{subject}: handled {final}, sent {setup} setup and {events} events")
    if subject == "quest":
        calls = final["calls"]
        if any(calls.get(name) != events for name in COUNTING_QUESTS):
            raise AssertionError(f"quest: calls per quest {calls}, each should be {events}")


def run_timers(
    bootstrap: str,
    workdir: Path,
    contexts: int,
    beat_s: float,
    window_s: float,
    options: WorkerOptions,
) -> dict[str, Any]:
    """``contexts`` contexts with the ``beat`` quest: set up, then wait for every first beat."""
    settings = _settings(bootstrap, workdir, "beats")
    extra, log = options.files(settings.app_id, workdir)
    env = worker_env(settings, BENCH_BEAT_S=str(beat_s), **extra)
    with running_worker(MODULE, env, log) as worker:
        try:
            return _measure_timers(worker, settings, contexts, beat_s, window_s)
        except ConditionTimeout as exc:
            raise ConditionTimeout(
                f"{exc}\n--- worker log tail ---\n{worker.log_text()[-4000:]}"
            ) from None


def _measure_timers(
    worker: WorkerProcess, settings: Settings, contexts: int, beat_s: float, window_s: float
) -> dict[str, Any]:
    # A quest starts at its add's time (the record's timestamp), and its timer comes due
    # beat_s later: the adds' timestamps are spread evenly over the window, so the timers come
    # due at a steady rate once all are set, as they would for users who joined over time.
    start_ms = int(time.time() * 1000)
    window_ms = int(window_s * 1000)
    first_due = (start_ms + beat_s * 1000) / 1000
    adds = [(f"ctx-{i}".encode(), add_quest("beat")) for i in range(contexts)]
    produce_all(
        settings.bootstrap_servers,
        settings.input_topic("quests"),
        adds,
        timestamps=lambda i: start_ms + window_ms * i // contexts,
    )
    del adds
    set_up = wait_for(
        lambda: (time.time(), _probe(worker, "/bench/beats/")),
        lambda seen: seen[1]["setup"] >= contexts,
        timeout=PHASE_TIMEOUT_S,
        interval=0.25,
        what=f"{contexts} beat quests started",
    )
    memory_set = memory_kib(worker.pid)
    while time.time() < first_due:
        time.sleep(min(0.25, max(0.0, first_due - time.time())))
    cpu_before = process_cpu_seconds(worker.pid)
    wait_for(
        lambda: _probe(worker, "/bench/beats/"),
        lambda seen: seen["beats"] >= contexts,
        timeout=window_s + PHASE_TIMEOUT_S,
        interval=0.5,
        what=f"{contexts} first beats",
    )
    fire_s = time.time() - first_due
    cpu = process_cpu_seconds(worker.pid) - cpu_before
    memory_fired = memory_kib(worker.pid)
    lags = _probe(worker, "/bench/beats/?lags=1")["lag_ms"]
    p99 = lags["p99"]
    return {
        "contexts": contexts,
        "beat_s": beat_s,
        "window_s": window_s,
        "set_up_s": round(set_up[0] - start_ms / 1000, 3),
        "all_set_before_first_due": set_up[1]["beats"] == 0 and set_up[0] < first_due,
        "due_rate_per_s": round(contexts / window_s, 1) if window_s else None,
        "fire_span_s": round(fire_s, 3),
        "lag_ms": lags,
        "worker_memory": {"all_set": rss_mib(memory_set), "all_fired": rss_mib(memory_fired)},
        "worker_cpu_us_per_fire": round(cpu * 1e6 / contexts, 1),
        "worker_warnings": worker.log_text().count("[WARNING]"),
        "met": p99 is not None and p99 <= GOAL_LAG_P99_MS,
    }


def throughput(bootstrap: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The throughput part: warm-up, rounds, medians and ``R_quest``."""
    options = WorkerOptions.from_args(args)
    subjects = ("cell", "quest")
    if args.warmup:
        for subject in subjects:
            run_throughput(bootstrap, workdir, subject, args.contexts, args.warmup, options)
    results: dict[str, list[DurableMeasurement]] = {subject: [] for subject in subjects}
    for _ in range(args.rounds):
        for subject in subjects:
            results[subject].append(
                run_throughput(bootstrap, workdir, subject, args.contexts, args.events, options)
            )
    cell, quest = (median_of([m.durable for m in results[s]]) for s in subjects)
    r_quest = quest.events_per_s / cell.events_per_s
    return {
        "contexts": args.contexts,
        "events": args.events,
        "rounds": args.rounds,
        "warmup_events": args.warmup,
        "subjects": {subject: subject_figures(results[subject]) for subject in subjects},
        "R_quest": round(r_quest, 3),
        "cpu_per_event_quest_over_cell": round(quest.cpu_us_per_event / cell.cpu_us_per_event, 3),
    }


def main() -> None:
    """Run the parts asked for and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, default=10_000, help="contexts (and cells)")
    parser.add_argument("--events", type=int, default=50_000, help="events (and messages)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each subject (median)")
    parser.add_argument("--warmup", type=int, default=5_000, help="events of the warm-up round")
    parser.add_argument(
        "--timer-contexts", type=int, default=1_000_000, help="contexts with a recurring timer"
    )
    parser.add_argument(
        "--beat-s", type=float, default=450.0, help="period of their timer (> the setup time)"
    )
    parser.add_argument(
        "--window-s", type=float, default=600.0, help="seconds their first due times span"
    )
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-throughput", action="store_true", help="only the timer part")
    skip.add_argument("--skip-timers", action="store_true", help="only the throughput part")
    parser.add_argument(
        "--save", action="store_true", help="also write the report to bench/results/quests.json"
    )
    add_worker_arguments(parser)
    args = parser.parse_args()
    check_worker_arguments(parser, args)
    report: dict[str, Any] = {"benchmark": "quests", "partitions": PARTITIONS}
    goals: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        report["broker"] = broker.source
        report.update(WorkerOptions.from_args(args).as_json())
        if not args.skip_throughput:
            part = throughput(broker.bootstrap, workdir, args)
            report["R_quest"] = part["R_quest"]
            report["throughput"] = part
            goals["R_quest"] = {
                "goal": f">= {GOAL_R_QUEST}",
                "met": part["R_quest"] >= GOAL_R_QUEST,
            }
        if not args.skip_timers:
            timers = run_timers(
                broker.bootstrap,
                workdir,
                args.timer_contexts,
                args.beat_s,
                args.window_s,
                WorkerOptions.from_args(args),
            )
            report["quest_timer_lag_p99_ms"] = timers["lag_ms"]["p99"]
            report["timers"] = timers
            goals["quest_timer_lag_p99_ms"] = {
                "goal": f"<= {GOAL_LAG_P99_MS:.0f}",
                "met": timers.pop("met"),
            }
    report["timed"] = (
        "throughput: first event applied -> the group's commit covering the last (setup "
        "applied before, untimed); timers: invocation time of a firing's wake minus its due time"
    )
    report["goals"] = goals
    if args.save:
        save_result("quests", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
