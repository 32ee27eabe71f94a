"""The quest layer's wire format and stored state (pure pydantic models).

A *context* (a user, a session) is one cell of a quest behaviour: records for it arrive on the
behaviour's input topic keyed by the context id, as the usual cell envelope. Four message types
carry the quest protocol:

- ``event``: an event, in one of three forms told apart by the fields present
  (:data:`QuestEvent`):

  1. :class:`SelectorEvent` (``event_name``, ``event_selector``): exactly one action call, the
     action the selector ``"<quest>.<action>"`` names;
  2. :class:`InstanceEvent` (the same plus ``quest_instance``): as 1, but only while that
     instance of the quest is the context's active one; otherwise it is ignored and counted
     (the protocol of scheduled and follow-up events);
  3. :class:`MulticastEvent` (``event_name`` only): every action of the context's active quests
     that listens to ``event_name``, each call bound to the instance it was meant for.

  ``event_context`` may repeat the record key; when given it must equal it.
- ``add_quest``: start a new instance of a quest in the context (:class:`AddQuest`);
- ``remove_quest``: end the active instance of a quest (:class:`RemoveQuest`);
- ``call``: call one action directly, whatever event it listens to (:class:`CallQuest`).

The context's stored data is a :class:`QuestContext`: its active quests, each with its instance
id, typed variables (stored as JSON) and pending windows and deadline. Which quests listen to
which event name (the selector index) is derived from the quest definitions in code, not
stored, so a deployment that adds an action applies it to the instances already running.

These models read any context without the quest definitions (variables as plain JSON): what
tools and views see. A worker reads the same JSON through its behaviour's own subclass, whose
instances hold each quest's variables model (see :mod:`stream_app.api.quests`). Fields at
their defaults (no open window, no deadline, nothing ignored) are left out of the stored JSON:
a context is written once per event, and the smaller record is cheaper to decode, store and
replicate.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag

__all__ = [
    "NAME_PATTERN",
    "SELECTOR_PATTERN",
    "AddQuest",
    "CallQuest",
    "EventForm",
    "FastQuestEventBody",
    "InstanceEvent",
    "MulticastEvent",
    "QuestContext",
    "QuestEvent",
    "QuestEventBody",
    "QuestInstance",
    "RemoveQuest",
    "SelectorEvent",
    "instance_id",
    "parse_selector",
    "selector",
]

#: Quest, action, window and timer names: no dots (the selector's separator) and no colons
#: (the separator of the timer names the layer derives).
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
#: ``"<quest>.<action>"``.
SELECTOR_PATTERN = r"^[A-Za-z0-9_-]{1,100}\.[A-Za-z0-9_-]{1,100}$"

#: Which of the three forms an event has.
EventForm = Literal["selector", "instance", "multicast"]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_name: str = Field(min_length=1, max_length=200)
    event_context: str | None = Field(
        default=None, description="The context id; when given it must equal the record key."
    )
    data: dict[str, Any] = Field(default_factory=dict, description="The event's payload.")


class MulticastEvent(_Event):
    """An event for every active quest of the context that listens to ``event_name``."""

    @property
    def form(self) -> EventForm:
        """``multicast``."""
        return "multicast"


class SelectorEvent(_Event):
    """An event for exactly one action: ``event_selector`` is ``"<quest>.<action>"``."""

    event_selector: str = Field(pattern=SELECTOR_PATTERN)

    @property
    def form(self) -> EventForm:
        """``selector``."""
        return "selector"


class InstanceEvent(SelectorEvent):
    """A selector event for one instance of the quest: ignored (and counted) when that
    instance is no longer the context's active one."""

    quest_instance: str = Field(min_length=1, max_length=64)

    @property
    def form(self) -> EventForm:
        """``instance``."""
        return "instance"


def _form(value: Any) -> str:
    """The tag of the form a raw event has, from the fields present."""
    fields = value if isinstance(value, dict) else vars(value)
    if "quest_instance" in fields:
        return "instance"
    if "event_selector" in fields:
        return "selector"
    return "multicast"


#: One event in any of the three forms, told apart by the fields present.
QuestEvent = Annotated[
    Annotated[InstanceEvent, Tag("instance")]
    | Annotated[SelectorEvent, Tag("selector")]
    | Annotated[MulticastEvent, Tag("multicast")],
    Discriminator(_form),
]


