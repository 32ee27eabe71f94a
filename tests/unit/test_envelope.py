"""Unit tests of stream_app.core.envelope: decoding records and the envelope JSON Schema."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from stream_app.core.envelope import CellMessage, MessageTypes, envelope_bytes
from stream_app.errors import (
    InvalidKeyError,
    InvalidMessageError,
    MalformedJSONError,
    OversizedMessageError,
    SchemaViolationError,
    UnknownMessageTypeError,
)

MAX = 1_000


class Increment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: int = Field(default=1, ge=1)


class Reset(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rename(BaseModel):
    """A body with a required field: the envelope must carry a body."""

    model_config = ConfigDict(extra="forbid")

    name: str


COUNTER = MessageTypes("counter", {"increment": Increment, "reset": Reset})
SOLO = MessageTypes("solo", {"increment": Increment})


def decode(
    value: bytes | None, key: bytes | None = b"cell-1", types: MessageTypes = COUNTER
) -> CellMessage[Any]:
    return types.decode(key, value, max_bytes=MAX)


# -- valid records ---------------------------------------------------------------------------


def test_full_envelope() -> None:
    message = decode(
        b'{"type": "increment", "body": {"by": 3}, "id": "m-1", "reply_to": "replies"}'
    )
    assert isinstance(message, CellMessage)
    assert message.cell_id == "cell-1"
    assert message.type == "increment"
    assert isinstance(message.body, Increment)
    assert message.body.by == 3
    assert message.id == "m-1"
    assert message.reply_to == "replies"


def test_body_id_and_reply_to_are_optional() -> None:
    message = decode(b'{"type": "increment"}')
    assert message.type == "increment"
    assert isinstance(message.body, Increment)
    assert message.body.by == 1
    assert message.id is None
    assert message.reply_to is None


def test_second_type_and_empty_body() -> None:
    message = decode(b'{"type": "reset", "body": {}}', key="zelle-ü".encode())
    assert message.cell_id == "zelle-ü"
    assert message.type == "reset"
    assert isinstance(message.body, Reset)


def test_single_type_message_types_decodes() -> None:
    message = decode(b'{"type": "increment", "body": {"by": 7}}', types=SOLO)
    assert isinstance(message.body, Increment)
    assert message.body.by == 7


def test_required_body_field_makes_body_required() -> None:
    types = MessageTypes("named", {"rename": Rename, "reset": Reset})
    ok = types.decode(b"k", b'{"type": "rename", "body": {"name": "n"}}', max_bytes=MAX)
    assert isinstance(ok.body, Rename)
    assert ok.body.name == "n"
    with pytest.raises(SchemaViolationError, match="body"):
        types.decode(b"k", b'{"type": "rename"}', max_bytes=MAX)


def test_value_of_exactly_max_bytes_is_accepted() -> None:
    value = b'{"type": "reset"}'
    message = COUNTER.decode(b"k", value, max_bytes=len(value))
    assert message.type == "reset"


# -- invalid keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, b""])
def test_missing_key(key: bytes | None) -> None:
    with pytest.raises(InvalidKeyError, match="no key") as info:
        decode(b'{"type": "reset"}', key=key)
    assert info.value.reason == "invalid-key"


def test_non_utf8_key() -> None:
    with pytest.raises(InvalidKeyError, match="not UTF-8") as info:
        decode(b'{"type": "reset"}', key=b"\xff\xfecell")
    assert info.value.reason == "invalid-key"


def test_key_is_checked_before_value() -> None:
    with pytest.raises(InvalidKeyError):
        decode(None, key=None)


# -- oversized ---------------------------------------------------------------------------------


def test_oversized_value_names_both_sizes() -> None:
    value = b'{"type": "increment", "body": {"by": 1}}' + b" " * 200
    with pytest.raises(OversizedMessageError) as info:
        COUNTER.decode(b"k", value, max_bytes=100)
    assert f"{len(value)} bytes" in str(info.value)
    assert "100 bytes" in str(info.value)
    assert info.value.reason == "oversized"


def test_size_is_checked_before_parsing() -> None:
    with pytest.raises(OversizedMessageError):
        COUNTER.decode(b"k", b"\xff" * 101, max_bytes=100)


# -- malformed JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"{not json", b'{"type": "reset"', b"", b"\xff\xfe{}", b'{"type": "re\xffset"}'],
    ids=["garbage", "truncated", "empty", "non-utf8-prefix", "non-utf8-inside"],
)
def test_malformed_json(value: bytes) -> None:
    with pytest.raises(MalformedJSONError, match="not valid JSON") as info:
        decode(value)
    assert info.value.reason == "malformed-json"


def test_missing_value_is_malformed() -> None:
    with pytest.raises(MalformedJSONError, match="no value") as info:
        decode(None)
    assert info.value.reason == "malformed-json"


# -- unknown type ------------------------------------------------------------------------------


def test_unknown_type_names_given_and_known_types() -> None:
    with pytest.raises(UnknownMessageTypeError) as info:
        decode(b'{"type": "decrement", "body": {"by": 1}}')
    text = str(info.value)
    assert "'decrement'" in text
    assert "'counter'" in text
    assert "known: increment, reset" in text
    assert info.value.reason == "unknown-type"


def test_unknown_type_with_single_type() -> None:
    with pytest.raises(UnknownMessageTypeError) as info:
        decode(b'{"type": "decrement"}', types=SOLO)
    text = str(info.value)
    assert "'decrement'" in text
    assert "'solo'" in text
    assert "known: increment" in text
    assert info.value.reason == "unknown-type"


@pytest.mark.parametrize("types", [COUNTER, SOLO], ids=["multi", "single"])
def test_non_string_type_is_unknown(types: MessageTypes) -> None:
    with pytest.raises(UnknownMessageTypeError, match="unknown message type 5"):
        decode(b'{"type": 5}', types=types)


# -- schema violations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"type": "increment", "body": {"by": "two"}}', "increment.body.by"),
        (b'{"type": "increment", "body": {"by": -1}}', "greater than or equal to 1"),
        (b'{"type": "increment", "body": {"by": 0}}', "increment.body.by"),
        (b'{"type": "increment", "body": {"step": 1}}', "increment.body.step"),
        (b'{"type": "increment", "priority": "high"}', "increment.priority"),
        (b'{"type": "reset", "body": null}', "reset.body"),
        (b'{"type": "reset", "id": 42}', "reset.id"),
        (b"[1, 2]", "<root>"),
        (b"null", "<root>"),
        (b'"reset"', "<root>"),
        (b'{"body": {"by": 1}}', "no 'type' field"),
    ],
    ids=[
        "wrong-field-type",
        "negative",
        "zero",
        "extra-body-field",
        "extra-envelope-field",
        "null-body",
        "non-string-id",
        "json-array",
        "json-null",
        "json-string",
        "missing-type",
    ],
)
def test_schema_violations(value: bytes, expected: str) -> None:
    with pytest.raises(SchemaViolationError) as info:
        decode(value)
    assert expected in str(info.value)
    assert str(info.value).startswith("counter:")
    assert info.value.reason == "schema"


def test_missing_type_with_single_type() -> None:
    with pytest.raises(SchemaViolationError, match="no 'type' field"):
        decode(b'{"body": {}}', types=SOLO)


def test_schema_violation_in_single_type_body() -> None:
    with pytest.raises(SchemaViolationError, match=r"increment\.body\.by"):
        decode(b'{"type": "increment", "body": {"by": 0}}', types=SOLO)


class Mode(BaseModel):
    mode: Literal["fast", "slow"]


def test_literal_body_field_violation_with_single_type_is_schema_error() -> None:
    types = MessageTypes("tuner", {"set-mode": Mode})
    with pytest.raises(SchemaViolationError, match=r"body\.mode"):
        types.decode(b"k", b'{"type": "set-mode", "body": {"mode": "warp"}}', max_bytes=MAX)


def test_literal_body_field_violation_with_two_types_is_schema_error() -> None:
    types = MessageTypes("tuner", {"set-mode": Mode, "reset": Reset})
    with pytest.raises(SchemaViolationError, match=r"body\.mode"):
        types.decode(b"k", b'{"type": "set-mode", "body": {"mode": "warp"}}', max_bytes=MAX)


def test_every_decode_error_is_an_invalid_message_error() -> None:
    bad: list[tuple[bytes | None, bytes | None]] = [
        (None, b"{}"),
        (b"k", b"x" * (MAX + 1)),
        (b"k", b"{"),
        (b"k", b'{"type": "nope"}'),
        (b"k", b'{"type": "increment", "body": {"by": 0}}'),
    ]
    reasons = set()
    for key, value in bad:
        with pytest.raises(InvalidMessageError) as info:
            COUNTER.decode(key, value, max_bytes=MAX)
        reasons.add(info.value.reason)
    assert reasons == {"invalid-key", "oversized", "malformed-json", "unknown-type", "schema"}


# -- construction and schema -------------------------------------------------------------------


def test_no_message_types_is_an_error() -> None:
    with pytest.raises(ValueError, match="'empty' declares no message types"):
        MessageTypes("empty", {})


def test_json_schema_describes_every_type() -> None:
    schema = COUNTER.json_schema()
    json.dumps(schema)  # serialisable
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "counter message envelope"
    refs = {variant["$ref"] for variant in schema["oneOf"]}
    assert refs == set(schema["discriminator"]["mapping"].values())
    assert schema["discriminator"]["propertyName"] == "type"
    assert set(schema["discriminator"]["mapping"]) == {"increment", "reset"}
    defs = schema["$defs"]
    consts = set()
    for ref in refs:
        name = ref.removeprefix("#/$defs/")
        variant = defs[name]
        assert variant["additionalProperties"] is False
        assert variant["required"] == ["type"]  # bodies here are all-optional
        assert set(variant["properties"]) == {"type", "body", "id", "reply_to", "project", "config"}
        consts.add(variant["properties"]["type"]["const"])
    assert consts == {"increment", "reset"}
    assert defs["Increment"]["properties"]["by"]["minimum"] == 1


def test_json_schema_of_single_type() -> None:
    schema = SOLO.json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "solo message envelope"
    text = json.dumps(schema)
    assert '"const": "increment"' in text
    assert '"reset"' not in text


def test_json_schema_marks_required_body() -> None:
    schema = MessageTypes("named", {"rename": Rename}).json_schema()
    variants = [v for k, v in schema["$defs"].items() if k.endswith("Envelope")]
    assert len(variants) == 1
    assert sorted(variants[0]["required"]) == ["body", "type"]


def test_export_schema_writes_behaviour_file(tmp_path: Path) -> None:
    folder = tmp_path / "schemas" / "nested"
    path = COUNTER.export_schema(folder)
    assert path == folder / "counter.schema.json"
    assert json.loads(path.read_text()) == COUNTER.json_schema()
    assert path.read_text().endswith("\n")
    # Writing again is idempotent (same bytes), so exported schemas diff cleanly.
    before = path.read_bytes()
    COUNTER.export_schema(folder)
    assert path.read_bytes() == before


# -- strict validation at the edge -----------------------------------------------------------

#: JSON values the exported JSON Schema rejects for an integer, which pydantic's lax mode would
#: coerce to one: a string of digits, a boolean, a float with no fraction.
LAX_INTEGERS = ['"2"', "true", "2.0"]


@pytest.mark.parametrize("by", LAX_INTEGERS)
@pytest.mark.parametrize("types", [COUNTER, SOLO], ids=["multi", "single"])
def test_what_the_json_schema_rejects_is_a_schema_violation(by: str, types: MessageTypes) -> None:
    with pytest.raises(SchemaViolationError) as info:
        decode(f'{{"type": "increment", "body": {{"by": {by}}}}}'.encode(), types=types)
    assert info.value.reason == "schema"
    assert "increment.body.by: Input should be a valid integer" in str(info.value)


def test_strict_envelope_fields() -> None:
    with pytest.raises(SchemaViolationError, match=r"increment\.reply_to"):
        decode(b'{"type": "increment", "reply_to": 7}')


class Coerced(BaseModel):
    """A body that opts in to pydantic's lax mode: ``"2"`` becomes ``2``."""

    model_config = ConfigDict(strict=False)

    by: int = Field(default=1, ge=1)
    exact: int = Field(default=0, strict=True)


