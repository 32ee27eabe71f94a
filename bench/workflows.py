"""Workflows on Kafka: the per-node cost of the engine, and a fan-out on one and two workers.

Every part runs ``faust -A bench.apps.workflow_jobs worker`` (:mod:`bench.apps.workflow_jobs`),
a fresh app id per part, :data:`~bench._common.PARTITIONS` partitions.

**Per-node cost.** A linear run of ``--chain`` nodes (1,000) of the ``chain`` workflow, or
``--nodes / --chain`` such runs one after the other. Each run is started with
:meth:`WorkflowClient.run` and timed until its ``RunEnded`` is read. Each step of a run loads
and stores the run's record, which grows with the run (about 310 bytes a node), so a node
costs more the longer its run: shorter chains (``--chain 200``) show the fixed part.
Baselines in the same process: the chain's action (:func:`bench.apps.workflow_jobs.advance`)
called directly in a loop, and the same workflow on the local engine. ``R_node_kafka`` = Kafka
nodes/s ÷ direct-loop nodes/s (how much a node costs on Kafka, against nothing at all),
``R_node_local`` = Kafka ÷ local engine.

**Node to successor.** From each chain's record, the time from a node's creation to its
successor's (both stamped with the timestamps of their tasks' records, so the hop covers the
task's trip to a worker, its execution, the result's trip back and the run's commit): p50 and
p99, in milliseconds.

**Fan-out.** A ``fan`` run of ``--width`` forks (100), each waiting ``--task-ms`` (20 ms, as a
call to another service would), on one worker and then on two workers of a fresh app (both
owning partitions before the run starts), after an untimed warm-up run of each. ``R_fanout``
= time on one worker ÷ time on two (the speed-up; goal >= 1.5).

Run: ``.venv/bin/python -m bench.workflows [--nodes N] [--chain N] [--width N] [--task-ms MS]
[--save]`` (``--save`` keeps the report in ``bench/results/workflows.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import (
    PARTITIONS,
    WorkerOptions,
    add_worker_arguments,
    check_worker_arguments,
    running_worker,
    save_result,
    worker_env,
)
from bench.apps.workflow_jobs import advance, chain
from stream_app import LocalEngine, RunRecord, WorkflowClient
from stream_app.settings import Settings
from stream_app.testing import WorkerProcess, wait_for
from stream_app.testing.dev_broker import kafka_broker

MODULE = "bench.apps.workflow_jobs"
#: The fan-out's speed-up on two workers that counts as scaling out.
GOAL_R_FANOUT = 1.5


def fresh_settings(bootstrap: str, workdir: Path, name: str) -> Settings:
    """Settings of a fresh app id (its own topics and consumer group)."""
    return Settings(
        app_id=f"bench-{name}-{uuid.uuid4().hex[:6]}",
        bootstrap_servers=bootstrap,
        partitions=PARTITIONS,
        data_dir=workdir / "data",
    )


def direct_nodes_per_s(nodes: int, chain_length: int) -> float:
    """The chain's action called in a loop, ``nodes`` times: nodes/s."""
    started = time.perf_counter()
    done = 0
    while done < nodes:
        payload: dict[str, Any] = {"i": 0, "n": chain_length, "acc": 0}
        for _ in range(chain_length - 1):
            payload = advance(payload)
        done += chain_length
    return nodes / (time.perf_counter() - started)


