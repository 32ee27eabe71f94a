"""Unit tests of stream_app.core.origin: each kind's string form, and parse reading it back."""

from __future__ import annotations

import pytest

from stream_app.core.origin import (
    BootOrigin,
    InjectOrigin,
    Origin,
    RecordOrigin,
    TimerOrigin,
    parse,
)


@pytest.mark.parametrize(
    ("origin", "text"),
    [
        (RecordOrigin("app.probe.in", 3, 17), "app.probe.in/3/17"),
        (BootOrigin(2, "0a1b2c3d4e5f"), "boot/2/0a1b2c3d4e5f"),
        (BootOrigin(0, "123456789012"), "boot/0/123456789012"),
        (TimerOrigin("remind", 1_700_000_000_000), "timer/remind/1700000000000"),
        (TimerOrigin("reminder:tea/2", 5), "timer/reminder:tea/2/5"),
        (InjectOrigin("9f86d081"), "inject/9f86d081"),
    ],
)
def test_the_string_form_is_the_stored_one_and_parses_back(origin: Origin, text: str) -> None:
    assert str(origin) == text
    assert parse(text) == origin


@pytest.mark.parametrize(
    "text",
    ["", "nothing", "topic/1", "topic/x/2", "boot/x/gen", "boot/1", "timer/name", "inject/"],
)
def test_text_that_is_no_origin_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        parse(text)
