"""Unit tests of the counter example's Behaviour: its messages and ``handle_message``."""

from __future__ import annotations

from typing import Any

import pytest

from stream_app import CellState
from stream_app.errors import SchemaViolationError, UnknownMessageTypeError
from stream_app.examples.counter import CounterState, Increment, Reset, counter, handle_message
from stream_app.testing.cells import cell_state

MESSAGES = counter.message_types


def msg(value: str, key: bytes = b"cell-1") -> Any:
    return MESSAGES.decode(key, value.encode(), max_bytes=1_048_576)


def inc(by: int = 1) -> Any:
    return msg(f'{{"type": "increment", "body": {{"by": {by}}}}}')


def reset() -> Any:
    return msg('{"type": "reset"}')


def handled(data: CounterState | None, *messages: Any) -> CounterState | None:
    """The cell's data after ``handle_message`` of each message in turn, as the engine calls it
    (a fresh state per message, with the data the previous one left)."""
    for message in messages:
        state: CellState[CounterState] = cell_state(counter, data=data, message=message)
        handle_message(state)
        data = state.data
    return data


# -- messages ------------------------------------------------------------------------------------


def test_messages_decode_counter_types() -> None:
    assert counter.name == "counter"
    assert MESSAGES.behaviour == "counter"
    assert set(MESSAGES.types) == {"increment", "reset"}
    assert isinstance(inc(5).body, Increment)
    assert inc(5).body.by == 5
    assert isinstance(msg('{"type": "increment"}').body, Increment)
    assert msg('{"type": "increment"}').body.by == 1
    assert isinstance(reset().body, Reset)


@pytest.mark.parametrize("by", [0, -3, 1_000_000_001])
def test_increment_out_of_range_is_rejected(by: int) -> None:
    with pytest.raises(SchemaViolationError, match=r"body\.by"):
        inc(by)


def test_reset_with_body_field_is_rejected() -> None:
    with pytest.raises(SchemaViolationError, match=r"reset\.body\.to"):
        msg('{"type": "reset", "body": {"to": 0}}')


def test_unknown_counter_type() -> None:
    with pytest.raises(UnknownMessageTypeError, match="known: increment, reset"):
        msg('{"type": "decrement"}')


@pytest.mark.parametrize("by", ['"2"', "true", "2.0"])
def test_increment_by_what_the_published_schema_rejects_is_rejected(by: str) -> None:
    # schemas/counter.schema.json says "by" is an integer: no strings, booleans or floats.
    with pytest.raises(SchemaViolationError, match=r"increment\.body\.by") as info:
        msg(f'{{"type": "increment", "body": {{"by": {by}}}}}')
    assert info.value.reason == "schema"


# -- handle_message ------------------------------------------------------------------------------


def test_increment_on_dead_cell_creates_it() -> None:
    assert handled(None, inc(3)) == CounterState(count=3)


def test_increment_on_live_cell_adds() -> None:
    assert handled(CounterState(count=5), inc(4)) == CounterState(count=9)


def test_reset_kills_the_cell() -> None:
    assert handled(CounterState(count=5), reset()) is None


def test_reset_of_dead_cell_keeps_it_dead() -> None:
    assert handled(None, reset()) is None


def test_a_sequence_counts_from_the_last_reset() -> None:
    sequence = [inc(2), inc(3), reset(), inc(7), inc(1), reset(), inc(10), inc(5)]
    assert handled(None, *sequence) == CounterState(count=15)
    assert handled(None, inc(2), inc(3), reset()) is None


def test_the_stored_data_is_the_count_alone() -> None:
    # What `stream-app cells get counter <id>` shows as the cell's data.
    data = handled(None, inc(2))
    assert data is not None and data.model_dump(mode="json") == {"count": 2}


def test_cell_state_decodes_a_message_as_a_worker_would() -> None:
    state = cell_state(counter, message=("increment", {"by": 2}))
    counter.handle_message(state)
    assert state.data == CounterState(count=2)
    with pytest.raises(SchemaViolationError):
        cell_state(counter, message=("increment", {"by": "many"}))
    with pytest.raises(ValueError, match="give the Behaviour"):
        cell_state("counter", message=("increment", {"by": 2}))
