"""What the workflow state machine costs per node, and what the local engine's threads give.

No broker: this measures the part every workflow engine shares (``Workflow.execute`` and
``RunState.apply``), so that the Kafka engine's figures can be read against it.

1. **Linear**: a run of ``--nodes`` nodes in a row, each action computing the next value from
   the last (a few arithmetic operations), timed for three subjects:

   - ``direct``: the same computation called in a plain loop (the job without a framework);
   - ``local``: :class:`~stream_app.engine.workflows.LocalEngine`, sequential;
   - ``stored``: ``RunState`` driven by hand with the run's record written to JSON and read
     back after every step, as a run's cell stores it on Kafka.

   ``R_local`` and ``R_stored`` are their nodes/s over ``direct``'s; ``overhead_us_per_node``
   is what each adds per node.
2. **Fan-out**: one node opening ``--fanout`` forks whose action waits ``--io-ms`` (an I/O
   call), joined, on the local engine with 1 and with ``--threads`` threads; ``R_local_fanout``
   is the speed-up (goal >= 2 with 4 threads).

Each figure is the median of ``--rounds`` rounds. Prints one JSON object.

Run: ``.venv/bin/python -m bench.workflows_local [--nodes N] [--fanout N] [--io-ms MS]
[--threads N] [--rounds N] [--save]`` (``--save`` keeps ``bench/results/workflows_local.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench._common import save_result
from stream_app.api.workflows import EdgeContext, Joined, RunState, Workflow
from stream_app.core.workflows import Node, RunRecord, RunStatus
from stream_app.engine.workflows import LocalEngine

#: The goals this benchmark checks.
GOALS = {"R_local_fanout": 2.0}


def next_value(v: int) -> int:
    """The work of one linear node: a step of a linear congruential generator."""
    return (v * 1_103_515_245 + 12_345) % 2_147_483_648


def linear_workflow(nodes: int) -> Workflow:
    """``step`` nodes in a row, ``nodes - 1`` of them, then one ``done`` node."""
    wf = Workflow("bench_linear", root="step")
    wf.node("step")
    wf.node("done", final=True)

    @wf.action("step", to=["step", "done"])
    def advance(node: Node, ctx: EdgeContext) -> None:
        n, v = node.payload["n"] + 1, next_value(node.payload["v"])
        ctx.derive("step" if n < nodes - 1 else "done", payload={"n": n, "v": v})

    return wf.validate()


def fanout_workflow(width: int, io_s: float) -> Workflow:
    """One node opening ``width`` forks whose action waits ``io_s``, joined into a final node."""
    wf = Workflow("bench_fanout", root="open")
    wf.node("open")
    wf.node("fetch")
    wf.node("fetched")
    wf.node("gathered", payload=Joined, final=True)
    wf.join("gathered", forks_of="open")

    @wf.action("open", to=["fetch"], fork=True)
    def fan(node: Node, ctx: EdgeContext) -> None:
        for i in range(width):
            ctx.derive("fetch", payload={"i": i})

    @wf.action("fetch", to=["fetched"])
    def fetch(node: Node, ctx: EdgeContext) -> None:
        time.sleep(io_s)
        ctx.derive("fetched", payload={"i": node.payload["i"], "size": 1})

    return wf.validate()


def direct(nodes: int) -> float:
    """Seconds for the linear job's computation in a plain loop."""
    started = time.perf_counter()
    v = 1
    for _ in range(nodes - 1):
        v = next_value(v)
    elapsed = time.perf_counter() - started
    if v < 0:  # keeps the loop's result alive
        raise AssertionError(v)
    return elapsed


def local(workflow: Workflow, *, parallel: int = 1) -> Callable[[], float]:
    """A subject: seconds for one run on the local engine (checked to succeed)."""

    def run() -> float:
        started = time.perf_counter()
        record = LocalEngine(workflow).run({"n": 0, "v": 1}, parallel=parallel)
        elapsed = time.perf_counter() - started
        if record.status is not RunStatus.SUCCEEDED:
            raise AssertionError(record.message)
        return elapsed

    return run


def stored(workflow: Workflow) -> float:
    """Seconds for one run through ``RunState`` with the record stored as JSON every step."""
    at = datetime.now(UTC)
    started = time.perf_counter()
    record, tasks = RunState.start(workflow, "bench", {"n": 0, "v": 1}, at=at)
    data = record.model_dump_json()
    while tasks:
        task = tasks.pop()
        result = workflow.execute(task, at=at)
        step = RunState.apply(workflow, RunRecord.model_validate_json(data), result, at=at)
        data = step.record.model_dump_json()
        tasks.extend(step.tasks)
    elapsed = time.perf_counter() - started
    if RunRecord.model_validate_json(data).status is not RunStatus.SUCCEEDED:
        raise AssertionError("the stored run did not succeed")
    return elapsed


def median_seconds(subject: Callable[[], float], rounds: int) -> float:
    """The median of ``rounds`` timings of ``subject`` after one untimed warm-up."""
    subject()
    return statistics.median(subject() for _ in range(rounds))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Both parts of the benchmark; the report with its headline ratios at the top."""
    linear = linear_workflow(args.nodes)
    seconds = {
        "direct": median_seconds(lambda: direct(args.nodes), args.rounds),
        "local": median_seconds(local(linear), args.rounds),
        "stored": median_seconds(lambda: stored(linear), args.rounds),
    }
    rates = {name: args.nodes / s for name, s in seconds.items()}
    overhead = {
        name: (seconds[name] - seconds["direct"]) / args.nodes * 1e6 for name in ("local", "stored")
    }
    fanout = fanout_workflow(args.fanout, args.io_ms / 1000)
    one = median_seconds(local(fanout), args.rounds)
    many = median_seconds(local(fanout, parallel=args.threads), args.rounds)
    found = {
        "R_local": rates["local"] / rates["direct"],
        "R_stored": rates["stored"] / rates["direct"],
        "R_local_fanout": one / many,
    }
    return {
        **found,
        "overhead_us_per_node": overhead,
        "goals": {
            name: {"goal": f">= {goal}", "met": found[name] >= goal} for name, goal in GOALS.items()
        },
        "linear": {"nodes": args.nodes, "seconds": seconds, "nodes_per_s": rates},
        "fanout": {
            "forks": args.fanout,
            "io_ms": args.io_ms,
            "threads": args.threads,
            "seconds_1_thread": one,
            f"seconds_{args.threads}_threads": many,
        },
        "rounds": args.rounds,
    }


def main() -> None:
    """Parse the options, measure, print the report (and save it with ``--save``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.workflows_local")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=100)
    parser.add_argument("--io-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    report = measure(args)
    print(json.dumps(report, indent=2))
    if args.save:
        save_result("workflows_local", report)


if __name__ == "__main__":
    main()
