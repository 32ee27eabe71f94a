"""Quests (Ruby-Quest's model) on the cell runtime: per-context temporal logic in Python.

A :class:`Quest` is a named definition: a pydantic model of its variables, an ``init`` action,
actions that run on named events, recurring timers (``every``, ``cron`` with a time zone),
dependency windows ("B within 10 minutes of A") and a deadline for the whole quest::

    class Count(BaseModel):
        workouts: int = 0

    three = Quest("three_workouts", variables=Count, deadline=timedelta(days=7))

    @three.action(on=["workout_logged"])
    def count(ctx: ActionContext[Count]) -> None:
        ctx.vars.workouts += 1
        if ctx.vars.workouts == 3:
            ctx.effect("reward", {"user": ctx.context})
            ctx.end()

    fitness = QuestBehaviour("fitness", quests=[three])
    runtime.quests(fitness)

A :class:`QuestBehaviour` is the behaviour of the *contexts* (users, sessions): one context is
one cell, keyed by its id; the quests added to it, their variables, windows and timers are its
data and timers. Everything an event does to a context (variables, quests added or ended,
timers, outgoing events, effects) commits together with the event's offset or not at all, and
the context's events are handled one at a time, in order, by the one worker that owns its
partition. That is what makes the layer safe where Ruby-Quest was not (see ``docs/quests.md``).

Actions are plain synchronous functions of an :class:`ActionContext`: time comes from
:attr:`ActionContext.now`, ids from the triggering record, so a replay after a crash does the
same thing. An action that raises is retried and then parks the context like any cell callback;
a message that can never apply (unknown quest or action, a selector event for a quest that is
not active) is dead-lettered with the reason (:class:`~stream_app.errors.QuestEventError`).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, create_model

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState, FiredTimer
from stream_app.core.envelope import CellMessage, MessageTypes
from stream_app.core.quests import (
    NAME_PATTERN,
    AddQuest,
    CallQuest,
    FastQuestEventBody,
    InstanceEvent,
    MulticastEvent,
    QuestContext,
    QuestEventBody,
    QuestInstance,
    RemoveQuest,
    SelectorEvent,
    instance_id,
    parse_selector,
)
from stream_app.core.retry import RetryPolicy
from stream_app.core.timers import Misfire
from stream_app.errors import (
    QuestNotActiveError,
    UnknownActionError,
    UnknownQuestError,
    WrongContextError,
)

__all__ = ["TIMER_PREFIX", "Action", "ActionContext", "NoVariables", "Quest", "QuestBehaviour"]

logger = logging.getLogger(__name__)

V = TypeVar("V", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., None])

#: An action: changes ``ctx.vars`` and asks the context for outputs; returns nothing.
Action = Callable[["ActionContext[Any]"], None]
#: A time zone: an IANA name, or a function of the instance's variables that returns one.
TimeZone = str | Callable[[Any], str]

#: Timers of a quest instance are named ``quest:<instance>:<kind>:<name>``: removing the
#: instance cancels every timer under its prefix.
TIMER_PREFIX = "quest:"

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class NoVariables(BaseModel):
    """The variables of a quest that keeps none."""


@dataclass(frozen=True, slots=True)
class _ActionDef:
    name: str
    fn: Action
    on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Recurring:
    name: str
    action: Action
    every_s: float | None
    cron: str | None
    tz: TimeZone | None
    misfire: Misfire


@dataclass(frozen=True, slots=True)
class _Window:
    name: str
    opens_on: frozenset[str]
    closes_on: frozenset[str]
    within_ms: int
    met: Action
    missed: Action


def _check_name(kind: str, name: str) -> str:
    if not 1 <= len(name) <= 100 or not set(name) <= _NAME_CHARS:
        raise ValueError(f"{kind} name {name!r} must match {NAME_PATTERN}")
    return name


def _ms(value: float | timedelta) -> int:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return round(seconds * 1000)


class Quest(Generic[V]):
    """A quest definition: variables, actions on events, timers, windows and a deadline.

    Args:
        name: The quest's name (letters, digits, ``_`` and ``-``).
        variables: The pydantic model of an instance's variables; every field needs a
            default (an instance starts from ``variables()``, then ``init`` runs).
        init: Runs when an instance starts; its event data are the ``params`` of the add.
        deadline: The whole quest ends this long after it started (seconds or a timedelta).
        on_deadline: Runs when the deadline comes, before the instance ends.

    Raises:
        ValueError: A bad name, a variables model without defaults, or an ``on_deadline``
            without a ``deadline``.
    """

    def __init__(
        self,
        name: str,
        *,
        variables: type[V],
        init: Callable[[ActionContext[V]], None] | None = None,
        deadline: float | timedelta | None = None,
        on_deadline: Callable[[ActionContext[V]], None] | None = None,
    ) -> None:
        self.name = _check_name("quest", name)
        try:
            variables()
        except ValidationError as exc:
            raise ValueError(
                f"quest {name!r}: every field of {variables.__name__} needs a default: {exc}"
            ) from None
        if on_deadline is not None and deadline is None:
            raise ValueError(f"quest {name!r}: on_deadline= needs a deadline=")
        self.variables = variables
        #: The stored instance of this quest, its variables typed (:func:`_context_model`).
        self.instance_model = _instance_model(name, variables)
        self.init = init
        self.deadline_ms = _ms(deadline) if deadline is not None else None
        self.on_deadline = on_deadline
        self.actions: dict[str, _ActionDef] = {}
        self.recurring: dict[str, _Recurring] = {}
        self.windows: dict[str, _Window] = {}
        # The actions and the windows each event name runs, in declaration order: a multicast
        # asks each quest of the context for its event's, once per event.
        self._actions_on: dict[str, tuple[tuple[Action, str], ...]] = {}
        self._windows_on: dict[str, tuple[_Window, ...]] = {}
        # The multicast plans of the behaviours that run this quest (QuestBehaviour._plans):
        # emptied when an action or a window is declared after the behaviour was made.
        self._plans: list[dict[str, tuple[_Listener, ...]]] = []

    def action(self, name: str | None = None, *, on: Sequence[str] = ()) -> Callable[[F], F]:
        """Declare the decorated function an action that runs on the events named in ``on``
        (an action with no events runs only when called or selected by name).

        Its name (its selector is ``"<quest>.<name>"``) is the function's unless given.
        """

        def register(fn: F) -> F:
            self.on(list(on), fn, name=name)
            return fn

        return register

    def on(
        self,
        events: str | Sequence[str],
        fn: Callable[[ActionContext[V]], None],
        *,
        name: str | None = None,
    ) -> None:
        """Declare ``fn`` an action that runs on ``events`` (one name or several)."""
        action = _check_name("action", name or fn.__name__)
        if action in self.actions:
            raise ValueError(f"quest {self.name!r} already has an action {action!r}")
        names = (events,) if isinstance(events, str) else tuple(events)
        self.actions[action] = _ActionDef(action, fn, names)
        for event in dict.fromkeys(names):
            self._actions_on[event] = (*self._actions_on.get(event, ()), (fn, event))
        self._changed()

    def every(
        self,
        name: str,
        period: float | timedelta,
        action: Callable[[ActionContext[V]], None],
        *,
        misfire: Misfire = Misfire.FIRE_ONCE,
    ) -> None:
        """Run ``action`` every ``period`` (seconds or a timedelta) from the instance's start.

        The action sees the event name ``name`` and the data ``{"due_ms", "missed"}``. The
        default misfire policy fires once for all the occurrences missed while no worker owned
        the context: a reminder is worth sending late, not once per missed period.
        """
        self._add_recurring(_Recurring(name, action, _ms(period) / 1000, None, None, misfire))

    def cron(
        self,
        name: str,
        expression: str,
        action: Callable[[ActionContext[V]], None],
        *,
        tz: TimeZone = "UTC",
        misfire: Misfire = Misfire.FIRE_ONCE,
    ) -> None:
        """Run ``action`` on a 5-field cron ``expression`` in the IANA time zone ``tz``.

        ``tz`` may be a function of the instance's variables (each user in their own zone),
        read when the instance starts. The action sees the event name ``name`` and the data
        ``{"due_ms", "missed"}``; the misfire policy is as for :meth:`every`.
        """
        self._add_recurring(_Recurring(name, action, None, expression, tz, misfire))

    def window(
        self,
        name: str,
        *,
        opens_on: str | Sequence[str],
        closes_on: str | Sequence[str],
        within: float | timedelta,
        met: Callable[[ActionContext[V]], None],
        missed: Callable[[ActionContext[V]], None],
    ) -> None:
        """A dependency window: "``closes_on`` within ``within`` of ``opens_on``".

        An ``opens_on`` event opens the window (or opens it again, from that event's time);
        a ``closes_on`` event while it is open runs ``met`` and closes it; when it closes
        with no such event (a durable timer), ``missed`` runs. A ``closes_on`` event that
        arrives stamped after the window's end runs ``missed``, whichever came first.
        """
        _check_name("window", name)
        if name in self.windows:
            raise ValueError(f"quest {self.name!r} already has a window {name!r}")
        window = _Window(
            name,
            frozenset([opens_on] if isinstance(opens_on, str) else opens_on),
            frozenset([closes_on] if isinstance(closes_on, str) else closes_on),
            _ms(within),
            met,
            missed,
        )
        self.windows[name] = window
        for event in window.opens_on | window.closes_on:
            self._windows_on[event] = (*self._windows_on.get(event, ()), window)
        self._changed()

    def _changed(self) -> None:
        """An action or a window was declared: the behaviours' multicast plans are stale."""
        for plans in self._plans:
            plans.clear()

    def listens_to(self, event_name: str) -> bool:
        """Whether an action or a window of this quest runs on ``event_name``."""
        return event_name in self._actions_on or event_name in self._windows_on

    def actions_on(self, event_name: str) -> tuple[tuple[Action, str], ...]:
        """The actions that run on ``event_name``, in the order they were declared, each with
        the event name it sees (``event_name``)."""
        return self._actions_on.get(event_name, ())

    def windows_on(self, event_name: str) -> tuple[_Window, ...]:
        """The windows ``event_name`` opens or closes, in the order they were declared."""
        return self._windows_on.get(event_name, ())

    def _add_recurring(self, recurring: _Recurring) -> None:
        _check_name("timer", recurring.name)
        if recurring.name in self.recurring:
            raise ValueError(f"quest {self.name!r} already has a timer {recurring.name!r}")
        self.recurring[recurring.name] = recurring

    def __repr__(self) -> str:
        return f"<Quest {self.name} actions={sorted(self.actions)}>"


#: What a multicast runs in one quest: the quest's name, the quest, and the actions listening
#: (each with the event name it sees), or ``None`` when the event opens or closes a window of
#: the quest (the actions then run through :meth:`_Invocation._through_windows`).
_Listener = tuple[str, Quest[Any], tuple[tuple[Action, str], ...] | None]


class ActionContext(Generic[V]):
    """What an action sees and asks for: one quest instance of one context, for one call.

    Attributes:
        context: The context id.
        quest: The quest's name.
        instance: The instance id.
        event_name: The event that runs the action (``init``, a timer's or window's name
            for those).
        event: The event's data.
        vars: The instance's variables; changes are kept when the action returns.
        timer: The timer that fired, for timers, windows missed and deadlines.
    """

    __slots__ = (
        "_instance",
        "_run",
        "context",
        "event",
        "event_name",
        "instance",
        "quest",
        "timer",
        "vars",
    )

    def __init__(
        self,
        run: _Invocation,
        instance: QuestInstance,
        variables: V,
        event_name: str,
        event: dict[str, Any],
        timer: FiredTimer | None,
    ) -> None:
        self._run = run
        self._instance = instance
        self.context = run.state.cell_id
        self.quest = instance.quest
        self.instance = instance.instance
        self.event_name = event_name
        self.event = event
        self.vars = variables
        self.timer = timer

    @property
    def now_ms(self) -> int:
        """The invocation's time, milliseconds since the epoch (the record's, not the wall
        clock's: a replay sees the same)."""
        return self._run.state.now_ms

    @property
    def now(self) -> datetime:
        """:attr:`now_ms` as an aware UTC datetime."""
        return self._run.state.now

    @property
    def active(self) -> bool:
        """Whether this instance is still the context's active one (an action may end it)."""
        return self._run.is_active(self._instance)

    def emit(
        self,
        event_name: str,
        data: dict[str, Any] | None = None,
        *,
        context: str | None = None,
        selector: str | None = None,
        instance: str | None = None,
    ) -> None:
        """Send an event to this context (default) or another one, after this commit.

        Without ``selector`` it is a multicast; with ``selector`` (``"<quest>.<action>"``) a
        selector event, and with ``instance`` too an instance event. It goes through the
        behaviour's input topic, so it is handled after the events already queued there.
        """
        # A copy: the event is encoded at commit, after later calls may change the variables.
        body: dict[str, Any] = {"event_name": event_name, "data": copy.deepcopy(data or {})}
        if selector is not None:
            body["event_selector"] = selector
        if instance is not None:
            body["quest_instance"] = instance
        state = self._run.state
        target = context if context is not None else state.cell_id
        body["event_context"] = target
        QuestEventBody.model_validate(body)  # a bad event fails here, in the action
        state.send(state.behaviour, target, "event", body)

    def publish(self, topic: str, event_name: str, data: dict[str, Any] | None = None) -> None:
        """Write an event to ``topic`` (one the behaviour declares in ``topics=``) after this
        commit, keyed by the context: ``{"event_name", "event_context", "data"}``.

        Raises:
            ValueError: The behaviour does not declare ``topic``.
        """
        run = self._run
        if topic not in run.behaviour.topics:
            raise ValueError(
                f"quest {self.quest!r}: topic {topic!r} is not declared "
                f"(declared: {sorted(run.behaviour.topics)})"
            )
        value = {"event_name": event_name, "event_context": self.context, "data": data or {}}
        run.state.publish(topic, json.dumps(value, separators=(",", ":")).encode())

    def effect(self, kind: str, payload: Any = None) -> str:
        """Emit a side effect (handled by ``@runtime.effect_handler(kind)`` after this commit);
        returns its deterministic id."""
        # A copy: the effect is encoded at commit, after later calls may change the variables.
        return self._run.state.emit_effect(kind, copy.deepcopy(payload))

    def end(self) -> None:
        """End this instance: its variables, windows and timers go when the action returns."""
        self._run.end(self._instance)

    def add_quest(self, quest: str, params: dict[str, Any] | None = None) -> str:
        """Start a new instance of ``quest`` in this context (ending its active one, if any);
        returns the new instance id.

        Raises:
            UnknownQuestError: The behaviour defines no such quest.
        """
        return self._run.start(quest, params or {}).instance

    def remove_quest(self, quest: str) -> bool:
        """End the active instance of ``quest`` in this context; returns whether one was."""
        active = self._run.data.quests.get(quest)
        if active is None:
            return False
        self._run.end(active)
        return True

    def open_window(self, name: str) -> int:
        """Open (or open again from now) this quest's window ``name``; returns when it closes.

        Raises:
            KeyError: The quest declares no such window.
        """
        window = self._run.behaviour.quest(self.quest).windows[name]
        return self._run.open_window(self._instance, window)

    @property
    def windows(self) -> dict[str, int]:
        """This instance's open windows, ``name -> closes_ms``."""
        return dict(self._instance.windows)

    def __repr__(self) -> str:
        return (
            f"ActionContext({self.context}, {self.quest}/{self.instance}, "
            f"event={self.event_name!r})"
        )


class QuestBehaviour(Behaviour[QuestContext]):
    """The behaviour of the contexts that quests are added to: one context is one cell.

    Args:
        name: The behaviour's name: contexts' records go to ``<app_id>.<name>.in``.
        quests: The quests contexts may take; a multicast runs them in this order.
        topics: Topics actions may :meth:`~ActionContext.publish` to (full names; created
            with the app's partition count by :meth:`Runtime.quests
            <stream_app.runtime.Runtime.quests>`).
        retry: As for :class:`~stream_app.api.behaviour.Behaviour`.

    Its :attr:`data_model` is a subclass of :class:`~stream_app.core.quests.QuestContext` in
    which each instance's ``variables`` are its quest's model: a worker reads a stored context
    in one pydantic pass, and actions change the variables in place.

    Raises:
        ValueError: Two quests with one name, or a bad behaviour name.
    """

    def __init__(
        self,
        name: str,
        *,
        quests: Sequence[Quest[Any]],
        topics: Sequence[str] = (),
        retry: RetryPolicy | None = None,
    ) -> None:
        by_name: dict[str, Quest[Any]] = {}
        for quest in quests:
            if quest.name in by_name:
                raise ValueError(f"behaviour {name!r}: two quests named {quest.name!r}")
            by_name[quest.name] = quest
        super().__init__(
            name,
            messages={
                "event": QuestEventBody,
                "add_quest": AddQuest,
                "remove_quest": RemoveQuest,
                "call": CallQuest,
            },
            data=_context_model(name, quests),
            retry=retry,
        )
        # The same message types; events read without the Python function that tells their
        # form (the records a worker handles most).
        self.message_types = MessageTypes(
            name, self.message_types.types, faster={"event": FastQuestEventBody}
        )
        self.quests = by_name
        self.topics = frozenset(topics)
        # Event name -> what a multicast of it runs, quest by quest in the behaviour's order
        # (only names some quest listens to: the map is bounded by the definitions).
        self._plans: dict[str, tuple[_Listener, ...]] = {}
        for quest in quests:
            quest._plans.append(self._plans)

    def quest(self, name: str) -> Quest[Any]:
        """The quest called ``name``.

        Raises:
            UnknownQuestError: The behaviour defines no such quest.
        """
        quest = self.quests.get(name)
        if quest is None:
            raise UnknownQuestError(
                f"{self.name}: unknown quest {name!r} (known: {', '.join(sorted(self.quests))})"
            )
        return quest

    def selectors(self, event_name: str) -> list[str]:
        """The selectors (``"<quest>.<action>"``) of the actions that run on ``event_name``,
        in multicast order: the selector index, derived from the definitions."""
        return [
            f"{quest.name}.{action.name}"
            for quest in self.quests.values()
            for action in quest.actions.values()
            if event_name in action.on
        ]

    def listeners(self, event_name: str) -> tuple[_Listener, ...]:
        """What a multicast of ``event_name`` runs: for each quest that listens to it, in the
        behaviour's order, ``(quest name, quest, actions)``, the actions ``None`` when the event
        opens or closes a window of the quest. Derived from the definitions once per event name.
        """
        plan = self._plans.get(event_name)
        if plan is None:
            plan = tuple(
                (
                    quest.name,
                    quest,
                    None if quest.windows_on(event_name) else quest.actions_on(event_name),
                )
                for quest in self.quests.values()
                if quest.listens_to(event_name)
            )
            if plan:
                self._plans[event_name] = plan
        return plan

    def handle_message(self, state: CellState[QuestContext]) -> None:
        """Apply one quest message (an event, an add, a remove or a call) to the context."""
        message: CellMessage[Any] | None = state.message
        assert message is not None
        run = _Invocation(self, state)
        body = message.body
        if isinstance(body, QuestEventBody):
            run.event(body.root)
        elif isinstance(body, AddQuest):
            run.start(body.quest, body.params)
        elif isinstance(body, RemoveQuest):
            run.remove(body)
        elif isinstance(body, CallQuest):
            run.call(body)
        run.finish()

    def on_timeout(self, state: CellState[QuestContext]) -> None:
        """A quest timer fired: a recurring action, a window missed or a deadline."""
        run = _Invocation(self, state)
        run.timer()
        run.finish()


class _Invocation:
    """One callback's work on one context: the context's data and the cell state to write to.

    The dispatch protocol of an event, with the bookkeeping that fixes Ruby-Quest's first
    known issue:

    1. Take the list of calls to make (quest, *instance id*, action) from the active quests
       before any call runs.
    2. Before each call, check that the instance it was meant for is still the quest's active
       one; a quest ended, or ended and started again, by an earlier call is skipped: the new
       instance never sees the event meant for its predecessor.
    3. A call changes its instance's variables in place: an instance ended by a call takes
       them with it, and a retried callback starts again from the stored context.
    """

    def __init__(self, behaviour: QuestBehaviour, state: CellState[QuestContext]) -> None:
        self.behaviour = behaviour
        self.state = state
        model = behaviour.data_model
        data = state.data if state.data is not None else model()
        if not isinstance(data, model):  # read without the definitions (a test, a tool)
            data = model.model_validate(data.model_dump())
        self.data = data
        self._started = 0

    # -- messages ----------------------------------------------------------------------

    def event(self, event: MulticastEvent | SelectorEvent) -> None:
        context = self.state.cell_id
        if event.event_context is not None and event.event_context != context:
            raise WrongContextError(
                f"{self.behaviour.name}: event_context {event.event_context!r} differs from the "
                f"record key {context!r}"
            )
        if not isinstance(event, SelectorEvent):
            self._multicast(event)
            return
        quest_name, action_name = parse_selector(event.event_selector)
        quest = self.behaviour.quest(quest_name)
        action = quest.actions.get(action_name)
        if action is None or event.event_name not in action.on:
            raise UnknownActionError(
                f"{self.behaviour.name}: quest {quest_name!r} has no action {action_name!r} "
                f"listening to {event.event_name!r} (actions: {_listening(quest)})"
            )
        active = self.data.quests.get(quest_name)
        if isinstance(event, InstanceEvent):
            if active is None or active.instance != event.quest_instance:
                self._ignore(f"event {event.event_name!r} for {quest_name}/{event.quest_instance}")
                return
        elif active is None:
            raise QuestNotActiveError(
                f"{self.behaviour.name}: quest {quest_name!r} is not active in context "
                f"{context!r} (active: {sorted(self.data.quests)})"
            )
        assert active is not None
        self._call(active, action.fn, event.event_name, event.data, None)

    def _multicast(self, event: MulticastEvent) -> None:
        name = event.event_name
        active = self.data.quests
        # Step 1 of the protocol: every call is bound to an instance id before any runs.
        calls: list[tuple[QuestInstance, Quest[Any], Iterable[tuple[Action, str]] | None]] = [
            (instance, quest, actions)
            for quest_name, quest, actions in self.behaviour.listeners(name)
            if (instance := active.get(quest_name)) is not None
        ]
        data = event.data
        for instance, quest, actions in calls:
            # What the event runs in the instance, in order: windows it closes (met or
            # missed), windows it opens, then the actions listening to it.
            handlers = (
                actions if actions is not None else self._through_windows(quest, instance, name)
            )
            quest_name, ident = instance.quest, instance.instance
            for fn, seen in handlers:
                current = active.get(quest_name)
                if current is None or current.instance != ident:
                    break  # step 2: ended (or replaced) by an earlier call
                variables: object = instance.variables
                if not isinstance(variables, quest.variables):
                    variables = _variables(instance, quest)  # raises: not typed
                fn(ActionContext(self, instance, variables, seen, data, None))

    def _through_windows(
        self, quest: Quest[Any], instance: QuestInstance, event_name: str
    ) -> Iterator[tuple[Action, str]]:
        """What an event that opens or closes windows runs in one instance (see
        :meth:`_multicast`): each window is closed (and its action run) or opened as the
        iteration reaches it."""
        now = self.state.now_ms
        for window in quest.windows_on(event_name):
            if event_name in window.closes_on and window.name in instance.windows:
                closes = instance.windows.pop(window.name)
                self.state.cancel_timer(_timer_name(instance, "window", window.name))
                yield (window.met if now <= closes else window.missed), window.name
            if event_name in window.opens_on and self.is_active(instance):
                self.open_window(instance, window)
        yield from quest.actions_on(event_name)

    def call(self, body: CallQuest) -> None:
        quest = self.behaviour.quest(body.quest)
        action = quest.actions.get(body.action)
        if action is None:
            raise UnknownActionError(
                f"{self.behaviour.name}: quest {body.quest!r} has no action {body.action!r} "
                f"(actions: {', '.join(sorted(quest.actions)) or 'none'})"
            )
        active = self.data.quests.get(body.quest)
        if active is None:
            raise QuestNotActiveError(
                f"{self.behaviour.name}: quest {body.quest!r} is not active in context "
                f"{self.state.cell_id!r} (active: {sorted(self.data.quests)})"
            )
        self._call(active, action.fn, body.event_name or body.action, body.event, None)

    def remove(self, body: RemoveQuest) -> None:
        self.behaviour.quest(body.quest)
        active = self.data.quests.get(body.quest)
        if active is None or body.quest_instance not in (None, active.instance):
            self._ignore(f"remove of {body.quest}/{body.quest_instance or '<active>'}")
            return
        self.end(active)

    # -- timers ------------------------------------------------------------------------

    def timer(self) -> None:
        fired = self.state.timer
        assert fired is not None
        parts = fired.name.split(":", 3)
        payload = fired.payload if isinstance(fired.payload, dict) else {}
        if len(parts) != 4 or parts[0] + ":" != TIMER_PREFIX or "quest" not in payload:
            logger.warning("%s: ignoring a timer that is not a quest's: %r", self.state, fired)
            return
        _, instance_key, kind, name = parts
        instance = self.data.quests.get(payload["quest"])
        if instance is None or instance.instance != instance_key:
            self._ignore(f"timer {fired.name}")
            return
        quest = self.behaviour.quest(instance.quest)
        data = {"due_ms": fired.due_ms, "missed": fired.missed}
        if kind == "window":
            instance.windows.pop(name, None)
            self._call(instance, quest.windows[name].missed, name, data, fired)
        elif kind == "deadline":
            instance.deadline_ms = None
            if quest.on_deadline is not None:
                self._call(instance, quest.on_deadline, "deadline", data, fired)
            if self.is_active(instance):
                self.end(instance)
        else:
            self._call(instance, quest.recurring[name].action, name, data, fired)

    # -- instances ---------------------------------------------------------------------

    def start(self, quest_name: str, params: dict[str, Any]) -> QuestInstance:
        """Start a new instance of a quest, ending the active one first.

        1. The new instance id is derived from the invocation's origin and the count of
           instances it started before.
        2. ``init`` runs with the params as its event data.
        3. If ``init`` did not end it, its recurring timers and its deadline are set.
        """
        quest = self.behaviour.quest(quest_name)
        old = self.data.quests.get(quest_name)
        if old is not None:
            self.end(old)
        state = self.state
        ident = instance_id(state.cell_id, state.origin, self._started)
        self._started += 1
        instance = quest.instance_model.model_construct(
            quest=quest_name,
            instance=ident,
            started_ms=state.now_ms,
            variables=quest.variables(),
            windows={},
            deadline_ms=None,
        )
        self.data.quests[quest_name] = instance
        if quest.init is not None:
            self._call(instance, quest.init, "init", params, None, quest)
        if not self.is_active(instance):
            return instance
        payload = {"quest": quest_name}
        variables = _variables(instance, quest)
        for recurring in quest.recurring.values():
            if recurring.every_s is not None:
                state.set_timer(
                    _timer_name(instance, "every", recurring.name),
                    every=recurring.every_s,
                    payload=payload,
                    misfire=recurring.misfire,
                )
            else:
                tz = recurring.tz(variables) if callable(recurring.tz) else recurring.tz
                state.set_timer(
                    _timer_name(instance, "cron", recurring.name),
                    cron=recurring.cron,
                    tz=tz,
                    payload=payload,
                    misfire=recurring.misfire,
                )
        if quest.deadline_ms is not None:
            instance.deadline_ms = state.now_ms + quest.deadline_ms
            state.set_timer(
                _timer_name(instance, "deadline", "deadline"),
                at=instance.deadline_ms,
                payload=payload,
            )
        logger.debug("%s: started quest %s/%s", state.cell_id, quest_name, ident)
        return instance

    def end(self, instance: QuestInstance) -> None:
        """End an instance: it leaves the active quests and its timers are cancelled."""
        if not self.is_active(instance):
            return
        del self.data.quests[instance.quest]
        prefix = f"{TIMER_PREFIX}{instance.instance}:"
        for name in self.state.timers:
            if name.startswith(prefix):
                self.state.cancel_timer(name)
        logger.debug("%s: ended quest %s/%s", self.state.cell_id, instance.quest, instance.instance)

    def is_active(self, instance: QuestInstance) -> bool:
        """Whether ``instance`` is its quest's active instance in this context."""
        active = self.data.quests.get(instance.quest)
        return active is not None and active.instance == instance.instance

    def open_window(self, instance: QuestInstance, window: _Window) -> int:
        closes = self.state.now_ms + window.within_ms
        instance.windows[window.name] = closes
        self.state.set_timer(
            _timer_name(instance, "window", window.name),
            at=closes,
            payload={"quest": instance.quest},
        )
        return closes

    # -- calls -------------------------------------------------------------------------

    def _call(
        self,
        instance: QuestInstance,
        fn: Action,
        event_name: str,
        data: dict[str, Any],
        timer: FiredTimer | None,
        quest: Quest[Any] | None = None,
    ) -> None:
        if quest is None:
            quest = self.behaviour.quest(instance.quest)
        fn(ActionContext(self, instance, _variables(instance, quest), event_name, data, timer))

    def _ignore(self, what: str) -> None:
        self.data.ignored += 1
        logger.info(
            "%s/%s: ignored %s: not an active quest instance (active: %s)",
            self.behaviour.name,
            self.state.cell_id,
            what,
            self.data.active(),
        )

    def finish(self) -> None:
        """Store the context: alive while it has active quests."""
        self.state.data = self.data if self.data.quests else None


def _instance_model(quest: str, variables: type[BaseModel]) -> type[QuestInstance]:
    """The stored instance of ``quest``: a :class:`QuestInstance` whose ``variables`` are the
    quest's model, told from the other quests' by its ``quest`` field."""
    name: Any = Literal[quest]  # a Literal of a runtime value
    return create_model(
        f"{variables.__name__}Of_{quest}",
        __base__=QuestInstance,
        quest=(name, ...),
        variables=(variables, Field(default_factory=variables)),
    )


def _context_model(name: str, quests: Sequence[Quest[Any]]) -> type[QuestContext]:
    """A behaviour's data model: its contexts, each instance's variables typed by its quest.

    The worker reads a stored context in one pydantic pass, variables included, and actions
    change the typed variables in place: no validation or dump per call. An instance this model
    cannot type (its quest no longer defined, or variables its model no longer accepts) is read
    as a plain :class:`QuestInstance`; a call to it fails as the variables' validation fails
    (:func:`_variables`), and the context's other quests go on.
    """
    if not quests:
        return QuestContext
    models: list[Any] = [quest.instance_model for quest in quests]
    typed: Any = models[0]
    if len(models) > 1:
        typed = Annotated[functools.reduce(operator.or_, models), Field(discriminator="quest")]
    instance = Annotated[typed | QuestInstance, Field(union_mode="left_to_right")]
    model: type[QuestContext] = create_model(
        f"QuestContextOf_{name}",
        __base__=QuestContext,
        quests=(dict[str, SerializeAsAny[instance]], Field(default_factory=dict)),
    )
    return model


def _variables(instance: QuestInstance, quest: Quest[Any]) -> BaseModel:
    """An instance's variables as its quest's model, changed in place by the calls.

    Raises:
        pydantic.ValidationError: The stored variables do not validate as the quest's model.
    """
    variables: object = instance.variables
    model: type[BaseModel] = quest.variables
    if isinstance(variables, model):
        return variables
    model.model_validate(variables)
    raise TypeError(f"{quest.name}/{instance.instance}: variables {variables!r} are not typed")


def _timer_name(instance: QuestInstance, kind: str, name: str) -> str:
    return f"{TIMER_PREFIX}{instance.instance}:{kind}:{name}"


def _listening(quest: Quest[Any]) -> str:
    return ", ".join(f"{a.name} on {list(a.on)}" for a in quest.actions.values()) or "none"
