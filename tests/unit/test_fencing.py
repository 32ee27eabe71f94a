"""Which guarantee a runtime runs under: ``auto`` is exactly-once as soon as an entity needs
fencing, and an explicit ``at_least_once`` refuses such an entity (no broker needed)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from stream_app import Entity, Runtime, Settings
from stream_app.errors import ConfigError
from stream_app.settings import ProcessingGuarantee, resolve_guarantee


class Count(BaseModel):
    value: int = 0


class Add(BaseModel):
    by: int = 1


def entity(name: str, *, fencing: bool = True) -> Entity[Count]:
    return Entity(
        name,
        state=Count,
        messages={"add": Add},
        events={"added": Add},
        init=Count,
        handle=lambda message, state: message,
        update=lambda event, state: Count(value=state.value + event.by),
        fencing=fencing,
    )


def runtime(guarantee: ProcessingGuarantee) -> Runtime:
    return Runtime(Settings(app_id="fencing", processing_guarantee=guarantee))


@pytest.mark.parametrize(
    ("requested", "fencing", "resolved"),
    [
        ("auto", False, "at_least_once"),
        ("auto", True, "exactly_once"),
        ("at_least_once", False, "at_least_once"),
        ("at_least_once", True, "at_least_once"),
        ("exactly_once", False, "exactly_once"),
        ("exactly_once", True, "exactly_once"),
    ],
)
def test_resolve_guarantee(requested: ProcessingGuarantee, fencing: bool, resolved: str) -> None:
    assert resolve_guarantee(requested, fencing=fencing) == resolved


def test_by_default_a_runtime_without_entities_runs_at_least_once() -> None:
    rt = runtime("auto")
    assert Settings().processing_guarantee == "auto"
    assert rt.guarantee == "at_least_once"
    assert not rt.app.exactly_once and not rt.batch_input.exactly_once


def test_by_default_an_entity_makes_the_runtime_exactly_once_before_it_starts() -> None:
    rt = runtime("auto")
    rt.entity(entity("counter"))
    assert rt.guarantee == "exactly_once"
    # What the worker reads when it starts: the input's transactions, the consumer's
    # read_committed, the rebuild of unclean tables.
    assert rt.app.exactly_once and rt.batch_input.exactly_once
    assert rt.batch_input.stats()["exactly_once"] is True


def test_an_explicit_at_least_once_refuses_an_entity_that_needs_fencing() -> None:
    rt = runtime("at_least_once")
    with pytest.raises(ConfigError, match=r"entity 'counter' needs fencing.*fencing=False"):
        rt.entity(entity("counter"))
    assert "counter" not in rt.entities and "counter" not in rt.engines, "not registered"


def test_an_entity_that_opts_out_runs_under_either_guarantee() -> None:
    alos = runtime("at_least_once")
    alos.entity(entity("counter", fencing=False))
    assert alos.guarantee == "at_least_once"
    auto = runtime("auto")
    auto.entity(entity("counter", fencing=False))
    assert auto.guarantee == "at_least_once", "nothing needs fencing"
    auto.entity(entity("account"))
    after: str = auto.guarantee
    assert after == "exactly_once", "one entity that needs it is enough"
    eos = runtime("exactly_once")
    eos.entity(entity("counter", fencing=False))
    assert eos.guarantee == "exactly_once", "transactions fence it anyway"


def test_require_fencing_is_open_to_other_layers() -> None:
    rt = runtime("auto")
    rt.require_fencing("atomic log 'lots'")
    assert rt.guarantee == "exactly_once"
    with pytest.raises(ConfigError, match=r"atomic log 'lots' needs fencing.*the default\)$"):
        runtime("at_least_once").require_fencing("atomic log 'lots'")
