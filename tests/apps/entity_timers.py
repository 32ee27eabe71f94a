"""Entities with timers and an entity that replaces its whole state, for the integration tests.

Run as ``faust -A tests.apps.entity_timers worker`` (with ``STREAM_APP_CLOCK=driven`` in the
tests). Default settings: its entities need fencing, so it runs exactly-once.

- ``reminder``: ``remind`` logs ``scheduled`` and sets a timer that sends the entity ``fire``
  ``after_s`` later; ``cancel`` logs ``cancelled`` and cancels that timer; ``arm`` sets a timer
  and logs nothing; ``fire`` (the timer's command, or anyone's message) logs ``reminded``.
  Its handle returns single outputs and tuples, not lists.
- ``profile``: the "replace the whole state" style: the message, the event and the state are
  one model, and ``update`` returns the event.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from stream_app import CancelEntityTimer, Entity, EntityTimer, Runtime

__all__ = ["Profile", "Reminders", "app", "profile", "reminder", "runtime"]


class Reminders(BaseModel):
    """Pending reminders (name -> text) and the names that fired, in order."""

    pending: dict[str, str] = Field(default_factory=dict)
    fired: list[str] = Field(default_factory=list)


class Remind(BaseModel):
    name: str
    text: str = ""
    after_s: float


class Cancel(BaseModel):
    name: str


class Arm(BaseModel):
    name: str
    after_s: float


class Fire(BaseModel):
    name: str


class Scheduled(BaseModel):
    name: str
    text: str


class Cancelled(BaseModel):
    name: str


class Reminded(BaseModel):
    name: str


def handle(message: BaseModel, state: Reminders) -> Any:
    if isinstance(message, Remind):
        timer = EntityTimer(message.name, "fire", Fire(name=message.name), after=message.after_s)
        return Scheduled(name=message.name, text=message.text), timer
    if isinstance(message, Cancel):
        return Cancelled(name=message.name), CancelEntityTimer(message.name)
    if isinstance(message, Arm):
        return EntityTimer(message.name, "fire", {"name": message.name}, after=message.after_s)
    assert isinstance(message, Fire)
    return Reminded(name=message.name)


def update(event: BaseModel, state: Reminders) -> Reminders:
    pending = dict(state.pending)
    if isinstance(event, Scheduled):
        pending[event.name] = event.text
        return Reminders(pending=pending, fired=state.fired)
    assert isinstance(event, Cancelled | Reminded)
    pending.pop(event.name, None)
    fired = [*state.fired, event.name] if isinstance(event, Reminded) else state.fired
    return Reminders(pending=pending, fired=fired)


reminder: Entity[Reminders] = Entity(
    "reminder",
    state=Reminders,
    messages={"remind": Remind, "cancel": Cancel, "arm": Arm, "fire": Fire},
    events={"scheduled": Scheduled, "cancelled": Cancelled, "reminded": Reminded},
    init=Reminders,
    handle=handle,
    update=update,
)


class Profile(BaseModel):
    """A profile, replaced whole by each ``replace``."""

    name: str = ""
    email: str = ""


profile: Entity[Profile] = Entity(
    "profile",
    state=Profile,
    messages={"replace": Profile},
    events={"replaced": Profile},
    init=Profile,
    handle=lambda message, state: message,
    update=lambda event, state: event,
)

runtime = Runtime()
app = runtime.app
runtime.entity(reminder)
runtime.entity(profile)
