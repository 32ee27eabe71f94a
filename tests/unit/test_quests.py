"""The quest layer's DSL and dispatch, called as a worker calls them (no broker)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from stream_app.api.quests import ActionContext, NoVariables, Quest, QuestBehaviour
from stream_app.core.cell import CellState, FiredTimer
from stream_app.core.envelope import MessageTypes
from stream_app.core.quests import QuestContext, QuestEventBody, instance_id
from stream_app.errors import (
    QuestNotActiveError,
    SchemaViolationError,
    UnknownActionError,
    UnknownQuestError,
    WrongContextError,
)
from stream_app.testing.cells import cell_state


class Count(BaseModel):
    n: int = 0
    seen: list[str] = []


def build() -> QuestBehaviour:
    """A ``resetter`` that ends and restarts ``counter`` on ``tick`` (before ``counter`` sees
    it), a ``counter`` that counts ticks, and a ``meal`` window quest with a deadline."""
    resetter = Quest("resetter", variables=NoVariables)

    @resetter.action(on=["tick"])
    def restart(ctx: ActionContext[NoVariables]) -> None:
        if ctx.event.get("restart"):
            ctx.remove_quest("counter")
            ctx.add_quest("counter")

    counter = Quest("counter", variables=Count)

    @counter.action(on=["tick", "tock"])
    def count(ctx: ActionContext[Count]) -> None:
        ctx.vars.n += 1
        ctx.vars.seen.append(ctx.instance)

    @counter.action()
    def bump(ctx: ActionContext[Count]) -> None:
        ctx.vars.n += ctx.event.get("by", 1)

    meal = Quest(
        "meal",
        variables=Count,
        deadline=3600,
        on_deadline=lambda ctx: ctx.effect("too_late", {"n": ctx.vars.n}),
    )
    meal.window(
        "after_workout",
        opens_on="workout",
        closes_on="meal",
        within=600,
        met=lambda ctx: ctx.effect("met", {"at": ctx.now_ms}),
        missed=lambda ctx: ctx.effect("missed", {"at": ctx.now_ms}),
    )
    return QuestBehaviour("ctx", quests=[resetter, counter, meal])


@dataclass
class Context:
    """One context driven through the behaviour's callbacks, as the engine would."""

    behaviour: QuestBehaviour
    data: QuestContext | None = None
    timers: dict[str, int] = field(default_factory=dict)
    offset: int = 0
    last: CellState[Any] | None = None

    def send(self, kind: str, body: dict[str, Any], *, now_ms: int = 1_000) -> CellState[Any]:
        self.offset += 1
        state = cell_state(
            self.behaviour,
            data=self.data,
            message=(kind, body),
            cell_id="alice",
            now_ms=now_ms,
            origin=f"app.ctx.in/0/{self.offset}",
            timers=self.timers,
        )
        self.behaviour.handle_message(state)
        return self._keep(state)

    def fire(self, name: str, *, now_ms: int) -> CellState[Any]:
        """Fire the pending timer ``name`` as the engine does: retired, then ``on_timeout``."""
        due = self.timers.pop(name)
        quest = next(q for q, i in self.active().items() if name.startswith(f"quest:{i}:"))
        state = cell_state(
            self.behaviour,
            data=self.data,
            timer=FiredTimer(name=name, due_ms=due, payload={"quest": quest}),
            cell_id="alice",
            now_ms=now_ms,
            origin=f"timer/{name}/{due}",
            timers=self.timers,
        )
        self.behaviour.on_timeout(state)
        return self._keep(state)

    def _keep(self, state: CellState[Any]) -> CellState[Any]:
        # Through the stored JSON, as a worker reads the context for its next event.
        data = state.data
        self.data = None if data is None else type(data).model_validate_json(data.model_dump_json())
        self.timers = state.timers
        self.last = state
        return state

    def active(self) -> dict[str, str]:
        return self.data.active() if self.data is not None else {}

    def variables(self, quest: str) -> dict[str, Any]:
        assert self.data is not None
        variables: dict[str, Any] = self.data.quests[quest].model_dump(mode="json")["variables"]
        return variables


def effects(state: CellState[Any]) -> list[tuple[str, Any]]:
    return [(e.kind, e.payload) for e in state._outputs.effects]


def test_each_add_starts_a_new_instance_and_remove_ends_it() -> None:
    ctx = Context(build())
    ctx.send("add_quest", {"quest": "counter"})
    first = ctx.active()["counter"]
    assert first == instance_id("alice", "app.ctx.in/0/1", 0)
    ctx.send("add_quest", {"quest": "counter"})
    second = ctx.active()["counter"]
    assert second != first
    ctx.send("remove_quest", {"quest": "counter"})
    assert ctx.data is None  # no active quest: the context is a dead cell


