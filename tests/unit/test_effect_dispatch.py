"""Unit tests of EffectDispatcher.dispatch: retries, dead letters and async handlers.

The dispatcher is given a stand-in for the runtime holding only what ``register`` and
``dispatch`` touch (metrics, the dead-letter sink, the app's ``agent`` decorator). This is not a
Kafka mock: records are handed to ``dispatch`` directly, as the effects agent would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from stream_app import Effect
from stream_app.engine import effects as dispatcher_module
from stream_app.engine.effects import EffectDispatcher
from stream_app.runtime import RuntimeMetrics


@dataclass
class Record:
    """The parts of a Kafka record that dispatch reads."""

    value: bytes | None
    key: bytes | None = b"cell-1"
    topic: str = "app.effects"
    partition: int = 2
    offset: int = 17


@dataclass
class DeadLetters:
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def publish_record(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


@dataclass
class App:
    agents: list[tuple[Any, str]] = field(default_factory=list)

    def agent(self, channel: Any, *, name: str) -> Callable[[Any], Any]:
        self.agents.append((channel, name))
        return lambda fn: fn


@dataclass
class StandInRuntime:
    metrics: RuntimeMetrics = field(default_factory=RuntimeMetrics)
    dead_letters: DeadLetters = field(default_factory=DeadLetters)
    app: App = field(default_factory=App)
    effects_topic: object = field(default_factory=object)


def make_dispatcher() -> tuple[EffectDispatcher, StandInRuntime]:
    runtime = StandInRuntime()
    return EffectDispatcher(cast(Any, runtime)), runtime


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


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the dispatcher's backoff pauses instead of sleeping them."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(dispatcher_module, "asyncio", SimpleNamespace(sleep=sleep))
    return delays


def test_a_handler_failing_twice_sees_the_same_effect_three_times(sleeps: list[float]) -> None:
    dispatcher, runtime = make_dispatcher()
    seen: list[Effect] = []

    def flaky(e: Effect) -> None:
        seen.append(e)
        if len(seen) < 3:
            raise ConnectionError(f"attempt {len(seen)}")

    dispatcher.register("email", flaky, max_attempts=5, backoff_s=0.01)
    sent = effect()
    asyncio.run(dispatcher.dispatch(record_of(sent)))
    assert seen == [sent, sent, sent]
    assert {e.id for e in seen} == {sent.id}
    assert runtime.dead_letters.calls == []
    assert runtime.metrics.effect_failures == 2
    assert runtime.metrics.effects_done == 1
    assert sleeps == [0.01, 0.02]


def test_a_handler_that_always_fails_is_dead_lettered_after_max_attempts(
    sleeps: list[float],
) -> None:
    dispatcher, runtime = make_dispatcher()
    attempts: list[str] = []

    def broken(e: Effect) -> None:
        attempts.append(e.id)
        raise RuntimeError("smtp says no")

    dispatcher.register("email", broken, max_attempts=3, backoff_s=0.01)
    record = record_of(effect())
    asyncio.run(dispatcher.dispatch(record))
    assert len(attempts) == 3
    [letter] = runtime.dead_letters.calls
    assert letter["reason"] == "effect-failed"
    assert letter["error"] == "RuntimeError: smtp says no (after 3 attempts)"
    assert letter["behaviour"] == "effect:email"
    assert (letter["key"], letter["value"]) == (record.key, record.value)
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("app.effects", 2, 17)
    assert runtime.metrics.effect_failures == 3
    assert runtime.metrics.effects_done == 0
    assert sleeps == [0.01, 0.02]


def test_backoff_doubles_up_to_its_maximum(sleeps: list[float]) -> None:
    dispatcher, _ = make_dispatcher()

    def broken(e: Effect) -> None:
        raise RuntimeError("down")

    dispatcher.register("email", broken, max_attempts=6, backoff_s=0.01, max_backoff_s=0.05)
    asyncio.run(dispatcher.dispatch(record_of(effect())))
    assert sleeps == [0.01, 0.02, 0.04, 0.05, 0.05]


def test_a_single_attempt_handler_is_dead_lettered_without_a_pause(sleeps: list[float]) -> None:
    dispatcher, runtime = make_dispatcher()

    def broken(e: Effect) -> None:
        raise RuntimeError("once")

    dispatcher.register("email", broken, max_attempts=1)
    asyncio.run(dispatcher.dispatch(record_of(effect())))
    assert [c["reason"] for c in runtime.dead_letters.calls] == ["effect-failed"]
    assert sleeps == []


def test_real_backoff_pauses_between_attempts() -> None:
    dispatcher, runtime = make_dispatcher()
    calls: list[float] = []

    async def flaky(e: Effect) -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) < 3:
            raise ConnectionError("not yet")

    dispatcher.register("email", flaky, max_attempts=3, backoff_s=0.01)
    asyncio.run(dispatcher.dispatch(record_of(effect())))
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.009
    assert calls[2] - calls[1] >= 0.019
    assert runtime.dead_letters.calls == []


def test_unknown_kind_is_dead_lettered_without_calling_a_handler() -> None:
    dispatcher, runtime = make_dispatcher()
    called: list[Effect] = []
    dispatcher.register("email", called.append)
    dispatcher.register("sms", called.append)
    asyncio.run(dispatcher.dispatch(record_of(effect("fax"))))
    assert called == []
    [letter] = runtime.dead_letters.calls
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
    dispatcher, runtime = make_dispatcher()
    called: list[Effect] = []
    dispatcher.register("email", called.append)
    asyncio.run(dispatcher.dispatch(Record(value=value)))
    assert called == []
    [letter] = runtime.dead_letters.calls
    assert letter["reason"] == "malformed-effect"
    assert letter["behaviour"] == "effect:?"
    assert letter["value"] == value
    assert letter["error"].startswith("not an effect:")


def test_async_handlers_are_awaited(sleeps: list[float]) -> None:
    dispatcher, runtime = make_dispatcher()
    done: list[str] = []
    attempts: list[int] = []

    async def send(e: Effect) -> None:
        attempts.append(1)
        await asyncio.sleep(0)  # really suspends: the dispatcher must await the handler
        if len(attempts) == 1:
            raise TimeoutError("slow")
        done.append(e.payload["to"])

    dispatcher.register("email", send, backoff_s=0.01)
    asyncio.run(dispatcher.dispatch(record_of(effect())))
    assert done == ["a@example.com"]
    assert len(attempts) == 2
    assert runtime.metrics.effects_done == 1
    assert runtime.dead_letters.calls == []


def test_each_kind_goes_to_its_own_handler() -> None:
    dispatcher, runtime = make_dispatcher()
    got: list[tuple[str, str]] = []
    dispatcher.register("email", lambda e: got.append(("email", e.kind)))
    dispatcher.register("sms", lambda e: got.append(("sms", e.kind)))

    async def scenario() -> None:
        for kind in ("sms", "email", "sms"):
            await dispatcher.dispatch(record_of(effect(kind)))

    asyncio.run(scenario())
    assert got == [("sms", "sms"), ("email", "email"), ("sms", "sms")]
    assert runtime.metrics.effects_done == 3


def test_a_dead_lettered_effect_does_not_stop_the_next(sleeps: list[float]) -> None:
    dispatcher, runtime = make_dispatcher()
    done: list[str] = []

    def handler(e: Effect) -> None:
        if e.payload == "bad":
            raise ValueError("bad payload")
        done.append(e.payload)

    dispatcher.register("email", handler, max_attempts=2, backoff_s=0.01)

    async def scenario() -> None:
        await dispatcher.dispatch(record_of(effect(payload="bad")))
        await dispatcher.dispatch(record_of(effect(payload="good")))

    asyncio.run(scenario())
    assert done == ["good"]
    assert [c["reason"] for c in runtime.dead_letters.calls] == ["effect-failed"]


def test_register_starts_one_effects_agent_for_all_kinds() -> None:
    dispatcher, runtime = make_dispatcher()
    dispatcher.register("email", lambda e: None)
    dispatcher.register("sms", lambda e: None)
    assert runtime.app.agents == [(runtime.effects_topic, "stream_app.effects")]


def test_register_refuses_a_second_handler_for_a_kind() -> None:
    dispatcher, _ = make_dispatcher()
    dispatcher.register("email", lambda e: None)
    with pytest.raises(ValueError, match="already has a handler"):
        dispatcher.register("email", lambda e: None)


def test_register_refuses_fewer_than_one_attempt() -> None:
    dispatcher, _ = make_dispatcher()
    with pytest.raises(ValueError, match="max_attempts"):
        dispatcher.register("email", lambda e: None, max_attempts=0)
    assert dispatcher.handlers == {}
