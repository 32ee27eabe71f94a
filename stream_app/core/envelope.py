"""The wire format of cell messages, and its validation at the edge.

A record that carries work for a cell has ``key`` = the cell id (UTF-8) and ``value`` = a JSON
envelope::

    {"type": "increment", "body": {"by": 2}, "id": "6f1c…", "reply_to": null}

Request/reply clients add ``reply_to`` (``"<topic>:<partition>"``, where the worker sends the
reply, correlated by ``id``) and optionally ``project`` (a projection of the reply's state that
the entity declares). ``config`` is an opaque JSON value handed on to every effect the message
causes (Pachyderm's config passed from the sender to the effect dispatcher).

Each behaviour declares its message types with :class:`MessageTypes`, mapping a type name to the
pydantic model of its body. :meth:`MessageTypes.decode` turns a raw record into a
:class:`CellMessage` or raises a subclass of :class:`~stream_app.errors.InvalidMessageError`
that says what was wrong; the caller sends such records to the dead-letter topic.

Validation is strict: what the exported JSON Schema rejects, :meth:`MessageTypes.decode` rejects.
Records are validated as JSON in pydantic's strict mode, so ``"2"``, ``true`` and ``2.0`` are not
integers, but the types JSON has no literal for still read their usual JSON form (ISO 8601
strings for datetimes, strings for UUIDs and decimals, values for enums, arrays for tuples and
sets). A body model that wants pydantic's coercion says so explicitly with
``model_config = ConfigDict(strict=False)``; its messages are then validated by the model's own
configuration (``Field(strict=True)`` still holds for a field), the envelope's fields stay strict.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from stream_app.errors import (
    InvalidKeyError,
    MalformedJSONError,
    OversizedMessageError,
    SchemaViolationError,
    UnknownMessageTypeError,
)

__all__ = ["CellMessage", "Envelope", "MessageTypes", "body_payload", "envelope_bytes"]

BodyT = TypeVar("BodyT", bound=BaseModel)


class Envelope(BaseModel):
    """The envelope every cell message travels in, whatever its type.

    Attributes:
        type: The message type, one of the names the behaviour declares.
        body: The type's payload, validated against the type's body model.
        id: An id chosen by the producer (a UUID is recommended), kept for tracing and replies.
        reply_to: Where a reply goes (``"<topic>:<partition>"``), for request/reply clients;
            ``None`` for fire-and-forget.
        project: The name of a projection of the state to reply with (entities).
        config: Any JSON value, given to the effect handlers of the effects this message causes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1)
    body: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    reply_to: str | None = None
    project: str | None = None
    config: Any = None


@dataclass(frozen=True, slots=True)
class CellMessage(Generic[BodyT]):
    """A validated message for one cell.

    Attributes:
        cell_id: The id of the addressed cell (the record key).
        type: The message type.
        body: The validated body model.
        id: The producer's message id, if it gave one.
        reply_to: The reply address (``"<topic>:<partition>"``), if any.
        project: The projection the sender wants in the reply, if any.
        config: The sender's config value for the effects of this message.
    """

    cell_id: str
    type: str
    body: BodyT
    id: str | None
    reply_to: str | None
    project: str | None = None
    config: Any = None

    def __init__(
        self,
        cell_id: str,
        type: str,
        body: BodyT,
        id: str | None,
        reply_to: str | None,
        project: str | None = None,
        config: Any = None,
    ) -> None:
        # The dataclass's own __init__ of a frozen class sets each field through
        # object.__setattr__, about as costly as validating the envelope: one is made per
        # record, so the fields are set through their slots' descriptors instead.
        cell_id_, type_, body_, id_, reply_to_, project_, config_ = _MESSAGE_SLOTS
        cell_id_(self, cell_id)
        type_(self, type)
        body_(self, body)
        id_(self, id)
        reply_to_(self, reply_to)
        project_(self, project)
        config_(self, config)


#: The setters of :class:`CellMessage`'s slots, in field order (see its ``__init__``).
_MESSAGE_SLOTS: tuple[Any, ...] = tuple(
    getattr(CellMessage, name).__set__
    for name in ("cell_id", "type", "body", "id", "reply_to", "project", "config")
)


