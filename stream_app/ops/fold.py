"""Rebuild entities from their event log and check the result against the cached state.

:func:`fold_log` reads ``<app_id>.<type>.events`` from the beginning (``read_committed``), folds
every entity's events with the entity's own ``update`` from ``init()``, and compares each result
with the state cached in the table (read from its changelog topic, so no worker is needed). It
also checks the log itself: sequence numbers must run 1, 2, 3... per entity; a repeated number
is a duplicate (counted, not applied twice) and a jump is a gap. ``stream-app entities fold``
prints the report; see :class:`FoldReport`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream_app.api.entities import Entity, EventRecord
from stream_app.core.partitioner import partition_for
from stream_app.kafka.reading import read_to_end
from stream_app.settings import Settings

__all__ = ["FoldReport", "fold_log"]

#: Longest a fold may take to read a topic to its end.
READ_TIMEOUT_S = 3600.0


@dataclass
class FoldReport:
    """What a fold of an entity log found.

    Attributes:
        entity: The entity type.
        events: Events read from the log.
        entities: Entities rebuilt.
        folded: Entity id -> ``(seq, state as JSON)`` after folding its events.
        cached: Entity id -> ``(seq, state as JSON)`` in the table's changelog.
        duplicates: Entity id -> sequence numbers seen more than once.
        gaps: Entity id -> ``(expected seq, seq found)`` for each jump.
        mismatched: Ids whose folded state or seq differs from the cached one (or that have
            events but no cached state, or a cached state but no events, other than the
            initial state at sequence 0 that an entity without events caches for its timers).
    """

    entity: str
    events: int = 0
    entities: int = 0
    folded: dict[str, tuple[int, Any]] = field(default_factory=dict)
    cached: dict[str, tuple[int, Any]] = field(default_factory=dict)
    duplicates: dict[str, list[int]] = field(default_factory=dict)
    gaps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No duplicates, no gaps, and every cached state equals its fold."""
        return not (self.duplicates or self.gaps or self.mismatched)


def fold_log(
    entity: Entity[Any],
    settings: Settings,
    *,
    entity_id: str | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> FoldReport:
    """Fold the event log of ``entity`` (one id, or every one) and compare with the cache.

    Args:
        entity: The entity type, with the ``init`` and ``update`` that built the cache.
        settings: The app's settings (broker, app id, partitions).
        entity_id: Only this entity (only its partition is read).
        progress: Called with the number of records read since the last call.
        on_total: Called once with the number of records to read (for a progress bar).
    """
    report = FoldReport(entity=entity.name)
    partitions = (
        None if entity_id is None else [partition_for(entity_id.encode(), settings.partitions)]
    )
    states: dict[str, tuple[int, Any]] = {}
    seen: dict[str, set[int]] = {}
    for message in read_to_end(
        settings.kafka_client_config(),
        settings.events_topic(entity.name),
        partitions=partitions,
        on_total=on_total,
        timeout=READ_TIMEOUT_S,
    ):
        key, value = message.key(), message.value()
        if progress is not None:
            progress(1)
        if value is None or key is None:
            continue
        ident = key.decode()
        if entity_id is not None and ident != entity_id:
            continue
        record = EventRecord.model_validate_json(value)
        report.events += 1
        seq, state = states.get(ident) or (0, entity.init())
        if record.seq in seen.setdefault(ident, set()):
            report.duplicates.setdefault(ident, []).append(record.seq)
            continue
        seen[ident].add(record.seq)
        if record.seq != seq + 1:
            report.gaps.setdefault(ident, []).append((seq + 1, record.seq))
        event = entity.event_types[record.type].model_validate(record.body)
        states[ident] = (record.seq, entity.update(event, state))
    report.folded = {i: (seq, s.model_dump(mode="json")) for i, (seq, s) in states.items()}
    report.entities = len(report.folded)
    for message in read_to_end(
        settings.kafka_client_config(),
        settings.changelog_topic(entity.name),
        partitions=partitions,
        timeout=READ_TIMEOUT_S,
    ):
        key, value = message.key(), message.value()
        if key is None:
            continue
        ident = key.decode()
        if entity_id is not None and ident != entity_id:
            continue
        if value is None:
            report.cached.pop(ident, None)
            continue
        data = json.loads(value)["data"]
        report.cached[ident] = (data["seq"], data["state"])
    # An entity without events may be cached at sequence 0 with its initial state (it set a
    # timer): the same as not cached at all.
    nothing = (0, entity.init().model_dump(mode="json"))
    report.mismatched = sorted(
        ident
        for ident in set(report.folded) | set(report.cached)
        if report.folded.get(ident, nothing) != report.cached.get(ident, nothing)
    )
    return report
