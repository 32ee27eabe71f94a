"""Parked cells: a cell whose callback keeps raising holds its work here, in order.

While a cell is parked, its messages (and timers that come due) are appended to its
:class:`ParkedCell` record in the behaviour's ``<name>-parked`` table instead of being handled;
every other cell on the partition keeps flowing. Releasing the cell (``stream-app cells release``)
runs the items again, in order, through the (fixed) behaviour; if one fails again the cell is
parked again from that item on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ParkedCell", "ParkedItem"]


class ParkedItem(BaseModel):
    """One piece of work held for a parked cell.

    Attributes:
        kind: ``message`` (a record of the input topic), ``timeout`` (a timer that fired) or
            ``boot`` (an ``on_boot`` call that failed).
        origin: Where it came from (``topic/partition/offset`` for a message); a release
            keeps it, so effects emitted on release have the ids the first attempt would have had.
        value: The original record value (UTF-8 JSON), for a message.
        timer: The fired timer (name, due_ms, payload, missed, recurring), for a timeout.
        timestamp_ms: The record's (or the firing's) time, its ``now_ms`` on release.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["message", "timeout", "boot"]
    origin: str
    value: str | None = None
    timer: dict[str, Any] | None = None
    timestamp_ms: int


class ParkedCell(BaseModel):
    """A parked cell's record: why it was parked and what waits.

    Attributes:
        cell_id: The cell.
        error: The last error raised by the callback (type and message).
        attempts: How many times the first item was tried before parking.
        since_ms: When the cell was parked (wall clock, ms since the epoch).
        items: The waiting work, oldest first.
    """

    model_config = ConfigDict(extra="forbid")

    cell_id: str
    error: str
    attempts: int = Field(ge=1)
    since_ms: int
    items: list[ParkedItem]
