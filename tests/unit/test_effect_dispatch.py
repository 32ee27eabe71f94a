"""Unit tests of EffectDispatcher: retries under a RetryPolicy, dead letters, async handlers.

The dispatcher is built on fakes of its ports (a dead-letter publisher that records, counters,
pauses that record instead of sleeping). This is not a Kafka mock: records are handed to
``dispatch`` directly, as the effects agent of :mod:`stream_app.kafka.agents` does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from stream_app import Effect
from stream_app.core.retry import HANDLER_RETRY, Exhausted, RetryPolicy
from stream_app.engine.effects import EffectDispatcher
from stream_app.engine.ports import Pauses
from tests.unit.engine.fakes import FakeDeadLetterPublisher


@dataclass(frozen=True)
class Record:
    """The parts of a Kafka record that dispatch reads."""

    value: bytes | None
    key: bytes | None = b"cell-1"
    topic: str = "app.effects"
    partition: int = 2
    offset: int = 17


@dataclass
class Counters:
    effects_done: int = 0
    effect_failures: int = 0
    effect_retries: int = 0


@dataclass
class Clock:
    """Pauses that are recorded, not slept; the jitter's random factor is fixed."""

    slept: list[float] = field(default_factory=list)
    factor: float = 0.5

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def pauses(self) -> Pauses:
        return Pauses(sleep=self.sleep, random_factor=lambda: self.factor)


@dataclass
class Harness:
    dispatcher: EffectDispatcher
    dead_letters: FakeDeadLetterPublisher
    counters: Counters
    clock: Clock


def harness(factor: float = 0.5) -> Harness:
    dead_letters, counters, clock = FakeDeadLetterPublisher(), Counters(), Clock(factor=factor)
    dispatcher = EffectDispatcher(dead_letters, counters, pauses=clock.pauses())
    return Harness(dispatcher, dead_letters, counters, clock)


def policy(attempts: int, backoff_s: float = 0.01, **more: Any) -> RetryPolicy:
    """A dead-lettering policy without jitter unless ``jitter`` is given."""
    more.setdefault("jitter", 0.0)
    return RetryPolicy(
        attempts=attempts, backoff_s=backoff_s, on_exhausted=Exhausted.DEAD_LETTER, **more
    )


def effect(kind: str = "email", **overrides: Any) -> Effect:
    fields: dict[str, Any] = {
        "id": "0123456789abcdef0123456789abcdef",
        "kind": kind,
        "payload": {"to": "a@example.com"},
        "behaviour": "signup",
        "cell_id": "cell-1",
        "origin": "app.signup.in/2/5",
        "emitted_ms": 1_700_000_000_000,
    }
    fields.update(overrides)
    return Effect(**fields)


def record_of(value: Effect) -> Record:
    return Record(value=value.model_dump_json().encode())


def test_a_handler_failing_twice_sees_the_same_effect_three_times() -> None:
    h = harness()
    seen: list[Effect] = []

    def flaky(e: Effect) -> None:
        seen.append(e)
        if len(seen) < 3:
            raise ConnectionError(f"attempt {len(seen)}")

    h.dispatcher.register("email", flaky, retry=policy(5))
    sent = effect()
    asyncio.run(h.dispatcher.dispatch(record_of(sent)))
    assert seen == [sent, sent, sent]
    assert {e.id for e in seen} == {sent.id}
    assert h.dead_letters.calls == []
    assert (h.counters.effect_failures, h.counters.effects_done) == (2, 1)
    assert h.counters.effect_retries == 2
    assert h.clock.slept == [0.01, 0.02]


def test_a_handler_that_always_fails_is_dead_lettered_after_its_last_attempt() -> None:
    h = harness()
    attempts: list[str] = []

    def broken(e: Effect) -> None:
        attempts.append(e.id)
        raise RuntimeError("smtp says no")

    h.dispatcher.register("email", broken, retry=policy(3))
    record = record_of(effect())
    asyncio.run(h.dispatcher.dispatch(record))
    assert len(attempts) == 3
    [letter] = h.dead_letters.calls
    assert letter["reason"] == "effect-failed"
    assert letter["error"] == "RuntimeError: smtp says no (after 3 attempts)"
    assert letter["behaviour"] == "effect:email"
    assert (letter["key"], letter["value"]) == (record.key, record.value)
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("app.effects", 2, 17)
    assert (h.counters.effect_failures, h.counters.effects_done) == (3, 0)
    assert h.counters.effect_retries == 2, "the last failed attempt is not retried"
    assert h.clock.slept == [0.01, 0.02], "no pause after the last attempt"


def test_backoff_doubles_up_to_its_cap() -> None:
    h = harness()

    def broken(e: Effect) -> None:
        raise RuntimeError("down")

    h.dispatcher.register("email", broken, retry=policy(6, max_backoff_s=0.05))
    asyncio.run(h.dispatcher.dispatch(record_of(effect())))
    assert h.clock.slept == [0.01, 0.02, 0.04, 0.05, 0.05]


@pytest.mark.parametrize(("factor", "scale"), [(0.0, 0.8), (0.5, 1.0), (0.999, 1.1996)])
def test_each_pause_is_scaled_by_the_jitter(factor: float, scale: float) -> None:
    h = harness(factor=factor)

    def broken(e: Effect) -> None:
        raise RuntimeError("down")

    retry = policy(4, backoff_s=1.0, max_backoff_s=3.0, jitter=0.2)
    h.dispatcher.register("email", broken, retry=retry)
    asyncio.run(h.dispatcher.dispatch(record_of(effect())))
    assert h.clock.slept == pytest.approx([1.0 * scale, 2.0 * scale, 3.0 * scale])


