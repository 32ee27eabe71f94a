"""At-least-once: records read again after a crash converge to the same tables.

Under ``at_least_once`` a worker that crashes before committing leaves its table writes in
place and the next owner reads the uncommitted records again. Under ``exactly_once`` the tables
are rebuilt from the committed changelog (the writes are rolled back) and the records are read
again. Either way the result must be the state a single processing would have left: no parked
item twice, no timer twice, and (rolled back) the same outputs with the same ids.
"""

from __future__ import annotations

from tests.unit.engine.fakes import Harness, now_ms
from tests.unit.engine.probe import Switch, probe


def test_a_batch_read_again_over_kept_writes_converges() -> None:
    harness = Harness(probe(Switch()))
    harness.feed(harness.record("p", "set", {"value": 1}))
    due = now_ms() + 60_000
    batch = [
        harness.record("a", "set", {"value": 7}),
        harness.record("a", "arm", {"at_ms": due}),
        harness.record("p", "boom"),
        harness.record("p", "add", {"by": 2}),
    ]
    harness.feed(*batch)
    cells_before = harness.cells.snapshot()
    timers_before = harness.timers.snapshot()
    parked_before = harness.parked.snapshot()

    harness.restart()
    harness.feed(*batch)

    assert harness.parked.snapshot() == parked_before, "no parked item twice"
    assert harness.timers.snapshot() == timers_before, "no timer twice"
    assert len(harness.parked_items("p")) == 2
    a = harness.data("a")
    assert a is not None and a["count"] == 7
    assert harness.cells.snapshot().keys() == cells_before.keys()


def test_a_batch_read_again_over_rolled_back_tables_produces_the_same_outputs() -> None:
    harness = Harness(probe(Switch()))
    harness.feed(harness.record("a", "set", {"value": 1}))
    harness.restart()  # both runs below start on a freshly taken partition (booted first)
    committed = [store.snapshot() for store in (harness.cells, harness.timers, harness.parked)]
    batch = [
        harness.record("a", "add", {"by": 2}),
        harness.record("a", "emit"),
        harness.record("a", "tell", {"to": "b"}),
        harness.record("p", "boom"),
    ]
    harness.feed(*batch)
    first = [p for p in harness.produced if p.topic in ("unit.effects", harness.topic)]
    state = [store.snapshot() for store in (harness.cells, harness.timers)]
    parked = harness.parked_items("p")

    for store, snapshot in zip(
        (harness.cells, harness.timers, harness.parked), committed, strict=True
    ):
        store.partitions = snapshot
    harness.produced.clear()
    harness.restart()
    harness.feed(*batch)

    again = [p for p in harness.produced if p.topic in ("unit.effects", harness.topic)]
    assert again == first, "the same effects and messages, with the same ids"
    assert [store.snapshot() for store in (harness.cells, harness.timers)] == state
    assert harness.parked_items("p") == parked and len(parked) == 1
