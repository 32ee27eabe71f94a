"""Send quest events, adds, removes and calls to contexts, from any process, through Kafka.

:class:`QuestClient` is a :class:`~stream_app.clients.cells.CellClient` that speaks the quest
protocol of :mod:`stream_app.core.quests` to one quest behaviour::

    with QuestClient("fitness", settings) as quests:
        quests.add_quest("alice", "three_workouts", {"tz": "Europe/Paris"})
        quests.send_event("alice", "workout_logged", {"minutes": 30})     # multicast
        quests.call_quest("three_workouts", "count", "alice", {})         # one action
    # leaving the block flushes: every record is acknowledged by the broker

Producers in other languages send the same envelopes (``{"type": "event", "body": {...}}``,
keyed by the context id) to ``<app_id>.<behaviour>.in``; ``stream-app schemas export
<module>:<behaviour>`` writes their JSON Schema.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from stream_app.clients.cells import CellClient
from stream_app.core.quests import QuestEventBody, selector
from stream_app.settings import Settings

__all__ = ["QuestClient"]


class QuestClient:
    """A producer of quest messages for the contexts of one quest behaviour.

    Args:
        behaviour: The quest behaviour's name.
        settings: Where the broker is and the app id; default: from the environment.
        config: Extra librdkafka producer settings, applied last.
    """

    def __init__(
        self,
        behaviour: str,
        settings: Settings | None = None,
        *,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.cells = CellClient(settings, config=config)

    def send_event(
        self,
        context: str,
        event_name: str,
        data: dict[str, Any] | None = None,
        *,
        selector: str | None = None,
        instance: str | None = None,
        id: str | None = None,
    ) -> None:
        """Queue an event for ``context``: a multicast, or with ``selector``
        (``"<quest>.<action>"``) a selector event, and with ``instance`` too an instance event.

        Raises:
            pydantic.ValidationError: The event does not match its schema (nothing is sent).
        """
        body: dict[str, Any] = {"event_name": event_name, "event_context": context}
        if data:
            body["data"] = data
        if selector is not None:
            body["event_selector"] = selector
        if instance is not None:
            body["quest_instance"] = instance
        self.cells.send(
            self.behaviour, context, "event", QuestEventBody.model_validate(body), id=id
        )

    def add_quest(
        self,
        context: str,
        quest: str,
        params: dict[str, Any] | None = None,
        *,
        id: str | None = None,
    ) -> None:
        """Queue the start of a new instance of ``quest`` in ``context`` (``init`` gets
        ``params``)."""
        self.cells.send(
            self.behaviour, context, "add_quest", {"quest": quest, "params": params or {}}, id=id
        )

    def remove_quest(
        self, context: str, quest: str, *, instance: str | None = None, id: str | None = None
    ) -> None:
        """Queue the end of the active instance of ``quest`` in ``context`` (only of
        ``instance`` when given)."""
        body: dict[str, Any] = {"quest": quest}
        if instance is not None:
            body["quest_instance"] = instance
        self.cells.send(self.behaviour, context, "remove_quest", body, id=id)

    def call_quest(
        self,
        quest: str,
        action: str,
        context: str,
        event: dict[str, Any] | None = None,
        *,
        event_name: str | None = None,
        id: str | None = None,
    ) -> None:
        """Queue a direct call of ``action`` of the active ``quest`` of ``context`` (Ruby-Quest's
        ``call_quest``)."""
        body: dict[str, Any] = {"quest": quest, "action": action, "event": event or {}}
        if event_name is not None:
            body["event_name"] = event_name
        self.cells.send(self.behaviour, context, "call", body, id=id)

    @staticmethod
    def selector(quest: str, action: str) -> str:
        """The selector of ``action`` of ``quest``, for :meth:`send_event`."""
        return selector(quest, action)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued record is acknowledged (see :meth:`CellClient.flush`)."""
        self.cells.flush(timeout)

    def __enter__(self) -> QuestClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()
