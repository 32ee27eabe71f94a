"""A page of a worker's live cells: the first ids in order, the total, only those decoded."""

from __future__ import annotations

from pydantic import BaseModel

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState
from tests.unit.engine.fakes import Harness


class Add(BaseModel):
    """Add ``by``."""

    by: int = 1


class Total(BaseModel):
    """A running total."""

    total: int = 0


def _add(state: CellState[Total]) -> None:
    assert state.message is not None and isinstance(state.message.body, Add)
    data = state.data or Total()
    data.total += state.message.body.by
    state.data = data


def test_a_page_is_the_first_cells_in_id_order_and_the_total_counts_them_all() -> None:
    harness = Harness(Behaviour("tot", messages={"add": Add}, data=Total, handle_message=_add))
    ids = [f"cell-{n:03d}" for n in range(250)]
    harness.feed(*(harness.record(cell, "add", {"by": n}) for n, cell in enumerate(ids)))
    everything = harness.engine.local_cells()
    assert len(everything) == 250

    total, page = harness.engine.local_cells_page(7)
    assert total == 250
    assert list(page) == sorted(ids)[:7]
    assert page == {cell: everything[cell] for cell in sorted(ids)[:7]}
    assert page["cell-003"] == {"total": 3}


def test_a_page_larger_than_the_cells_holds_them_all() -> None:
    harness = Harness(Behaviour("tot", messages={"add": Add}, data=Total, handle_message=_add))
    harness.feed(harness.record("b", "add"), harness.record("a", "add", {"by": 2}))
    assert harness.engine.local_cells_page(100) == (2, {"a": {"total": 2}, "b": {"total": 1}})
