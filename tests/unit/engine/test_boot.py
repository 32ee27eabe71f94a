"""Booting a newly owned partition: only behaviours whose boot can do something pass over
their cells (``Behaviour.boots``); the others still fire their timers after the move."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from stream_app import Behaviour, CellCulture, CellRun, CellState
from tests.unit.engine.fakes import Harness, now_ms
from tests.unit.engine.probe import Add, Tally, probe


class Arm(BaseModel):
    at_ms: int


def count_and_arm(state: CellState[Tally]) -> None:
    message = state.message
    assert message is not None
    data = state.data or Tally()
    data.count += 1
    if isinstance(message.body, Arm):
        state.set_timer("t", at=message.body.at_ms)
    state.data = data


def fired(state: CellState[Tally]) -> None:
    assert state.data is not None and state.timer is not None
    state.data.fired.append([state.timer.name])


def quiet() -> Behaviour[Tally]:
    """A behaviour with messages and timers and no ``on_boot``."""
    return Behaviour(
        "quiet",
        messages={"add": Add, "arm": Arm},
        data=Tally,
        handle_message=count_and_arm,
        on_timeout=fired,
    )


def test_a_behaviour_without_on_boot_skips_the_boot_pass_and_still_fires_its_timers() -> None:
    harness = Harness(quiet())
    harness.feed(
        harness.record("a", "arm", {"at_ms": now_ms() - 1_000}),
        harness.record("b", "add"),
    )
    harness.restart()  # a new owner of every partition
    harness.wake("a")
    harness.feed(harness.record("b", "add"))
    assert harness.metrics.booted == 0, "no cell read for a boot that does nothing"
    assert harness.data("a") == {"count": 1, "boots": 0, "fired": [["t"]]}
    assert harness.data("b") == {"count": 2, "boots": 0, "fired": []}


def test_a_behaviour_with_on_boot_boots_every_live_cell_on_the_new_owner() -> None:
    harness = Harness(probe())
    harness.feed(harness.record("a", "add"), harness.record("b", "add"))
    harness.restart()
    harness.wake("a")
    harness.wake("b")
    assert harness.metrics.booted == 2
    assert harness.data("a") == harness.data("b") == {"count": 1, "boots": 1, "fired": []}


class Plain(CellCulture[Tally]):
    name = "plain"
    messages: ClassVar[dict[str, type[BaseModel]]] = {"add": Add}
    data = Tally


class BootingRun(CellRun[Tally]):
    def on_boot(self) -> None:
        self.state.data = self.state.data


class WrappingRun(CellRun[Tally]):
    def around(self, call: Any) -> None:
        call()


class Booting(Plain):
    Run = BootingRun


class Wrapping(Plain):
    Run = WrappingRun


class Subclassed(Behaviour[Tally]):
    def on_boot(self, state: CellState[Tally]) -> None:
        """Boots by overriding."""


def test_boots_tells_whether_a_boot_can_do_anything() -> None:
    assert not quiet().boots
    assert probe().boots, "on_boot= given"
    assert Subclassed("sub", messages={"add": Add}, data=Tally).boots, "on_boot overridden"
    assert not Plain().boots
    assert Booting().boots, "the run overrides on_boot"
    assert Wrapping().boots, "the run's around wraps boots too"
