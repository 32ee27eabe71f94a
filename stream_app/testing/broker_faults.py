"""Broker faults under load: SIGKILL a broker, then the active controller, of a 3-node cluster.

A worker of a replicated cluster (topics with replication factor 3 and ``min.insync.replicas``
2, Kafka's internal topics alike) must keep processing when one node dies, whether that node is
only a broker or also the quorum's active controller, and nothing a producer saw acknowledged
(``acks=all``) may be lost. :func:`run_broker_faults` is that scenario, shared by the chaos test
(``tests/chaos/test_broker_faults.py``, which asserts on its figures) and the benchmark
(``bench/broker_faults.py``, which prints them):

1. A :class:`~stream_app.testing.SteadyLoad` sends to the worker's cells; wait until it applies.
2. SIGKILL a node that is not the active controller; time how long until the worker has
   applied :data:`RESUME_STEP` more messages (processing resumed, the node still down), then
   start the node again and wait until it answers and is back in every in-sync replica set.
3. The same with the active controller (the quorum elects another leader meanwhile).
4. Stop the load, wait until every cell's count is what the broker acknowledged for it, and
   count what is missing (``lost``) and what was applied more than once (``duplicated``).

The counts are the cells' own (``count`` in their data, read from the worker's cells view).

**The harness is the worker's supervisor.** Under ``exactly_once``, a SIGKILL of the broker
that coordinates a partition's transactions can wedge librdkafka's
``send_offsets_to_transaction`` (it waits for a coordinator it no longer looks up, past its
time-out: librdkafka issues 5456 and 5511, open). The batched input bounds every transaction
call (``Settings.kafka_call_timeout_s``) and stops the worker loudly rather than leaving it idle;
as Kubernetes or Docker would, the harness then starts it again (its tables are rebuilt from the
changelogs, its uncommitted input read again) and records why in
:attr:`BrokerFaultReport.restarts`. Nothing acknowledged may be lost across it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from stream_app.testing import ConditionTimeout, SteadyLoad, WorkerProcess, wait_for
from stream_app.testing.counts import cell_counts
from stream_app.testing.dev_broker import LocalCluster

__all__ = [
    "COORDINATOR_LOSS_CODES",
    "RESUME_STEP",
    "STOP_MARKER",
    "BrokerFaultReport",
    "Kill",
    "coordinator_loss",
    "run_broker_faults",
    "stop_cause",
]

#: How many more messages the worker must apply after a kill to count as having resumed.
RESUME_STEP = 200

#: What a worker's log line says when the worker stops itself loudly (the batched input).
STOP_MARKER = "stopping the worker"

#: The errors of a transaction call whose coordinator died under it: a time-out, the
#: connection gone, and the answers of the coordinator that takes over while it loads the
#: transaction log (when librdkafka says the transaction must be aborted, the worker stops).
COORDINATOR_LOSS_CODES = frozenset(
    {
        "_TIMED_OUT",
        "_TRANSPORT",
        "COORDINATOR_LOAD_IN_PROGRESS",
        "COORDINATOR_NOT_AVAILABLE",
        "NOT_COORDINATOR",
        "CONCURRENT_TRANSACTIONS",
    }
)

_ERROR_CODE = re.compile(r"KafkaError\{code=(\w+),")


@dataclass(frozen=True)
class Kill:
    """One node SIGKILLed under load, and what followed.

    Attributes:
        node: Its node id.
        role: ``broker`` (a node that was not the active controller) or ``controller`` (the
            active controller, which is a broker too).
        resumed_s: Seconds from the kill until the worker had applied :data:`RESUME_STEP` more
            messages, the node still down.
        restart_s: Seconds the node took to start again and answer.
        in_sync_s: Seconds from its start until it was back in every partition's in-sync
            replicas.
        rate_down: Messages applied per second while it was down (over ``hold_s`` and the
            wait to resume); ``None`` when not measured.
        new_controller: The active controller after the kill (another node for ``controller``).
    """

    node: int
    role: str
    resumed_s: float
    restart_s: float
    in_sync_s: float
    rate_down: float | None
    new_controller: int


@dataclass
class BrokerFaultReport:
    """The figures of one run of :func:`run_broker_faults`.

    Attributes:
        acked: Messages the broker acknowledged to the producer.
        failed: Messages whose delivery failed (the producer saw them fail: not acknowledged).
        applied: Sum of the cells' counts at the end.
        lost: Acknowledged messages not applied.
        duplicated: Messages applied more than once (over what was acknowledged).
        kills: The kills, in order.
        rate_before: Messages applied per second before any kill (over ``hold_s``); ``None``
            when not measured.
        settled_s: Seconds from the end of the load until the counts were final.
        worker_alive: Whether the worker was running at the end.
        restarts: Why the worker stopped each time the harness had to start it again (see
            :func:`stop_cause`); empty when it ran throughout.
    """

    acked: int = 0
    failed: int = 0
    applied: int = 0
    lost: int = 0
    duplicated: int = 0
    kills: list[Kill] = field(default_factory=list)
    rate_before: float | None = None
    settled_s: float = 0.0
    worker_alive: bool = True
    restarts: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict."""
        return asdict(self)


def _supervise(worker: WorkerProcess, report: BrokerFaultReport) -> None:
    """Start ``worker`` again if it has stopped, noting why it stopped in ``report``."""
    if worker.alive():
        return
    report.restarts.append(stop_cause(worker))
    worker.start()


