"""Unit tests of the deduplicating counter baseline (``bench.apps.faust_counter_dedup``): its
pure update ``apply_marked``, which skips records replayed after a crash, and its messages."""

from __future__ import annotations

from typing import Any

import pytest

from bench.apps.model import (
    MARKED_MESSAGES,
    Increment,
    MarkedCount,
    MarkedOutcome,
    Reset,
    apply_marked,
)
from stream_app.core.envelope import CellMessage


def msg(value: str, key: bytes = b"cell-1") -> CellMessage[Any]:
    return MARKED_MESSAGES.decode(key, value.encode(), max_bytes=1_048_576)


def inc(by: int = 1) -> CellMessage[Any]:
    return msg(f'{{"type": "increment", "body": {{"by": {by}}}}}')


def reset() -> CellMessage[Any]:
    return msg('{"type": "reset"}')


def test_marked_messages_are_increment_and_reset() -> None:
    assert MARKED_MESSAGES.behaviour == "counter"
    assert set(MARKED_MESSAGES.types) == {"increment", "reset"}
    assert isinstance(inc(5).body, Increment) and inc(5).body.by == 5
    assert isinstance(reset().body, Reset)


# -- apply_marked ---------------------------------------------------------------------------------


def test_increment_on_dead_cell_creates_it() -> None:
    outcome = apply_marked(None, inc(3), partition=2, offset=10)
    assert outcome == MarkedOutcome(MarkedCount(count=3, partition=2, offset=10), duplicate=False)


def test_increment_on_live_cell_adds() -> None:
    state = MarkedCount(count=5, partition=2, offset=10)
    outcome = apply_marked(state, inc(4), partition=2, offset=11)
    assert outcome.duplicate is False
    assert outcome.state == MarkedCount(count=9, partition=2, offset=11)
    assert state.count == 5  # the input state is not mutated


def test_reset_kills_the_cell() -> None:
    state = MarkedCount(count=5, partition=2, offset=10)
    outcome = apply_marked(state, reset(), partition=2, offset=11)
    assert outcome == MarkedOutcome(state=None, duplicate=False)


def test_reset_of_dead_cell_keeps_it_dead() -> None:
    assert apply_marked(None, reset(), partition=0, offset=0) == MarkedOutcome(
        None, duplicate=False
    )


@pytest.mark.parametrize("offset", [10, 9, 0])
@pytest.mark.parametrize("make", [inc, reset], ids=["increment", "reset"])
def test_replayed_offset_is_a_duplicate(offset: int, make: Any) -> None:
    state = MarkedCount(count=5, partition=2, offset=10)
    outcome = apply_marked(state, make(), partition=2, offset=offset)
    assert outcome.duplicate is True
    assert outcome.state is state


def test_same_offset_on_other_partition_is_not_a_duplicate() -> None:
    state = MarkedCount(count=5, partition=2, offset=10)
    outcome = apply_marked(state, inc(1), partition=3, offset=10)
    assert outcome.duplicate is False
    assert outcome.state == MarkedCount(count=6, partition=3, offset=10)


# -- replay after a crash ----------------------------------------------------------------------

PARTITION = 4
SEQUENCES = {
    "increments": [inc(1), inc(2), inc(3), inc(4), inc(5)],
    "with-resets": [inc(2), inc(3), reset(), inc(7), inc(1), reset(), inc(10), inc(5)],
    "ends-with-reset": [inc(2), inc(3), reset()],
}


def run(
    state: MarkedCount | None, records: list[CellMessage[Any]], *, start: int, stop: int
) -> tuple[MarkedCount | None, list[bool]]:
    """Apply records[start:stop] (offset = index) as the agent does; return state, duplicates."""
    duplicates = []
    for offset in range(start, stop):
        outcome = apply_marked(state, records[offset], partition=PARTITION, offset=offset)
        duplicates.append(outcome.duplicate)
        state = outcome.state
    return state, duplicates


def crash_points(n: int) -> list[tuple[int, int]]:
    """(applied, committed): the store holds the first ``applied`` records, the group's
    committed offset is ``committed`` <= applied, so a restart replays from ``committed``."""
    return [(applied, committed) for applied in range(n + 1) for committed in range(applied + 1)]


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_replay_after_crash_gives_the_same_state(name: str) -> None:
    records = SEQUENCES[name]
    once, duplicates = run(None, records, start=0, stop=len(records))
    assert not any(duplicates)
    for applied, committed in crash_points(len(records)):
        stored, _ = run(None, records, start=0, stop=applied)
        replayed, _ = run(stored, records, start=committed, stop=len(records))
        assert replayed == once, f"crash after {applied} applied, {committed} committed"


def test_expected_final_counts() -> None:
    assert run(None, SEQUENCES["increments"], start=0, stop=5)[0] == MarkedCount(
        count=15, partition=PARTITION, offset=4
    )
    assert run(None, SEQUENCES["with-resets"], start=0, stop=8)[0] == MarkedCount(
        count=15, partition=PARTITION, offset=7
    )
    assert run(None, SEQUENCES["ends-with-reset"], start=0, stop=3)[0] is None


def test_replayed_increments_are_all_skipped_as_duplicates() -> None:
    records = SEQUENCES["increments"]
    stored, _ = run(None, records, start=0, stop=4)
    assert stored == MarkedCount(count=10, partition=PARTITION, offset=3)
    replayed, duplicates = run(stored, records, start=1, stop=len(records))
    assert duplicates == [True, True, True, False]
    assert replayed == MarkedCount(count=15, partition=PARTITION, offset=4)
