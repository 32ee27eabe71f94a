"""Counting workloads: produce records until the broker has every one, read counts back.

The counter example, the tests' probe apps and the benchmarks keep a ``count`` in each cell's
data; what was sent is known per cell, so the check after a crash, a restart or a broker outage
is exact: every cell's count equals what the broker acknowledged for it. These helpers are that
check, shared by the tests, the demo and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stream_app.testing import ConditionTimeout, WorkerProcess, wait_for

__all__ = ["cell_counts", "produce_acked", "wait_counts"]


def produce_acked(
    producer: Any, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> None:
    """Produce ``records`` (key, value) to ``topic`` with ``producer`` (a confluent-kafka
    ``Producer``, whatever its partitioner) and return once the broker acknowledged them all.

    Raises:
        AssertionError: A record was not acknowledged within 60 s, or its delivery failed.
    """
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0 and not failures, f"{remaining} unflushed, failures: {failures[:5]}"


def cell_counts(worker: WorkerProcess, behaviour: str, *, timeout: float = 10.0) -> dict[str, int]:
    """``{cell_id: count}`` of every live cell of ``behaviour``, from the runtime's cells view
    (``GET /stream-app/cells/<behaviour>/``: the worker gathers every worker's cells)."""
    cells: dict[str, Any] = worker.get_json(f"/stream-app/cells/{behaviour}/", timeout=timeout)
    return {cell: data["count"] for cell, data in cells.items()}


def wait_counts(
    worker: WorkerProcess, behaviour: str, expected: Mapping[str, int], *, timeout: float = 120
) -> dict[str, int]:
    """Wait until the live cells of ``behaviour`` and their counts are exactly ``expected``.

    Raises:
        ConditionTimeout: They differ at the deadline; the message names the cells that differ,
            the totals, and ends with the worker's log tail.
    """
    wanted = dict(expected)
    try:
        return wait_for(
            lambda: cell_counts(worker, behaviour),
            lambda seen: seen == wanted,
            timeout=timeout,
            what=f"counts of {len(wanted)} cells totalling {sum(wanted.values())}",
        )
    except ConditionTimeout:
        seen = cell_counts(worker, behaviour) if worker.alive() else {}
        off = {
            cell: (seen.get(cell), wanted.get(cell))
            for cell in sorted(set(wanted) | set(seen))
            if seen.get(cell) != wanted.get(cell)
        }
        raise ConditionTimeout(
            f"{len(off)} cells differ (cell: (seen, expected)): {dict(list(off.items())[:20])}; "
            f"total seen {sum(seen.values())} of {sum(wanted.values())}; worker alive: "
            f"{worker.alive()}\n--- worker log tail ---\n{worker.log_text()[-6000:]}"
        ) from None