def test_the_three_event_forms() -> None:
    ctx = Context(build())
    ctx.send("add_quest", {"quest": "counter"})
    ctx.send("add_quest", {"quest": "resetter"})
    instance = ctx.active()["counter"]
    ctx.send("event", {"event_name": "tick"})  # multicast
    ctx.send("event", {"event_name": "tock", "event_selector": "counter.count"})
    ctx.send(
        "event",
        {"event_name": "tock", "event_selector": "counter.count", "quest_instance": instance},
    )
    assert ctx.variables("counter")["n"] == 3
    ctx.send(
        "event",
        {"event_name": "tock", "event_selector": "counter.count", "quest_instance": "gone"},
    )
    assert ctx.variables("counter")["n"] == 3
    assert ctx.data is not None and ctx.data.ignored == 1


def test_a_multicast_never_reaches_the_instance_started_during_it() -> None:
    ctx = Context(build())
    ctx.send("add_quest", {"quest": "resetter"})
    ctx.send("add_quest", {"quest": "counter"})
    old = ctx.active()["counter"]
    ctx.send("event", {"event_name": "tick", "data": {"restart": True}})
    new = ctx.active()["counter"]
    assert new != old
    # The resetter ran first and replaced the counter; the tick bound to the old instance was
    # not delivered to the new one.
    assert ctx.variables("counter") == {"n": 0, "seen": []}
    ctx.send("event", {"event_name": "tick"})
    assert ctx.variables("counter") == {"n": 1, "seen": [new]}


def test_call_runs_an_action_directly() -> None:
    ctx = Context(build())
    ctx.send("add_quest", {"quest": "counter"})
    ctx.send("call", {"quest": "counter", "action": "bump", "event": {"by": 5}})
    assert ctx.variables("counter")["n"] == 5


def test_the_stored_context_leaves_defaults_out_and_reads_the_full_form() -> None:
    behaviour = build()
    ctx = Context(behaviour)
    ctx.send("add_quest", {"quest": "counter"})
    assert ctx.data is not None
    stored = json.loads(ctx.data.model_dump_json())
    instance = ctx.active()["counter"]
    assert stored == {
        "quests": {
            "counter": {
                "quest": "counter",
                "instance": instance,
                "started_ms": 1_000,
                "variables": {"n": 0, "seen": []},
            }
        }
    }
    # The form with every field written out (no window, no deadline, nothing ignored) reads
    # as the same context.
    full = {
        "quests": {
            "counter": {
                **stored["quests"]["counter"],
                "variables": {"n": 2, "seen": []},
                "windows": {},
                "deadline_ms": None,
            }
        },
        "ignored": 0,
    }
    ctx.data = behaviour.data_model.model_validate_json(json.dumps(full))
    ctx.send("event", {"event_name": "tick"})
    assert ctx.variables("counter") == {"n": 3, "seen": [instance]}


def test_a_stored_instance_its_quest_cannot_read_fails_only_its_calls() -> None:
    behaviour = build()
    stored = {
        "quests": {
            "gone": {"quest": "gone", "instance": "g1", "started_ms": 1, "variables": {"a": 1}},
            "counter": {
                "quest": "counter",
                "instance": "c1",
                "started_ms": 1,
                "variables": {"n": "not a number"},
            },
            "resetter": {"quest": "resetter", "instance": "r1", "started_ms": 1},
        }
    }
    # Read without the definitions, as a tool would: the worker types what it can.
    ctx = Context(behaviour, data=QuestContext.model_validate(stored))
    # A quest no longer defined is kept as it was stored, and calls nothing.
    ctx.send("event", {"event_name": "tick", "event_selector": "resetter.restart"})
    assert ctx.data is not None
    assert ctx.data.model_dump(mode="json")["quests"]["gone"] == stored["quests"]["gone"]
    # Variables their model no longer accepts fail the calls to that quest, as they would
    # every time (the context is retried, then parked).
    with pytest.raises(ValidationError):
        ctx.send("event", {"event_name": "tock", "event_selector": "counter.count"})


def test_what_an_action_emits_is_not_changed_by_a_later_call() -> None:
    snap = Quest("snap", variables=Count)

    @snap.action(on=["e"])
    def report(ctx: ActionContext[Count]) -> None:
        ctx.effect("seen", {"seen": ctx.vars.seen})
        ctx.emit("seen", {"seen": ctx.vars.seen})

    @snap.action(on=["e"])
    def grow(ctx: ActionContext[Count]) -> None:
        ctx.vars.seen.append("later")

    ctx = Context(QuestBehaviour("ctx", quests=[snap]))
    ctx.send("add_quest", {"quest": "snap"})
    state = ctx.send("event", {"event_name": "e"})
    assert effects(state) == [("seen", {"seen": []})]
    assert [m.body["data"] for m in state._outputs.messages] == [{"seen": []}]
    assert ctx.variables("snap")["seen"] == ["later"]


