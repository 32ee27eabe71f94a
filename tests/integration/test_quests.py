"""The quest layer on a real broker, in real `faust worker` processes (``tests.apps.quest_probe``).

One worker serves the first test's many contexts (each assertion uses contexts of its own), so
the file costs two worker starts and a restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from stream_app import DeadLetter, QuestClient
from stream_app.cli.main import cli
from stream_app.testing import WorkerProcess, read_topic, settings_from_env, wait_for
from stream_app.testing.clock import DrivenClock

pytestmark = pytest.mark.integration

StartWorker = Callable[..., WorkerProcess]
MODULE = "tests.apps.quest_probe"


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none when it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def context(worker: WorkerProcess, context_id: str) -> dict[str, Any]:
    """A context as its owner describes it (``quests`` empty when it has none)."""
    described: dict[str, Any] = worker.get_json(f"/stream-app/quests/ctx/{context_id}/")
    return described


def wait_context(
    worker: WorkerProcess, context_id: str, done: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    return wait_for(lambda: context(worker, context_id), done, timeout=30, what=what)


def variables(described: dict[str, Any], quest: str) -> dict[str, Any]:
    result: dict[str, Any] = described["quests"][quest]["variables"]
    return result


def test_event_forms_races_outgoing_events_windows_and_dead_letters(
    start_worker: StartWorker, cells_env: dict[str, str], bootstrap: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.jsonl"
    env = {**cells_env, "QUEST_PROBE_OUTBOX": str(outbox), "QUEST_PROBE_WINDOW_S": "2"}
    settings = settings_from_env(env)
    worker = start_worker(MODULE, env)
    with QuestClient("ctx", settings) as quests:
        for quest in ("resetter", "counter", "relay"):
            quests.add_quest("alice", quest)
        quests.add_quest("bob", "relay")
        quests.add_quest("carol", "meal")
        quests.add_quest("dave", "meal")
    alice = wait_context(worker, "alice", lambda c: len(c["quests"]) == 3, "alice's quests")
    first = alice["quests"]["counter"]["instance"]

    # The three forms: a multicast, a selector event, an instance event.
    with QuestClient("ctx", settings) as quests:
        quests.send_event("alice", "tick")
        quests.send_event("alice", "tock", selector="counter.count")
        quests.send_event("alice", "tock", selector="counter.count", instance=first)
    alice = wait_context(
        worker, "alice", lambda c: variables(c, "counter")["n"] == 3, "three counted events"
    )
    assert variables(alice, "counter")["instances"] == [first] * 3

    # A removed quest's instance event is ignored and counted, even with the quest re-added.
    with QuestClient("ctx", settings) as quests:
        quests.remove_quest("alice", "counter")
        quests.add_quest("alice", "counter")
        quests.send_event("alice", "tock", selector="counter.count", instance=first)
    alice = wait_context(worker, "alice", lambda c: c["ignored"] == 1, "the stale event ignored")
    second = alice["quests"]["counter"]["instance"]
    assert second != first
    assert variables(alice, "counter") == {"n": 0, "instances": []}
    assert "ignored event 'tock' for counter/" in worker.log_text()

    # A multicast whose first call (resetter) removes and re-adds counter: the new counter
    # never gets the tick bound to the old one; the next tick reaches it.
    with QuestClient("ctx", settings) as quests:
        quests.send_event("alice", "tick", {"restart": True})
        quests.send_event("alice", "tick")
    alice = wait_context(
        worker, "alice", lambda c: variables(c, "counter")["n"] == 1, "the next tick counted"
    )
    third = alice["quests"]["counter"]["instance"]
    assert third not in (first, second)
    assert variables(alice, "counter")["instances"] == [third]

    # Outgoing events: to another context, and to a declared topic.
    with QuestClient("ctx", settings) as quests:
        quests.send_event("alice", "ping", {"to": "bob"})
    wait_context(worker, "bob", lambda c: variables(c, "relay")["n"] == 1, "bob's pong")
    published = [
        json.loads(r.value or b"{}")
        for r in read_topic(bootstrap, f"{settings.app_id}.quest-out")
        if r.key == b"alice"
    ]
    assert published == [{"event_name": "pinged", "event_context": "alice", "data": {"to": "bob"}}]

    # A dependency window met (carol) and missed (dave), each effect once.
    with QuestClient("ctx", settings) as quests:
        quests.send_event("carol", "workout")
        quests.send_event("carol", "meal")
        quests.send_event("dave", "workout")
    kinds = wait_for(
        lambda: sorted({e["id"]: (e["user"], e["kind"]) for e in jsonl(outbox)}.values()),
        lambda seen: ("dave", "missed") in seen and ("carol", "met") in seen,
        timeout=30,
        what="carol's window met and dave's missed",
    )
    assert kinds == [("carol", "met"), ("dave", "missed")]
    assert context(worker, "dave")["quests"]["meal"]["windows"] == {}

    # Bad events: dead letters with their reasons; the contexts keep being served.
    with QuestClient("ctx", settings) as quests:
        quests.add_quest("erin", "no_such_quest")
        quests.call_quest("counter", "no_such_action", "alice")
        quests.send_event("carol", "tick", selector="timed.x")
        quests.send_event("bob", "tock", selector="counter.count")
        quests.cells.send("ctx", "alice", "event", {"data": {}})  # no event_name
        quests.cells.send("ctx", "alice", "event", {"event_name": "tick", "event_context": "x"})
        quests.send_event("alice", "tick")

    def letters() -> dict[str, str]:
        found = {}
        for r in read_topic(bootstrap, settings.dead_letter_topic):
            letter = DeadLetter.from_record(r.key, r.value, r.headers)
            found[letter.reason + ":" + (letter.key or b"").decode()] = letter.error
        return found

    found = wait_for(letters, lambda f: len(f) == 6, timeout=30, what="six dead letters")
    assert sorted(found) == [
        "quest-not-active:bob",
        "schema:alice",
        "unknown-action:alice",
        "unknown-action:carol",
        "unknown-quest:erin",
        "wrong-context:alice",
    ]
    assert "no_such_quest" in found["unknown-quest:erin"]
    assert "no_such_action" in found["unknown-action:alice"]
    assert "event_name" in found["schema:alice"]
    wait_context(worker, "alice", lambda c: variables(c, "counter")["n"] == 2, "alice still served")

    # Every active instance, gathered from the partitions' owners.
    instances = worker.get_json("/stream-app/quests/ctx/")
    assert sorted((i["context"], i["quest"]) for i in instances.values()) == [
        ("alice", "counter"),
        ("alice", "relay"),
        ("alice", "resetter"),
        ("bob", "relay"),
        ("carol", "meal"),
        ("dave", "meal"),
    ]
    assert instances[third]["context"] == "alice"

    # The console: send and call, list and instances through the views, tail the topic.
    url = f"http://127.0.0.1:{worker.web_port}"

    def console(*args: str) -> str:
        result = CliRunner().invoke(cli, ["quests", *args], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    console("send", "ctx", "alice", "tock", "--selector", "counter.count")
    console("call", "ctx", "counter", "count", "alice", "--event", '{"why": "console"}')
    wait_context(worker, "alice", lambda c: variables(c, "counter")["n"] == 4, "console events")
    listed = console("list", "ctx", "alice", "--url", url)
    assert f"counter  instance={third}" in listed and '"n":4' in listed
    assert "ignored=1" in listed
    assert f"alice  counter  {third}" in console("instances", "ctx", "--url", url)
    tailed = console(
        "tail",
        "ctx",
        "--context",
        "alice",
        "--event",
        "tock",
        "--from-beginning",
        "--max",
        "4",
        "--idle",
        "30",
    ).splitlines()
    assert [line.split("  ")[1:5] for line in tailed] == [
        ["alice", "event", "tock", "selector"],
        ["alice", "event", "tock", "instance"],
        ["alice", "event", "tock", "instance"],
        ["alice", "event", "tock", "selector"],
    ]
    assert worker.error_lines() == []


def test_a_deadline_fires_after_a_sigkill_and_a_restart(
    start_worker: StartWorker, cells_env: dict[str, str], tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.jsonl"
    env = {**cells_env, "QUEST_PROBE_OUTBOX": str(outbox), "QUEST_PROBE_DEADLINE_S": "10"}
    settings = settings_from_env(env)
    worker = start_worker(MODULE, env)
    with QuestClient("ctx", settings) as quests:
        quests.add_quest("frank", "timed")
        quests.add_quest("frank", "counter")
    frank = wait_context(worker, "frank", lambda c: len(c["quests"]) == 2, "frank's quests")
    instance = frank["quests"]["timed"]["instance"]
    deadline = frank["quests"]["timed"]["deadline_ms"]
    assert [t["due_ms"] for t in frank["timers"]] == [deadline]
    worker.kill()
    assert jsonl(outbox) == []

    worker = start_worker(MODULE, env, name="restarted")
    fired = wait_for(
        lambda: [e for e in jsonl(outbox) if e["kind"] == "deadline"],
        bool,
        timeout=60,
        what="the deadline effect after the restart",
    )
    assert {(e["user"], e["instance"]) for e in fired} == {("frank", instance)}
    frank = wait_context(worker, "frank", lambda c: "timed" not in c["quests"], "timed ended")
    assert list(frank["quests"]) == ["counter"] and frank["timers"] == []


def paris_18h_utc_ms(day: int) -> int:
    """18:00 in Paris on ``day`` March 2027, in ms since the epoch (summer time from the
    28th)."""
    at = datetime(2027, 3, day, 18, tzinfo=ZoneInfo("Europe/Paris"))
    return int(at.timestamp()) * 1000


def test_fitness_example_end_to_end_under_a_driven_clock(
    start_worker: StartWorker, cells_env: dict[str, str], bootstrap: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.jsonl"
    env = {**cells_env, "FITNESS_OUTBOX": str(outbox), "STREAM_APP_CLOCK": "driven"}
    settings = settings_from_env(env)
    clock = DrivenClock(bootstrap, settings.app_id)
    start = clock.set(datetime(2027, 3, 25, 12, tzinfo=UTC))
    worker = start_worker("stream_app.examples.fitness", env)

    def described(user: str) -> dict[str, Any]:
        found: dict[str, Any] = worker.get_json(f"/stream-app/quests/fitness/{user}/")
        return found

    def effects(kind: str, user: str) -> list[dict[str, Any]]:
        unique = {e["id"]: e for e in jsonl(outbox) if e["kind"] == kind and e["user"] == user}
        return list(unique.values())

    def meal_window_open(c: dict[str, Any]) -> bool:
        return "meal" in c["quests"].get("meal_after_workout", {}).get("windows", {})

    with QuestClient("fitness", settings) as quests:
        for user in ("alice", "bob"):
            quests.add_quest(user, "three_workouts", {"tz": "Europe/Paris"})
        quests.add_quest("alice", "meal_after_workout")
        quests.send_event("alice", "workout_logged")
        quests.send_event("bob", "workout_logged")
    wait_for(lambda: described("alice"), meal_window_open, timeout=30, what="a meal window")

    # A meal five minutes after the workout: rewarded.
    clock.advance(timedelta(minutes=5))
    clock.wait_seen(worker)
    with QuestClient("fitness", settings) as quests:
        quests.send_event("alice", "meal_logged")
        quests.send_event("alice", "workout_logged")
    wait_for(lambda: effects("reward", "alice"), bool, timeout=30, what="the meal reward")
    alice = wait_for(lambda: described("alice"), meal_window_open, timeout=30, what="reopened")
    assert alice["quests"]["meal_after_workout"]["windows"]["meal"] == start + 15 * 60_000

    # No meal within ten minutes of the second workout: a nudge.
    clock.advance(timedelta(minutes=11))
    wait_for(lambda: effects("nudge", "alice"), bool, timeout=30, what="the nudge")

    # The third workout wins the reward and ends the quest, its reminder with it.
    with QuestClient("fitness", settings) as quests:
        quests.remove_quest("alice", "meal_after_workout")
        quests.send_event("alice", "workout_logged")
    wait_for(lambda: described("alice"), lambda c: c["quests"] == {}, timeout=30, what="alice done")
    # Effects are dispatched after the commit that emitted them: wait for the handler.
    rewarded = wait_for(
        lambda: sorted(r["quest"] for r in effects("reward", "alice")),
        lambda quests: len(quests) == 2,
        timeout=30,
        what="alice's second reward delivered",
    )
    assert rewarded == ["meal_after_workout", "three_workouts"]

    # bob: a reminder at 18:00 Paris time every other day (across the change to summer time
    # on the 28th), then the deadline after seven days ends the quest.
    reminders = [paris_18h_utc_ms(day) for day in (25, 27, 29, 31)]
    for _ in range(14):
        clock.advance(timedelta(hours=12))
        clock.wait_seen(worker)
        wait_for(
            lambda: sorted(e["due_ms"] for e in effects("remind", "bob")),
            lambda seen: seen == [d for d in reminders if d <= clock.now_ms],
            timeout=30,
            what=f"bob's reminders up to {clock.now.isoformat()}",
        )
    assert paris_18h_utc_ms(29) - paris_18h_utc_ms(27) == (2 * 24 - 1) * 3_600_000
    assert {e["left"] for e in effects("remind", "bob")} == {2}
    failed = wait_for(
        lambda: effects("quest_failed", "bob"), bool, timeout=30, what="bob's deadline"
    )
    assert [f["workouts"] for f in failed] == [1]
    bob = wait_for(lambda: described("bob"), lambda c: c["quests"] == {}, timeout=30, what="ended")
    assert bob["timers"] == []
    assert effects("remind", "alice") == [] and worker.error_lines() == []