class QuestEventBody(RootModel[QuestEvent]):
    """The body of an ``event`` message: one event in any of the three forms."""

    model_config = ConfigDict(frozen=True)


class FastQuestEventBody(QuestEventBody):
    """:class:`QuestEventBody` validated without telling the form first: the three forms are
    tried in turn, multicast first. Each form forbids the fields that make another, so a
    document validates as exactly the form :class:`QuestEventBody` would choose, with the same
    values; but no Python function reads the parsed document first (one pass over the JSON).

    Used by a worker to read its records (``MessageTypes(..., faster=...)``); an event it
    refuses is read again as a :class:`QuestEventBody`, whose errors are the ones reported.
    """

    root: Annotated[
        MulticastEvent | SelectorEvent | InstanceEvent, Field(union_mode="left_to_right")
    ]


class AddQuest(BaseModel):
    """Start a new instance of ``quest`` in the context (ending the active one, if any).

    Attributes:
        quest: The quest's name.
        params: Given to the quest's ``init`` action as its event data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    quest: str = Field(pattern=NAME_PATTERN)
    params: dict[str, Any] = Field(default_factory=dict)


class RemoveQuest(BaseModel):
    """End the active instance of ``quest``: its variables, windows and timers go with it.

    Attributes:
        quest: The quest's name.
        quest_instance: When given, only this instance is removed (a newer one stays).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    quest: str = Field(pattern=NAME_PATTERN)
    quest_instance: str | None = None


class CallQuest(BaseModel):
    """Call ``action`` of the context's active instance of ``quest`` directly.

    Attributes:
        quest: The quest's name.
        action: The action's name.
        event_name: The event name the action sees (default: the action's name).
        event: The event data the action sees.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    quest: str = Field(pattern=NAME_PATTERN)
    action: str = Field(pattern=NAME_PATTERN)
    event_name: str | None = Field(default=None, min_length=1, max_length=200)
    event: dict[str, Any] = Field(default_factory=dict)


#: Whether a count or a map is at its default (``0``, ``{}``): left out of the JSON. Builtins,
#: not Python functions: the serializer calls them for every instance of every stored context.
_empty: Callable[[Any], bool] = operator.not_
#: Whether an optional field is unset: left out of the JSON.
_none: Callable[[Any], bool] = functools.partial(operator.is_, None)


class QuestInstance(BaseModel):
    """One active quest of a context, as stored.

    Attributes:
        quest: The quest's name.
        instance: Its instance id, new for every start of the quest in the context.
        started_ms: When it started.
        variables: Its variables as JSON (in a worker: as the quest's variables model).
        windows: Open dependency windows, ``window name -> closes_ms``.
        deadline_ms: When the whole quest ends if it has not ended before.
    """

    model_config = ConfigDict(extra="forbid")

    quest: str
    instance: str
    started_ms: int
    variables: dict[str, Any] = Field(default_factory=dict)
    windows: dict[str, int] = Field(default_factory=dict, exclude_if=_empty)
    deadline_ms: int | None = Field(default=None, exclude_if=_none)


class QuestContext(BaseModel):
    """A context's stored data: its active quests by name.

    A context without active quests is a dead cell (it costs nothing).

    Attributes:
        quests: Quest name -> its active instance.
        ignored: Instance events, timers and removes that arrived for an instance no longer
            active (counted while the context lives: a context without quests is deleted).
    """

    model_config = ConfigDict(extra="forbid")

    quests: dict[str, QuestInstance] = Field(default_factory=dict)
    ignored: int = Field(default=0, exclude_if=_empty)

    def active(self) -> dict[str, str]:
        """``quest name -> instance id`` of the active quests."""
        return {name: q.instance for name, q in self.quests.items()}


def selector(quest: str, action: str) -> str:
    """The selector of ``action`` of ``quest``."""
    return f"{quest}.{action}"


def parse_selector(value: str) -> tuple[str, str]:
    """``(quest, action)`` of a selector (validated by the event's schema)."""
    quest, _, action = value.partition(".")
    return quest, action


def instance_id(context: str, origin: str, index: int) -> str:
    """The id of the ``index``-th instance started by the invocation at ``origin``.

    Derived from the triggering record, so a replay after a crash starts the same instance, and
    unique because no two records share an origin.
    """
    digest = hashlib.sha256(f"{context}\0{origin}\0{index}".encode())
    return digest.hexdigest()[:16]
