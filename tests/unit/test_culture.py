"""Unit tests of stream_app.api.culture: CellCulture dispatch to CellRun objects."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from stream_app import (
    Behaviour,
    CellCulture,
    CellRun,
    CellState,
    Exhausted,
    FiredTimer,
    RejectMessage,
    RetryPolicy,
)
from stream_app.errors import SchemaViolationError
from stream_app.testing.cells import cell_state

CALLS: list[tuple[Any, ...]] = []


class Add(BaseModel):
    by: int = 1


class SetValue(BaseModel):
    value: int


class Note(BaseModel):
    text: str = ""


class Tally(BaseModel):
    total: int = 0
    notes: list[str] = []


class TallyRun(CellRun[Tally]):
    def around(self, call: Callable[[], None]) -> None:
        CALLS.append(("before", self.cell_id))
        try:
            call()
        finally:
            CALLS.append(("after", self.cell_id))

    def on_add(self, body: Add) -> None:
        CALLS.append(("add", body.by))
        current = self.data or Tally()
        self.data = Tally(total=current.total + body.by, notes=current.notes)

    def on_set_value(self, body: SetValue) -> None:
        CALLS.append(("set-value", body.value))
        self.data = Tally(total=body.value)

    def on_audit_log(self, body: Note) -> None:
        CALLS.append(("audit.log", body.text))

    def on_boot(self) -> None:
        CALLS.append(("boot", self.state.trigger))

    def on_timeout(self, timer: FiredTimer) -> None:
        CALLS.append(("timeout", timer.name, timer.payload))


class TallyCulture(CellCulture[Tally]):
    name = "tally"
    messages: ClassVar[dict[str, type[BaseModel]]] = {
        "add": Add,
        "set-value": SetValue,
        "audit.log": Note,
        "ignored": Note,
    }
    data = Tally
    version = 2
    retry = RetryPolicy(attempts=4, backoff_s=0.05)
    Run: ClassVar[type[CellRun[Any]]] = TallyRun


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    CALLS.clear()


def make_state(behaviour: Behaviour[Any], **overrides: Any) -> CellState[Any]:
    return cell_state(behaviour, **({"trigger": "message", "now_ms": 5_000} | overrides))


def test_a_culture_is_a_behaviour_built_from_its_class_attributes() -> None:
    culture = TallyCulture()
    assert isinstance(culture, Behaviour)
    assert culture.name == "tally"
    assert culture.version == 2
    assert culture.retry == RetryPolicy(attempts=4, backoff_s=0.05, on_exhausted=Exhausted.PARK)
    assert culture.data_model is Tally
    assert set(culture.message_types.types) == {"add", "set-value", "audit.log", "ignored"}


def test_messages_go_to_on_type_methods() -> None:
    culture = TallyCulture()
    state = make_state(culture, message=("add", {"by": 3}))
    culture.handle_message(state)
    assert state.data == Tally(total=3)
    assert ("add", 3) in CALLS


def test_dashes_and_dots_in_type_names_become_underscores() -> None:
    culture = TallyCulture()
    state = make_state(culture, message=("set-value", {"value": 8}))
    culture.handle_message(state)
    culture.handle_message(make_state(culture, message=("audit.log", {"text": "hi"})))
    assert state.data == Tally(total=8)
    assert [c for c in CALLS if c[0] not in ("before", "after")] == [
        ("set-value", 8),
        ("audit.log", "hi"),
    ]


def test_around_wraps_every_call() -> None:
    culture = TallyCulture()
    culture.handle_message(make_state(culture, message=("add", {"by": 1})))
    culture.on_boot(make_state(culture, data=Tally(), trigger="boot"))
    timer = FiredTimer(name="remind", due_ms=4_000, payload={"n": 1})
    culture.on_timeout(make_state(culture, data=Tally(), trigger="timeout", timer=timer))
    with pytest.raises(RejectMessage):
        culture.handle_message(make_state(culture, message=("ignored", {})))
    assert CALLS == [
        ("before", "cell-1"),
        ("add", 1),
        ("after", "cell-1"),
        ("before", "cell-1"),
        ("boot", "boot"),
        ("after", "cell-1"),
        ("before", "cell-1"),
        ("timeout", "remind", {"n": 1}),
        ("after", "cell-1"),
        ("before", "cell-1"),
        ("after", "cell-1"),
    ]


def test_a_type_without_a_method_is_rejected_by_on_unhandled() -> None:
    culture = TallyCulture()
    state = make_state(culture, message=("ignored", {"text": "x"}), data=Tally(total=1))
    with pytest.raises(RejectMessage, match="'ignored' is not handled by tally"):
        culture.handle_message(state)
    assert state.data == Tally(total=1)


def test_on_unhandled_can_be_overridden() -> None:
    class Lenient(TallyRun):
        def on_unhandled(self, type: str, body: BaseModel) -> None:
            CALLS.append(("unhandled", type, body))

    class LenientCulture(TallyCulture):
        Run = Lenient

    culture = LenientCulture()
    culture.handle_message(make_state(culture, message=("ignored", {"text": "x"})))
    assert ("unhandled", "ignored", Note(text="x")) in CALLS


def test_around_can_translate_exceptions() -> None:
    class Strict(CellRun[Tally]):
        def around(self, call: Callable[[], None]) -> None:
            try:
                call()
            except ValueError as exc:
                raise RejectMessage(f"{self.display_id}: {exc}") from exc

        def on_add(self, body: Add) -> None:
            raise ValueError(f"cannot add {body.by}")

    class StrictCulture(TallyCulture):
        Run = Strict

    culture = StrictCulture()
    with pytest.raises(RejectMessage, match="cell-1: cannot add 2"):
        culture.handle_message(make_state(culture, message=("add", {"by": 2})))


def test_boot_and_timeout_reach_the_run_with_the_state() -> None:
    seen: list[Any] = []

    class Watching(CellRun[Tally]):
        def on_boot(self) -> None:
            seen.append(("boot", self.state.trigger, self.data))
            self.state.set_timer("after-boot", after=1)

        def on_timeout(self, timer: FiredTimer) -> None:
            seen.append(("timeout", timer))
            self.data = None

    class WatchingCulture(TallyCulture):
        Run = Watching

    culture = WatchingCulture()
    boot = make_state(culture, data=Tally(total=2), trigger="boot")
    culture.on_boot(boot)
    timer = FiredTimer(name="t", due_ms=1, payload=None, missed=3, recurring=True)
    timeout = make_state(culture, data=Tally(), trigger="timeout", timer=timer)
    culture.on_timeout(timeout)
    assert seen == [("boot", "boot", Tally(total=2)), ("timeout", timer)]
    assert boot.timers == {"after-boot": 6_000}
    assert timeout.data is None


def test_default_run_hooks_do_nothing_and_reject_messages() -> None:
    class Plain(CellCulture[Tally]):
        name = "plain"
        messages: ClassVar[dict[str, type[BaseModel]]] = {"add": Add}
        data = Tally

    culture = Plain()
    state = make_state(culture, data=Tally(total=1), trigger="boot")
    culture.on_boot(state)
    culture.on_timeout(
        make_state(culture, data=Tally(), timer=FiredTimer(name="t", due_ms=1, payload=None))
    )
    assert state.data == Tally(total=1)
    with pytest.raises(RejectMessage):
        culture.handle_message(make_state(culture, message=("add", {})))


def test_each_invocation_gets_a_new_run_around_its_own_state() -> None:
    runs: list[CellRun[Tally]] = []

    class Counting(CellRun[Tally]):
        def on_add(self, body: Add) -> None:
            runs.append(self)

    class CountingCulture(TallyCulture):
        Run = Counting

    culture = CountingCulture()
    states = [make_state(culture, message=("add", {})) for _ in range(2)]
    for state in states:
        culture.handle_message(state)
    assert [type(r) for r in runs] == [Counting, Counting]
    assert runs[0] is not runs[1]
    assert [r.state for r in runs] == states


def test_display_id_override_is_used_in_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    class Pretty(CellRun[Tally]):
        @property
        def display_id(self) -> str:
            return f"Tally #{self.cell_id.removeprefix('cell-')}"

        def on_add(self, body: Add) -> None:
            self.log.info("adding %d", body.by)

    class PrettyCulture(TallyCulture):
        Run = Pretty

    culture = PrettyCulture()
    with caplog.at_level(logging.INFO, logger="stream_app.cells.tally"):
        culture.handle_message(make_state(culture, message=("add", {"by": 4})))
    [record] = [r for r in caplog.records if r.name == "stream_app.cells.tally"]
    assert record.getMessage() == "tally/Tally #1: adding 4"
    assert record.__dict__["cell_id"] == "cell-1"


def test_run_exposes_the_cell_and_its_data() -> None:
    culture = TallyCulture()
    state = make_state(culture, data=Tally(total=7))
    run = TallyRun(state)
    assert run.cell_id == "cell-1"
    assert run.display_id == "cell-1"
    assert run.data == Tally(total=7)
    run.data = Tally(total=8)
    assert state.data == Tally(total=8)


@pytest.mark.parametrize("missing", ["name", "messages", "data"])
def test_missing_class_attributes_are_a_type_error(missing: str) -> None:
    attributes: dict[str, Any] = {"name": "incomplete", "messages": {"add": Add}, "data": Tally}
    del attributes[missing]
    incomplete = type("Incomplete", (CellCulture,), attributes)
    with pytest.raises(TypeError, match=f"Incomplete must define the class attribute '{missing}'"):
        incomplete()


@pytest.mark.parametrize("type_name", ["boot", "timeout", "unhandled"])
def test_message_types_that_would_call_run_hooks_are_refused(type_name: str) -> None:
    clashing = type(
        "Clashing",
        (CellCulture,),
        {"name": "clashing", "messages": {type_name: Add, "add": Add}, "data": Tally},
    )
    with pytest.raises(TypeError, match=f"on_{type_name}"):
        clashing()


@pytest.mark.parametrize("by", ['"2"', "true", "2.0"])
def test_a_cultures_messages_are_validated_strictly(by: str) -> None:
    culture = TallyCulture()
    value = f'{{"type": "add", "body": {{"by": {by}}}}}'.encode()
    with pytest.raises(SchemaViolationError, match=r"tally: add\.body\.by") as info:
        culture.message_types.decode(b"cell-1", value, max_bytes=10_000)
    assert info.value.reason == "schema"