LAX = MessageTypes("lax", {"increment": Coerced, "reset": Reset})


@pytest.mark.parametrize("by", LAX_INTEGERS)
def test_a_body_model_with_strict_false_opts_in_to_coercion(by: str) -> None:
    message = decode(f'{{"type": "increment", "body": {{"by": {by}}}}}'.encode(), types=LAX)
    assert isinstance(message.body, Coerced)
    assert message.body.by == (1 if by == "true" else 2)


def test_an_opted_in_body_still_rejects_what_it_cannot_coerce() -> None:
    with pytest.raises(SchemaViolationError, match=r"lax: increment\.body\.by"):
        decode(b'{"type": "increment", "body": {"by": "two"}}', types=LAX)
    with pytest.raises(SchemaViolationError, match=r"increment\.body\.exact"):
        decode(b'{"type": "increment", "body": {"exact": "3"}}', types=LAX)


def test_opting_in_is_per_body_model() -> None:
    assert LAX.coercing == frozenset({"increment"})
    with pytest.raises(SchemaViolationError, match=r"reset\.id"):
        decode(b'{"type": "reset", "id": 42}', types=LAX)
    with pytest.raises(SchemaViolationError, match=r"increment\.id"):
        decode(b'{"type": "increment", "body": {"by": "2"}, "id": 42}', types=LAX)