@pytest.mark.parametrize(
    ("kind", "body", "error"),
    [
        ("add_quest", {"quest": "nope"}, UnknownQuestError),
        ("call", {"quest": "counter", "action": "nope"}, UnknownActionError),
        ("call", {"quest": "meal", "action": "count"}, UnknownActionError),
        ("event", {"event_name": "tick", "event_selector": "nope.x"}, UnknownQuestError),
        ("event", {"event_name": "tick", "event_selector": "counter.bump"}, UnknownActionError),
        (
            "event",
            {"event_name": "tick", "event_selector": "resetter.restart"},
            QuestNotActiveError,
        ),
        ("event", {"event_name": "tick", "event_context": "bob"}, WrongContextError),
    ],
)
def test_messages_that_can_never_apply_are_rejected_with_a_reason(
    kind: str, body: dict[str, Any], error: type[Exception]
) -> None:
    ctx = Context(build())
    ctx.send("add_quest", {"quest": "counter"})
    with pytest.raises(error):
        ctx.send(kind, body)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"event_name": "tick", "quest_instance": "x"},
        {"event_name": "tick", "event_selector": "no-dot"},
        {"event_name": "tick", "extra": 1},
    ],
)
def test_malformed_events_fail_their_schema(body: dict[str, Any]) -> None:
    with pytest.raises(SchemaViolationError):
        cell_state(build(), message=("event", body))


def test_a_window_met_missed_late_and_by_its_timer() -> None:
    ctx = Context(build())
    ctx.send("add_quest", {"quest": "meal"}, now_ms=0)
    instance = ctx.active()["meal"]
    window = f"quest:{instance}:window:after_workout"
    ctx.send("event", {"event_name": "workout"}, now_ms=1_000)
    assert ctx.timers[window] == 601_000
    met = ctx.send("event", {"event_name": "meal"}, now_ms=500_000)
    assert effects(met) == [("met", {"at": 500_000})]
    assert window not in ctx.timers
    # A meal without a workout before it opens nothing.
    assert effects(ctx.send("event", {"event_name": "meal"}, now_ms=510_000)) == []
    # The timer closes it.
    ctx.send("event", {"event_name": "workout"}, now_ms=520_000)
    missed = ctx.fire(window, now_ms=1_120_001)
    assert effects(missed) == [("missed", {"at": 1_120_001})]
    # A meal stamped after the window's end misses it, even before the timer fired.
    ctx.send("event", {"event_name": "workout"}, now_ms=1_200_000)
    late = ctx.send("event", {"event_name": "meal"}, now_ms=1_800_001)
    assert effects(late) == [("missed", {"at": 1_800_001})]
    assert window not in ctx.timers


def test_a_deadline_runs_its_action_then_ends_the_quest_and_its_timers() -> None:
    ctx = Context(build())
    ctx.send("add_quest", {"quest": "counter"}, now_ms=0)
    ctx.send("add_quest", {"quest": "meal"}, now_ms=0)
    instance = ctx.active()["meal"]
    ctx.send("event", {"event_name": "workout"}, now_ms=3_000_000)
    assert sorted(ctx.timers) == [
        f"quest:{instance}:deadline:deadline",
        f"quest:{instance}:window:after_workout",
    ]
    fired = ctx.fire(f"quest:{instance}:deadline:deadline", now_ms=3_600_000)
    assert effects(fired) == [("too_late", {"n": 0})]
    assert ctx.active() == {"counter": ctx.active()["counter"]}
    assert ctx.timers == {}


def test_a_timer_of_an_ended_instance_is_ignored() -> None:
    ctx = Context(build())
    ctx.send("add_quest", {"quest": "meal"}, now_ms=0)
    old = ctx.active()["meal"]
    ctx.send("add_quest", {"quest": "meal"}, now_ms=0)
    state = cell_state(
        ctx.behaviour,
        data=ctx.data,
        timer=FiredTimer(
            name=f"quest:{old}:deadline:deadline", due_ms=1, payload={"quest": "meal"}
        ),
        cell_id="alice",
        timers=ctx.timers,
    )
    ctx.behaviour.on_timeout(state)
    assert effects(state) == [] and state.data is not None and state.data.ignored == 1


def test_recurring_timers_are_armed_per_instance() -> None:
    quest = Quest("r", variables=NoVariables)
    quest.every("ping", 60, lambda ctx: ctx.effect("ping", ctx.event))
    quest.cron("daily", "0 9 * * *", lambda ctx: None, tz=lambda v: "Europe/Paris")
    ctx = Context(QuestBehaviour("ctx", quests=[quest]))
    ctx.send("add_quest", {"quest": "r"}, now_ms=0)
    instance = ctx.active()["r"]
    assert ctx.timers[f"quest:{instance}:every:ping"] == 60_000
    assert f"quest:{instance}:cron:daily" in ctx.timers
    fired = ctx.fire(f"quest:{instance}:every:ping", now_ms=60_000)
    assert effects(fired) == [("ping", {"due_ms": 60_000, "missed": 0})]


