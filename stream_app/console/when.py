"""Times as the quests and workflow pages show them: UTC to the millisecond, and how far off."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["FILTERS", "at_ms", "at_text", "from_now", "ms_between", "span"]


def at_ms(ms: int | None) -> str:
    """Milliseconds since the epoch as ``2026-12-01 09:50:12.345 UTC`` (``-`` for ``None`` and
    for a negative time, which is how Kafka says a record has none)."""
    if ms is None or ms < 0:
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def at_text(iso: str | None) -> str:
    """An ISO 8601 time (a workflow record's) as :func:`at_ms` writes it; ``-`` for ``None``,
    and the text as it is when it is not ISO 8601."""
    if iso is None:
        return "-"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return at_ms(round(moment.timestamp() * 1000))


def ms_between(start: str | None, end: str | None) -> int | None:
    """Milliseconds from ISO time ``start`` to ``end`` (``None`` if either is missing or not
    ISO 8601 with a time zone)."""
    if start is None or end is None:
        return None
    try:
        delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    except (ValueError, TypeError):
        return None
    return round(delta.total_seconds() * 1000)


def span(ms: int) -> str:
    """A duration in its two largest units: ``850 ms``, ``12.3 s``, ``4 min 5 s``, ``6 d 23 h``."""
    if ms < 0:
        return "-" + span(-ms)
    if ms < 1000:
        return f"{ms} ms"
    if ms < 59_950:  # not "60.0 s"
        return f"{ms / 1000:.1f} s"
    seconds = ms // 1000
    units = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))
    parts: list[str] = []
    for unit, size in units:
        if seconds >= size or parts:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def from_now(ms: int, now_ms: int) -> str:
    """``in 6 d 23 h`` or ``5 min 2 s ago``: ``ms`` seen from ``now_ms``."""
    delta = ms - now_ms
    return f"in {span(delta)}" if delta >= 0 else f"{span(-delta)} ago"


#: The template filters of these pages: ``at_ms``, ``at_text``, ``span``, ``from_now(now_ms)``.
FILTERS: dict[str, Callable[..., Any]] = {
    "at_ms": at_ms,
    "at_text": at_text,
    "span": span,
    "from_now": from_now,
}