class Colour(enum.Enum):
    RED = "red"


class Inner(BaseModel):
    n: int


class Rich(BaseModel):
    """A body with the types JSON has no literal for, and a nested model."""

    at: AwareDatetime
    day: datetime.date
    ident: uuid.UUID
    colour: Colour
    amount: decimal.Decimal
    ratio: float
    pair: tuple[int, str]
    tags: frozenset[str]
    inner: Inner


RICH = MessageTypes("rich", {"rich": Rich})
RICH_BODY = Rich(
    at=datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
    day=datetime.date(2024, 5, 1),
    ident=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    colour=Colour.RED,
    amount=decimal.Decimal("1.50"),
    ratio=2.0,
    pair=(1, "a"),
    tags=frozenset({"x"}),
    inner=Inner(n=3),
)


def test_strict_json_still_reads_times_uuids_enums_and_integral_floats() -> None:
    value = json.dumps(
        {
            "type": "rich",
            "body": {
                "at": "2024-05-01T12:30:00Z",
                "day": "2024-05-01",
                "ident": "12345678-1234-5678-1234-567812345678",
                "colour": "red",
                "amount": "1.50",
                "ratio": 2,
                "pair": [1, "a"],
                "tags": ["x"],
                "inner": {"n": 3},
            },
        }
    ).encode()
    assert RICH.decode(b"k", value, max_bytes=MAX).body == RICH_BODY


