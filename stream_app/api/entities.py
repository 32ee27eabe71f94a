"""Event-sourced entities (Pachyderm's model) on the cell runtime.

An entity "always exists and never fails": its state is the fold of its events. Write one with
three pure functions::

    counter = Entity(
        "counter",
        state=Count,
        messages={"increment": Increment},
        events={"increased": Increased},
        init=lambda: Count(),
        handle=lambda message, state: [Increased(by=message.by)],
        update=lambda event, state: Count(value=state.value + event.by),
    )
    runtime.entity(counter)

- ``init() -> state``: the state of an entity that has no events yet.
- ``handle(message, state) -> events`` or ``(events, effects)``: decides. ``message`` is the
  validated body of an incoming message, ``state`` the current state. Returning no events
  changes nothing; raising :class:`~stream_app.errors.RejectMessage` sends the message to the
  dead-letter topic with its reason.
- ``update(event, state) -> state``: applies one event. The "replace the whole state" style is
  an event carrying the new state and an ``update`` that returns it.

``handle`` and ``update`` must be free of side effects: the runtime calls them only while
processing a message, but may call them again for the same message after a crash (at least
once) or a retry. Effects are returned, not performed: :class:`EntityEffect` values are
dispatched by the app's effect handlers after the events commit.

An entity of type ``T`` is a cell of the behaviour ``T``: messages arrive on
``<app_id>.T.in`` (key = entity id, value = the usual envelope), the current state and its
sequence number are cached in the table ``T`` (RocksDB, changelog ``<app_id>-T-changelog``),
and every event is appended to ``<app_id>.T.events`` (retained, not compacted), keyed by the
entity id, as an :class:`EventRecord` with the entity's next sequence number. The events of a
message, the new cached state and its effects are written together: produced before the
message's offset is committed (``at_least_once``), or in one Kafka transaction
(``exactly_once``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState
from stream_app.core.replies import Reply, parse_reply_to
from stream_app.core.retry import RetryPolicy
from stream_app.errors import RejectMessage

__all__ = ["Entity", "EntityEffect", "EventRecord", "Handled"]

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


#: What ``handle`` returns: events, or events and effects.
Handled = Sequence[BaseModel] | tuple[Sequence[BaseModel], Sequence[EntityEffect]]


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
        handle: ``handle(message, state) -> events | (events, effects)``.
        update: ``update(event, state) -> state``.
        retry: How a raising ``handle`` or ``update`` is tried again before the entity is
            parked (see the cells' parking; default: ``Settings.cell_retry``, 3 tries); it is
            released with ``stream-app cells release``.
        projections: Name -> function of the state, for requests that want a part of the new
            state in their reply rather than all of it (``send(..., project="balance")``).
            It must return a JSON value.

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
        #: The cell data: the cached state and the sequence number of its last event.
        self.cached_model: type[BaseModel] = create_model(
            f"{state.__name__}Cached", seq=(int, 0), state=(state, ...)
        )
        self.behaviour: Behaviour[Any] = Behaviour(
            name,
            messages=messages,
            data=self.cached_model,
            handle_message=self._on_message,
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

    def _on_message(self, cell: CellState[Any]) -> None:
        message = cell.message
        assert message is not None
        if message.project is not None:
            self._projection(message.project)  # an unknown one rejects before any event
        seq, state = self.current(cell.data)
        events, effects = _split(self.handle(message.body, state))
        records = []
        for event in events:
            seq += 1
            state = self.update(event, state)
            records.append(
                EventRecord(
                    entity=self.name,
                    id=cell.cell_id,
                    seq=seq,
                    type=self.event_name(event),
                    body=event.model_dump(mode="json"),
                    message_id=message.id or cell.origin,
                    origin=cell.origin,
                    at_ms=cell.now_ms,
                )
            )
        for record in records:
            cell.publish(self.events_topic, record.model_dump_json().encode())
        for effect in effects:
            cell.emit_effect(effect.kind, effect.payload)
        if records:
            cell.data = self.cached_model(seq=seq, state=state)
        if message.reply_to is not None and message.id:
            # The engine validated the address before the message reached the entity.
            topic, partition = parse_reply_to(message.reply_to)
            reply = Reply(
                correlation_id=message.id,
                behaviour=self.name,
                cell_id=cell.cell_id,
                ok=True,
                seq=seq,
                events=len(records),
                state=self.project(state, message.project),
            )
            cell.publish(topic, reply.model_dump_json().encode(), partition=partition)

    def __repr__(self) -> str:
        return f"<Entity {self.name} events={sorted(self.event_types)}>"


def _split(handled: Handled) -> tuple[list[BaseModel], list[EntityEffect]]:
    if isinstance(handled, tuple) and len(handled) == 2 and not isinstance(handled[0], BaseModel):
        events, effects = handled
        return list(events), list(effects)
    return list(handled), []