def test_the_default_policy_is_five_tries_from_a_fifth_of_a_second() -> None:
    h = harness(factor=0.5)  # the jitter's middle: no scaling
    tries: list[int] = []

    def broken(e: Effect) -> None:
        tries.append(1)
        raise RuntimeError("down")

    h.dispatcher.register("email", broken)
    asyncio.run(h.dispatcher.dispatch(record_of(effect())))
    assert len(tries) == 5
    assert h.clock.slept == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert HANDLER_RETRY.max_backoff_s == 5.0
    assert [c["reason"] for c in h.dead_letters.calls] == ["effect-failed"]


def test_a_single_attempt_handler_is_dead_lettered_without_a_pause() -> None:
    h = harness()

    def broken(e: Effect) -> None:
        raise RuntimeError("once")

    h.dispatcher.register("email", broken, retry=policy(1))
    asyncio.run(h.dispatcher.dispatch(record_of(effect())))
    assert [c["reason"] for c in h.dead_letters.calls] == ["effect-failed"]
    assert h.clock.slept == []


def test_real_pauses_are_taken_by_default() -> None:
    dead_letters, counters = FakeDeadLetterPublisher(), Counters()
    dispatcher = EffectDispatcher(dead_letters, counters)
    calls: list[float] = []

    async def flaky(e: Effect) -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) < 3:
            raise ConnectionError("not yet")

    dispatcher.register("email", flaky, retry=policy(3))
    asyncio.run(dispatcher.dispatch(record_of(effect())))
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.009
    assert calls[2] - calls[1] >= 0.019
    assert dead_letters.calls == []


def test_unknown_kind_is_dead_lettered_without_calling_a_handler() -> None:
    h = harness()
    called: list[Effect] = []
    h.dispatcher.register("email", called.append)
    h.dispatcher.register("sms", called.append)
    asyncio.run(h.dispatcher.dispatch(record_of(effect("fax"))))
    assert called == []
    [letter] = h.dead_letters.calls
    assert letter["reason"] == "no-effect-handler"
    assert letter["behaviour"] == "effect:fax"
    assert letter["error"] == "no handler for effect kind 'fax' (known: email, sms)"


@pytest.mark.parametrize(
    "value",
    [
        b"{not json",
        b"",
        None,
        b'{"kind": "email"}',
        b'["a list"]',
        b'{"id": "x", "kind": "email", "behaviour": "b", "cell_id": "c", "origin": "o",'
        b' "emitted_ms": 1, "extra": true}',
    ],
)
def test_malformed_effect_is_dead_lettered(value: bytes | None) -> None:
    h = harness()
    called: list[Effect] = []
    h.dispatcher.register("email", called.append)
    asyncio.run(h.dispatcher.dispatch(Record(value=value)))
    assert called == []
    [letter] = h.dead_letters.calls
    assert letter["reason"] == "malformed-effect"
    assert letter["behaviour"] == "effect:?"
    assert letter["value"] == value
    assert letter["error"].startswith("not an effect:")


def test_async_handlers_are_awaited() -> None:
    h = harness()
    done: list[str] = []
    attempts: list[int] = []

    async def send(e: Effect) -> None:
        attempts.append(1)
        await asyncio.sleep(0)  # really suspends: the dispatcher must await the handler
        if len(attempts) == 1:
            raise TimeoutError("slow")
        done.append(e.payload["to"])

    h.dispatcher.register("email", send, retry=policy(5))
    asyncio.run(h.dispatcher.dispatch(record_of(effect())))
    assert done == ["a@example.com"]
    assert len(attempts) == 2
    assert h.counters.effects_done == 1
    assert h.dead_letters.calls == []


def test_each_kind_goes_to_its_own_handler() -> None:
    h = harness()
    got: list[tuple[str, str]] = []
    h.dispatcher.register("email", lambda e: got.append(("email", e.kind)))
    h.dispatcher.register("sms", lambda e: got.append(("sms", e.kind)))

    async def scenario() -> None:
        for kind in ("sms", "email", "sms"):
            await h.dispatcher.dispatch(record_of(effect(kind)))

    asyncio.run(scenario())
    assert got == [("sms", "sms"), ("email", "email"), ("sms", "sms")]
    assert h.counters.effects_done == 3


def test_a_dead_lettered_effect_does_not_stop_the_next() -> None:
    h = harness()
    done: list[str] = []

    def handler(e: Effect) -> None:
        if e.payload == "bad":
            raise ValueError("bad payload")
        done.append(e.payload)

    h.dispatcher.register("email", handler, retry=policy(2))

    async def scenario() -> None:
        await h.dispatcher.dispatch(record_of(effect(payload="bad")))
        await h.dispatcher.dispatch(record_of(effect(payload="good")))

    asyncio.run(scenario())
    assert done == ["good"]
    assert [c["reason"] for c in h.dead_letters.calls] == ["effect-failed"]


def test_register_refuses_a_second_handler_for_a_kind() -> None:
    h = harness()
    h.dispatcher.register("email", lambda e: None)
    with pytest.raises(ValueError, match="already has a handler"):
        h.dispatcher.register("email", lambda e: None)


def test_register_refuses_a_policy_that_parks() -> None:
    h = harness()
    parks = RetryPolicy(attempts=2, on_exhausted=Exhausted.PARK)
    with pytest.raises(ValueError, match=r"effect handler of 'email'.*'park'.*dead-letter"):
        h.dispatcher.register("email", lambda e: None, retry=parks)
    assert h.dispatcher.handlers == {}


def test_a_policy_without_an_outcome_dead_letters() -> None:
    h = harness()
    h.dispatcher.register("email", lambda e: None, retry=RetryPolicy(attempts=2))
    assert h.dispatcher.handlers["email"].retry.on_exhausted is Exhausted.DEAD_LETTER