def local_nodes_per_s(nodes: int, chain_length: int) -> float:
    """The chain workflow on the local engine (one thread), ``nodes`` nodes in all: nodes/s."""
    engine = LocalEngine(chain)
    started = time.perf_counter()
    for _ in range(nodes // chain_length):
        engine.run({"i": 0, "n": chain_length})
    return nodes / (time.perf_counter() - started)


def hops_ms(record: RunRecord) -> list[float]:
    """Milliseconds from each node's creation to its successors' (one entry per edge)."""
    created = {n.id: datetime.fromisoformat(n.created_at) for n in record.nodes.values()}
    return [
        (created[n.id] - created[n.predecessor_id]).total_seconds() * 1000
        for n in record.nodes.values()
        if n.predecessor_id is not None
    ]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run_chains(
    bootstrap: str, workdir: Path, nodes: int, chain_length: int, options: WorkerOptions
) -> dict[str, Any]:
    """The per-node part on Kafka: nodes/s over the chains, and the node-to-successor hops."""
    settings = fresh_settings(bootstrap, workdir, "wf-chain")
    env, log = options.files(settings.app_id, workdir)
    runs = nodes // chain_length
    hops: list[float] = []
    with running_worker(MODULE, {**worker_env(settings), **env}, log) as worker:
        with WorkflowClient("bench", settings, timeout=300) as client:
            client.run("chain", {"i": 0, "n": 10})  # warm-up, untimed
            started = time.perf_counter()
            ids = [
                client.run("chain", {"i": 0, "n": chain_length}, run_id=str(uuid.uuid4()))[0].run_id
                for _ in range(runs)
            ]
            elapsed = time.perf_counter() - started
        for run_id in ids:
            hops.extend(hops_ms(run_record(worker, run_id)))
    return {
        "runs": runs,
        "chain": chain_length,
        "nodes": runs * chain_length,
        "seconds": round(elapsed, 3),
        "nodes_per_s": round(runs * chain_length / elapsed, 1),
        "hop_ms": {
            "p50": round(percentile(hops, 0.50), 2),
            "p99": round(percentile(hops, 0.99), 2),
            "max": round(max(hops), 2),
            "mean": round(statistics.fmean(hops), 2),
            "count": len(hops),
        },
    }


def run_record(worker: WorkerProcess, run_id: str) -> RunRecord:
    """A run's record, from the worker's view."""
    answer = worker.get_json(f"/stream-app/workflows/bench/{run_id}/", timeout=30)
    return RunRecord.model_validate(answer["run"])


def fan_seconds(
    bootstrap: str,
    workdir: Path,
    workers: int,
    width: int,
    task_ms: float,
    options: WorkerOptions,
) -> dict[str, Any]:
    """One fan run of ``width`` forks on ``workers`` workers of a fresh app: its seconds."""
    settings = fresh_settings(bootstrap, workdir, f"wf-fan{workers}")
    with contextlib.ExitStack() as stack:
        started = []
        for index in range(workers):
            extra, log = options.files(f"{settings.app_id}-{index}", workdir)
            # Each worker keeps its tables in a folder of its own (RocksDB locks them).
            own = {"STREAM_APP_DATA_DIR": str(workdir / f"data-{settings.app_id}-{index}")}
            env = {**worker_env(settings), **own, **extra}
            started.append(stack.enter_context(running_worker(MODULE, env, log)))
        wait_for(
            lambda: [len(owned(w)) for w in started],
            lambda counts: all(counts) and sum(counts) == PARTITIONS,
            timeout=120,
            what="every worker owning partitions",
        )
        with WorkflowClient("bench", settings, timeout=600) as client:
            client.run("fan", {"width": 4 * PARTITIONS, "task_ms": 1.0})  # warm-up, untimed
            began = time.perf_counter()
            [total] = client.run("fan", {"width": width, "task_ms": task_ms})
            elapsed = time.perf_counter() - began
    if total.payload != {"parts": width}:
        raise RuntimeError(f"the fan's total is {total.payload}, expected {width} parts")
    return {"workers": workers, "width": width, "task_ms": task_ms, "seconds": round(elapsed, 3)}


def owned(worker: WorkerProcess) -> list[int]:
    """The partitions of the ``bench`` behaviour a worker owns (its metrics view)."""
    partitions: list[int] = worker.get_json("/stream-app/metrics/")["behaviours"]["bench"][
        "partitions"
    ]
    return partitions


def main() -> None:
    """Run the parts and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1_000, help="chain nodes timed in all")
    parser.add_argument("--chain", type=int, default=1_000, help="nodes of one linear run")
    parser.add_argument("--width", type=int, default=100, help="forks of the fan-out run")
    parser.add_argument("--task-ms", type=float, default=20.0, help="each fork's work (ms)")
    parser.add_argument(
        "--save", action="store_true", help="also write the report to bench/results/workflows.json"
    )
    add_worker_arguments(parser)
    args = parser.parse_args()
    check_worker_arguments(parser, args)
    if args.chain < 2 or args.nodes < args.chain:
        parser.error("--chain must be at least 2 and at most --nodes")
    options = WorkerOptions.from_args(args)
    nodes = args.nodes - args.nodes % args.chain
    report: dict[str, Any] = {"benchmark": "workflows", "partitions": PARTITIONS}
    with tempfile.TemporaryDirectory(prefix="stream-app-bench-") as tmp, kafka_broker() as broker:
        workdir = Path(tmp)
        report["broker"] = broker.source
        report.update(options.as_json())
        direct = direct_nodes_per_s(nodes * 100, args.chain)
        local = local_nodes_per_s(nodes, args.chain)
        kafka = run_chains(broker.bootstrap, workdir, nodes, args.chain, options)
        one = fan_seconds(broker.bootstrap, workdir, 1, args.width, args.task_ms, options)
        two = fan_seconds(broker.bootstrap, workdir, 2, args.width, args.task_ms, options)
    report["R_node_kafka"] = round(kafka["nodes_per_s"] / direct, 6)
    report["R_node_local"] = round(kafka["nodes_per_s"] / local, 4)
    report["R_fanout"] = round(one["seconds"] / two["seconds"], 3)
    report["hop_p50_ms"] = kafka["hop_ms"]["p50"]
    report["hop_p99_ms"] = kafka["hop_ms"]["p99"]
    report["per_node"] = {
        "kafka": kafka,
        "direct_nodes_per_s": round(direct, 1),
        "local_nodes_per_s": round(local, 1),
    }
    report["fanout"] = {"one_worker": one, "two_workers": two}
    report["timed"] = (
        "chains: WorkflowClient.run of each chain, start sent -> its RunEnded read; fan: the "
        "same for one run; hops: a node's created_at to its successor's (task record timestamps)"
    )
    report["goals"] = {
        "R_fanout": {"goal": f">= {GOAL_R_FANOUT}", "met": report["R_fanout"] >= GOAL_R_FANOUT}
    }
    if args.save:
        save_result("workflows", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