def test_a_dumped_body_decodes_to_itself() -> None:
    # What state.send, runtime.send and the clients produce from a model must pass the edge.
    message = RICH.decode(b"k", envelope_bytes("rich", RICH_BODY), max_bytes=MAX)
    assert message.body == RICH_BODY


def test_nested_models_are_strict_too() -> None:
    value = envelope_bytes("rich", {**RICH_BODY.model_dump(mode="json"), "inner": {"n": "3"}})
    with pytest.raises(SchemaViolationError, match=r"rich\.body\.inner\.n"):
        RICH.decode(b"k", value, max_bytes=MAX)


def test_a_cell_message_stays_a_frozen_dataclass() -> None:
    """CellMessage sets its fields through its slots (a faster __init__); it stays frozen,
    comparable, hashable and replaceable like the dataclass it is."""
    message: CellMessage[Any] = CellMessage("c", "increment", None, "m-1", None)
    assert message == CellMessage(
        cell_id="c", type="increment", body=None, id="m-1", reply_to=None, project=None
    )
    assert (message.project, message.config) == (None, None)
    assert hash(message) == hash(CellMessage("c", "increment", None, "m-1", None))
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.type = "other"  # type: ignore[misc]
    assert dataclasses.replace(message, config={"a": 1}).config == {"a": 1}
    assert [f.name for f in dataclasses.fields(message)] == [
        "cell_id",
        "type",
        "body",
        "id",
        "reply_to",
        "project",
        "config",
    ]


def test_a_faster_body_model_must_be_a_subclass_of_the_declared_one() -> None:
    class Faster(Increment):
        """Accepts what Increment accepts."""

    with pytest.raises(ValueError, match="not a subclass"):
        MessageTypes("counter", {"increment": Increment}, faster={"increment": Reset})
    fast = MessageTypes(
        "counter", {"increment": Increment, "reset": Reset}, faster={"increment": Faster}
    )
    message = fast.decode(b"c", b'{"type": "increment", "body": {"by": 2}}', max_bytes=4096)
    assert type(message.body) is Faster and message.body.by == 2
    with pytest.raises(SchemaViolationError) as raised:
        fast.decode(b"c", b'{"type": "increment", "body": {"by": "2"}}', max_bytes=4096)
    assert "body.by" in str(raised.value)
    assert (
        fast.json_schema()
        == MessageTypes("counter", {"increment": Increment, "reset": Reset}).json_schema()
    )
