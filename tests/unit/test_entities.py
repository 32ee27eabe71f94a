"""Unit tests of Entity: the decision and fold of one message, without Kafka."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from stream_app import CellState, Entity, EventRecord
from stream_app.core.envelope import CellMessage
from stream_app.examples.ledger import Count, Deposit, Increase, account, counter


def invoke(
    entity: Entity[BaseModel], body: BaseModel, data: BaseModel | None
) -> CellState[BaseModel]:
    """Run ``entity`` on one message as the engine would, returning the cell state after it."""
    state: CellState[BaseModel] = CellState(
        app_id="app",
        behaviour=entity.name,
        cell_id="e1",
        data=data,
        trigger="message",
        now_ms=1_000,
        origin="app.x.in/0/7",
        timers={},
        message=CellMessage(cell_id="e1", type="t", body=body, id="m-1", reply_to=None),
    )
    entity.behaviour.handle_message(state)
    return state


def entity_handling(handle: Any) -> Entity[Count]:
    """A counter-like entity with ``handle`` and an ``update`` that changes nothing."""
    return Entity(
        "probe",
        state=Count,
        messages={"increment": Increase},
        events={"increased": Increase},
        init=Count,
        handle=handle,
        update=lambda event, state: state,
    )


def test_first_message_folds_from_init_and_publishes_sequenced_events() -> None:
    counter.events_topic = "app.counter.events"
    state = invoke(counter, Increase(by=4), None)  # type: ignore[arg-type]
    assert state.data == counter.cached_model(seq=1, state=Count(value=4))
    [(topic, value)] = state._outputs.records
    assert topic == "app.counter.events"
    record = EventRecord.model_validate_json(value)
    assert (record.seq, record.type, record.body) == (1, "increased", {"by": 4})
    assert (record.message_id, record.origin, record.at_ms) == ("m-1", "app.x.in/0/7", 1_000)
    assert state._outputs.effects == []


def test_the_effect_comes_with_the_event_that_reaches_ten() -> None:
    cached = counter.cached_model(seq=5, state=Count(value=8))
    state = invoke(counter, Increase(by=3), cached)  # type: ignore[arg-type]
    assert state.data == counter.cached_model(seq=6, state=Count(value=11))
    [effect] = state._outputs.effects
    assert (effect.kind, effect.payload) == ("counter-reached-ten", {"value": 11})
    again = invoke(counter, Increase(by=3), cached)  # type: ignore[arg-type]
    assert again._outputs.effects[0].id == effect.id, "a replay emits the same effect id"


def test_no_events_change_nothing() -> None:
    noop = entity_handling(lambda message, state: [])
    cached = noop.cached_model(seq=2, state=Count(value=1))
    state = invoke(noop, Increase(), cached)  # type: ignore[arg-type]
    assert state.data is cached
    assert state._outputs.records == []


def test_an_undeclared_event_type_is_an_error() -> None:
    wrong = entity_handling(lambda message, state: [Deposit(amount=1)])
    with pytest.raises(TypeError, match="not one of its event types"):
        invoke(wrong, Increase(), None)  # type: ignore[arg-type]


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="no event types"):
        Entity(
            "e",
            state=Count,
            messages={"i": Increase},
            events={},
            init=Count,
            handle=lambda m, s: [],
            update=lambda e, s: s,
        )
    with pytest.raises(ValueError, match="class of its own"):
        Entity(
            "e",
            state=Count,
            messages={"i": Increase},
            events={"a": Increase, "b": Increase},
            init=Count,
            handle=lambda m, s: [],
            update=lambda e, s: s,
        )
    assert sorted(account.event_types) == ["deposited", "opened", "withdrawn"]
