"""The pure helpers of the parked and dead-letter pages (stream_app.console.letters)."""

from __future__ import annotations

import pytest

from stream_app.console.letters import (
    HexLine,
    error_reason,
    filter_letters,
    hex_dump,
    parse_selection,
    parse_skip,
    release_summary,
    source_of,
    spans_of,
    text_of,
    valid_text,
)
from stream_app.console.pagekit import Invalid
from stream_app.console.when import at_ms
from stream_app.core.dead_letters import DeadLetter
from stream_app.kafka.reading import Record
from stream_app.ops.redrive import decode_records


def test_hex_dump_shows_offsets_hex_and_printable_text() -> None:
    lines = hex_dump(b'{"a": 1}\x00\xff<script>', width=8)
    assert lines == [
        HexLine("00000000", "7b 22 61 22 3a 20 31 7d", '{"a": 1}'),
        HexLine("00000008", "00 ff 3c 73 63 72 69 70", "..<scrip"),
        HexLine("00000010", "74 3e", "t>"),
    ]


def test_hex_dump_stops_at_its_limit_and_is_empty_for_no_bytes() -> None:
    lines = hex_dump(bytes(range(100)), width=16, limit=40)
    assert [line.offset for line in lines] == ["00000000", "00000010", "00000020"]
    assert lines[-1].hex == "20 21 22 23 24 25 26 27"
    assert hex_dump(b"") == []


def test_text_of_replaces_undecodable_bytes_and_shows_control_characters() -> None:
    assert text_of("héllo".encode()) == "héllo"
    assert text_of(b"a\xffb") == "a\ufffdb"
    assert text_of(b"a\x00b\r\n\tc\x7f") == "a\u2400b\u240d\n\tc\u2421"
    assert text_of(None) == "<no value>"


def test_at_ms() -> None:
    assert at_ms(1_700_000_000_123) == "2023-11-14 22:13:20.123 UTC"
    assert at_ms(None) == "-"
    assert at_ms(-1) == "-"


def test_error_reason_is_the_error_type() -> None:
    assert (
        error_reason("InsufficientFunds: withdraw 99 from a balance of 10") == "InsufficientFunds"
    )
    assert error_reason("something went wrong: badly") == "error"
    assert error_reason("no colon") == "error"


def test_valid_text() -> None:
    assert valid_text("  w-1 ", "cell id", required=True) == "w-1"
    assert valid_text("", "reason", required=False) is None
    with pytest.raises(Invalid, match="cell id is required"):
        valid_text("  ", "cell id", required=True)
    with pytest.raises(Invalid, match="longer than 1000") as refused:
        valid_text("x" * 1001, "cell id", required=True)
    assert refused.value.status == 400


@pytest.mark.parametrize("given, expected", [(None, 0), ("", 0), ("1", 1), (" 7 ", 7)])
def test_parse_skip(given: str | None, expected: int) -> None:
    assert parse_skip(given) == expected


@pytest.mark.parametrize("given", ["-1", "1.5", "one", "100001", "9" * 50])
def test_parse_skip_refuses(given: str) -> None:
    with pytest.raises(Invalid, match="skip must be a whole number"):
        parse_skip(given)


def test_parse_selection_reads_every_position_field_in_order_without_repeats() -> None:
    form = {"csrf": "t", "position-1": "0:12", "position-2": "3:4", "position": "0:12, 1:1"}
    assert parse_selection(form) == [(0, 12), (3, 4), (1, 1)]


def test_the_offsets_read_for_a_selection_span_each_partitions_positions() -> None:
    assert spans_of([(0, 12), (3, 4), (0, 7), (0, 30)]) == {0: (7, 31), 3: (4, 5)}


@pytest.mark.parametrize(
    "form, message",
    [
        ({"csrf": "t"}, "select at least one"),
        ({"position": "0:1 x:2"}, "expected PARTITION:OFFSET"),
        ({"position": "-1:2"}, "expected PARTITION:OFFSET"),
        ({"position": " ".join(f"0:{i}" for i in range(501))}, "at most 500"),
        ({"position": "2:5 1:0 2:10005"}, "partition 2 lie 10001 offsets apart"),
    ],
)
def test_parse_selection_refuses(form: dict[str, str], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        parse_selection(form)


def test_release_summary() -> None:
    assert release_summary("wallet", "w-2", 3, 0) == (
        "release of wallet/w-2 sent: 3 waiting item(s) run again"
    )
    assert release_summary("wallet", "w-2", 3, 1).endswith(
        "2 waiting item(s) run again, the first 1 go to the dead-letter topic (reason discarded)"
    )
    assert "0 waiting item(s) run again, the first 2 go" in release_summary("w", "c", 2, 9)


def test_source_of_a_record_and_of_other_work() -> None:
    assert source_of("app.wallet.in/2/41") == {
        "topic": "app.wallet.in",
        "partition": 2,
        "offset": 41,
    }
    assert source_of("timer/tick/1000") == {"work": "timer/tick/1000"}
    assert source_of("nonsense") == {"work": "nonsense"}


def _letter(offset: int, reason: str, topic: str, at_ms: int) -> Record:
    letter = DeadLetter(
        key=b"k",
        value=b"v",
        reason=reason,
        error="e",
        app="app",
        behaviour="counter",
        source_topic=topic,
        source_partition=0,
        source_offset=offset,
        timestamp_ms=at_ms,
        original_size=1,
        truncated=False,
    )
    return Record("app.dead-letters", 0, offset, b"k", b"v", list(letter.headers()))


def test_filter_letters_by_reason_and_source_newest_first() -> None:
    listed = decode_records(
        [
            _letter(0, "schema", "a.in", 1000),
            _letter(1, "malformed-json", "a.in", 2000),
            _letter(2, "schema", "b.in", 3000),
            Record("app.dead-letters", 0, 3, b"k", b"not one", []),
        ]
    )
    assert [i.position for i in filter_letters(listed, reason=None, source_topic=None)] == [
        "0:2",
        "0:1",
        "0:0",
        "0:3",
    ]
    schema = filter_letters(listed, reason="schema", source_topic=None)
    assert [i.position for i in schema] == ["0:2", "0:0"]
    both = filter_letters(listed, reason="schema", source_topic="a.in")
    assert [i.position for i in both] == ["0:0"]
    assert filter_letters(listed, reason="nope", source_topic=None) == []
