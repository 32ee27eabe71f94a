"""Pending timers as stored, their due-ordered keys, and what to fire when one comes due.

A pending timer lives in the behaviour's timers table under a key that sorts by due time::

    due_ms (8 bytes, big-endian) | len(cell_id) (2 bytes) | cell_id (UTF-8) | name (UTF-8)

so the engine finds the next timers to fire by reading the first keys of a partition's RocksDB
database instead of scanning them all. The cell's own record keeps ``name -> due_ms`` so a timer
can be replaced or cancelled by name, and a cell that dies takes its timers with it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "FirePlan",
    "Misfire",
    "TimerEntry",
    "decode_due_key",
    "due_key",
    "plan_firing",
]

_DUE = struct.Struct(">QH")
#: Keys below this prefix byte are timers; Faust keeps its own bookkeeping keys (``__faust…``)
#: in the same database, and they sort after every due time below 2**56 ms.
MAX_DUE_MS = 2**56 - 1


class Misfire(StrEnum):
    """What a timer does when it came due while no worker owned its partition.

    Attributes:
        FIRE_ONCE: Fire once, late (a recurring timer fires once for all it missed).
        CATCH_UP: Fire each missed occurrence, at most ``max_catch_up`` of them (the latest).
        SKIP: Do not fire what was missed; a recurring timer waits for its next occurrence.
    """

    FIRE_ONCE = "fire_once"
    CATCH_UP = "catch_up"
    SKIP = "skip"


class TimerEntry(BaseModel):
    """A pending timer as stored in the timers table (JSON).

    Attributes:
        cell: The id of the cell it belongs to.
        name: Its name, unique per cell: setting the name again replaces it.
        due: When it comes due, in milliseconds since the epoch.
        every: For a recurring timer, its period in milliseconds; ``None`` fires once.
        payload: Any JSON value handed back to ``on_timeout``.
        misfire: What to do if it came due while no worker owned it.
        max_catch_up: The most missed occurrences fired under :attr:`Misfire.CATCH_UP`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cell: str
    name: str = Field(min_length=1, max_length=256)
    due: int = Field(ge=0, le=MAX_DUE_MS)
    every: int | None = Field(default=None, ge=1)
    payload: Any = None
    misfire: Misfire = Misfire.FIRE_ONCE
    max_catch_up: int = Field(default=1, ge=1, le=100_000)

    def key(self) -> bytes:
        """This timer's key in the due-ordered timers table."""
        return due_key(self.due, self.cell, self.name)


def due_key(due_ms: int, cell_id: str, name: str) -> bytes:
    """The due-ordered key of timer ``name`` of ``cell_id`` due at ``due_ms``."""
    cell = cell_id.encode()
    if len(cell) > 0xFFFF:
        raise ValueError(f"cell id of {len(cell)} bytes is too long for a timer key")
    return _DUE.pack(due_ms, len(cell)) + cell + name.encode()


def decode_due_key(key: bytes) -> tuple[int, str, str] | None:
    """``(due_ms, cell_id, name)`` of a timers-table key, or ``None`` if it is not one."""
    if len(key) < _DUE.size or key[0] != 0:
        return None
    due, length = _DUE.unpack_from(key)
    end = _DUE.size + length
    if len(key) <= end:
        return None
    try:
        return due, key[_DUE.size : end].decode(), key[end:].decode()
    except UnicodeDecodeError:
        # Starts like a timer key but is not one; the caller skips it rather than crash the
        # agent that fires the partition's timers.
        return None


@dataclass(frozen=True, slots=True)
class FirePlan:
    """What to do with one timer that is due.

    Attributes:
        fire: Due times of the occurrences to deliver to ``on_timeout``, oldest first.
        missed: Occurrences that came due and are not delivered (skipped or coalesced).
        next_due: When a recurring timer comes due next; ``None`` if it is finished.
    """

    fire: tuple[int, ...]
    missed: int
    next_due: int | None


def plan_firing(entry: TimerEntry, *, now_ms: int, owned_since_ms: int) -> FirePlan:
    """Decide which occurrences of a due timer to fire.

    1. Occurrences due at or before ``now_ms`` are counted (one for a one-shot timer).
    2. Those due before ``owned_since_ms`` came due while no worker owned the partition: they
       follow the timer's misfire policy (fire once, catch up at most N, or skip).
    3. Occurrences due while this worker owned the partition and still pending (the worker fell
       behind) are coalesced into one firing: a loaded worker is not flooded.
    4. A recurring timer re-arms at its first occurrence after ``now_ms``.
    """
    if entry.due > now_ms:
        return FirePlan(fire=(), missed=0, next_due=entry.due)
    every = entry.every or 1
    count = 1 if entry.every is None else (now_ms - entry.due) // every + 1
    next_due = None if entry.every is None else entry.due + count * every
    # Occurrence i is due at entry.due + i * every; the first k of them predate ownership.
    unowned = (
        0
        if entry.due >= owned_since_ms
        else min(count, (owned_since_ms - entry.due - 1) // every + 1)
    )
    fire: list[int] = []
    if unowned:
        last_unowned = entry.due + (unowned - 1) * every
        if entry.misfire is Misfire.FIRE_ONCE:
            fire.append(last_unowned)
        elif entry.misfire is Misfire.CATCH_UP:
            n = min(unowned, entry.max_catch_up)
            fire.extend(last_unowned - (n - 1 - i) * every for i in range(n))
    if count > unowned:
        fire.append(entry.due + (count - 1) * every)
    return FirePlan(fire=tuple(fire), missed=count - len(fire), next_due=next_due)
