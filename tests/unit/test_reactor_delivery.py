"""Unit tests of Reactor.deliver, and of the agents that feed the reactor and the effects.

The reactor is built on fakes of its ports (a dead-letter publisher that records, pauses that
record instead of sleeping); records are handed to ``deliver`` directly, as the agent of
:mod:`stream_app.kafka.agents` does. The wiring tests use a real runtime whose Faust app is
never started.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from stream_app import Behaviour, Effect, ReactorRecord, Runtime
from stream_app.core.retry import Exhausted, RetryPolicy
from stream_app.engine.ports import Pauses
from stream_app.engine.reactor import Reactor
from stream_app.kafka.agents import reactor_record
from stream_app.settings import Settings
from tests.unit.engine.fakes import FakeDeadLetterPublisher

TOPIC = "unit.orders"


@dataclass
class Harness:
    reactor: Reactor
    dead_letters: FakeDeadLetterPublisher
    slept: list[float]


def harness() -> Harness:
    dead_letters, slept = FakeDeadLetterPublisher(), []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    reactor = Reactor(dead_letters, pauses=Pauses(sleep=sleep, random_factor=lambda: 0.5))
    return Harness(reactor, dead_letters, slept)


def record(offset: int = 41) -> ReactorRecord:
    return ReactorRecord(
        topic=TOPIC,
        partition=3,
        offset=offset,
        key=b"order-1",
        value=b"{}",
        headers=(),
        timestamp_ms=1_700_000_000_000,
    )


def policy(attempts: int) -> RetryPolicy:
    return RetryPolicy(
        attempts=attempts, backoff_s=0.1, jitter=0.0, on_exhausted=Exhausted.DEAD_LETTER
    )


def test_every_handler_gets_each_record_in_registration_order() -> None:
    h = harness()
    seen: list[tuple[str, int]] = []
    h.reactor.register(TOPIC, lambda r: seen.append(("first", r.offset)), name="first")

    async def second(r: ReactorRecord) -> None:
        await asyncio.sleep(0)
        seen.append(("second", r.offset))

    h.reactor.register(TOPIC, second, name="second")

    async def scenario() -> None:
        await h.reactor.deliver(record(1))
        await h.reactor.deliver(record(2))

    asyncio.run(scenario())
    assert seen == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]
    assert h.dead_letters.calls == []
    assert h.reactor.topics == [TOPIC]


def test_a_failing_handler_is_retried_alone_with_capped_doubling_pauses() -> None:
    h = harness()
    calls: list[str] = []
    h.reactor.register(TOPIC, lambda r: calls.append("steady"), name="steady")

    def flaky(r: ReactorRecord) -> None:
        calls.append("flaky")
        if calls.count("flaky") < 4:
            raise ConnectionError("not yet")

    retry = RetryPolicy(
        attempts=5, backoff_s=0.1, max_backoff_s=0.25, on_exhausted=Exhausted.DEAD_LETTER
    )
    h.reactor.register(TOPIC, flaky, name="flaky", retry=retry)
    asyncio.run(h.reactor.deliver(record()))
    assert calls == ["steady", "flaky", "flaky", "flaky", "flaky"]
    assert h.slept == pytest.approx([0.1, 0.2, 0.25])
    assert h.dead_letters.calls == []


def test_a_record_a_handler_keeps_failing_on_is_dead_lettered_and_the_others_still_get_it() -> None:
    h = harness()
    later: list[int] = []

    def broken(r: ReactorRecord) -> None:
        raise RuntimeError("no database")

    h.reactor.register(TOPIC, broken, name="audit", retry=policy(3))
    h.reactor.register(TOPIC, lambda r: later.append(r.offset), name="after")
    asyncio.run(h.reactor.deliver(record(41)))
    assert h.dead_letters.calls == [
        {
            "key": b"order-1",
            "value": b"{}",
            "reason": "handler-failed",
            "error": "RuntimeError: no database (after 3 attempts)",
            "behaviour": "handler:audit",
            "topic": TOPIC,
            "partition": 3,
            "offset": 41,
        }
    ]
    assert later == [41]
    assert h.slept == [0.1, 0.2]


def test_a_handler_is_named_by_its_qualified_name_by_default() -> None:
    h = harness()

    def audit_trail(r: ReactorRecord) -> None:
        raise RuntimeError("down")

    h.reactor.register(TOPIC, audit_trail, retry=policy(1))
    asyncio.run(h.reactor.deliver(record()))
    [letter] = h.dead_letters.calls
    assert letter["behaviour"].startswith("handler:test_a_handler_is_named_by")
    assert letter["behaviour"].endswith("audit_trail")


def test_register_refuses_a_policy_that_parks() -> None:
    h = harness()
    parks = RetryPolicy(on_exhausted=Exhausted.PARK)
    with pytest.raises(ValueError, match=r"handler audit on 'unit\.orders'.*can only dead-letter"):
        h.reactor.register(TOPIC, lambda r: None, name="audit", retry=parks)
    assert h.reactor.handlers == {}


def test_a_faust_message_becomes_a_reactor_record() -> None:
    message = SimpleNamespace(
        topic=TOPIC,
        partition=1,
        offset=9,
        key=b"k",
        value=b"v",
        headers=[("trace", b"t-1"), ("retries", "2")],
        timestamp=1_700_000_000.25,
    )
    assert reactor_record(message) == ReactorRecord(
        topic=TOPIC,
        partition=1,
        offset=9,
        key=b"k",
        value=b"v",
        headers=(("trace", b"t-1"), ("retries", b"2")),
        timestamp_ms=1_700_000_000_250,
    )


def test_the_runtime_runs_one_effects_agent_and_one_agent_per_handler_topic() -> None:
    runtime = Runtime(Settings(app_id="unit", partitions=2, bootstrap_servers="127.0.0.1:9"))
    try:

        def email(e: Effect) -> None:
            """An effect handler (never called here)."""

        def sms(e: Effect) -> None:
            """Another (never called here)."""

        def first(r: ReactorRecord) -> None:
            """A reactor handler (never called here)."""

        runtime.effect_handler("email")(email)
        runtime.effect_handler("sms")(sms)
        runtime.handler(TOPIC)(first)
        runtime.handler(TOPIC, name="second")(first)
        runtime.handler("unit.other")(first)
        names = sorted(str(name) for name in runtime.app.agents)
        assert names == [
            "stream_app.effects",
            "stream_app.reactor.unit.orders",
            "stream_app.reactor.unit.other",
        ]
        assert sorted(runtime.effects.handlers) == ["email", "sms"]
        assert [r.name for r in runtime.reactor.handlers[TOPIC]] == [
            first.__qualname__,
            "second",
        ]
    finally:
        runtime.app.loop.close()


def test_handlers_and_cells_without_a_policy_take_the_settings_policies() -> None:
    settings = Settings(
        app_id="unit",
        partitions=2,
        bootstrap_servers="127.0.0.1:9",
        cell_retry=RetryPolicy(attempts=7),
        handler_retry=RetryPolicy(attempts=2, backoff_s=1.0),
    )
    runtime = Runtime(settings)
    try:

        def email(e: Effect) -> None:
            """An effect handler (never called here)."""

        def audit(r: ReactorRecord) -> None:
            """A reactor handler (never called here)."""

        own = RetryPolicy(attempts=9)
        runtime.effect_handler("email")(email)
        runtime.effect_handler("sms", retry=own)(email)
        runtime.handler(TOPIC)(audit)
        assert runtime.effects.handlers["email"].retry == RetryPolicy(
            attempts=2, backoff_s=1.0, on_exhausted=Exhausted.DEAD_LETTER
        )
        assert runtime.effects.handlers["sms"].retry.attempts == 9
        assert runtime.reactor.handlers[TOPIC][0].retry.attempts == 2
        runtime.behaviour(probe_behaviour("plain", retry=None))
        runtime.behaviour(probe_behaviour("own", retry=RetryPolicy(attempts=4)))
        assert runtime.engines["plain"].retry.attempts == 7
        assert runtime.engines["own"].retry.attempts == 4
    finally:
        runtime.app.loop.close()


def probe_behaviour(name: str, retry: RetryPolicy | None) -> Behaviour[Any]:
    """A behaviour with no callbacks, for checking what the runtime makes of its policy."""
    return Behaviour(name, messages={"noop": BaseModel}, data=BaseModel, retry=retry)
