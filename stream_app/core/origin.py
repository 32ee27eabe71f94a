"""Where a cell's work came from: an input record, a partition's boot, a timer, an injection.

Every invocation of a cell callback has an origin. It seeds the ids of the effects and messages
the invocation emits (so the same work done again emits the same ids), it names the source of
a dead letter, and it identifies a parked item (a record replayed after a crash is recognised
as one already waiting).

Origins are stored as text inside the parked table (:attr:`ParkedItem.origin`) and in effects,
so each kind has one string form, and :func:`parse` reads it back:

=============  =====================================  ======================================
kind           string form                            made for
=============  =====================================  ======================================
record         ``<topic>/<partition>/<offset>``       a message read from an input topic
boot           ``boot/<partition>/<generation>``      ``on_boot`` after an assignment
timer          ``timer/<name>/<due_ms>``              a timer occurrence
inject         ``inject/<id>``                        a message injected without Kafka
=============  =====================================  ======================================

Kafka topic names never contain ``/``, so a record origin cannot be mistaken for the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BootOrigin", "InjectOrigin", "Origin", "RecordOrigin", "TimerOrigin", "parse"]


@dataclass(frozen=True, slots=True)
class RecordOrigin:
    """Work that came from a record of an input topic.

    Attributes:
        topic: The record's topic.
        partition: The record's partition.
        offset: The record's offset.
    """

    topic: str
    partition: int
    offset: int

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        # One is made per record: the fields are set through their slots' descriptors, as
        # :class:`~stream_app.core.envelope.CellMessage` does, not object.__setattr__ (the
        # frozen dataclass's own __init__ takes three times as long).
        topic_, partition_, offset_ = _RECORD_SLOTS
        topic_(self, topic)
        partition_(self, partition)
        offset_(self, offset)

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


#: The setters of :class:`RecordOrigin`'s slots, in field order (see its ``__init__``).
_RECORD_SLOTS: tuple[Any, ...] = tuple(
    getattr(RecordOrigin, name).__set__ for name in ("topic", "partition", "offset")
)


@dataclass(frozen=True, slots=True)
class BootOrigin:
    """An ``on_boot`` call made when a worker took a partition.

    Attributes:
        partition: The partition booted.
        generation: A random id of the assignment (each assignment boots again).
    """

    partition: int
    generation: str

    def __str__(self) -> str:
        return f"boot/{self.partition}/{self.generation}"


@dataclass(frozen=True, slots=True)
class TimerOrigin:
    """One occurrence of a timer.

    Attributes:
        name: The timer's name (may itself contain ``/``).
        due_ms: When the occurrence was due (milliseconds since the epoch).
    """

    name: str
    due_ms: int

    def __str__(self) -> str:
        return f"timer/{self.name}/{self.due_ms}"


@dataclass(frozen=True, slots=True)
class InjectOrigin:
    """A message injected into a worker without Kafka (``Runtime.inject``).

    Attributes:
        id: A random id of the injection.
    """

    id: str

    def __str__(self) -> str:
        return f"inject/{self.id}"


#: Any origin.
Origin = RecordOrigin | BootOrigin | TimerOrigin | InjectOrigin


def parse(text: str) -> Origin:
    """The origin whose string form is ``text``.

    Raises:
        ValueError: ``text`` is not the string form of any origin.
    """
    head, _, rest = text.partition("/")
    if head == "inject":
        if rest:
            return InjectOrigin(rest)
    elif head == "boot":
        partition, sep, generation = rest.partition("/")
        if sep and generation and _is_int(partition):
            return BootOrigin(int(partition), generation)
    elif head == "timer":
        name, sep, due = rest.rpartition("/")
        if sep and _is_int(due):
            return TimerOrigin(name, int(due))
    elif head:
        partition, sep, offset = rest.partition("/")
        if sep and _is_int(partition) and _is_int(offset):
            return RecordOrigin(head, int(partition), int(offset))
    raise ValueError(f"not an origin: {text!r}")


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
