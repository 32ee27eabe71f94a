"""Fitness quests: Ruby-Quest's example app on the quest layer.

Run it with ``faust -A stream_app.examples.fitness worker -l info``.

One context per user (the context id is the user's id); records go to
``<app_id>.fitness.in``, keyed by the user::

    {"type": "add_quest", "body": {"quest": "three_workouts", "params": {"tz": "Europe/Paris"}}}
    {"type": "add_quest", "body": {"quest": "meal_after_workout"}}
    {"type": "event", "body": {"event_name": "workout_logged", "data": {"minutes": 30}}}
    {"type": "event", "body": {"event_name": "meal_logged"}}

Two quests:

- ``three_workouts``: three workouts within seven days. A counter variable; a reminder at
  18:00 every other day of the month in the user's time zone (a cron timer); a ``reward``
  effect and the end of the quest at the third workout; at the deadline a ``quest_failed``
  effect, and the quest ends.
- ``meal_after_workout``: log a meal within ten minutes of a workout (a dependency window): a
  ``reward`` effect when the meal comes in time, a ``nudge`` effect when the window closes
  without one. It runs until removed.

Effects are delivered by :func:`deliver`: one JSON line per effect in the file named by the
``FITNESS_OUTBOX`` environment variable (or a log line when it is unset).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from stream_app import ActionContext, Effect, NoVariables, Quest, QuestBehaviour, Runtime

__all__ = [
    "Workouts",
    "app",
    "count",
    "deliver",
    "failed",
    "fitness",
    "meal_after_workout",
    "meal_in_time",
    "no_meal",
    "remind",
    "runtime",
    "start",
    "three_workouts",
]

logger = logging.getLogger(__name__)


class Workouts(BaseModel):
    """The variables of ``three_workouts``.

    Attributes:
        workouts: Workouts logged so far.
        tz: The user's IANA time zone (from the ``params`` of the add).
    """

    workouts: int = 0
    tz: str = "UTC"


def start(ctx: ActionContext[Workouts]) -> None:
    """``init``: remember the user's time zone."""
    ctx.vars.tz = str(ctx.event.get("tz", "UTC"))


def failed(ctx: ActionContext[Workouts]) -> None:
    """The seven days are over: tell the user; the quest then ends."""
    ctx.effect("quest_failed", {"user": ctx.context, "workouts": ctx.vars.workouts})


three_workouts = Quest(
    "three_workouts",
    variables=Workouts,
    init=start,
    deadline=timedelta(days=7),
    on_deadline=failed,
)


@three_workouts.action(on=["workout_logged"])
def count(ctx: ActionContext[Workouts]) -> None:
    """One more workout; the third wins the reward and ends the quest."""
    ctx.vars.workouts += 1
    if ctx.vars.workouts == 3:
        ctx.effect("reward", {"user": ctx.context, "quest": ctx.quest})
        ctx.end()


def remind(ctx: ActionContext[Workouts]) -> None:
    """The cron reminder: how many workouts are still to do (``due_ms``: the reminder's time)."""
    left = 3 - ctx.vars.workouts
    ctx.effect("remind", {"user": ctx.context, "left": left, "due_ms": ctx.event["due_ms"]})


three_workouts.cron("reminder", "0 18 */2 * *", remind, tz=lambda v: v.tz)


def meal_in_time(ctx: ActionContext[NoVariables]) -> None:
    """The meal came within ten minutes of the workout."""
    ctx.effect("reward", {"user": ctx.context, "quest": ctx.quest})


def no_meal(ctx: ActionContext[NoVariables]) -> None:
    """Ten minutes passed since the workout without a meal."""
    ctx.effect("nudge", {"user": ctx.context, "quest": ctx.quest})


meal_after_workout = Quest("meal_after_workout", variables=NoVariables)
meal_after_workout.window(
    "meal",
    opens_on="workout_logged",
    closes_on="meal_logged",
    within=timedelta(minutes=10),
    met=meal_in_time,
    missed=no_meal,
)

fitness = QuestBehaviour("fitness", quests=[three_workouts, meal_after_workout])

runtime = Runtime()
app = runtime.app
runtime.quests(fitness)

_OUTBOX = os.environ.get("FITNESS_OUTBOX")


@runtime.effect_handler("reward")
@runtime.effect_handler("remind")
@runtime.effect_handler("nudge")
@runtime.effect_handler("quest_failed")
def deliver(effect: Effect) -> None:
    """Deliver a notification: one JSON line in ``$FITNESS_OUTBOX``, or a log line.

    Effects arrive at least once; a line carries the effect's deterministic id, so a reader
    counts a redelivered one once.
    """
    line = json.dumps({"id": effect.id, "kind": effect.kind, **effect.payload}, sort_keys=True)
    if not _OUTBOX:
        logger.info("fitness %s", line)
        return
    with Path(_OUTBOX).open("a") as fh:
        fh.write(line + "\n")
