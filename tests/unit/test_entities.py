"""Unit tests of Entity: the decision and fold of one message, without Kafka."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from stream_app import CellState, Entity, EventRecord, RejectMessage
from stream_app.core.envelope import CellMessage
from stream_app.core.replies import Reply
from stream_app.errors import SchemaViolationError
from stream_app.examples.ledger import Balance, Count, Deposit, Increase, account, counter


def invoke(
    entity: Entity[BaseModel],
    body: BaseModel,
    data: BaseModel | None,
    *,
    reply_to: str | None = None,
    project: str | None = None,
    config: Any = None,
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
        message=CellMessage(
            cell_id="e1",
            type="t",
            body=body,
            id="m-1",
            reply_to=reply_to,
            project=project,
            config=config,
        ),
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
    [(topic, value, partition, key)] = state._outputs.records
    assert key is None, "keyed by the entity id"
    assert partition is None, "the events topic is co-partitioned with the cell"
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


def test_a_request_gets_a_reply_with_the_new_state_after_the_events() -> None:
    account.events_topic = "app.account.events"
    opened = account.cached_model(seq=1, state=Balance(owner="bob", balance=10))
    state = invoke(account, Deposit(amount=5), opened, reply_to="app.replies:3")  # type: ignore[arg-type]
    (event_topic, _, _, _), (topic, value, partition, _) = state._outputs.records
    assert (event_topic, topic, partition) == ("app.account.events", "app.replies", 3)
    reply = Reply.model_validate_json(value)
    assert (reply.correlation_id, reply.ok, reply.seq, reply.events) == ("m-1", True, 2, 1)
    assert reply.state == {"owner": "bob", "balance": 15}


def test_a_request_can_ask_for_a_declared_projection_only() -> None:
    opened = account.cached_model(seq=1, state=Balance(owner="bob", balance=10))
    state = invoke(
        account,
        Deposit(amount=5),
        opened,
        reply_to="app.replies:0",
        project="balance",  # type: ignore[arg-type]
    )
    assert Reply.model_validate_json(state._outputs.records[-1][1]).state == 15
    with pytest.raises(RejectMessage, match="no projection 'colour'"):
        invoke(account, Deposit(amount=5), opened, reply_to="app.replies:0", project="colour")  # type: ignore[arg-type]


def test_a_handle_without_events_still_answers_with_the_current_state() -> None:
    quiet = entity_handling(lambda message, state: [])
    quiet.events_topic = "app.probe.events"
    state = invoke(quiet, Increase(by=1), None, reply_to="app.replies:1")  # type: ignore[arg-type]
    [(_, value, _, _)] = state._outputs.records
    reply = Reply.model_validate_json(value)
    assert (reply.seq, reply.events, reply.state) == (0, 0, {"value": 0})
    assert state.data is None, "no events: nothing cached"


def test_the_senders_config_travels_with_the_effects_of_its_message() -> None:
    counter.events_topic = "app.counter.events"
    nine = counter.cached_model(seq=9, state=Count(value=9))
    state = invoke(counter, Increase(by=1), nine, config={"notify": "ops"})  # type: ignore[arg-type]
    [effect] = state._outputs.effects
    assert effect.kind == "counter-reached-ten" and effect.config == {"notify": "ops"}


@pytest.mark.parametrize("amount", ['"5"', "true", "5.0"])
def test_commands_are_validated_strictly(amount: str) -> None:
    value = f'{{"type": "deposit", "body": {{"amount": {amount}}}}}'.encode()
    with pytest.raises(SchemaViolationError, match=r"account: deposit\.body\.amount") as info:
        account.behaviour.message_types.decode(b"e1", value, max_bytes=10_000)
    assert info.value.reason == "schema"
    good = b'{"type": "deposit", "body": {"amount": 5}}'
    assert account.behaviour.message_types.decode(b"e1", good, max_bytes=10_000).body == Deposit(
        amount=5
    )