def stop_cause(worker: WorkerProcess) -> str:
    """Why ``worker`` (stopped) stopped: the line in which it said so (``stopping the
    worker``), else its first ERROR line, else its exit status.

    Not simply the first ERROR line: librdkafka logs answers it retries itself at ERROR level
    too (a ``CONCURRENT_TRANSACTIONS`` from a coordinator that is moving), and one of those
    can come before the line that names the cause.
    """
    errors = worker.error_lines()
    said = [line for line in errors if STOP_MARKER in line]
    if said or errors:
        return (said or errors)[0]
    return f"exit status {worker.process.returncode if worker.process else None}"


def coordinator_loss(cause: str) -> bool:
    """Whether ``cause`` (a :func:`stop_cause`) is the known way a broker fault stops a worker:
    an ``exactly_once`` commit whose transaction calls the killed coordinator did not answer
    within the call time-out (``no answer from the Kafka client``), or failed only with
    :data:`COORDINATOR_LOSS_CODES`. A fence, a refused changelog record or any other error is
    not."""
    if STOP_MARKER not in cause or "commit failed" not in cause:
        return False
    if "no answer from the Kafka client" in cause:
        return True
    codes = set(_ERROR_CODE.findall(cause))
    return bool(codes) and codes <= COORDINATOR_LOSS_CODES


def _applied(worker: WorkerProcess, behaviour: str) -> int:
    return sum(cell_counts(worker, behaviour).values())


def _rate(probe: Callable[[], int], hold_s: float) -> float:
    """Messages applied per second over ``hold_s`` seconds (a measurement window)."""
    first, started = probe(), time.monotonic()
    time.sleep(hold_s)
    return (probe() - first) / (time.monotonic() - started)


def run_broker_faults(
    cluster: LocalCluster,
    worker: WorkerProcess,
    load: SteadyLoad,
    behaviour: str,
    *,
    hold_s: float = 0.0,
    timeout: float = 90.0,
) -> BrokerFaultReport:
    """Run the scenario of the module docstring; ``load`` must not be started yet.

    Args:
        cluster: A running :class:`LocalCluster` of 3 nodes that ``worker`` and ``load`` use.
        worker: The worker applying ``load``, ready.
        load: Sends to ``behaviour``'s input topic; started here, halted and joined here.
        behaviour: The behaviour whose cells keep a ``count``.
        hold_s: Keep the load running this long before the first kill and while each node is
            down, measuring the rates (the benchmark); 0 to go on as soon as the worker has
            resumed (the test).
        timeout: Longest wait for each step.

    Raises:
        ConditionTimeout: The worker did not start applying, or did not resume after a kill,
            within ``timeout`` (the message ends with the worker's log tail).
    """
    report = BrokerFaultReport()

    def applied() -> int:
        _supervise(worker, report)
        return _applied(worker, behaviour)

    load.start()
    try:
        wait_for(applied, lambda n: n >= RESUME_STEP, timeout=timeout, what="the first messages")
        if hold_s:
            report.rate_before = _rate(applied, hold_s)
        controller = cluster.active_controller()
        broker = next(n for n in range(1, len(cluster.nodes) + 1) if n != controller)
        for node, role in ((broker, "broker"), (controller, "controller")):
            report.kills.append(_kill_and_restart(cluster, node, role, applied, hold_s, timeout))
    except ConditionTimeout as exc:
        raise ConditionTimeout(f"{exc}\n--- worker log ---\n{worker.log_text()[-6000:]}") from None
    finally:
        load.halt.set()
        load.join(timeout=150)
    expected = dict(load.acked)
    report.acked, report.failed = sum(expected.values()), load.failed
    settling = time.monotonic()
    try:

        def counts() -> dict[str, int]:
            _supervise(worker, report)
            return cell_counts(worker, behaviour)

        seen = wait_for(
            counts,
            lambda counts: counts == expected,
            timeout=timeout,
            what="every acknowledged message applied",
        )
    except ConditionTimeout:
        seen = cell_counts(worker, behaviour) if worker.alive() else {}
    report.settled_s = time.monotonic() - settling
    report.applied = sum(seen.values())
    report.lost = sum(max(0, n - seen.get(cell, 0)) for cell, n in expected.items())
    report.duplicated = sum(max(0, n - expected.get(cell, 0)) for cell, n in seen.items())
    report.worker_alive = worker.alive()
    return report


def _kill_and_restart(
    cluster: LocalCluster,
    node: int,
    role: str,
    applied: Callable[[], int],
    hold_s: float,
    timeout: float,
) -> Kill:
    before = applied()
    killed = time.monotonic()
    cluster.kill(node)
    wait_for(
        applied,
        lambda n: n >= before + RESUME_STEP,
        timeout=timeout,
        what=f"{RESUME_STEP} messages applied after the SIGKILL of node {node} ({role})",
    )
    resumed_s = time.monotonic() - killed
    rate_down = None
    if hold_s:
        time.sleep(hold_s)  # the measurement window, the node still down
        rate_down = round((applied() - before) / (time.monotonic() - killed), 1)
    new_controller = cluster.active_controller()
    restarting = time.monotonic()
    cluster.start(node)
    restart_s = time.monotonic() - restarting
    # Back in every in-sync replica set before the next fault: two nodes down at once is
    # more than a replication factor of 3 with min.insync.replicas 2 takes.
    cluster.wait_in_sync(timeout=timeout)
    return Kill(
        node=node,
        role=role,
        resumed_s=round(resumed_s, 2),
        restart_s=round(restart_s, 2),
        in_sync_s=round(time.monotonic() - restarting, 2),
        rate_down=rate_down,
        new_controller=new_controller,
    )
