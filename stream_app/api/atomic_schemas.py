"""The JSON Schemas of an atomic log's documents, with its own event, reason and summary models.

The wire models of :mod:`stream_app.core.atomic` carry events, reasons and summaries as JSON
objects, whatever the log; a producer or a validator written in another language wants to know
what those objects are for *this* log. :func:`atomic_schemas` gives one schema per document,
each the wire model with the log's models in place of the objects, written as
``<log>[.<suffix>].schema.json``:

- ``<log>.schema.json``: the input envelope on ``<app_id>.<log>.in``, a ``store`` or a
  ``validation-response`` message;
- ``<log>.validation-request.schema.json``: a
  :class:`~stream_app.core.atomic.ValidationRequest` on ``<app_id>.<log>.validation``;
- ``<log>.validation-response.schema.json``: a validator's
  :class:`~stream_app.core.atomic.ValidationResponse` (the body of a ``validation-response``);
- ``<log>.event-record.schema.json``: an :class:`~stream_app.core.atomic.AtomicEventRecord`
  on ``<app_id>.<log>.events``;
- ``<log>.result.schema.json``: an :class:`~stream_app.core.atomic.AtomicResult`, the
  ``state`` of the reply on ``<app_id>.replies``.

``stream-app schemas export module:log`` writes them (:func:`export_atomic_schemas`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, create_model

from stream_app.api.atomic import AtomicLog
from stream_app.core.atomic import (
    VALIDATION_RESPONSE,
    AtomicEventRecord,
    AtomicResult,
    StoreRequest,
    ValidationRequest,
    ValidationResponse,
)
from stream_app.core.envelope import MessageTypes

__all__ = ["atomic_models", "atomic_schemas", "export_atomic_schemas"]

_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _typed(base: type[BaseModel], log: AtomicLog[Any, Any], **fields: Any) -> type[BaseModel]:
    """``base`` with ``fields`` retyped (same defaults), named after the log."""
    title = "".join(part.capitalize() for part in log.name.replace("-", "_").split("_"))
    overrides = {name: (kind, base.model_fields[name]) for name, kind in fields.items()}
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        f"{title}{base.__name__}", __base__=base, __doc__=base.__doc__, **overrides
    )
    return model


def atomic_models(log: AtomicLog[Any, Any]) -> dict[str, type[BaseModel]]:
    """The wire models with ``log``'s own models in place of the JSON objects: ``store`` (the
    body of a ``store`` message), ``validation-request``, ``validation-response``,
    ``event-record`` and ``result``."""
    event, reason = log.event_model, log.reason_model
    summary: Any = log.fold.state | None if log.fold is not None else None
    return {
        "store": _typed(StoreRequest, log, event=event),
        "validation-request": _typed(
            ValidationRequest,
            log,
            prospective_event=event,
            past_events=list[event],  # type: ignore[valid-type]
            summary=summary,
        ),
        "validation-response": _typed(
            ValidationResponse, log, event=event | None, reason=reason | None
        ),
        "event-record": _typed(AtomicEventRecord, log, event=event),
        "result": _typed(
            AtomicResult,
            log,
            prospective_event=event,
            stored_event=event | None,
            stored_event_list=list[event],  # type: ignore[valid-type]
            reason=reason | None,
        ),
    }


def atomic_schemas(log: AtomicLog[Any, Any]) -> dict[str, dict[str, Any]]:
    """The JSON Schemas of ``log``'s documents, by file name suffix (``""`` for the input
    envelope, ``"validation-request"``...; see the module docs)."""
    models = atomic_models(log)
    store, response = models.pop("store"), models["validation-response"]
    envelope = MessageTypes(log.name, {"store": store, VALIDATION_RESPONSE: response})
    schemas = {"": envelope.json_schema()}
    for suffix, model in models.items():
        schema = model.model_json_schema()
        schema["title"] = f"{log.name} {suffix.replace('-', ' ')}"
        schema["$schema"] = _DRAFT
        schemas[suffix] = schema
    return schemas


def export_atomic_schemas(log: AtomicLog[Any, Any], folder: Path) -> list[Path]:
    """Write :func:`atomic_schemas` to ``<folder>/<log>[.<suffix>].schema.json``; return the
    paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, schema in atomic_schemas(log).items():
        path = folder / f"{log.name}{'.' + suffix if suffix else ''}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
