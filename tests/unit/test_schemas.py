"""The exported JSON Schema of the counter's envelopes is up to date and usable."""

from __future__ import annotations

import json
from pathlib import Path

from stream_app.examples.counter import counter

MESSAGES = counter.message_types

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_matches_the_models() -> None:
    committed = json.loads((ROOT / "schemas" / "counter.schema.json").read_text())
    assert committed == MESSAGES.json_schema(), (
        "schemas/counter.schema.json is stale: run `stream-app schemas export`"
    )


def test_schema_names_every_message_type() -> None:
    text = json.dumps(MESSAGES.json_schema())
    assert '"const": "increment"' in text and '"const": "reset"' in text
