"""Unit tests of stream_app.core.dead_letters: building, headers and reading back."""

from __future__ import annotations

import time
from dataclasses import FrozenInstanceError, asdict
from typing import Any

import pytest

from stream_app.core.dead_letters import HEADER_PREFIX, DeadLetter

FIELDS = [
    "reason",
    "error",
    "app",
    "behaviour",
    "source-topic",
    "source-partition",
    "source-offset",
    "timestamp-ms",
    "original-size",
    "truncated",
]


def letter(**overrides: Any) -> DeadLetter:
    args: dict[str, Any] = {
        "key": b"cell-7",
        "value": b'{"type": "increment", "body": {"by": "two"}}',
        "reason": "schema",
        "error": "counter: increment.body.by: Input should be a valid integer",
        "app": "shop",
        "behaviour": "counter",
        "topic": "shop.counter.in",
        "partition": 3,
        "offset": 41,
        "max_bytes": 1_048_576,
    }
    args.update(overrides)
    return DeadLetter.for_record(**args)


def test_for_record_keeps_record_and_origin() -> None:
    before = int(time.time() * 1000)
    dl = letter()
    after = int(time.time() * 1000)
    assert dl.key == b"cell-7"
    assert dl.value == b'{"type": "increment", "body": {"by": "two"}}'
    assert dl.reason == "schema"
    assert dl.app == "shop"
    assert dl.behaviour == "counter"
    assert dl.source_topic == "shop.counter.in"
    assert dl.source_partition == 3
    assert dl.source_offset == 41
    assert before <= dl.timestamp_ms <= after
    assert dl.original_size == len(dl.value)
    assert dl.truncated is False


def test_headers_are_prefixed_utf8_bytes_in_order() -> None:
    dl = letter(error="bad ünïcode")
    headers = dl.headers()
    assert [name for name, _ in headers] == [HEADER_PREFIX + f for f in FIELDS]
    assert all(name.startswith("stream_app.dlq.") for name, _ in headers)
    assert all(isinstance(value, bytes) for _, value in headers)
    values = dict(headers)
    assert values["stream_app.dlq.reason"] == b"schema"
    assert values["stream_app.dlq.error"] == "bad ünïcode".encode()
    assert values["stream_app.dlq.source-partition"] == b"3"
    assert values["stream_app.dlq.source-offset"] == b"41"
    assert values["stream_app.dlq.truncated"] == b"false"


def test_round_trip_through_headers() -> None:
    dl = letter(error="bad ünïcode: ✗")
    back = DeadLetter.from_record(dl.key, dl.value, dl.headers())
    assert back == dl
    assert asdict(back) == asdict(dl)


def test_round_trip_of_truncated_letter_without_key() -> None:
    dl = letter(key=None, value=b"x" * 300, max_bytes=100, reason="oversized")
    back = DeadLetter.from_record(dl.key, dl.value, dl.headers())
    assert back == dl
    assert back.truncated is True
    assert back.original_size == 300


def test_long_value_is_truncated_and_size_kept() -> None:
    value = bytes(range(256)) * 2
    dl = letter(value=value, max_bytes=100)
    assert dl.value == value[:100]
    assert dl.truncated is True
    assert dl.original_size == 512
    assert dict(dl.headers())["stream_app.dlq.truncated"] == b"true"
    assert dict(dl.headers())["stream_app.dlq.original-size"] == b"512"


def test_value_of_exactly_max_bytes_is_kept_whole() -> None:
    value = b"y" * 100
    dl = letter(value=value, max_bytes=100)
    assert dl.value == value
    assert dl.truncated is False
    assert dl.original_size == 100


def test_none_value() -> None:
    dl = letter(value=None, reason="malformed-json", max_bytes=10)
    assert dl.value is None
    assert dl.original_size == -1
    assert dl.truncated is False
    back = DeadLetter.from_record(dl.key, None, dl.headers())
    assert back.original_size == -1
    assert back == dl


def test_very_long_error_text_is_capped() -> None:
    dl = letter(error="e" * 10_000)
    assert dl.error == "e" * 4000


def test_dead_letter_is_frozen() -> None:
    dl = letter()
    with pytest.raises(FrozenInstanceError):
        dl.reason = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "headers",
    [None, [], [("traceparent", b"00-abc")]],
    ids=["none", "empty", "foreign-only"],
)
def test_from_record_without_dlq_headers(headers: list[tuple[str, bytes]] | None) -> None:
    with pytest.raises(ValueError, match="not a stream_app dead letter"):
        DeadLetter.from_record(b"k", b"v", headers)


def test_from_record_names_missing_headers() -> None:
    headers = [h for h in letter().headers() if h[0] != HEADER_PREFIX + "source-offset"]
    with pytest.raises(ValueError, match="source-offset"):
        DeadLetter.from_record(b"k", b"v", headers)


def test_from_record_accepts_str_header_values_and_ignores_others() -> None:
    dl = letter()
    headers: list[tuple[str, str | bytes | None]] = [("traceparent", b"00-abc")]
    headers += [(name, value.decode()) for name, value in dl.headers()]
    back = DeadLetter.from_record(dl.key, dl.value, headers)
    assert back == dl


def test_from_record_parses_truncated_flag() -> None:
    dl = letter(value=b"z" * 200, max_bytes=64)
    headers = [(name, value.decode()) for name, value in dl.headers()]
    back = DeadLetter.from_record(dl.key, dl.value, headers)
    assert back.truncated is True
    assert back.original_size == 200
    assert back.value == b"z" * 64
