"""The clock a runtime uses: the system clock by default, a driven one on request (tests only),
whose control topic is declared only then, and the clock records it reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream_app import Runtime
from stream_app.engine.ports import ManualClock, SystemClock
from stream_app.examples.counter import counter
from stream_app.kafka.clock import clock_value, parse_clock_value
from stream_app.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("STREAM_APP_") or name.upper() == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_the_system_clock_is_the_default_and_declares_no_clock_topic() -> None:
    runtime = Runtime(Settings(app_id="shop", partitions=4))
    runtime.behaviour(counter)
    assert isinstance(runtime.clock, SystemClock) and runtime.clock_feed is None
    assert runtime.engines["counter"].clock is runtime.clock
    assert "shop.clock" not in {t.name for t in runtime.topic_definitions()}
    assert runtime.clock.invocation_ms(1234) == 1234, "a message keeps its record's timestamp"


def test_stream_app_clock_driven_gives_the_engines_a_manual_clock_and_its_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAM_APP_CLOCK", "driven")
    settings = Settings(app_id="shop", partitions=4)
    assert (settings.clock, settings.clock_topic) == ("driven", "shop.clock")
    runtime = Runtime(settings)
    runtime.behaviour(counter)
    assert isinstance(runtime.clock, ManualClock)
    assert runtime.engines["counter"].clock is runtime.clock
    [topic] = [t for t in runtime.topic_definitions() if t.name == "shop.clock"]
    assert topic.partitions == 1 and topic.config["cleanup.policy"] == "compact"
    assert runtime.clock.invocation_ms(1234) == runtime.clock.now_ms()


def test_an_unknown_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="clock"):
        Settings(clock="wall")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "now_ms"),
    [
        (clock_value(1_800_000_000_000), 1_800_000_000_000),
        (b'{"now_ms": 5}', 5),
        (b'{"now_ms": "5"}', None),
        (b'{"now_ms": true}', None),
        (b'{"now": 5}', None),
        (b"[5]", None),
        (b"not json", None),
        (None, None),
    ],
)
def test_clock_records(value: bytes | None, now_ms: int | None) -> None:
    assert parse_clock_value(value) == now_ms
