"""Pending timers as stored, their due-ordered keys, and what to fire when one comes due.

A pending timer lives in the behaviour's timers table under a key that sorts by due time::

    due_ms (8 bytes, big-endian) | len(cell_id) (2 bytes) | cell_id (UTF-8) | name (UTF-8)

so the engine finds the next timers to fire by reading the first keys of a partition's RocksDB
database instead of scanning them all. The cell's own record keeps ``name -> due_ms`` so a timer
can be replaced or cancelled by name, and a cell that dies takes its timers with it.

A recurring timer repeats either with a fixed period (``every``, occurrences by arithmetic) or
on a cron schedule in a time zone (``cron`` and ``tz``, occurrences from
:class:`CronSchedule`, which follows Debian cron across daylight-saving changes). Both follow
the same firing rules (:func:`plan_firing`).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import chain, dropwhile, islice, takewhile
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CRON_COUNT_LIMIT",
    "CronSchedule",
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
#: The most occurrences of a cron timer counted, per firing, among those due while no worker
#: owned it and again among those due while the worker fell behind. A cron timer missed for
#: years (every minute: millions of occurrences) costs at most this many steps of the cron
#: iterator plus the occurrences it fires; :attr:`FirePlan.missed` then says at least this many.
CRON_COUNT_LIMIT = 1000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
#: More than any repeated hour lasts: how far a cron iteration's start moves out of one.
_UNFOLD_MS = 3 * 3_600_000


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


class CronSchedule:
    """A 5-field cron expression in an IANA time zone, and its occurrences in epoch milliseconds.

    The expression is read by `cronsim <https://pypi.org/project/cronsim/>`_ (fields: minute,
    hour, day of month, month, day of week; names such as ``MON``, ranges, steps, ``L`` and
    ``#`` as Debian cron reads them). Local times are those of ``tz`` (default UTC), and
    daylight-saving changes are handled as Debian cron handles them:

    - spring forward: a time the clocks skip (``30 2 * * *`` on the night 02:00 becomes 03:00)
      occurs once, at the moment of the change (03:00 local, the first instant after the gap);
    - fall back: a job at a fixed hour in the repeated hour (``30 1 * * *`` in New York on the
      night 02:00 becomes 01:00) occurs once, the first time (in summer time); a job whose hour
      field is ``*`` or a step (``*/30 * * * *``) occurs in both passes of the hour, as its
      schedule in real time says.

    Args:
        expression: The cron expression, 5 fields.
        tz: An IANA zone name (``Europe/Amsterdam``); ``None`` is UTC.

    Raises:
        ValueError: The expression does not have 5 fields or cronsim refuses it (the message
            names the expression), or the zone is unknown (the message names the zone).
    """

    __slots__ = ("expression", "zone")

    def __init__(self, expression: str, tz: str | None = None) -> None:
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(
                f"cron expression {expression!r}: expected 5 fields (minute hour day-of-month "
                f"month day-of-week), got {len(fields)}"
            )
        try:
            self.zone = ZoneInfo(tz or "UTC")
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {tz!r} (expected an IANA name such as 'Europe/Amsterdam')"
            ) from exc
        self.expression = " ".join(fields)
        try:
            CronSim(self.expression, _EPOCH.astimezone(self.zone))
        except CronSimError as exc:
            raise ValueError(f"bad cron expression {expression!r}: {exc}") from exc

    def after(self, ms: int) -> Iterator[int]:
        """The occurrences strictly after ``ms``, oldest first (an endless iterator)."""
        start = self._start(ms, -_UNFOLD_MS)
        found = (_epoch_ms(at) for at in CronSim(self.expression, start))
        return dropwhile(lambda at: at <= ms, found)

    def before(self, ms: int) -> Iterator[int]:
        """The occurrences strictly before ``ms``, newest first (an endless iterator)."""
        start = self._start(ms, _UNFOLD_MS)
        found = (_epoch_ms(at) for at in CronSim(self.expression, start, reverse=True))
        return dropwhile(lambda at: at >= ms, found)

    def _start(self, ms: int, unfold_ms: int) -> datetime:
        # cronsim walks wall-clock time: from a start in the second pass of a repeated hour
        # (fold=1) it misses or repeats that hour's occurrences. Such a start is moved out of
        # the hour (back to iterate forward, on to iterate in reverse); the caller drops what
        # the move added.
        start = self._local(ms)
        return self._local(ms + unfold_ms) if start.fold else start

    def next_after(self, ms: int) -> int:
        """The first occurrence strictly after ``ms``."""
        return next(self.after(ms))

    def _local(self, ms: int) -> datetime:
        return (_EPOCH + ms * _ONE_MS).astimezone(self.zone)


class TimerEntry(BaseModel):
    """A pending timer as stored in the timers table (JSON).

    Attributes:
        cell: The id of the cell it belongs to.
        name: Its name, unique per cell: setting the name again replaces it.
        due: When it comes due, in milliseconds since the epoch.
        every: For a recurring timer, its period in milliseconds; ``None`` fires once.
        cron: For a timer recurring on a cron schedule, its 5-field expression (see
            :class:`CronSchedule`); :attr:`due` is then one of its occurrences.
        tz: The IANA time zone of :attr:`cron` (``None``: UTC).
        payload: Any JSON value handed back to ``on_timeout``.
        misfire: What to do if it came due while no worker owned it.
        max_catch_up: The most missed occurrences fired under :attr:`Misfire.CATCH_UP`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cell: str
    name: str = Field(min_length=1, max_length=256)
    due: int = Field(ge=0, le=MAX_DUE_MS)
    every: int | None = Field(default=None, ge=1)
    cron: str | None = None
    tz: str | None = None
    payload: Any = None
    misfire: Misfire = Misfire.FIRE_ONCE
    max_catch_up: int = Field(default=1, ge=1, le=100_000)

    @model_validator(mode="after")
    def _one_recurrence(self) -> TimerEntry:
        if self.cron is not None and self.every is not None:
            raise ValueError("a timer recurs either every period or on a cron schedule, not both")
        if self.tz is not None and self.cron is None:
            raise ValueError("tz is the time zone of a cron schedule: give cron too")
        return self

    @property
    def recurring(self) -> bool:
        """Whether the timer re-arms after firing (``every`` or ``cron``)."""
        return self.every is not None or self.cron is not None

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

    A cron timer's occurrences come from its :class:`CronSchedule` (``entry.due`` is the first
    of them), counted up to :data:`CRON_COUNT_LIMIT` in each of steps 2 and 3; the ones it fires
    are found from the end of each span, so the work stays bounded however long it was missed.
    """
    if entry.due > now_ms:
        return FirePlan(fire=(), missed=0, next_due=entry.due)
    if entry.cron is not None:
        return _plan_cron(entry, CronSchedule(entry.cron, entry.tz), now_ms, owned_since_ms)
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


def _plan_cron(
    entry: TimerEntry, schedule: CronSchedule, now_ms: int, owned_since_ms: int
) -> FirePlan:
    """:func:`plan_firing` for a cron timer due at or before ``now_ms``."""
    fire: list[int] = []
    missed = 0
    if entry.due < owned_since_ms:
        keep = {Misfire.FIRE_ONCE: 1, Misfire.CATCH_UP: entry.max_catch_up, Misfire.SKIP: 0}
        count, tail = _span(
            schedule, entry.due, entry.due, min(owned_since_ms - 1, now_ms), keep[entry.misfire]
        )
        fire.extend(tail)
        missed += count - len(tail)
    first_owned = max(entry.due, owned_since_ms)
    if first_owned <= now_ms:
        count, tail = _span(schedule, entry.due, first_owned, now_ms, 1)
        fire.extend(tail)
        missed += count - len(tail)
    return FirePlan(fire=tuple(fire), missed=missed, next_due=schedule.next_after(now_ms))


def _span(
    schedule: CronSchedule, due: int, first: int, last: int, keep: int
) -> tuple[int, list[int]]:
    """How many occurrences of a cron timer due at ``due`` fall in ``[first, last]`` (counted
    up to :data:`CRON_COUNT_LIMIT`), and the last ``keep`` of them, oldest first.

    ``due`` itself counts as an occurrence (it was one when the timer was stored, even if the
    zone's rules changed since)."""
    occurrences = chain((due,), schedule.after(due)) if first == due else schedule.after(first - 1)
    tail: deque[int] = deque(maxlen=keep)
    count = 0
    for at in occurrences:
        if at > last:
            return count, list(tail)
        count += 1
        tail.append(at)
        if count == CRON_COUNT_LIMIT:
            break
    # Past the limit: count no further, and take the occurrences to fire from the end.
    newest = islice(takewhile(lambda at: at >= first, schedule.before(last + 1)), keep)
    return count, sorted(newest)


def _epoch_ms(at: datetime) -> int:
    # Integer arithmetic, as CellState.now does: no float rounding of far times.
    return (at - _EPOCH) // _ONE_MS
