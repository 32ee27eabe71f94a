"""Event-sourced entities (Pachyderm's model) on the cell runtime.

An entity "always exists and never fails": its state is the fold of its events. Write one with
three pure functions::

    counter = Entity(
        "counter",
        state=Count,
        messages={"increment": Increment},
        events={"increased": Increased},
        init=lambda: Count(),
        handle=lambda message, state: Increased(by=message.by),
        update=lambda event, state: Count(value=state.value + event.by),
    )
    runtime.entity(counter)

- ``init() -> state``: the state of an entity that has no events yet.
- ``handle(message, state) -> outputs``: decides. ``message`` is the validated body of an
  incoming message (or of a timer the entity set), ``state`` the current state. It returns
  what :func:`split_outputs` accepts: nothing, one output, or a list or tuple of outputs (and
  of lists or tuples of outputs, one level deep: ``events``, ``(events, effects)``,
  ``(event, effect)``).
  An output is an event (an instance of a declared event class), an :class:`EntityEffect`, an
  :class:`EntityTimer` or a :class:`CancelEntityTimer`. Returning no events changes nothing;
  raising :class:`~stream_app.errors.RejectMessage` sends the message to the dead-letter topic
  with its reason.
- ``update(event, state) -> state``: applies one event. The "replace the whole state" style is
  an event carrying the new state and an ``update`` that returns it (the state class may be
  one of the event classes: ``update=lambda event, state: event``).

``handle`` and ``update`` must be free of side effects: the runtime calls them only while
processing a message, but may call them again for the same message after a crash (at least
once) or a retry. Effects are returned, not performed: :class:`EntityEffect` values are
dispatched by the app's effect handlers after the events commit. Timers too: an
:class:`EntityTimer` asks for a command to the entity itself later (a durable cell timer); when
it fires, the command is validated against the entity's message models and handled by
``handle`` like any message, so what it decides is in the event log (``message_id`` and
``origin`` ``timer/<name>/<due_ms>``).

An entity of type ``T`` is a cell of the behaviour ``T``: messages arrive on
``<app_id>.T.in`` (key = entity id, value = the usual envelope), the current state and its
sequence number are cached in the table ``T`` (RocksDB, changelog ``<app_id>-T-changelog``),
and every event is appended to ``<app_id>.T.events`` (retained, not compacted), keyed by the
entity id, as an :class:`EventRecord` with the entity's next sequence number. The events of a
message, the new cached state, its effects and its timers are written together, in one Kafka
transaction: entities need fencing (a worker that lost the partition must not append), so a
runtime with an entity runs ``exactly_once`` by default, and refuses an explicit
``at_least_once`` (:meth:`Runtime.entity <stream_app.runtime.Runtime.entity>`). An entity
declared ``Entity(..., fencing=False)`` may run ``at_least_once``, where its events are produced
before the message's offset is committed and a zombie may append.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState
from stream_app.core.envelope import body_payload, envelope_bytes
from stream_app.core.replies import Reply, parse_reply_to
from stream_app.core.retry import RetryPolicy
from stream_app.errors import RejectMessage

__all__ = [
    "CancelEntityTimer",
    "Entity",
    "EntityEffect",
    "EntityTimer",
    "EventRecord",
    "Handled",
    "Output",
    "Outputs",
    "split_outputs",
]

S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class EntityEffect:
    """A side effect returned by ``handle``, dispatched after the events commit.

    Attributes:
        kind: Selects the effect handler (``@runtime.effect_handler(kind)``).
        payload: Any JSON value, given to the handler as ``effect.payload``.
    """

    kind: str
    payload: Any = None


@dataclass(frozen=True, slots=True)
class EntityTimer:
    """A command the entity sends itself later, returned by ``handle`` among its outputs.

    It is a durable cell timer: stored with the events of the message that set it, it survives
    restarts and partition moves. When it comes due the command is validated against the
    entity's message models (as a message of ``type``) and handled by ``handle`` like any
    message; its events carry ``message_id`` and ``origin`` ``timer/<name>/<due_ms>`` and
    ``at_ms`` its due time, the same if a crash makes it fire again.

    Attributes:
        name: The timer's name: setting a name again replaces that timer, and
            :class:`CancelEntityTimer` with the name removes it.
        type: The command's message type, one of the entity's ``messages``.
        body: The command's body: an instance of that type's model, or its JSON object
            (``None``: the model's defaults).
        after: Seconds (or a timedelta) after the time of the message being handled.
        at: An absolute time instead: an aware datetime, or milliseconds since the epoch.
    """

    name: str
    type: str
    body: BaseModel | dict[str, Any] | None = None
    after: float | timedelta | None = None
    at: datetime | int | None = None


@dataclass(frozen=True, slots=True)
class CancelEntityTimer:
    """Cancels the entity's timer ``name`` (nothing happens if none is pending), returned by
    ``handle`` among its outputs."""

    name: str


#: One thing ``handle`` may return: an event (an instance of a declared event class), an
#: effect, a timer or the cancellation of one.
Output = BaseModel | EntityEffect | EntityTimer | CancelEntityTimer
#: What ``handle`` returns: nothing, one output, or a list or tuple of outputs and of lists or
#: tuples of outputs (one level: ``events``, ``(events, effects)``, ``(event, effect)``).
Handled = Output | Sequence[Output | Sequence[Output]] | None

_SINGLE = (BaseModel, EntityEffect, EntityTimer, CancelEntityTimer)


@dataclass(slots=True)
class Outputs:
    """What one ``handle`` call returned, sorted by kind, each kind in the order returned.

    Attributes:
        events: The events, to append in this order.
        effects: The effects, dispatched after the events commit.
        timers: Timers to set and timers to cancel, applied in this order.
    """

    events: list[BaseModel] = field(default_factory=list)
    effects: list[EntityEffect] = field(default_factory=list)
    timers: list[EntityTimer | CancelEntityTimer] = field(default_factory=list)

    def add(self, output: Output) -> None:
        """Sort one output into its kind."""
        if isinstance(output, EntityEffect):
            self.effects.append(output)
        elif isinstance(output, EntityTimer | CancelEntityTimer):
            self.timers.append(output)
        else:
            self.events.append(output)


def split_outputs(handled: object) -> Outputs:
    """Sort what ``handle`` returned into events, effects and timers.

    Accepted: ``None`` (nothing); one output (an event, which is any pydantic model instance
    here: :meth:`Entity.event_name` checks its class later, an :class:`EntityEffect`, an
    :class:`EntityTimer`, a :class:`CancelEntityTimer`); a list or tuple whose items are outputs
    or lists or tuples of outputs. So ``[e1, e2]``, ``e1``, ``([e1, e2], [f])``, ``(e1, f)``
    and ``([e1], f)`` all mean what they look like.

    Raises:
        TypeError: Anything else (a dict, a string, a deeper nesting, ...): a bug in
            ``handle``, so the message is retried and the entity parked, as for any exception.
    """
    outputs = Outputs()
    if handled is None:
        return outputs
    if isinstance(handled, _SINGLE):
        outputs.add(handled)
        return outputs
    if not isinstance(handled, list | tuple):
        raise _unexpected(handled, "")
    for item in handled:
        if isinstance(item, _SINGLE):
            outputs.add(item)
        elif isinstance(item, list | tuple):
            for inner in item:
                if not isinstance(inner, _SINGLE):
                    raise _unexpected(inner, " inside a nested list or tuple")
                outputs.add(inner)
        else:
            raise _unexpected(item, " inside a list or tuple")
    return outputs


def _unexpected(value: object, where: str) -> TypeError:
    return TypeError(
        f"handle returned a {type(value).__name__}{where}: expected None, an event (a declared "
        "event model), an EntityEffect, an EntityTimer, a CancelEntityTimer, or a list or "
        "tuple of them (lists or tuples of them may nest one level)"
    )


class EventRecord(BaseModel):
    """One committed event as it is stored on ``<app_id>.<type>.events`` (JSON, key = id).

    Attributes:
        entity: The entity type.
        id: The entity id.
        seq: The event's sequence number in the entity's log: 1, 2, 3... without gaps.
        type: The event type name.
        body: The event, as JSON.
        message_id: The id of the message whose handling produced it.
        origin: Where that message came from (``topic/partition/offset``).
        at_ms: The message's timestamp (milliseconds since the epoch).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str
    id: str
    seq: int
    type: str
    body: dict[str, Any]
    message_id: str
    origin: str
    at_ms: int


class Entity(Generic[S]):
    """An event-sourced entity type; register it with :meth:`Runtime.entity`.

    Args:
        name: The entity type: its behaviour (input topic ``<app_id>.<name>.in``), its table
            and its event topic ``<app_id>.<name>.events``.
        state: The pydantic model of the state.
        messages: Message type name -> pydantic model of the body.
        events: Event type name -> pydantic model; every event ``handle`` returns must be an
            instance of one of them (distinct classes).
        init: The state of an entity without events.
        handle: ``handle(message, state) -> outputs``: events, effects and timers, as
            :func:`split_outputs` accepts them.
        update: ``update(event, state) -> state``.
        retry: How a raising ``handle`` or ``update`` is tried again before the entity is
            parked (see the cells' parking; default: ``Settings.cell_retry``, 3 tries); it is
            released with ``stream-app cells release``.
        projections: Name -> function of the state, for requests that want a part of the new
            state in their reply rather than all of it (``send(..., project="balance")``).
            It must return a JSON value.
        fencing: ``True`` (default): the entity needs fencing, a worker that lost its
            partition (a zombie) must not append events, so the runtime runs ``exactly_once``
            (see :meth:`Runtime.entity <stream_app.runtime.Runtime.entity>`). ``False`` lets it
            run ``at_least_once`` too, where **a zombie may append** until its session times
            out: the log can then hold a sequence number twice (``stream-app entities fold``
            reports it).

    Raises:
        ValueError: A bad name, no events, or two event names for one class.
    """

    def __init__(
        self,
        name: str,
        *,
        state: type[S],
        messages: Mapping[str, type[BaseModel]],
        events: Mapping[str, type[BaseModel]],
        init: Callable[[], S],
        handle: Callable[[Any, S], Handled],
        update: Callable[[Any, S], S],
        retry: RetryPolicy | None = None,
        projections: Mapping[str, Callable[[S], Any]] | None = None,
        fencing: bool = True,
    ) -> None:
        if not events:
            raise ValueError(f"entity {name!r} declares no event types")
        names = {model: event for event, model in events.items()}
        if len(names) != len(events):
            raise ValueError(f"entity {name!r}: each event type needs a class of its own")
        self.name = name
        self.state_model = state
        self.event_types: dict[str, type[BaseModel]] = dict(events)
        self._event_names = names
        self.init = init
        self.handle = handle
        self.update = update
        self.projections: dict[str, Callable[[S], Any]] = dict(projections or {})
        #: Whether the entity needs fencing (``exactly_once``) to run.
        self.fencing = fencing
        #: The cell data: the cached state and the sequence number of its last event.
        self.cached_model: type[BaseModel] = create_model(
            f"{state.__name__}Cached", seq=(int, 0), state=(state, ...)
        )
        self.behaviour: Behaviour[Any] = Behaviour(
            name,
            messages=messages,
            data=self.cached_model,
            handle_message=self._on_message,
            on_timeout=self._on_timeout,
            retry=retry,
        )
        self.events_topic = ""  # set by Runtime.entity

    def current(self, cached: Any | None) -> tuple[int, S]:
        """The sequence number and state of an entity from its cached cell data."""
        if cached is None:
            return 0, self.init()
        return cached.seq, cached.state

    def fold(self, events: Sequence[BaseModel], state: S) -> S:
        """``state`` after ``events``, applied in order with ``update``."""
        for event in events:
            state = self.update(event, state)
        return state

    def event_name(self, event: BaseModel) -> str:
        """The declared name of ``event``'s type.

        Raises:
            TypeError: ``event`` is not an instance of a declared event class.
        """
        try:
            return self._event_names[type(event)]
        except KeyError:
            raise TypeError(
                f"entity {self.name!r}: handle returned {type(event).__name__}, which is not "
                f"one of its event types {sorted(self.event_types)}"
            ) from None

    def project(self, state: S, projection: str | None) -> Any:
        """``state`` as a reply carries it: the named projection of it, or all of it as JSON.

        Raises:
            RejectMessage: ``projection`` is not one of :attr:`projections`.
        """
        if projection is None:
            return state.model_dump(mode="json")
        value = self._projection(projection)(state)
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    def _projection(self, name: str) -> Callable[[S], Any]:
        try:
            return self.projections[name]
        except KeyError:
            raise RejectMessage(
                f"entity {self.name!r} has no projection {name!r} "
                f"(known: {sorted(self.projections)})"
            ) from None

    def command(self, cell_id: str, type: str, body: Any) -> Any:
        """The validated body of the command ``type`` with ``body`` (a model or JSON object),
        as the entity's input would validate a message of that type.

        Raises:
            UnknownMessageTypeError: ``type`` is not one of the entity's messages.
            SchemaViolationError: ``body`` does not match its model.
        """
        message = self.behaviour.message_types.decode(
            cell_id.encode(), envelope_bytes(type, body), max_bytes=sys.maxsize
        )
        return message.body

    def _on_message(self, cell: CellState[Any]) -> None:
        message = cell.message
        assert message is not None
        if message.project is not None:
            self._projection(message.project)  # an unknown one rejects before any event
        seq, state, events = self._decide(
            cell, message.body, message_id=message.id or cell.origin, at_ms=cell.now_ms
        )
        if message.reply_to is not None and message.id:
            # The engine validated the address before the message reached the entity.
            topic, partition = parse_reply_to(message.reply_to)
            reply = Reply(
                correlation_id=message.id,
                behaviour=self.name,
                cell_id=cell.cell_id,
                ok=True,
                seq=seq,
                events=events,
                state=self.project(state, message.project),
            )
            cell.publish(topic, reply.model_dump_json().encode(), partition=partition)

    def _on_timeout(self, cell: CellState[Any]) -> None:
        timer = cell.timer
        assert timer is not None
        # Validated again when it fires: the models may have changed since it was set.
        body = self.command(cell.cell_id, timer.payload["type"], timer.payload["body"])
        # The origin, timer/<name>/<due_ms>, is the same each time this occurrence fires.
        self._decide(cell, body, message_id=cell.origin, at_ms=timer.due_ms)

    def _decide(
        self, cell: CellState[Any], body: Any, *, message_id: str, at_ms: int
    ) -> tuple[int, S, int]:
        """Handle one command: append its events, emit its effects, set its timers; return
        the new sequence number, the new state and how many events it appended."""
        seq, state = self.current(cell.data)
        outputs = split_outputs(self.handle(body, state))
        records = []
        for event in outputs.events:
            seq += 1
            state = self.update(event, state)
            records.append(
                EventRecord(
                    entity=self.name,
                    id=cell.cell_id,
                    seq=seq,
                    type=self.event_name(event),
                    body=event.model_dump(mode="json"),
                    message_id=message_id,
                    origin=cell.origin,
                    at_ms=at_ms,
                )
            )
        for record in records:
            cell.publish(self.events_topic, record.model_dump_json().encode())
        for effect in outputs.effects:
            cell.emit_effect(effect.kind, effect.payload)
        for timer in outputs.timers:
            self._apply_timer(cell, timer)
        # A cell keeps its timers only while it has data: an entity without events that sets
        # a timer caches its initial state (sequence number 0).
        if records or (cell.data is None and cell.timers):
            cell.data = self.cached_model(seq=seq, state=state)
        return seq, state, len(records)

    def _apply_timer(self, cell: CellState[Any], timer: EntityTimer | CancelEntityTimer) -> None:
        if isinstance(timer, CancelEntityTimer):
            cell.cancel_timer(timer.name)
            return
        # Checked now, where a bad command is a bug in handle (retried, then parked), rather
        # than only when it fires.
        body = self.command(cell.cell_id, timer.type, timer.body)
        payload = {"type": timer.type, "body": body_payload(body)}
        cell.set_timer(timer.name, after=timer.after, at=timer.at, payload=payload)

    def __repr__(self) -> str:
        return f"<Entity {self.name} events={sorted(self.event_types)}>"