class MessageTypes:
    """The message types a behaviour accepts, and the validator of its records.

    Args:
        behaviour: The behaviour's name, used in error messages and schema titles.
        types: Message type name -> pydantic model of its body.
        faster: Message type name -> a subclass of its body model that accepts exactly the
            documents the body model accepts, with the same values, but validates them faster
            (a union of forms tried in order, say, where the body model tells the form by a
            function of the parsed document). Records are validated by these first; a record
            they refuse is validated again by the declared models, whose errors are reported
            and whose schema is exported.

    Attributes:
        coercing: The message types whose body model opts in to pydantic's coercion with
            ``model_config = ConfigDict(strict=False)``; every other body is validated strictly.

    Example::

        class Increment(BaseModel):
            by: int = 1

        COUNTER = MessageTypes("counter", {"increment": Increment})
        message = COUNTER.decode(b"cell-1", b'{"type": "increment", "body": {"by": 2}}',
                                 max_bytes=1_048_576)
    """

    def __init__(
        self,
        behaviour: str,
        types: Mapping[str, type[BaseModel]],
        *,
        faster: Mapping[str, type[BaseModel]] | None = None,
    ) -> None:
        if not types:
            raise ValueError(f"behaviour {behaviour!r} declares no message types")
        self.behaviour = behaviour
        self.types: dict[str, type[BaseModel]] = dict(types)
        self.coercing = frozenset(
            name for name, model in self.types.items() if model.model_config.get("strict") is False
        )
        variants = [self._variant(name, model) for name, model in self.types.items()]
        union: Any = variants[0] if len(variants) == 1 else Union[tuple(variants)]  # noqa: UP007
        discriminated: Any = Annotated[union, Field(discriminator="type")]
        self._adapter: TypeAdapter[Any] = TypeAdapter(discriminated)
        self._faster: TypeAdapter[Any] | None = None
        if faster:
            for name, model in faster.items():
                if not issubclass(model, self.types[name]):
                    raise ValueError(
                        f"behaviour {behaviour!r}: {model.__name__} is not a subclass of the "
                        f"body model of {name!r}"
                    )
            fast = [self._variant(name, faster.get(name, model)) for name, model in types.items()]
            either: Any = fast[0] if len(fast) == 1 else Union[tuple(fast)]  # noqa: UP007
            self._faster = TypeAdapter(Annotated[either, Field(discriminator="type")])

    def _variant(self, name: str, body: type[BaseModel]) -> type[BaseModel]:
        title = "".join(
            p.capitalize() for p in f"{self.behaviour}_{name}".replace("-", "_").split("_")
        )
        return create_model(
            f"{title}Envelope",
            # strict: the envelope's own fields stay strict when a coercing body is validated
            # without the strict flag (see _validate).
            __config__=ConfigDict(extra="forbid", frozen=True, strict=True),
            type=(_literal(name), ...),
            body=(body, Field(default_factory=body)) if _all_optional(body) else (body, ...),
            id=(str | None, None),
            reply_to=(str | None, None),
            project=(str | None, None),
            config=(Any, None),
        )

    def decode(self, key: bytes | None, value: bytes | None, *, max_bytes: int) -> CellMessage[Any]:
        """Validate one raw record and return it as a :class:`CellMessage`.

        Raises:
            InvalidKeyError: The key is missing, empty, or not UTF-8.
            OversizedMessageError: The value is longer than ``max_bytes``.
            MalformedJSONError: The value is missing or is not UTF-8 JSON.
            UnknownMessageTypeError: The envelope's ``type`` is not one of this behaviour's.
            SchemaViolationError: The envelope or the body does not match its schema.
        """
        cell_id = _cell_id(key)
        if value is None:
            raise MalformedJSONError("record has no value (a tombstone is not a message)")
        if len(value) > max_bytes:
            raise OversizedMessageError(
                f"value is {len(value)} bytes, more than the {max_bytes} bytes allowed"
            )
        try:
            parsed = self._validate(value)
        except ValidationError as exc:
            raise self._classify(exc, value) from exc
        # Positional: one is made per record, and keywords cost half as much again.
        return CellMessage(
            cell_id,
            parsed.type,
            parsed.body,
            parsed.id,
            parsed.reply_to,
            parsed.project,
            parsed.config,
        )

    def _validate(self, value: bytes) -> Any:
        """The envelope in ``value``, validated as JSON in strict mode; a message whose body
        model opts in to coercion is validated again by its models' own configuration. The
        ``faster`` models, if any, try first: what they refuse is validated again by the
        declared ones."""
        if self._faster is not None:
            try:
                return self._faster.validate_json(value, strict=True)
            except ValidationError:
                pass
        try:
            # strict=True at validation time overrides every model's and field's setting.
            return self._adapter.validate_json(value, strict=True)
        except ValidationError:
            given = _given_type(value) if self.coercing else None
            if not (isinstance(given, str) and given in self.coercing):
                raise
        return self._adapter.validate_json(value)

    def _classify(self, exc: ValidationError, value: bytes) -> Exception:
        errors = exc.errors(include_url=False)
        kinds = {e["type"] for e in errors}
        if "json_invalid" in kinds or "json_type" in kinds:
            return MalformedJSONError(f"value is not valid JSON: {errors[0]['msg']}")
        if "union_tag_invalid" in kinds:
            given, known = _given_type(value), ", ".join(sorted(self.types))
            return UnknownMessageTypeError(
                f"unknown message type {given!r} for behaviour {self.behaviour!r} (known: {known})"
            )
        if "union_tag_not_found" in kinds:
            return SchemaViolationError(
                f"{self.behaviour}: envelope has no 'type' field (expected an object like "
                '{"type": "...", "body": {...}})'
            )
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors
        )
        return SchemaViolationError(f"{self.behaviour}: {details}")

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this behaviour's envelopes, for producers in other languages."""
        schema = self._adapter.json_schema()
        schema["title"] = f"{self.behaviour} message envelope"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        return schema

    def export_schema(self, folder: Path) -> Path:
        """Write :meth:`json_schema` to ``<folder>/<behaviour>.schema.json`` and return its path."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.behaviour}.schema.json"
        path.write_text(json.dumps(self.json_schema(), indent=2, sort_keys=True) + "\n")
        return path


def body_payload(body: Mapping[str, Any] | BaseModel | None) -> dict[str, Any]:
    """A message body as the JSON object the envelope carries (a model is dumped as JSON)."""
    return body.model_dump(mode="json") if isinstance(body, BaseModel) else dict(body or {})


def envelope_bytes(
    type: str,
    body: Mapping[str, Any] | BaseModel | None = None,
    *,
    id: str | None = None,
    reply_to: str | None = None,
    project: str | None = None,
    config: Any = None,
) -> bytes:
    """The JSON envelope of a cell message as UTF-8 bytes: ``{"type", "body", "id"}``, plus
    ``reply_to``, ``project`` and ``config`` when given."""
    envelope: dict[str, Any] = {
        "type": type,
        "body": body_payload(body),
        "id": id or uuid.uuid4().hex,
    }
    if reply_to is not None:
        envelope["reply_to"] = reply_to
    if project is not None:
        envelope["project"] = project
    if config is not None:
        envelope["config"] = config
    return json.dumps(envelope, separators=(",", ":")).encode()


def _cell_id(key: bytes | None) -> str:
    if not key:
        raise InvalidKeyError("record has no key; the key must be the cell id")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidKeyError(f"key {key[:64]!r} is not UTF-8: {exc.reason}") from exc


def _given_type(value: bytes) -> Any:
    """The ``type`` field of a JSON object (any JSON value), or ``None`` if there is none."""
    try:
        return json.loads(value).get("type")
    except (ValueError, AttributeError):
        return None


def _literal(value: str) -> Any:
    # Literal[...] of a runtime value: typed as Any because no static type can name it.
    return Literal[value]


def _all_optional(model: type[BaseModel]) -> bool:
    return all(not field.is_required() for field in model.model_fields.values())
