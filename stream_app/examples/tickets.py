"""Tickets: a cell culture with a state machine, and a second behaviour it sends to.

Run it with ``faust -A stream_app.examples.tickets worker -l info``.

A ticket cell (behaviour ``ticket``, cell id = the ticket number, zero-padded so ids sort:
``"00001042"``) moves through ``open -> assigned -> resolved -> closed``::

    {"type": "open", "body": {"title": "Printer on fire"}}
    {"type": "assign", "body": {"to": "alice"}}               # again to re-assign
    {"type": "resolve", "body": {"close_after_s": 604800}}    # closes itself after a week
    {"type": "reopen", "body": {}}                            # back to open, unassigned
    {"type": "close", "body": {}}

A message that is not valid in the ticket's status (closing an open ticket, assigning a closed
one, opening a ticket twice) is rejected: it goes to the dead-letter topic with reason
``rejected`` and the ticket does not change. Each ticket keeps its assignee's workload up to
date by sending ``take`` and ``drop`` messages to the ``assignee`` cell of that person.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from stream_app import CellCulture, CellRun, FiredTimer, RejectMessage, Runtime

__all__ = [
    "Assign",
    "Assignee",
    "Close",
    "InvalidTransition",
    "Open",
    "Reopen",
    "Resolve",
    "Status",
    "Ticket",
    "TicketRun",
    "Tickets",
    "Workload",
    "app",
    "runtime",
]


class Status(StrEnum):
    """Where a ticket is in its life."""

    OPEN = "open"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Ticket(BaseModel):
    """A ticket cell's data.

    Attributes:
        title: What it is about.
        status: Where it is in its life.
        assignee: Who works on it (while assigned).
        history: The transitions it went through, oldest first.
    """

    title: str
    status: Status = Status.OPEN
    assignee: str | None = None
    history: list[str] = Field(default_factory=list)


class Open(BaseModel):
    """Open a new ticket."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)


class Assign(BaseModel):
    """Assign (or re-assign) the ticket to a person."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=1)


class Resolve(BaseModel):
    """Mark the ticket resolved; it closes itself ``close_after_s`` later unless reopened."""

    model_config = ConfigDict(extra="forbid")

    close_after_s: float = Field(default=7 * 24 * 3600, ge=0)


class Reopen(BaseModel):
    """Reopen a resolved ticket."""

    model_config = ConfigDict(extra="forbid")


class Close(BaseModel):
    """Close a resolved ticket now."""

    model_config = ConfigDict(extra="forbid")


class InvalidTransition(Exception):
    """A message that the ticket's status does not allow."""


class TicketRun(CellRun[Ticket]):
    """One invocation of a ticket cell."""

    @property
    def display_id(self) -> str:
        """``#1042`` for the cell ``00001042``: ids are padded to sort, people drop zeros."""
        return "#" + (self.cell_id.lstrip("0") or "0")

    def around(self, call: Callable[[], None]) -> None:
        """Log every transition (``self.log`` adds ``ticket/#1042: ``); reject invalid ones."""
        before = self.data.status if self.data else "new"
        try:
            call()
        except InvalidTransition as exc:
            self.log.warning("rejected: %s", exc)
            # Retrying cannot make the transition valid: reject the message for good.
            raise RejectMessage(f"ticket {self.display_id}: {exc}") from exc
        after = self.data.status if self.data else "gone"
        self.log.info("%s -> %s", before, after)

    def _expect(self, *allowed: Status) -> Ticket:
        ticket = self.data
        if ticket is None:
            raise InvalidTransition("no such ticket (open it first)")
        if ticket.status not in allowed:
            wanted = " or ".join(allowed)
            raise InvalidTransition(f"is {ticket.status}, must be {wanted}")
        return ticket

    def _move(self, ticket: Ticket, status: Status, note: str) -> None:
        ticket.status = status
        ticket.history.append(note)
        self.data = ticket

    def on_open(self, body: Open) -> None:
        """Create the ticket."""
        if self.data is not None:
            raise InvalidTransition(f"already exists ({self.data.status})")
        self.data = Ticket(title=body.title, history=["open"])

    def on_assign(self, body: Assign) -> None:
        """Assign the ticket, moving it from the previous assignee's workload."""
        ticket = self._expect(Status.OPEN, Status.ASSIGNED)
        if ticket.assignee is not None:
            self.state.send("assignee", ticket.assignee, "drop", {"ticket": self.cell_id})
        self.state.send("assignee", body.to, "take", {"ticket": self.cell_id})
        ticket.assignee = body.to
        self._move(ticket, Status.ASSIGNED, f"assigned to {body.to}")

    def on_resolve(self, body: Resolve) -> None:
        """Resolve the ticket and schedule its automatic closing."""
        ticket = self._expect(Status.ASSIGNED)
        assert ticket.assignee is not None
        self.state.send("assignee", ticket.assignee, "drop", {"ticket": self.cell_id})
        self.state.set_timer("auto-close", after=body.close_after_s)
        self._move(ticket, Status.RESOLVED, "resolved")

    def on_reopen(self, body: Reopen) -> None:
        """Reopen a resolved ticket: unassigned, and no longer closing itself."""
        ticket = self._expect(Status.RESOLVED)
        self.state.cancel_timer("auto-close")
        ticket.assignee = None
        self._move(ticket, Status.OPEN, "reopened")

    def on_close(self, body: Close) -> None:
        """Close a resolved ticket."""
        ticket = self._expect(Status.RESOLVED)
        self.state.cancel_timer("auto-close")
        self._move(ticket, Status.CLOSED, "closed")

    def on_timeout(self, timer: FiredTimer) -> None:
        """The auto-close timer fired: close the ticket (reopening cancels the timer)."""
        ticket = self._expect(Status.RESOLVED)
        self._move(ticket, Status.CLOSED, "closed automatically")


class Tickets(CellCulture[Ticket]):
    """The ``ticket`` behaviour."""

    name = "ticket"
    messages: ClassVar = {
        "open": Open,
        "assign": Assign,
        "resolve": Resolve,
        "reopen": Reopen,
        "close": Close,
    }
    data = Ticket
    Run = TicketRun


class Workload(BaseModel):
    """The tickets assigned to one person."""

    tickets: list[str] = Field(default_factory=list)


class Take(BaseModel):
    """A ticket was assigned to this person."""

    ticket: str


class Drop(BaseModel):
    """A ticket no longer is this person's."""

    ticket: str


class Assignee(CellCulture[Workload]):
    """The ``assignee`` behaviour: one cell per person, fed by the ticket cells."""

    name = "assignee"
    messages: ClassVar = {"take": Take, "drop": Drop}
    data = Workload

    class Run(CellRun[Workload]):
        # Messages between cells arrive at least once: take and drop are idempotent.
        def on_take(self, body: Take) -> None:
            """Add the ticket to the person's workload."""
            workload = self.data or Workload()
            if body.ticket not in workload.tickets:
                workload.tickets.append(body.ticket)
            self.data = workload

        def on_drop(self, body: Drop) -> None:
            """Remove the ticket; a person with no tickets is a dead cell."""
            workload = self.data or Workload()
            if body.ticket in workload.tickets:
                workload.tickets.remove(body.ticket)
            self.data = workload if workload.tickets else None


runtime = Runtime()
app = runtime.app
runtime.behaviour(Tickets())
runtime.behaviour(Assignee())
