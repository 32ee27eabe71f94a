"""Reminders: a functional behaviour with durable timers and effects.

Run it with ``faust -A stream_app.examples.reminders worker -l info``.

One cell per person (the cell id is the person's name). Messages go to
``<app_id>.reminder.in``, keyed by the person::

    {"type": "set", "body": {"name": "standup", "text": "Stand-up!", "after_s": 600}}
    {"type": "set", "body": {"name": "standup", "text": "Stand-up!", "at": "2030-01-01T09:00:00Z"}}
    {"type": "snooze", "body": {"name": "standup", "by_s": 300}}
    {"type": "cancel", "body": {"name": "standup"}}
    {"type": "digest", "body": {"every_s": 86400}}      # every_s 0 stops the digest

Each reminder is a named timer, so setting a name again replaces it and cancelling the name
removes it. The digest is a recurring timer. When a timer fires, the cell emits a ``notify``
effect; :func:`notify` delivers it by appending a JSON line to the file named by the
``REMINDERS_OUTBOX`` environment variable (or by logging it when the variable is unset). A
person with nothing pending and no digest is a dead cell: its data is deleted.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from stream_app import Behaviour, CellState, Effect, Misfire, RetryPolicy, Runtime

__all__ = [
    "DIGEST",
    "Cancel",
    "Digest",
    "Reminders",
    "Set",
    "Snooze",
    "app",
    "handle_message",
    "migrate",
    "notify",
    "on_boot",
    "on_timeout",
    "reminder",
    "runtime",
]

logger = logging.getLogger(__name__)

#: The name of the digest timer; reminder timers are named ``reminder:<name>``, so a reminder
#: called "digest" cannot replace it.
DIGEST = "digest"


class Set(BaseModel):
    """Remind the person of ``text`` after ``after_s`` seconds or at ``at``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    text: str = Field(max_length=1000)
    after_s: float | None = Field(default=None, ge=0)
    at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_time(self) -> Self:
        # Checked here, at the edge, so a bad request is a dead letter (reason "schema")
        # instead of a callback that raises and parks the cell.
        if (self.after_s is None) == (self.at is None):
            raise ValueError("give exactly one of after_s and at")
        return self


class Cancel(BaseModel):
    """Forget the reminder called ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str


class Snooze(BaseModel):
    """Postpone the pending reminder called ``name`` by ``by_s`` seconds."""

    model_config = ConfigDict(extra="forbid")

    name: str
    by_s: float = Field(default=300.0, gt=0)


class Digest(BaseModel):
    """Send a digest of the pending reminders every ``every_s`` seconds (0 stops it)."""

    model_config = ConfigDict(extra="forbid")

    every_s: float = Field(ge=0)


class Reminders(BaseModel):
    """A person's data (version 2).

    Attributes:
        pending: Reminder name -> text; the due times are the cell's timers.
        digest_every_s: The digest period, when a digest is on.
    """

    pending: dict[str, str] = Field(default_factory=dict)
    digest_every_s: float | None = None


def _timer(name: str) -> str:
    return f"reminder:{name}"


def handle_message(state: CellState[Reminders]) -> None:
    """Apply one message to a person's reminders."""
    assert state.message is not None
    data = state.data or Reminders()
    match state.message.body:
        case Set(name=name, text=text, after_s=after_s, at=at):
            data.pending[name] = text
            # Setting a timer name again replaces that timer: no duplicate reminders.
            state.set_timer(_timer(name), after=after_s, at=at, payload=name)
        case Cancel(name=name):
            data.pending.pop(name, None)
            state.cancel_timer(_timer(name))
        case Snooze(name=name, by_s=by_s):
            due = state.timers.get(_timer(name))
            # A snooze that arrives after the reminder fired has nothing left to postpone.
            if due is not None:
                state.set_timer(_timer(name), at=due + round(by_s * 1000), payload=name)
        case Digest(every_s=every_s) if every_s > 0:
            # After an outage, one late digest (timer.missed says how many were skipped),
            # not one per missed period.
            state.set_timer(DIGEST, every=every_s, misfire=Misfire.FIRE_ONCE)
            data.digest_every_s = every_s
        case Digest():
            state.cancel_timer(DIGEST)
            data.digest_every_s = None
    # Nothing to remind of: the cell dies, its key is deleted and its timers with it.
    state.data = data if data.pending or data.digest_every_s else None


def on_timeout(state: CellState[Reminders]) -> None:
    """A reminder or the digest came due: emit a ``notify`` effect."""
    assert state.data is not None and state.timer is not None
    data, timer = state.data, state.timer
    if timer.name == DIGEST:
        state.emit_effect(
            "notify",
            {"to": state.cell_id, "digest": sorted(data.pending), "missed": timer.missed},
        )
        return
    text = data.pending.pop(timer.payload, None)
    if text is not None:
        state.emit_effect("notify", {"to": state.cell_id, "reminder": timer.payload, "text": text})
    state.data = data if data.pending or data.digest_every_s else None


def on_boot(state: CellState[Reminders]) -> None:
    """Give every pending reminder (and the digest) a timer: late is better than never.

    Timers are durable, so this finds nothing to do unless the data and the timers parted
    ways (e.g. the cell's data was restored from elsewhere).
    """
    data = state.data
    assert data is not None
    for name in data.pending:
        if _timer(name) not in state.timers:
            state.set_timer(_timer(name), after=0, payload=name)
    if data.digest_every_s and DIGEST not in state.timers:
        state.set_timer(DIGEST, every=data.digest_every_s, misfire=Misfire.FIRE_ONCE)


def migrate(version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept ``{"reminders": {name: {"text": ..., "due_ms": ...}}}``; version 2
    keeps only the texts, because the due times are the cell's timers."""
    if version == 1:
        old = data.pop("reminders", {})
        data["pending"] = {name: item["text"] for name, item in old.items()}
    return data


reminder = Behaviour(
    "reminder",
    messages={"set": Set, "cancel": Cancel, "snooze": Snooze, "digest": Digest},
    data=Reminders,
    version=2,
    handle_message=handle_message,
    on_timeout=on_timeout,
    on_boot=on_boot,
    migrate=migrate,
)

runtime = Runtime()
app = runtime.app
runtime.behaviour(reminder)

_OUTBOX = os.environ.get("REMINDERS_OUTBOX")
_delivered: set[str] | None = None


@runtime.effect_handler("notify", retry=RetryPolicy(attempts=5, backoff_s=0.2))
def notify(effect: Effect) -> None:
    """Deliver a notification: one JSON line in ``$REMINDERS_OUTBOX``, or a log line.

    Effects arrive at least once; a redelivery has the same ``effect.id``, so it is
    recognised and not written twice. (A real notifier would pass the id to its e-mail or
    SMS provider as the idempotency key.)
    """
    global _delivered
    line = json.dumps({"id": effect.id, **effect.payload}, sort_keys=True)
    if not _OUTBOX:
        logger.info("notify %s", line)
        return
    outbox = Path(_OUTBOX)
    if _delivered is None:
        lines = outbox.read_text().splitlines() if outbox.exists() else []
        _delivered = {json.loads(x)["id"] for x in lines if x.strip()}
    if effect.id in _delivered:
        return
    with outbox.open("a") as fh:
        fh.write(line + "\n")
    _delivered.add(effect.id)
