"""``stream-app quests``: the lines it prints, and the exported schema of a quest behaviour."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from stream_app.cli.main import cli
from stream_app.cli.quests import describe_record, format_context

ROOT = Path(__file__).resolve().parents[2]


def test_tail_lines_name_the_context_type_event_and_form() -> None:
    selector = b'{"type":"event","body":{"event_name":"tock","event_selector":"q.a"}}'
    multicast = b'{"type":"event","body":{"event_name":"tick"}}'
    add = b'{"type":"add_quest","body":{"quest":"q"}}'
    kw = {"want_context": None, "want_event": None}
    assert describe_record("alice", selector, **kw) == (
        'alice  event  tock  selector  {"event_name":"tock","event_selector":"q.a"}'
    )
    assert describe_record("alice", add, **kw) == 'alice  add_quest  {"quest":"q"}'
    assert describe_record("alice", b"nope", **kw) == "alice  <not an envelope>  b'nope'"
    # Filters: by context, and by event name (which leaves out what is not an event).
    assert describe_record("bob", multicast, want_context="alice", want_event=None) is None
    assert describe_record("alice", multicast, want_context=None, want_event="tock") is None
    assert describe_record("alice", add, want_context=None, want_event="tick") is None
    assert describe_record("alice", multicast, want_context="alice", want_event="tick") == (
        'alice  event  tick  multicast  {"event_name":"tick"}'
    )


def test_a_context_is_listed_quest_by_quest() -> None:
    described = {
        "quests": {
            "meal": {
                "instance": "abc",
                "started_ms": 0,
                "variables": {},
                "windows": {"meal": 600_000},
                "deadline_ms": None,
            }
        },
        "timers": [{"name": "quest:abc:window:meal", "due_ms": 600_000}],
        "ignored": 2,
    }
    assert format_context(described) == [
        "meal  instance=abc  started=1970-01-01T00:00:00.000Z  deadline=-  "
        'windows={"meal":"1970-01-01T00:10:00.000Z"}  variables={}',
        "  timer quest:abc:window:meal  due=1970-01-01T00:10:00.000Z",
        "ignored=2",
    ]


def test_the_schema_of_a_quest_behaviour_has_the_three_event_forms(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["schemas", "export", "stream_app.examples.fitness:fitness", "--out", str(tmp_path)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    schema = json.loads((tmp_path / "fitness.schema.json").read_text())
    forms = schema["$defs"]["QuestEventBody"]["oneOf"]
    assert sorted(f["$ref"].rsplit("/", 1)[1] for f in forms) == [
        "InstanceEvent",
        "MulticastEvent",
        "SelectorEvent",
    ]
    assert schema["$defs"]["InstanceEvent"]["required"] == [
        "event_name",
        "event_selector",
        "quest_instance",
    ]


def test_the_published_schema_of_the_fitness_contexts_is_current() -> None:
    from stream_app.examples.fitness import fitness

    committed = json.loads((ROOT / "schemas" / "fitness.schema.json").read_text())
    assert committed == fitness.message_types.json_schema(), (
        "schemas/fitness.schema.json is stale: run "
        "`stream-app schemas export stream_app.examples.fitness:fitness`"
    )
