"""Unit tests of what an entity's ``handle`` may return, of entity timers and of the "replace
the whole state" style, without Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from stream_app import (
    CancelEntityTimer,
    CellState,
    Entity,
    EntityEffect,
    EntityTimer,
    EventRecord,
    FiredTimer,
)
from stream_app.api.entities import split_outputs
from stream_app.core.envelope import CellMessage
from stream_app.errors import SchemaViolationError, UnknownMessageTypeError


class Count(BaseModel):
    value: int = 0


class Add(BaseModel):
    model_config = ConfigDict(strict=True)
    by: int = 1


class Added(BaseModel):
    by: int


class Noted(BaseModel):
    text: str


E1, E2 = Added(by=1), Added(by=2)
F1, F2 = EntityEffect("a"), EntityEffect("b", {"x": 1})
T1, C1 = EntityTimer("t", "add", after=1), CancelEntityTimer("t")


@pytest.mark.parametrize(
    ("handled", "events", "effects", "timers"),
    [
        (None, [], [], []),
        ([], [], [], []),
        ((), [], [], []),
        (E1, [E1], [], []),
        (F1, [], [F1], []),
        (T1, [], [], [T1]),
        (C1, [], [], [C1]),
        ([E1, E2], [E1, E2], [], []),
        ((E1, E2), [E1, E2], [], []),
        (([E1, E2], [F1, F2]), [E1, E2], [F1, F2], []),
        ((E1, F1), [E1], [F1], []),
        ((E1, [F1, F2]), [E1], [F1, F2], []),
        (([E1], F1), [E1], [F1], []),
        (([], []), [], [], []),
        ([E1, F1, T1, E2, C1], [E1, E2], [F1], [T1, C1]),
        (([E1], [F1], [T1, C1]), [E1], [F1], [T1, C1]),
    ],
)
def test_every_shape_handle_may_return(
    handled: Any, events: list[Any], effects: list[Any], timers: list[Any]
) -> None:
    outputs = split_outputs(handled)
    assert (outputs.events, outputs.effects, outputs.timers) == (events, effects, timers)


@pytest.mark.parametrize(
    "handled",
    [
        {"by": 1},
        "added",
        1,
        [E1, "added"],
        [E1, {"by": 1}],
        ([E1], [[F1]]),
        (E1, (F1, [F2])),
        {E1.model_dump_json()},
    ],
)
def test_anything_else_is_a_type_error(handled: Any) -> None:
    with pytest.raises(TypeError, match="handle returned a"):
        split_outputs(handled)


def counter(handle: Any) -> Entity[Count]:
    """A counter entity with ``handle``."""
    entity: Entity[Count] = Entity(
        "probe",
        state=Count,
        messages={"add": Add, "note": Noted},
        events={"added": Added, "noted": Noted},
        init=Count,
        handle=handle,
        update=lambda event, state: (
            Count(value=state.value + event.by) if isinstance(event, Added) else state
        ),
    )
    entity.events_topic = "app.probe.events"
    return entity


def on_message(entity: Entity[Any], body: BaseModel, data: BaseModel | None) -> CellState[Any]:
    """Handle one message as the engine would; the cell state after it."""
    state: CellState[Any] = CellState(
        app_id="app",
        behaviour=entity.name,
        cell_id="e1",
        data=data,
        trigger="message",
        now_ms=10_000,
        origin="app.probe.in/0/7",
        timers={},
        message=CellMessage(
            cell_id="e1", type="t", body=body, id="m-1", reply_to=None, project=None, config=None
        ),
    )
    entity.behaviour.handle_message(state)
    return state


def on_timeout(
    entity: Entity[Any], data: BaseModel, timer: FiredTimer, timers: dict[str, int]
) -> CellState[Any]:
    """Fire ``timer`` as the engine would (the worker's clock a little past the due time)."""
    state: CellState[Any] = CellState(
        app_id="app",
        behaviour=entity.name,
        cell_id="e1",
        data=data,
        trigger="timeout",
        now_ms=timer.due_ms + 40,
        origin=f"timer/{timer.name}/{timer.due_ms}",
        timers=timers,
        timer=timer,
    )
    entity.behaviour.on_timeout(state)
    return state


def logged(state: CellState[Any]) -> list[EventRecord]:
    return [EventRecord.model_validate_json(value) for _, value, _, _ in state._outputs.records]


def test_a_single_event_and_a_single_effect_are_handled_like_lists() -> None:
    entity = counter(lambda message, state: (Added(by=message.by), EntityEffect("seen")))
    state = on_message(entity, Add(by=3), None)
    assert state.data == entity.cached_model(seq=1, state=Count(value=3))
    assert [(r.seq, r.type, r.body) for r in logged(state)] == [(1, "added", {"by": 3})]
    assert [e.kind for e in state._outputs.effects] == ["seen"]


def test_a_bad_return_raises_so_the_entity_is_retried_then_parked() -> None:
    entity = counter(lambda message, state: {"added": message.by})
    with pytest.raises(TypeError, match="handle returned a dict"):
        on_message(entity, Add(by=1), None)


def test_a_timer_set_by_a_message_is_a_durable_cell_timer_carrying_the_command() -> None:
    entity = counter(
        lambda message, state: [
            Added(by=message.by),
            EntityTimer("again", "add", Add(by=5), after=timedelta(seconds=30)),
        ]
    )
    state = on_message(entity, Add(by=1), None)
    assert state.timers == {"again": 10_000 + 30_000}
    entry = state._outputs.timers["again"]
    assert entry is not None
    assert entry.payload == {"type": "add", "body": {"by": 5}}
    assert state.data == entity.cached_model(seq=1, state=Count(value=1))


def test_a_timer_on_an_entity_without_events_caches_its_initial_state() -> None:
    # A cell keeps its timers only while it has data.
    entity = counter(lambda message, state: EntityTimer("later", "add", {"by": 2}, after=1))
    state = on_message(entity, Add(by=1), None)
    assert state.data == entity.cached_model(seq=0, state=Count())
    assert logged(state) == []
    assert state.timers == {"later": 11_000}


def test_a_timer_at_an_absolute_time_and_a_cancelled_one() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    entity = counter(
        lambda message, state: [
            EntityTimer("a", "note", Noted(text="new year"), at=at),
            EntityTimer("b", "add", after=5),
            CancelEntityTimer("b"),
        ]
    )
    state = on_message(entity, Add(), entity.cached_model(seq=2, state=Count(value=2)))
    assert state.timers == {"a": (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(0, 0, 1000)}
    assert state._outputs.timers["b"] is None, "cancelled"
    assert state.data == entity.cached_model(seq=2, state=Count(value=2)), "unchanged"


@pytest.mark.parametrize(
    ("timer", "error"),
    [
        (EntityTimer("x", "subtract", after=1), UnknownMessageTypeError),
        (EntityTimer("x", "add", {"by": "2"}, after=1), SchemaViolationError),
        (EntityTimer("x", "add", after=1, at=5), ValueError),
        (EntityTimer("x", "add"), ValueError),
    ],
)
def test_a_bad_timer_fails_in_handle(timer: EntityTimer, error: type[Exception]) -> None:
    entity = counter(lambda message, state: timer)
    with pytest.raises(error):
        on_message(entity, Add(), None)


def test_a_fired_timer_goes_through_handle_and_logs_its_events_under_its_origin() -> None:
    seen: list[Any] = []

    def handle(message: Any, state: Count) -> Any:
        seen.append(message)
        return Added(by=message.by)

    entity = counter(handle)
    cached = entity.cached_model(seq=4, state=Count(value=4))
    timer = FiredTimer(name="again", due_ms=70_000, payload={"type": "add", "body": {"by": 5}})
    state = on_timeout(entity, cached, timer, {})
    assert seen == [Add(by=5)], "validated into the message's model"
    [record] = logged(state)
    assert (record.seq, record.type, record.body) == (5, "added", {"by": 5})
    assert record.message_id == record.origin == "timer/again/70000"
    assert record.at_ms == 70_000, "the due time, the same if the occurrence fires again"
    assert state.data == entity.cached_model(seq=5, state=Count(value=9))
    again = on_timeout(entity, cached, timer, {})
    assert logged(again) == [record], "a second firing of one occurrence decides the same"


def test_a_fired_timer_that_no_longer_validates_raises() -> None:
    entity = counter(lambda message, state: [])
    timer = FiredTimer(name="x", due_ms=1, payload={"type": "add", "body": {"by": "lots"}})
    with pytest.raises(SchemaViolationError):
        on_timeout(entity, entity.cached_model(seq=0, state=Count()), timer, {})


def test_a_fired_timer_can_set_its_next_occurrence() -> None:
    entity = counter(
        lambda message, state: (
            [Added(by=1), EntityTimer("tick", "add", after=60)] if state.value < 2 else Added(by=1)
        )
    )
    timer = FiredTimer(name="tick", due_ms=60_000, payload={"type": "add", "body": {}})
    state = on_timeout(entity, entity.cached_model(seq=0, state=Count()), timer, {})
    assert state.timers == {"tick": 60_040 + 60_000}, "after= counts from the firing"
    last = on_timeout(entity, entity.cached_model(seq=2, state=Count(value=2)), timer, {})
    assert last.timers == {}


# -- "replace the whole state" --------------------------------------------------------------


class Profile(BaseModel):
    name: str = ""
    email: str = ""


class Rename(BaseModel):
    name: str


def test_an_update_that_returns_the_event_replaces_the_whole_state() -> None:
    profile: Entity[Profile] = Entity(
        "profile",
        state=Profile,
        messages={"rename": Rename},
        events={"replaced": Profile},
        init=Profile,
        handle=lambda message, state: state.model_copy(update={"name": message.name}),
        update=lambda event, state: event,
    )
    profile.events_topic = "app.profile.events"
    cached = profile.cached_model(seq=1, state=Profile(name="a", email="a@example.com"))
    state = on_message(profile, Rename(name="b"), cached)
    new = Profile(name="b", email="a@example.com")
    assert state.data == profile.cached_model(seq=2, state=new)
    [record] = logged(state)
    assert (record.type, record.body) == ("replaced", new.model_dump())
    assert profile.fold([Profile(name="x"), Profile(email="y")], Profile()) == Profile(email="y")
