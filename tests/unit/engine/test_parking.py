"""Retries through the behaviour's policy, parking when they are exhausted, and release."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from stream_app.core.retry import RetryPolicy
from tests.unit.engine.fakes import Harness
from tests.unit.engine.probe import Switch, probe


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the engine takes between attempts (recorded, not waited: asyncio.sleep is
    replaced for the test, and the engine's retry loop is the only thing that sleeps)."""
    taken: list[float] = []

    async def sleep(seconds: float) -> None:
        taken.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return taken


def parked_harness(switch: Switch) -> Harness:
    harness = Harness(probe(switch))
    harness.feed(harness.record("a", "set", {"value": 1}), harness.record("a", "boom"))
    return harness


def test_retries_follow_the_policy_and_park_when_exhausted(pauses: list[float]) -> None:
    switch = Switch()
    policy = RetryPolicy(attempts=4, backoff_s=0.5, max_backoff_s=1.5, jitter=0.0)
    harness = Harness(probe(switch, retry=policy))
    harness.feed(harness.record("a", "boom"))
    assert switch.calls == 4
    assert pauses == [0.5, 1.0, 1.5], "capped exponential backoff, none before the first try"
    [item] = harness.parked_items("a")
    assert item["kind"] == "message"
    parked = json.loads(harness.parked.lookup(b"a") or b"")
    assert parked["attempts"] == 4 and parked["error"] == "RuntimeError: boom"
    assert harness.metrics.parked == 1


def test_a_behaviour_without_a_policy_retries_as_the_settings_say(pauses: list[float]) -> None:
    switch = Switch()
    settings_policy = RetryPolicy(attempts=2, backoff_s=0.25, jitter=0.0)
    behaviour = probe(switch)
    behaviour.retry = None  # as Behaviour(...) without retry=
    harness = Harness(behaviour, cell_retry=settings_policy)
    harness.feed(harness.record("a", "boom"))
    assert switch.calls == 2 and pauses == [0.25]
    assert json.loads(harness.parked.lookup(b"a") or b"")["attempts"] == 2
    # A behaviour's own policy wins over the settings'.
    own = Harness(probe(Switch(), retry=RetryPolicy(attempts=3, jitter=0.0)), settings_policy)
    assert own.engine.retry.attempts == 3


def test_a_call_that_succeeds_on_a_retry_commits_once(pauses: list[float]) -> None:
    switch = Switch()
    harness = Harness(probe(switch))

    original = harness.behaviour._handle_message
    assert original is not None

    def flaky(state: Any) -> None:
        switch.failing = switch.calls < 1
        original(state)

    harness.behaviour._handle_message = flaky
    harness.feed(harness.record("a", "boom"))
    assert switch.calls == 2 and len(pauses) == 1
    assert harness.data("a") == {"count": 100, "boots": 0, "fired": []}
    assert harness.parked_items("a") == []


def test_work_for_a_parked_cell_waits_behind_it(pauses: list[float]) -> None:
    harness = parked_harness(Switch())
    harness.feed(harness.record("a", "add", {"by": 5}))
    items = harness.parked_items("a")
    assert [json.loads(item["value"])["type"] for item in items] == ["boom", "add"]
    assert harness.data("a") == {"count": 1, "boots": 0, "fired": []}, "nothing applied"
    harness.feed(harness.record("b", "add"))
    assert harness.data("b") is not None, "other cells keep flowing"


def test_release_runs_the_parked_work_again_in_order(pauses: list[float]) -> None:
    switch = Switch()
    harness = parked_harness(switch)
    harness.feed(harness.record("a", "add", {"by": 5}))
    switch.failing = False
    harness.release("a")
    assert harness.data("a") == {"count": 106, "boots": 0, "fired": []}
    assert harness.parked_items("a") == []
    assert harness.metrics.released == 1
    harness.feed(harness.record("a", "add"))
    assert harness.data("a") == {"count": 107, "boots": 0, "fired": []}, "no longer parked"


def test_release_keeps_the_origin_so_effect_ids_are_those_of_the_first_try(
    pauses: list[float],
) -> None:
    switch = Switch()
    harness = parked_harness(switch)
    record = harness.record("a", "emit")
    harness.feed(record)
    [item] = [i for i in harness.parked_items("a") if json.loads(i["value"])["type"] == "emit"]
    assert item["origin"] == f"{record.topic}/{record.partition}/{record.offset}"
    switch.failing = False
    harness.release("a")
    [effect] = harness.outputs("unit.effects")
    assert json.loads(effect.value or b"")["origin"] == item["origin"]


def test_release_with_skip_dead_letters_the_first_items(pauses: list[float]) -> None:
    switch = Switch()
    harness = parked_harness(switch)
    boom_offset = json.loads(harness.parked.lookup(b"a") or b"")["items"][0]["origin"]
    harness.feed(harness.record("a", "add", {"by": 5}))
    harness.release("a", skip=1)
    [letter] = harness.dead_letters.letters
    assert letter["reason"] == "discarded"
    assert f"{letter['topic']}/{letter['partition']}/{letter['offset']}" == boom_offset
    assert harness.data("a") == {"count": 6, "boots": 0, "fired": []}
    assert harness.parked_items("a") == []


def test_a_release_that_fails_again_parks_the_rest(pauses: list[float]) -> None:
    harness = parked_harness(Switch())
    harness.feed(harness.record("a", "add", {"by": 5}))
    harness.release("a")
    items = harness.parked_items("a")
    assert [json.loads(item["value"])["type"] for item in items] == ["boom", "add"]
    assert harness.metrics.released == 0


def test_a_parked_cell_is_not_booted(pauses: list[float]) -> None:
    harness = parked_harness(Switch())
    harness.feed(harness.record("b", "add"))
    harness.restart()
    harness.wake("a")
    harness.wake("b")
    assert harness.data("a") == {"count": 1, "boots": 0, "fired": []}
    assert harness.data("b") == {"count": 1, "boots": 1, "fired": []}
    assert harness.metrics.booted == 1


def test_release_of_a_cell_not_parked_changes_nothing() -> None:
    harness = Harness(probe())
    harness.feed(harness.record("a", "add"))
    before = list(harness.produced)
    harness.release("a")
    assert harness.produced == before
