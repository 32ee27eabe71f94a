"""How the engine reads a stored cell: one pass for the current version, the slow path else.

A record stored by the behaviour's current version is read into its data model in one pydantic
pass; older versions, a behaviour that overrides ``load``, and data that does not validate go
through :meth:`CellRecord.decode` and :meth:`Behaviour.load` as before. Both must give a
callback the same data, and a fresh copy on each try.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState
from stream_app.core.retry import RetryPolicy
from tests.unit.engine.fakes import Harness


class Add(BaseModel):
    """Add ``by``."""

    by: int = 1


class Total(BaseModel):
    """A running total and its history."""

    total: int = 0
    seen: list[int] = []


def _add(state: CellState[Total]) -> None:
    assert state.message is not None and isinstance(state.message.body, Add)
    data = state.data or Total()
    data.total += state.message.body.by
    data.seen.append(state.message.body.by)
    state.data = data


def _stored(harness: Harness, cell: str) -> dict[str, Any]:
    raw = harness.cells.lookup(cell.encode())
    assert raw is not None
    loaded: dict[str, Any] = json.loads(raw)
    return loaded


def test_the_current_version_reads_back_what_it_stored() -> None:
    harness = Harness(Behaviour("tot", messages={"add": Add}, data=Total, handle_message=_add))
    harness.feed(*(harness.record("a", "add", {"by": n}) for n in (1, 2, 3)))
    assert _stored(harness, "a") == {"data": {"total": 6, "seen": [1, 2, 3]}, "v": 1}


def test_a_try_again_sees_the_stored_data_not_what_the_failed_try_did() -> None:
    tries: list[list[int]] = []

    def flaky(state: CellState[Total]) -> None:
        assert state.data is not None
        tries.append(list(state.data.seen))
        _add(state)
        if len(tries) == 1:
            raise RuntimeError("first try of the second message fails after changing the data")

    behaviour = Behaviour(
        "tot",
        messages={"add": Add},
        data=Total,
        handle_message=lambda s: flaky(s) if s.data is not None else _add(s),
        retry=RetryPolicy(attempts=2, backoff_s=0.0, jitter=0.0),
    )
    harness = Harness(behaviour)
    harness.feed(harness.record("a", "add", {"by": 1}), harness.record("a", "add", {"by": 5}))
    assert tries == [[1], [1]], "the second try starts from the stored data again"
    assert _stored(harness, "a")["data"] == {"total": 6, "seen": [1, 5]}


def test_an_older_version_is_migrated_on_the_slow_path() -> None:
    v1 = Harness(Behaviour("tot", messages={"add": Add}, data=Total, handle_message=_add))
    v1.feed(v1.record("a", "add", {"by": 2}))

    def migrate(version: int, data: dict[str, Any]) -> dict[str, Any]:
        assert version == 1
        return {**data, "total": data["total"] * 100}

    v2 = Behaviour(
        "tot", messages={"add": Add}, data=Total, version=2, handle_message=_add, migrate=migrate
    )
    harness = Harness(v2)
    harness.cells.partitions = v1.cells.partitions
    harness.feed(harness.record("a", "add", {"by": 1}))
    assert _stored(harness, "a") == {"data": {"total": 201, "seen": [2, 1]}, "v": 2}


def test_a_behaviour_that_overrides_load_sees_every_stored_record() -> None:
    loaded: list[int] = []

    class Counting(Behaviour[Total]):
        def load(self, version: int, data: dict[str, Any]) -> Total:
            loaded.append(version)
            return super().load(version, data)

    harness = Harness(Counting("tot", messages={"add": Add}, data=Total, handle_message=_add))
    harness.feed(*(harness.record("a", "add", {"by": 1}) for _ in range(3)))
    assert loaded == [1, 1], "every message after the first reads the stored cell through load"


def test_stored_data_that_does_not_validate_parks_the_cell_as_before() -> None:
    harness = Harness(Behaviour("tot", messages={"add": Add}, data=Total, handle_message=_add))
    first = harness.record("a", "add", {"by": 1})
    harness.feed(first)
    harness.cells.partitions[first.partition][b"a"] = b'{"data":{"total":"many"},"v":1}'
    harness.feed(harness.record("a", "add", {"by": 1}))
    parked = harness.parked.lookup(b"a")
    assert parked is not None and "DataVersionError" in json.loads(parked)["error"]
