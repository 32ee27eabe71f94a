"""The JSON Schemas of an atomic log's documents: typed by the log's own models, committed for
the auction example (``schemas/lots*.schema.json``) and kept current."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stream_app.api.atomic import AtomicLog
from stream_app.api.atomic_schemas import atomic_models, atomic_schemas
from stream_app.cli.main import cli
from stream_app.core.atomic import VALIDATION_RESPONSE
from stream_app.core.envelope import MessageTypes
from stream_app.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "stream_app.examples.auction"
SUFFIXES = ["", "validation-request", "validation-response", "event-record", "result"]


@pytest.fixture
def lots(monkeypatch: pytest.MonkeyPatch) -> Iterator[AtomicLog[Any, Any]]:
    """The auction's log, its module imported anew under exactly-once settings (its runtime
    reads the process-wide settings, cached by whichever test read them first)."""
    monkeypatch.setenv("STREAM_APP_PROCESSING_GUARANTEE", "exactly_once")
    get_settings.cache_clear()
    monkeypatch.delitem(sys.modules, EXAMPLE, raising=False)
    from stream_app.examples.auction import lots

    yield lots
    get_settings.cache_clear()


def path(suffix: str) -> str:
    return f"lots{'.' + suffix if suffix else ''}.schema.json"


def test_the_committed_schemas_match_the_models(lots: AtomicLog[Any, Any]) -> None:
    schemas = atomic_schemas(lots)
    assert list(schemas) == SUFFIXES
    for suffix, schema in schemas.items():
        committed = json.loads((ROOT / "schemas" / path(suffix)).read_text())
        assert committed == schema, (
            f"schemas/{path(suffix)} is stale: run "
            "`stream-app schemas export stream_app.examples.auction:lots`"
        )


def test_the_documents_carry_the_logs_own_models(lots: AtomicLog[Any, Any]) -> None:
    schemas = atomic_schemas(lots)
    request = schemas["validation-request"]
    assert request["title"] == "lots validation request"
    assert request["properties"]["prospective_event"] == {"$ref": "#/$defs/LotEvent"}
    assert request["properties"]["past_events"]["items"] == {"$ref": "#/$defs/LotEvent"}
    assert {"$ref": "#/$defs/LotState"} in request["properties"]["summary"]["anyOf"]
    assert request["additionalProperties"] is False
    assert "request_id" in request["required"] and "deadline_ms" in request["required"]
    response = schemas["validation-response"]["properties"]
    assert {"$ref": "#/$defs/Refusal"} in response["reason"]["anyOf"]
    assert {"$ref": "#/$defs/LotEvent"} in response["event"]["anyOf"]
    assert schemas["event-record"]["properties"]["event"] == {"$ref": "#/$defs/LotEvent"}
    result = schemas["result"]["properties"]
    assert result["stored_event_list"]["items"] == {"$ref": "#/$defs/LotEvent"}
    assert {"$ref": "#/$defs/Refusal"} in result["reason"]["anyOf"]
    envelope = json.dumps(schemas[""])
    assert '"const": "store"' in envelope and '"const": "validation-response"' in envelope
    assert '"LotEvent"' in envelope, "the store message's event is typed too"


def test_a_log_without_a_fold_sends_no_summary() -> None:
    from pydantic import BaseModel

    class Event(BaseModel):
        scope: str

    log: AtomicLog[Event, Event] = AtomicLog(
        "plain",
        event=Event,
        reason=Event,
        scope=lambda e: e.scope,
        timeout_reason=Event(scope="-"),
        validation_timeout=1,
    )
    summary = atomic_schemas(log)["validation-request"]["properties"]["summary"]
    assert summary["type"] == "null"


def test_export_writes_every_document(lots: AtomicLog[Any, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["schemas", "export", f"{EXAMPLE}:lots", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(tmp_path / path(s)) for s in SUFFIXES]
    for suffix in SUFFIXES:
        written = json.loads((tmp_path / path(suffix)).read_text())
        assert written == json.loads((ROOT / "schemas" / path(suffix)).read_text())


def documents(text: str) -> list[tuple[str, str]]:
    """``(kind, JSON)`` of each ```json block marked ``<!-- document: kind -->``."""
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        match = re.fullmatch(r"<!-- document: (\S+) -->", line.strip())
        if match is None:
            continue
        assert lines[index + 1].strip() == "```json", f"line {index + 1}: no ```json block"
        end = lines.index("```", index + 2)
        found.append((match[1], "\n".join(lines[index + 2 : end])))
    return found


def test_the_documents_shown_in_the_docs_are_valid(lots: AtomicLog[Any, Any]) -> None:
    models = atomic_models(lots)
    envelope = MessageTypes(
        "lots", {"store": models["store"], VALIDATION_RESPONSE: models["validation-response"]}
    )
    shown = documents((ROOT / "docs" / "atomic.md").read_text())
    assert [kind for kind, _ in shown] == ["envelope", *SUFFIXES[1:]]
    for kind, text in shown:
        if kind == "envelope":
            envelope.decode(b"lot-1", text.encode(), max_bytes=1 << 20)
        else:
            models[kind].model_validate_json(text, strict=True)
