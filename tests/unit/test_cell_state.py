"""Unit tests of stream_app.core.cell: CellState timers, sends, effects, clear and time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from stream_app.core.cell import CellState, Effect, OutgoingMessage, effect_id
from stream_app.core.timers import MAX_DUE_MS, Misfire, TimerEntry
from stream_app.testing.cells import cell_state

NOW = 1_700_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Count(BaseModel):
    n: int = 0


class Ping(BaseModel):
    text: str
    times: int = 1


def make_state(**overrides: Any) -> CellState[Count]:
    fields: dict[str, Any] = {
        "behaviour": "counter",
        "app_id": "shop",
        "data": Count(n=1),
        "now_ms": NOW,
        "origin": "shop.counter.in/2/41",
    }
    return cell_state(**(fields | overrides))


def pending_entry(state: CellState[Any], name: str) -> TimerEntry | None:
    # The engine reads the requested outputs from _outputs when it commits; so does this test.
    return state._outputs.timers[name]


# -- set_timer -------------------------------------------------------------------------------


def test_set_timer_after_seconds() -> None:
    state = make_state()
    assert state.set_timer(after=1.5) == NOW + 1500
    assert state.timers == {"timeout": NOW + 1500}


def test_set_timer_after_timedelta() -> None:
    state = make_state()
    assert state.set_timer("remind", after=timedelta(minutes=2, milliseconds=5)) == NOW + 120_005


def test_set_timer_at_milliseconds() -> None:
    state = make_state()
    assert state.set_timer("x", at=NOW + 42) == NOW + 42


def test_set_timer_at_aware_datetime_in_any_zone() -> None:
    state = make_state()
    at = datetime(2030, 5, 17, 14, 30, 0, 250_000, tzinfo=timezone(timedelta(hours=-7)))
    expected = (at - EPOCH) // timedelta(milliseconds=1)
    assert state.set_timer(at=at) == expected
    assert state.set_timer(at=at.astimezone(UTC)) == expected


def test_set_timer_at_datetime_is_exact_to_the_millisecond() -> None:
    # int(at.timestamp() * 1000) lands one millisecond early for this one (a float artefact).
    state = make_state()
    assert (
        state.set_timer(at=EPOCH + timedelta(milliseconds=1_088_368_414_929)) == 1_088_368_414_929
    )
    rng = random.Random(3)
    for _ in range(2000):
        ms = rng.randrange(0, 4_000_000_000_000)
        assert state.set_timer(at=EPOCH + timedelta(milliseconds=ms)) == ms


def test_set_timer_refuses_a_naive_datetime() -> None:
    state = make_state()
    with pytest.raises(ValueError, match="naive"):
        state.set_timer(at=datetime(2030, 1, 1, 12, 0))
    assert state.timers == {}


def test_set_timer_every_alone_first_fires_one_period_from_now() -> None:
    state = make_state()
    due = state.set_timer("tick", every=2, payload={"k": 1})
    assert due == NOW + 2000
    stored = pending_entry(state, "tick")
    assert stored is not None
    assert stored.every == 2000
    assert stored.payload == {"k": 1}
    assert stored.cell == "cell-1"


def test_set_timer_every_with_at_starts_at_the_given_time() -> None:
    state = make_state()
    due = state.set_timer("tick", at=NOW + 10, every=timedelta(seconds=30))
    stored = pending_entry(state, "tick")
    assert due == NOW + 10
    assert stored is not None
    assert stored.every == 30_000


def test_set_timer_keeps_misfire_options() -> None:
    state = make_state()
    state.set_timer("tick", every=1, misfire=Misfire.CATCH_UP, max_catch_up=12)
    stored = pending_entry(state, "tick")
    assert stored is not None
    assert (stored.misfire, stored.max_catch_up) == (Misfire.CATCH_UP, 12)


def test_set_timer_refuses_both_after_and_at() -> None:
    with pytest.raises(ValueError, match="either after= or at="):
        make_state().set_timer(after=1, at=NOW)


def test_set_timer_refuses_neither_after_at_nor_every() -> None:
    with pytest.raises(ValueError, match="give after=, at= or every="):
        make_state().set_timer("x")


@pytest.mark.parametrize("every", [0, -1, 0.0001, timedelta(0)])
def test_set_timer_refuses_a_period_that_is_not_positive(every: float | timedelta) -> None:
    state = make_state()
    with pytest.raises(ValueError, match="every must be positive"):
        state.set_timer(after=1, every=every)
    assert state.timers == {}


def test_set_timer_refuses_an_empty_name() -> None:
    with pytest.raises(ValidationError):
        make_state().set_timer("", after=1)


def test_set_timer_clamps_due_times_into_the_key_range() -> None:
    state = make_state()
    assert state.set_timer("past", at=-5) == 0
    assert state.set_timer("far", at=MAX_DUE_MS + 10) == MAX_DUE_MS


def test_setting_a_name_again_replaces_the_timer() -> None:
    state = make_state(timers={"timeout": NOW + 5})
    state.set_timer(after=1, payload="first")
    state.set_timer(after=3, payload="second")
    assert state.timers == {"timeout": NOW + 3000}
    stored = pending_entry(state, "timeout")
    assert stored is not None
    assert stored.payload == "second"
    assert len(state._outputs.timers) == 1


def test_cancel_timer_reports_whether_one_was_pending() -> None:
    state = make_state(timers={"stored": NOW + 100})
    state.set_timer("fresh", after=1)
    assert state.cancel_timer("stored") is True
    assert state.cancel_timer("fresh") is True
    assert state.cancel_timer("fresh") is False
    assert state.cancel_timer("never") is False
    assert state.timers == {}
    assert pending_entry(state, "stored") is None
    assert pending_entry(state, "fresh") is None


def test_timers_view_merges_stored_timers_and_this_invocations_changes() -> None:
    stored = {"a": NOW + 1, "b": NOW + 2}
    state = make_state(timers=stored)
    state.set_timer("c", after=3)
    state.cancel_timer("a")
    assert state.timers == {"b": NOW + 2, "c": NOW + 3000}
    assert stored == {"a": NOW + 1, "b": NOW + 2}, "the caller's dict is not changed"


def test_timers_view_is_a_copy() -> None:
    state = make_state(timers={"a": 1})
    state.timers["b"] = 2
    del state.timers["a"]
    assert state.timers == {"a": 1}


# -- clear -----------------------------------------------------------------------------------


def test_clear_kills_the_cell_and_cancels_its_timers() -> None:
    state = make_state(timers={"a": NOW + 1})
    state.set_timer("b", after=1)
    assert state.alive
    state.clear()
    assert state.data is None
    assert not state.alive
    assert state.timers == {}
    assert pending_entry(state, "a") is None
    assert pending_entry(state, "b") is None


def test_a_cell_revived_after_clear_keeps_only_timers_set_after_it() -> None:
    state = make_state(timers={"old": NOW + 1})
    state.clear()
    state.data = Count(n=0)
    state.set_timer("new", after=2)
    assert state.timers == {"new": NOW + 2000}
    assert pending_entry(state, "old") is None


# -- send ------------------------------------------------------------------------------------


def test_send_collects_outgoing_messages_in_order() -> None:
    state = make_state()
    state.send("mailer", "m-1", "ping", {"text": "hi"})
    state.send("mailer", "m-2", "ping", Ping(text="yo", times=2))
    state.send("mailer", "m-3", "noop")
    messages = state._outputs.messages
    assert [(m.behaviour, m.cell_id, m.type, m.body) for m in messages] == [
        ("mailer", "m-1", "ping", {"text": "hi"}),
        ("mailer", "m-2", "ping", {"text": "yo", "times": 2}),
        ("mailer", "m-3", "noop", {}),
    ]
    assert all(isinstance(m, OutgoingMessage) for m in messages)
    assert len({m.id for m in messages}) == 3


def test_send_copies_a_dict_body() -> None:
    state = make_state()
    body = {"text": "hi"}
    state.send("mailer", "m-1", "ping", body)
    body["text"] = "changed"
    assert state._outputs.messages[0].body == {"text": "hi"}


def test_send_ids_are_deterministic_and_distinct_from_effect_ids() -> None:
    first, second = make_state(), make_state()
    for state in (first, second):
        state.send("mailer", "m-1", "ping", {})
        state.emit_effect("email")
    assert first._outputs.messages[0].id == second._outputs.messages[0].id
    assert first._outputs.messages[0].id != first._outputs.effects[0].id


# -- emit_effect -----------------------------------------------------------------------------


def test_emit_effect_records_the_effect() -> None:
    state = make_state()
    ident = state.emit_effect("email", {"to": "a@example.com"})
    [effect] = state._outputs.effects
    assert effect == Effect(
        id=ident,
        kind="email",
        payload={"to": "a@example.com"},
        behaviour="counter",
        cell_id="cell-1",
        origin="shop.counter.in/2/41",
        emitted_ms=NOW,
    )
    assert ident == effect_id("shop", "counter", "cell-1", "shop.counter.in/2/41", 0)


def test_effect_ids_are_the_same_for_the_same_origin() -> None:
    first, second = make_state(), make_state(data=Count(n=99), now_ms=NOW + 5)
    ids_first = [first.emit_effect("email"), first.emit_effect("sms", 1)]
    ids_second = [second.emit_effect("email"), second.emit_effect("sms", 1)]
    assert ids_first == ids_second


def test_effect_ids_differ_by_index_origin_cell_behaviour_and_app() -> None:
    base = make_state()
    ids = [base.emit_effect("email"), base.emit_effect("email")]
    for overrides in (
        {"origin": "shop.counter.in/2/42"},
        {"origin": "timer/remind/1700000000000"},
        {"cell_id": "cell-2"},
        {"behaviour": "other"},
        {"app_id": "other-shop"},
    ):
        ids.append(make_state(**overrides).emit_effect("email"))
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 for i in ids)


def test_an_effect_needs_a_kind() -> None:
    with pytest.raises(ValidationError):
        make_state().emit_effect("")


def test_effect_round_trips_as_json() -> None:
    state = make_state()
    state.emit_effect("email", {"nested": [1, None, "é"]})
    effect = state._outputs.effects[0]
    assert Effect.model_validate_json(effect.model_dump_json()) == effect


# -- time and identity -----------------------------------------------------------------------


def test_now_is_the_invocation_time_in_utc() -> None:
    state = make_state(now_ms=NOW + 123)
    assert state.now.tzinfo is UTC
    assert state.now == EPOCH + timedelta(milliseconds=NOW + 123)
    assert state.now.microsecond == 123_000


def test_now_is_exact_over_the_whole_datetime_range() -> None:
    rng = random.Random(5)
    last = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
    for _ in range(2000):
        ms = rng.randrange(0, last)
        assert make_state(now_ms=ms).now == EPOCH + timedelta(milliseconds=ms)


def test_repr_names_the_cell() -> None:
    text = repr(make_state())
    assert "counter/cell-1" in text
    assert "alive=True" in text


# -- outputs must be serialisable inside the callback ----------------------------------------


class Opaque:
    """Not JSON: the engine could not serialise it when the invocation commits."""


def test_a_timer_payload_that_is_not_json_fails_inside_the_callback() -> None:
    state = make_state()
    with pytest.raises(TypeError, match="set_timer: payload is not JSON-serialisable"):
        state.set_timer(after=1, payload={"x": Opaque()})
    assert state.timers == {}


def test_an_effect_payload_that_is_not_json_fails_inside_the_callback() -> None:
    state = make_state()
    with pytest.raises(TypeError, match="emit_effect: payload is not JSON-serialisable"):
        state.emit_effect("email", Opaque())
    assert state._outputs.effects == []


def test_a_message_body_that_is_not_json_fails_inside_the_callback() -> None:
    state = make_state()
    with pytest.raises(TypeError, match="send: body of 'ping' is not JSON-serialisable"):
        state.send("mailer", "m-1", "ping", {"when": datetime(2030, 1, 1, tzinfo=UTC)})
    assert state._outputs.messages == []


def test_json_payloads_are_accepted() -> None:
    state = make_state()
    payload = {"a": [1, 2.5, None, True, "é"], "b": {"c": {}}}
    state.set_timer(after=1, payload=payload)
    state.emit_effect("email", payload)
    state.send("mailer", "m-1", "ping", payload)
    assert state._outputs.effects[0].payload == payload
    assert state._outputs.messages[0].body == payload
