"""Replies to requests: how a worker answers a message that carries ``reply_to``.

A request/reply client (:class:`~stream_app.clients.cells.EntityClient`) reads one partition of the
app's reply topic ``<app_id>.replies`` and sends its messages with
``reply_to = "<app_id>.replies:<partition>"`` and a fresh ``id``. When the message has been
handled, the worker produces a :class:`Reply` to that partition, keyed by the cell id, with
``correlation_id`` = the message id. The reply is written with the message's other outputs:
in the same Kafka transaction under ``exactly_once`` (a client reading ``read_committed`` sees
it only once the events are committed), before the message's offset is committed under
``at_least_once`` (a replay after a crash may answer twice; the client keeps the first).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Reply", "parse_reply_to", "reply_address"]

_ADDRESS = re.compile(r"^([A-Za-z0-9._-]{1,249}):(\d{1,9})$")


class Reply(BaseModel):
    """A worker's answer to one request, as JSON on the reply topic.

    Attributes:
        correlation_id: The ``id`` of the message answered.
        behaviour: The behaviour (entity type) of the cell that handled it.
        cell_id: The cell (entity id) that handled it.
        ok: Whether the message was handled; ``False`` when it was rejected (it is then in the
            dead-letter topic too).
        seq: Entities: the sequence number of the entity's last event after the message.
        events: Entities: how many events the message appended.
        state: The state after the message, or the projection the request named.
        reason: Why it was not handled (``rejected``, ``unknown-projection``), if not ``ok``.
        error: The error message, if not ``ok``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    correlation_id: str
    behaviour: str
    cell_id: str
    ok: bool
    seq: int | None = None
    events: int = 0
    state: Any = None
    reason: str | None = None
    error: str | None = None


def reply_address(topic: str, partition: int) -> str:
    """The ``reply_to`` value that sends replies to ``partition`` of ``topic``."""
    return f"{topic}:{partition}"


def parse_reply_to(reply_to: str) -> tuple[str, int]:
    """The topic and partition of a ``reply_to`` address.

    Raises:
        ValueError: It is not ``"<topic>:<partition>"``.
    """
    match = _ADDRESS.match(reply_to)
    if match is None:
        raise ValueError(f"reply_to {reply_to!r} is not '<topic>:<partition>'")
    return match.group(1), int(match.group(2))
