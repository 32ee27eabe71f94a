"""The quests pages: a quest behaviour's active instances, and one context's quests.

- ``/console/quests``: every active quest instance of a quest behaviour
  (``/stream-app/quests/<b>/``, gathered from every worker), filtered by quest, each linking to
  its context; and a form that opens a context.
- ``/console/quests/<b>/<context>``: the context's active quests
  (``/stream-app/quests/<b>/<context>/``, from its owner): each instance with its variables,
  open windows, deadline and the timers it set (timer names are
  ``quest:<instance>:<kind>:<name>``), the timers of no active instance, and the count of
  events the context ignored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream_app.console.pagekit import (
    MAX_TEXT,
    Invalid,
    as_view,
    behaviour_field,
    behaviours_of,
    path_part,
    read_view,
    text_field,
)
from stream_app.console.server import PREFIX, Console
from stream_app.console.when import FILTERS

__all__ = [
    "InstanceRow",
    "QuestView",
    "TimerView",
    "WindowView",
    "install",
    "instance_rows",
    "quest_views",
    "timer_view",
]

#: How the quest layer names its timers: ``quest:<instance>:<kind>:<name>``.
_TIMER_PREFIX = "quest:"


@dataclass(frozen=True)
class TimerView:
    """A pending timer of a context.

    Attributes:
        name: The timer's full name.
        instance: The quest instance that set it (``None``: not a quest timer).
        kind: ``every``, ``cron``, ``deadline`` or ``window`` (``timer`` for another).
        label: The recurring timer's or window's name (the full name for another timer).
        due_ms: When it fires next.
        schedule: Its ``cron`` expression and time zone, or ``every N ms``; empty for a
            one-off timer.
    """

    name: str
    instance: str | None
    kind: str
    label: str
    due_ms: int
    schedule: str


@dataclass(frozen=True)
class WindowView:
    """An open dependency window.

    Attributes:
        name: The window's name.
        closes_ms: When it closes (missed) unless its closing event comes first.
    """

    name: str
    closes_ms: int


@dataclass(frozen=True)
class QuestView:
    """One active quest of a context.

    Attributes:
        quest: The quest's name.
        instance: Its instance id.
        started_ms: When it started.
        variables: Its variables.
        windows: Its open windows, soonest first.
        deadline_ms: When it ends at the latest, if it has a deadline.
        timers: The timers it set, soonest first.
    """

    quest: str
    instance: str
    started_ms: int
    variables: dict[str, Any]
    windows: list[WindowView]
    deadline_ms: int | None
    timers: list[TimerView]


@dataclass(frozen=True)
class InstanceRow:
    """An active quest instance in the list of a behaviour's instances.

    Attributes:
        instance: The instance id.
        quest: Its quest.
        context: The context it runs in.
        started_ms: When it started.
    """

    instance: str
    quest: str
    context: str
    started_ms: int | None


def timer_view(timer: Mapping[str, Any]) -> TimerView:
    """A timer as the cell view lists it (``name``, ``due_ms``, ``every_ms``, ``cron``,
    ``tz``), with the quest instance and kind its name carries."""
    name = str(timer.get("name", ""))
    parts = name.split(":", 3)
    quest_timer = len(parts) == 4 and f"{parts[0]}:" == _TIMER_PREFIX
    if timer.get("cron"):
        schedule = f"cron {timer['cron']}" + (f" ({timer['tz']})" if timer.get("tz") else "")
    elif timer.get("every_ms"):
        schedule = f"every {timer['every_ms']} ms"
    else:
        schedule = ""
    return TimerView(
        name=name,
        instance=parts[1] if quest_timer else None,
        kind=parts[2] if quest_timer else "timer",
        label=parts[3] if quest_timer else name,
        due_ms=int(timer.get("due_ms") or 0),
        schedule=schedule,
    )


def quest_views(described: Mapping[str, Any]) -> tuple[list[QuestView], list[TimerView]]:
    """A context as its view answers it: its quests by name, each with the timers it set;
    and the timers no active instance set."""
    timers = sorted((timer_view(t) for t in described.get("timers") or []), key=_due)
    quests = described.get("quests") or {}
    instances = {str(q.get("instance")) for q in quests.values() if isinstance(q, Mapping)}
    views = [
        QuestView(
            quest=str(name),
            instance=str(q.get("instance", "")),
            started_ms=int(q.get("started_ms") or 0),
            variables=dict(q.get("variables") or {}),
            windows=sorted(
                (WindowView(str(w), int(ms)) for w, ms in (q.get("windows") or {}).items()),
                key=lambda window: (window.closes_ms, window.name),
            ),
            deadline_ms=q.get("deadline_ms"),
            timers=[t for t in timers if t.instance == q.get("instance")],
        )
        for name, q in sorted(quests.items())
        if isinstance(q, Mapping)
    ]
    return views, [t for t in timers if t.instance not in instances]


def _due(timer: TimerView) -> tuple[int, str]:
    return timer.due_ms, timer.name


def instance_rows(instances: Mapping[str, Any], *, quest: str = "") -> list[InstanceRow]:
    """The instances of a gathered listing (``instance id -> {context, quest, started_ms}``) of
    ``quest`` (empty: every quest), by context then quest."""
    rows = [
        InstanceRow(
            instance=str(instance),
            quest=str(entry.get("quest", "")),
            context=str(entry.get("context", "")),
            started_ms=entry.get("started_ms"),
        )
        for instance, entry in instances.items()
        if isinstance(entry, Mapping)
    ]
    return sorted(
        (row for row in rows if not quest or row.quest == quest),
        key=lambda row: (row.context, row.quest, row.instance),
    )


def install(console: Console) -> None:
    """Register ``/console/quests`` and ``/console/quests/<b>/<context>``."""
    console.templates.filters.update(FILTERS)
    pages = _QuestPages(console)
    console.page("/quests", title="Quests")(as_view(pages.instances))
    console.page("/quests/{behaviour}/{context}")(as_view(pages.context))


class _QuestPages:
    """The handlers of the quests pages."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def listing(self, web: Any, request: Any, status: int = 200, **page: Any) -> Any:
        """The instances page, with the defaults of an empty one."""
        empty: dict[str, Any] = {"error": None, "behaviour": "", "rows": [], "quests": []}
        return self.console.render(
            web,
            request,
            "quests.html",
            status=status,
            choices=behaviours_of(self.console, "quests"),
            **{"quest": "", "context": "", **empty, **page},
        )

    async def instances(self, web: Any, request: Any) -> Any:
        """``/console/quests?behaviour=&quest=``: the active instances, filtered by quest;
        with ``context=``, a redirect to that context's page."""
        query = request.query
        try:
            behaviour = behaviour_field(self.console, query.get("behaviour"), "quests")
            if "context" in query:
                context = text_field(query.get("context"), "context id")
                location = f"{PREFIX}/quests/{path_part(behaviour)}/{path_part(context)}"
                return web.text("", status=303, headers={"Location": location})
            quest = text_field(query.get("quest"), "quest", required=False)
            answer = await read_view(self.console, f"quests/{path_part(behaviour)}/")
        except Invalid as problem:
            context = str(query.get("context", ""))[:MAX_TEXT]
            return self.listing(
                web, request, problem.status, error=problem.message, context=context
            )
        found = answer.data if answer.ok and isinstance(answer.data, dict) else {}
        return self.listing(
            web,
            request,
            error=None if answer.ok else f"the instances' view answered {answer.status}",
            behaviour=behaviour,
            rows=instance_rows(found, quest=quest),
            quest=quest,
            quests=sorted({str(e.get("quest")) for e in found.values()} | {quest} - {""}),
        )

    async def context(self, web: Any, request: Any, **match: str) -> Any:
        """``/console/quests/<b>/<context>``: the context's quests, timers and ignored count."""
        context = match.get("context", "")
        try:
            behaviour = behaviour_field(self.console, match.get("behaviour"), "quests")
            text_field(context, "context id")
            answer = await read_view(
                self.console, f"quests/{path_part(behaviour)}/{path_part(context)}/"
            )
            if not answer.ok and answer.status != 404:
                raise Invalid(502, f"the context's view answered {answer.status}")
        except Invalid as problem:
            return self.listing(web, request, problem.status, error=problem.message)
        described = answer.data if answer.ok and isinstance(answer.data, dict) else {}
        quests, other_timers = quest_views(described)
        return self.console.render(
            web,
            request,
            "quest_context.html",
            status=200 if answer.ok else 404,
            behaviour=behaviour,
            context=context,
            quests=quests,
            other_timers=other_timers,
            ignored=described.get("ignored", 0),
            parked=described.get("parked"),
            now_ms=int(time.time() * 1000),
        )
