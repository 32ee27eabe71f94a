"""Unit tests of stream_app.api.behaviour: callbacks, subclassing, loading and migration."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from stream_app import (
    Behaviour,
    CellState,
    DataVersionError,
    Exhausted,
    FiredTimer,
    RetryPolicy,
)
from stream_app.core.envelope import MessageTypes
from stream_app.testing.cells import cell_state


class Increment(BaseModel):
    by: int = 1


class Count(BaseModel):
    count: int
    label: str = "none"


def make_state(data: Count | None = None, **overrides: Any) -> CellState[Count]:
    return cell_state("counter", data=data, **overrides)


def counter(**options: Any) -> Behaviour[Count]:
    return Behaviour("counter", messages={"increment": Increment}, data=Count, **options)


# -- callbacks -------------------------------------------------------------------------------


def test_functional_callbacks_are_called_with_the_state() -> None:
    calls: list[tuple[str, CellState[Count]]] = []
    behaviour = counter(
        handle_message=lambda s: calls.append(("message", s)),
        on_boot=lambda s: calls.append(("boot", s)),
        on_timeout=lambda s: calls.append(("timeout", s)),
    )
    message_state = make_state()
    boot_state = make_state(Count(count=1), trigger="boot")
    timeout_state = make_state(
        Count(count=1), trigger="timeout", timer=FiredTimer(name="t", due_ms=5, payload=None)
    )
    behaviour.handle_message(message_state)
    behaviour.on_boot(boot_state)
    behaviour.on_timeout(timeout_state)
    assert calls == [("message", message_state), ("boot", boot_state), ("timeout", timeout_state)]


def test_a_callback_changes_the_state() -> None:
    def handle(state: CellState[Count]) -> None:
        state.data = Count(count=(state.data.count if state.data else 0) + 1)

    behaviour = counter(handle_message=handle)
    state = make_state()
    behaviour.handle_message(state)
    behaviour.handle_message(state)
    assert state.data == Count(count=2)


def test_default_callbacks_change_nothing() -> None:
    behaviour = counter()
    state = make_state(Count(count=3))
    behaviour.handle_message(state)
    behaviour.on_boot(state)
    behaviour.on_timeout(state)
    assert state.data == Count(count=3)
    assert state.timers == {}
    assert state._outputs.effects == []


def test_subclass_overrides_are_used() -> None:
    class Doubler(Behaviour[Count]):
        def handle_message(self, state: CellState[Count]) -> None:
            state.data = Count(count=2 * (state.data.count if state.data else 1))

        def on_boot(self, state: CellState[Count]) -> None:
            state.set_timer("after-boot", after=1)

    behaviour = Doubler("doubler", messages={"increment": Increment}, data=Count)
    state = make_state(Count(count=5))
    behaviour.handle_message(state)
    behaviour.on_boot(state)
    assert state.data == Count(count=10)
    assert state.timers == {"after-boot": 2_000}


def test_attributes_and_options() -> None:
    policy = RetryPolicy(attempts=7, backoff_s=0.5)
    behaviour = counter(version=3, retry=policy)
    assert behaviour.name == "counter"
    assert behaviour.version == 3
    assert behaviour.retry == replace(policy, on_exhausted=Exhausted.PARK)
    assert counter().retry is None, "without retry=, the worker's Settings.cell_retry applies"
    assert behaviour.data_model is Count
    assert isinstance(behaviour.message_types, MessageTypes)
    assert set(behaviour.message_types.types) == {"increment"}
    assert "counter" in repr(behaviour)
    assert "v3" in repr(behaviour)


# -- load and migrate ------------------------------------------------------------------------


def test_load_validates_data_of_the_current_version() -> None:
    assert counter(version=2).load(2, {"count": 4, "label": "x"}) == Count(count=4, label="x")


def test_load_migrates_older_data_with_the_migrate_function() -> None:
    seen: list[tuple[int, dict[str, Any]]] = []

    def migrate(version: int, data: dict[str, Any]) -> dict[str, Any]:
        seen.append((version, dict(data)))
        return {"count": data["n"], "label": f"from-v{version}"}

    behaviour = counter(version=3, migrate=migrate)
    assert behaviour.load(1, {"n": 9}) == Count(count=9, label="from-v1")
    assert seen == [(1, {"n": 9})]


def test_load_does_not_migrate_current_data() -> None:
    def migrate(version: int, data: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("current data must not be migrated")

    assert counter(version=2, migrate=migrate).load(2, {"count": 1}) == Count(count=1)


def test_older_data_without_migrate_is_read_as_is_with_defaults() -> None:
    assert counter(version=2).load(1, {"count": 6}) == Count(count=6, label="none")


def test_subclass_migrate_is_used_by_load() -> None:
    class Renaming(Behaviour[Count]):
        def migrate(self, version: int, data: dict[str, Any]) -> dict[str, Any]:
            return {"count": data["total"]}

    behaviour = Renaming("renaming", messages={"increment": Increment}, data=Count, version=2)
    assert behaviour.load(1, {"total": 11}) == Count(count=11)


def test_newer_data_is_refused() -> None:
    called: list[int] = []

    def migrate(version: int, data: dict[str, Any]) -> dict[str, Any]:
        called.append(version)
        return data

    behaviour = counter(version=2, migrate=migrate)
    with pytest.raises(DataVersionError, match="version 3") as caught:
        behaviour.load(3, {"count": 1})
    assert "deploy the newer code" in str(caught.value)
    assert called == []


def test_validation_failure_is_a_data_version_error() -> None:
    with pytest.raises(DataVersionError, match="cannot read stored data of version 1") as caught:
        counter().load(1, {"count": "many"})
    assert isinstance(caught.value.__cause__, ValidationError)


def test_failing_migration_is_a_data_version_error() -> None:
    def migrate(version: int, data: dict[str, Any]) -> dict[str, Any]:
        return {"count": data["missing"]}

    with pytest.raises(DataVersionError, match="missing") as caught:
        counter(version=2, migrate=migrate).load(1, {})
    assert isinstance(caught.value.__cause__, KeyError)


def test_migration_output_that_does_not_validate_is_a_data_version_error() -> None:
    behaviour = counter(version=2, migrate=lambda version, data: {"count": None})
    with pytest.raises(DataVersionError):
        behaviour.load(1, {"count": 1})


# -- validation of the definition ------------------------------------------------------------


@pytest.mark.parametrize("name", ["counter", "probe-2", "a.b_c", "X", "_private", "a" * 200])
def test_topic_safe_names_are_accepted(name: str) -> None:
    assert Behaviour(name, messages={"increment": Increment}, data=Count).name == name


@pytest.mark.parametrize(
    "name",
    ["", " ", "a b", "a/b", ".hidden", "a:b", "a\n", "tab\there", "ünï", "a*", "a" * 201],
)
def test_names_kafka_cannot_use_in_topic_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="behaviour name"):
        Behaviour(name, messages={"increment": Increment}, data=Count)


@pytest.mark.parametrize("version", [0, -1])
def test_versions_below_one_are_rejected(version: int) -> None:
    with pytest.raises(ValueError, match="version must be >= 1"):
        counter(version=version)


def test_a_retry_policy_that_does_not_park_is_rejected() -> None:
    with pytest.raises(ValueError, match="can only park"):
        counter(retry=RetryPolicy(on_exhausted=Exhausted.DEAD_LETTER))


def test_a_behaviour_needs_message_types() -> None:
    with pytest.raises(ValueError, match="no message types"):
        Behaviour("empty", messages={}, data=Count)