def test_emit_and_publish() -> None:
    quest = Quest("e", variables=NoVariables)

    @quest.action(on=["go"])
    def go(ctx: ActionContext[NoVariables]) -> None:
        ctx.emit("hello", {"x": 1}, context="bob")
        ctx.emit("again", selector="e.go", instance=ctx.instance)
        ctx.publish("out", "done", {"y": 2})
        with pytest.raises(ValueError, match="not declared"):
            ctx.publish("elsewhere", "done")

    ctx = Context(QuestBehaviour("ctx", quests=[quest], topics=["out"]))
    ctx.send("add_quest", {"quest": "e"})
    state = ctx.send("event", {"event_name": "go"})
    sent = [(m.cell_id, m.type, m.body) for m in state._outputs.messages]
    instance = ctx.active()["e"]
    assert sent == [
        ("bob", "event", {"event_name": "hello", "data": {"x": 1}, "event_context": "bob"}),
        (
            "alice",
            "event",
            {
                "event_name": "again",
                "data": {},
                "event_selector": "e.go",
                "quest_instance": instance,
                "event_context": "alice",
            },
        ),
    ]
    assert state._outputs.records == [
        ("out", b'{"event_name":"done","event_context":"alice","data":{"y":2}}', None, None)
    ]


def test_definitions_are_checked() -> None:
    class Required(BaseModel):
        x: int

    with pytest.raises(ValueError, match="needs a default"):
        Quest("q", variables=Required)
    with pytest.raises(ValueError, match="must match"):
        Quest("a.b", variables=NoVariables)
    with pytest.raises(ValueError, match="two quests"):
        QuestBehaviour(
            "ctx", quests=[Quest("q", variables=NoVariables), Quest("q", variables=NoVariables)]
        )
    assert build().selectors("tick") == ["resetter.restart", "counter.count"]


@pytest.mark.parametrize(
    "body",
    [
        {"event_name": "tick"},
        {"event_name": "tick", "event_context": "alice", "data": {"n": [1, 2]}},
        {"event_name": "tick", "event_selector": "counter.count"},
        {"event_name": "tick", "event_selector": "counter.count", "quest_instance": "i1"},
        {},
        {"event_name": "tick", "quest_instance": "x"},
        {"event_name": "tick", "event_selector": "no-dot"},
        {"event_name": "tick", "extra": 1},
        {"event_name": "", "event_selector": "counter.count", "quest_instance": "i1"},
        {"event_name": "tick", "data": []},
        {"event_name": "tick", "event_selector": None},
        {"event_name": "tick", "event_selector": "counter.count", "quest_instance": None},
    ],
)
def test_a_worker_reads_an_event_as_its_declared_schema_does(body: dict[str, Any]) -> None:
    # The worker validates events by FastQuestEventBody first (no Python function telling the
    # form): it must accept exactly what QuestEventBody accepts, as the same form and values,
    # and an event it refuses must fail with the declared model's error.
    behaviour = build()
    declared = MessageTypes(behaviour.name, behaviour.message_types.types)
    value = json.dumps({"type": "event", "body": body}).encode()
    try:
        expected = declared.decode(b"alice", value, max_bytes=4096)
    except SchemaViolationError as exc:
        with pytest.raises(SchemaViolationError) as raised:
            behaviour.message_types.decode(b"alice", value, max_bytes=4096)
        assert str(raised.value) == str(exc)
        return
    got = behaviour.message_types.decode(b"alice", value, max_bytes=4096)
    assert isinstance(got.body, QuestEventBody)
    assert type(got.body.root) is type(expected.body.root)
    assert got.body.root == expected.body.root


def test_an_action_declared_after_the_behaviour_runs_on_multicasts() -> None:
    late = Quest("late", variables=Count)

    @late.action(on=["tick"])
    def first(ctx: ActionContext[Count]) -> None:
        ctx.vars.n += 1

    behaviour = QuestBehaviour("ctx", quests=[late])
    ctx = Context(behaviour)
    ctx.send("add_quest", {"quest": "late"})
    ctx.send("event", {"event_name": "tick"})  # the behaviour's plan for "tick" is made here
    assert ctx.variables("late")["n"] == 1

    @late.action(on=["tick"])
    def second(ctx: ActionContext[Count]) -> None:
        ctx.vars.n += 10

    ctx.send("event", {"event_name": "tick"})
    assert ctx.variables("late")["n"] == 12
    assert behaviour.listeners("tick") == (("late", late, ((first, "tick"), (second, "tick"))),)
    assert behaviour.listeners("nothing-listens") == ()
