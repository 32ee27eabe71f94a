"""Broker faults: a three-node KRaft cluster loses a broker, then its active controller, under load.

Starts its own :class:`~stream_app.testing.dev_broker.LocalCluster` (three combined
broker+controller nodes from the Maven-resolved jars, on free ports; the development broker
cannot lose a node), declares the counter's topics (``topics/counter.toml``) with replication
factor 3 and ``min.insync.replicas`` 2, and runs one ``stream_app.examples.counter`` worker
under ``--guarantee`` (``exactly_once`` by default) fed by a producer (``acks=all``, idempotent)
that counts what the cluster acknowledged per cell. Then
:func:`stream_app.testing.broker_faults.run_broker_faults`, with ``--duration`` split in three
holds:

1. the load runs for a third of ``--duration``: the baseline, messages applied per second with
   every node up (``rate_before``);
2. SIGKILL a node that is not the active controller; seconds until the worker has applied 200
   more messages (``resumed_s``), the load held a third of ``--duration`` more with the node
   down (``rate_down``: applied per second from the kill to the end of the hold); start the
   node again (``restart_s``) and wait until it is back in every in-sync replica set
   (``in_sync_s``);
3. the same with the active controller (``new_controller``: the quorum's next leader);
4. stop the load and wait until every cell's count is what was acknowledged for it: ``lost``
   (acknowledged, never applied) and ``duplicated`` (applied more than once).

Headlines: ``R_down_broker`` and ``R_down_controller`` = applied per second while that node was
down ÷ ``rate_before`` (the same run, the same offered load: how much of the steady rate a fault
costs, its stall included); goals ``lost`` == 0, and under ``exactly_once`` ``duplicated`` == 0.
Prints one JSON object; ``--save`` keeps it in ``bench/results/broker_faults.json``.

Run: ``.venv/bin/python -m bench.broker_faults [--duration 60] [--guarantee exactly_once]
[--rate 400] [--save]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from bench._common import save_result, worker_env
from stream_app.kafka.topics import apply_changes, load_definitions, plan_changes
from stream_app.settings import ProcessingGuarantee, Settings
from stream_app.testing import SteadyLoad, WorkerProcess
from stream_app.testing.broker_faults import BrokerFaultReport, run_broker_faults
from stream_app.testing.dev_broker import (
    LocalCluster,
    find_free_port,
    find_free_ports,
    project_root,
    session_name,
)

CELLS = 40
#: Records the load sends per round; it then serves delivery reports for 1 / (rate / this) s.
PER_ROUND = 10


def _settings(bootstrap: str, workdir: Path, guarantee: ProcessingGuarantee) -> Settings:
    return Settings(
        app_id=session_name("bench-faults"),
        bootstrap_servers=bootstrap,
        data_dir=workdir / "data",
        partitions=4,
        replication_factor=3,
        min_insync_replicas=2,
        processing_guarantee=guarantee,
        session_timeout_s=10,
        commit_interval_s=1,
    )


def _env(settings: Settings) -> dict[str, str]:
    return worker_env(
        settings,
        STREAM_APP_REPLICATION_FACTOR=str(settings.replication_factor),
        STREAM_APP_MIN_INSYNC_REPLICAS=str(settings.min_insync_replicas),
        STREAM_APP_PROCESSING_GUARANTEE=settings.processing_guarantee,
        STREAM_APP_SESSION_TIMEOUT_S=str(settings.session_timeout_s),
        STREAM_APP_COMMIT_INTERVAL_S=str(settings.commit_interval_s),
    )


def measure(
    duration: float, guarantee: ProcessingGuarantee, rate: float, workdir: Path
) -> BrokerFaultReport:
    """Start a cluster and a worker, run the faults, stop both; the figures."""
    cluster = LocalCluster(find_free_ports(6), count=3)
    try:
        cluster.up()
        settings = _settings(cluster.bootstrap, workdir, guarantee)
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        definitions = load_definitions([project_root() / "topics" / "counter.toml"], settings)
        apply_changes(admin, plan_changes(admin, definitions))
        worker = WorkerProcess(
            "stream_app.examples.counter",
            env=_env(settings),
            log_path=workdir / "worker.log",
            web_port=find_free_port(),
        )
        worker.start()
        try:
            worker.wait_ready(timeout=180)
            load = SteadyLoad(
                cluster.bootstrap,
                settings.input_topic("counter"),
                "increment",
                cells=CELLS,
                per_round=PER_ROUND,
                pause=PER_ROUND / rate,
            )
            return run_broker_faults(cluster, worker, load, "counter", hold_s=duration / 3)
        finally:
            worker.stop()
    finally:
        cluster.down(purge=True)


def report_of(
    figures: BrokerFaultReport, duration: float, guarantee: str, rate: float
) -> dict[str, Any]:
    """The JSON report: the figures, the headline ratios and the goals."""
    before = figures.rate_before or 0.0
    down = {
        kill.role: (kill.rate_down or 0.0) / before if before else 0.0 for kill in figures.kills
    }
    goals = {"lost": {"goal": "== 0", "met": figures.lost == 0}}
    if guarantee == "exactly_once":
        goals["duplicated"] = {"goal": "== 0", "met": figures.duplicated == 0}
    return {
        "benchmark": "broker_faults",
        "duration_s": duration,
        "guarantee": guarantee,
        "offered_per_s": rate,
        "cells": CELLS,
        "nodes": 3,
        "replication_factor": 3,
        "min_insync_replicas": 2,
        **figures.as_json(),
        "R_down_broker": round(down.get("broker", 0.0), 3),
        "R_down_controller": round(down.get("controller", 0.0), 3),
        "goals": goals,
    }


def main() -> None:
    """Parse the arguments, run once, print (and with ``--save`` keep) the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of load held, over three phases"
    )
    parser.add_argument(
        "--guarantee", choices=("exactly_once", "at_least_once"), default="exactly_once"
    )
    parser.add_argument("--rate", type=float, default=400.0, help="messages offered per second")
    parser.add_argument(
        "--save", action="store_true", help="also write bench/results/broker_faults.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp:
        figures = measure(args.duration, args.guarantee, args.rate, Path(tmp))
    report = report_of(figures, args.duration, args.guarantee, args.rate)
    if args.save:
        save_result("broker_faults", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
