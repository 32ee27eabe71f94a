"""Quests that do on command what the quest integration tests need to observe.

Run as ``faust -A tests.apps.quest_probe worker``. The contexts' behaviour is ``ctx``:

- ``resetter`` (first in multicast order): on ``tick`` with ``{"restart": true}``, removes and
  re-adds ``counter``;
- ``counter``: counts ``tick`` and ``tock`` and records the instance id each call ran in;
- ``relay``: on ``ping``, emits ``pong`` to the context named in ``data.to`` and publishes
  ``pinged`` to ``<app_id>.quest-out``; on ``pong``, counts it;
- ``meal``: a window, ``meal`` within ``QUEST_PROBE_WINDOW_S`` seconds (default 2) of
  ``workout``: ``met`` or ``missed`` effects;
- ``timed``: ends ``QUEST_PROBE_DEADLINE_S`` seconds (default 3) after it starts, emitting a
  ``deadline`` effect first.

Effects are appended to the file named by ``QUEST_PROBE_OUTBOX``: ``{"id", "kind", "user",
"instance"}``, one JSON line per delivery.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

from stream_app import ActionContext, Effect, NoVariables, Quest, QuestBehaviour, Runtime
from stream_app.settings import get_settings


class Count(BaseModel):
    n: int = 0
    instances: list[str] = Field(default_factory=list)


resetter = Quest("resetter", variables=NoVariables)


@resetter.action(on=["tick"])
def restart(ctx: ActionContext[NoVariables]) -> None:
    if ctx.event.get("restart"):
        ctx.remove_quest("counter")
        ctx.add_quest("counter")


counter = Quest("counter", variables=Count)


@counter.action(on=["tick", "tock"])
def count(ctx: ActionContext[Count]) -> None:
    ctx.vars.n += 1
    ctx.vars.instances.append(ctx.instance)


OUT_TOPIC = f"{get_settings().app_id}.quest-out"
relay = Quest("relay", variables=Count)


@relay.action(on=["ping"])
def ping(ctx: ActionContext[Count]) -> None:
    ctx.emit("pong", {"from": ctx.context}, context=str(ctx.event["to"]))
    ctx.publish(OUT_TOPIC, "pinged", {"to": ctx.event["to"]})


@relay.action(on=["pong"])
def pong(ctx: ActionContext[Count]) -> None:
    ctx.vars.n += 1


meal = Quest("meal", variables=NoVariables)
meal.window(
    "meal",
    opens_on="workout",
    closes_on="meal",
    within=float(os.environ.get("QUEST_PROBE_WINDOW_S", "2")),
    met=lambda ctx: ctx.effect("met", {"user": ctx.context, "instance": ctx.instance}),
    missed=lambda ctx: ctx.effect("missed", {"user": ctx.context, "instance": ctx.instance}),
)

timed = Quest(
    "timed",
    variables=NoVariables,
    deadline=float(os.environ.get("QUEST_PROBE_DEADLINE_S", "3")),
    on_deadline=lambda ctx: ctx.effect("deadline", {"user": ctx.context, "instance": ctx.instance}),
)

contexts = QuestBehaviour("ctx", quests=[resetter, counter, relay, meal, timed], topics=[OUT_TOPIC])

runtime = Runtime()
app = runtime.app
runtime.quests(contexts)


@runtime.effect_handler("met")
@runtime.effect_handler("missed")
@runtime.effect_handler("deadline")
def deliver(effect: Effect) -> None:
    """Append the effect to ``$QUEST_PROBE_OUTBOX``."""
    line = json.dumps({"id": effect.id, "kind": effect.kind, **effect.payload}, sort_keys=True)
    with Path(os.environ["QUEST_PROBE_OUTBOX"]).open("a") as fh:
        fh.write(line + "\n")
