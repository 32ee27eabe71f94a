"""Unit tests of ``stream-app cells``, ``stream-app dead-letters`` and the redrive planning
behind it (:mod:`stream_app.ops.redrive`), without a broker.

The read commands are run against a small local HTTP server that answers like a worker's views;
argument validation is checked before any Kafka client is created.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner

from stream_app.cli.cells import format_cells, format_parked
from stream_app.cli.dead_letters import format_listed
from stream_app.cli.main import cli
from stream_app.clients.cells import CellClient
from stream_app.core.dead_letters import DeadLetter
from stream_app.kafka.reading import Record
from stream_app.ops.redrive import (
    decode_records,
    parse_position,
    plan_redrive,
    redrive_refusal,
    value_preview,
)
from stream_app.settings import Settings, get_settings

DLQ = "shop.dead-letters"


class FakeWorker:
    """A local HTTP server answering ``GET path`` with the configured ``(status, body)``."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.requests: list[str] = []
        routes, requests = self.routes, self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                status, body = routes.get(self.path, (404, b"<html>no such page</html>"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def answer(self, path: str, body: Any, status: int = 200) -> None:
        self.routes[path] = (status, json.dumps(body).encode())


@pytest.fixture
def worker() -> Iterator[FakeWorker]:
    fake = FakeWorker()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    fake.thread.join(timeout=5)


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


# -- formatting -------------------------------------------------------------------------------


def test_format_cells_sorts_by_id_and_prints_compact_json() -> None:
    lines = format_cells({"b": {"count": 2, "applied": []}, "a": {"count": 1}, "c": None})
    assert lines == ['a  {"count":1}', 'b  {"applied":[],"count":2}', "c  null"]


def test_format_parked_shows_waiting_since_and_error() -> None:
    lines = format_parked(
        {
            "p-2": {"error": "RuntimeError: poison x", "attempts": 2, "since_ms": 0, "waiting": 2},
            "p-1": {"error": "E: y", "attempts": 3, "since_ms": 1_700_000_000_123, "waiting": 1},
        }
    )
    assert lines == [
        "p-1  waiting=1  since=2023-11-14T22:13:20.123Z  attempts=3  error=E: y",
        "p-2  waiting=2  since=1970-01-01T00:00:00.000Z  attempts=2  error=RuntimeError: poison x",
    ]


def test_value_preview_text_binary_and_long() -> None:
    assert value_preview(b"{nope") == "{nope"
    assert value_preview(None) == "<no value>"
    assert value_preview(b"\xff\xfeab") == "b'\\xff\\xfeab'"
    assert value_preview(b"a\nb") == "'a\\nb'"
    long = value_preview(b"x" * 100)
    assert long == "x" * 80 + "..."
    assert value_preview(b"\xff" * 100) == repr(b"\xff" * 80) + "..."


def dead_letter_record(dlq_partition: int, dlq_offset: int, **overrides: Any) -> Record:
    """A record of the dead-letter topic at ``dlq_partition:dlq_offset``; ``overrides`` go to
    :meth:`DeadLetter.for_record`."""
    args: dict[str, Any] = {
        "key": b"cell-7",
        "value": b"{nope",
        "reason": "malformed-json",
        "error": "value is not JSON: Expecting property name",
        "app": "shop",
        "behaviour": "probe",
        "topic": "shop.probe.in",
        "partition": 2,
        "offset": 41,
        "max_bytes": 1_048_576,
    }
    args.update(overrides)
    letter = DeadLetter.for_record(**args)
    headers: list[tuple[str, str | bytes | None]] = list(letter.headers())
    return Record(DLQ, dlq_partition, dlq_offset, letter.key, letter.value, headers)


def test_dead_letter_listing_shows_position_reason_source_error_value() -> None:
    listed = decode_records([dead_letter_record(1, 7)])
    assert format_listed(listed[0]) == [
        "1:7  reason=malformed-json  behaviour=probe  source=shop.probe.in/2/41  key=cell-7",
        "    error: value is not JSON: Expecting property name",
        "    value: {nope",
    ]
    row = listed[0].as_json()
    assert row["reason"] == "malformed-json"
    assert (row["partition"], row["offset"], row["source_offset"]) == (1, 7, 41)
    assert row["value_preview"] == "{nope"


def test_listing_marks_truncated_and_lists_foreign_records_without_crashing() -> None:
    truncated = dead_letter_record(0, 3, value=b"y" * 100, max_bytes=64)
    foreign = Record(DLQ, 0, 4, None, b"\xff\x01", [("other", b"x")])
    listed = decode_records([truncated, foreign])
    assert [i.position for i in listed] == ["0:4", "0:3"]  # not dead letters come first
    lines = format_listed(listed[0])
    assert lines[0].startswith("0:4  not a dead letter (not a stream_app dead letter: missing")
    assert lines[1] == "    value: b'\\xff\\x01'"
    assert listed[0].as_json()["dead_letter"] is False
    assert "value (truncated: 64 of 100 bytes kept): " in format_listed(listed[1])[2]


# -- redrive planning --------------------------------------------------------------------------


def test_parse_position() -> None:
    assert parse_position("0:42") == (0, 42)
    for bad in ("3", "a:1", "1:", "-1:2", "1:2:3"):
        with pytest.raises(ValueError, match="PARTITION:OFFSET"):
            parse_position(bad)


def test_redrive_refusals_say_why() -> None:
    topics = {"shop.probe.in"}

    def refusal(**overrides: Any) -> str | None:
        record = dead_letter_record(0, 0, **overrides)
        return redrive_refusal(
            DeadLetter.from_record(record.key, record.value, record.headers), topics
        )

    assert refusal() is None
    assert "truncated: only the first 64 of 100 bytes" in str(
        refusal(value=b"z" * 100, max_bytes=64)
    )
    # Work that came from no record: the engine names its origin in place of the topic.
    assert "from an on_boot call" in str(refusal(topic="boot/1/4f2a9c", partition=-1, offset=-1))
    timer = str(refusal(topic="timer/timeout/17", partition=-1, offset=-1))
    assert "no source record: it is parked work from the timer 'timeout'" in timer
    assert "an injected message" in str(refusal(topic="inject/9b1e", partition=-1, offset=-1))
    assert "'shop.gone.in' does not exist" in str(refusal(topic="shop.gone.in"))
    assert "no key" in str(refusal(key=None))


def test_plan_redrive_selects_by_position_and_reason() -> None:
    records = [
        dead_letter_record(0, 0),
        dead_letter_record(0, 1, reason="schema"),
        dead_letter_record(1, 0, value=b"z" * 100, max_bytes=64),
        Record(DLQ, 1, 1, b"k", b"v", []),
    ]
    listed = decode_records(records)
    topics = {"shop.probe.in"}

    everything = plan_redrive(listed, positions=None, reason=None, topics=topics)
    assert [i.position for i in everything.chosen] == ["0:0", "0:1"]
    assert sorted(p for p, _ in everything.refused) == ["1:0", "1:1"]

    malformed = plan_redrive(listed, positions=None, reason="malformed-json", topics=topics)
    assert [i.position for i in malformed.chosen] == ["0:0"]
    assert [p for p, _ in malformed.refused] == ["1:0"]  # truncated, same reason

    chosen = plan_redrive(
        listed, positions=[(0, 1), (0, 1), (5, 5)], reason="malformed-json", topics=topics
    )
    assert chosen.chosen == []
    assert chosen.refused == [("0:1", "reason is schema, not malformed-json")]
    assert chosen.missing == ["5:5"]


# -- argument validation (before any Kafka client) ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [("{nope", "not JSON"), ("[1, 2]", "expected a JSON object"), ("3", "got a int")],
)
def test_send_rejects_a_body_that_is_not_a_json_object(body: str, message: str) -> None:
    result = run("cells", "send", "probe", "c1", "add", "--body", body)
    assert result.exit_code == 2
    assert "Invalid value for '--body'" in result.output
    assert message in result.output


def test_release_rejects_a_negative_skip() -> None:
    result = run("cells", "release", "probe", "c1", "--skip", "-1")
    assert result.exit_code == 2
    assert "--skip" in result.output


@pytest.mark.parametrize("offset", ["3", "x:1", "1:-2"])
def test_redrive_rejects_a_bad_offset(offset: str) -> None:
    result = run("dead-letters", "redrive", "--offset", offset)
    assert result.exit_code == 2
    assert "expected PARTITION:OFFSET" in result.output


@pytest.mark.parametrize("args", [[], ["--all", "--offset", "0:1"]])
def test_redrive_needs_offsets_or_all_but_not_both(args: list[str]) -> None:
    result = run("dead-letters", "redrive", *args)
    assert result.exit_code == 2
    assert "either --offset" in result.output


# -- the read commands against an HTTP server ---------------------------------------------------


def test_unreachable_worker_exits_1_and_names_the_url() -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    for args in (["get", "probe", "c1"], ["list", "probe"], ["parked", "probe"]):
        result = run("cells", *args, "--url", url)
        assert result.exit_code == 1, result.output
        assert f"cannot reach the worker at {url}/stream-app/" in result.output


def test_default_url_comes_from_the_settings() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"STREAM_APP_WEB_HOST": "0.0.0.0", "STREAM_APP_WEB_PORT": str(port)}
    result = run("cells", "list", "probe", env=env)
    assert result.exit_code == 1
    assert f"http://127.0.0.1:{port}/stream-app/cells/probe/" in result.output


def test_get_prints_the_cell_and_exits_1_when_dead(worker: FakeWorker) -> None:
    cell = {"alive": True, "cell_id": "a b", "data": {"count": 3}, "timers": [], "parked": None}
    worker.answer("/stream-app/cells/probe/a%20b/", cell)
    worker.answer("/stream-app/cells/probe/gone/", {**cell, "alive": False, "data": None}, 404)

    shown = run("cells", "get", "probe", "a b", "--url", worker.url + "/")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == cell
    assert '\n  "data": {\n    "count": 3\n  },' in shown.output  # pretty

    dead = run("cells", "get", "probe", "gone", "--url", worker.url)
    assert dead.exit_code == 1
    assert "cell probe/gone is dead (no data) and not parked" in dead.output

    unknown = run("cells", "get", "nosuch", "x", "--url", worker.url)
    assert unknown.exit_code == 1
    assert "no view for behaviour 'nosuch'" in unknown.output
    assert worker.requests[-1] == "/stream-app/cells/nosuch/x/"


def test_list_and_parked_print_lines_or_json(worker: FakeWorker) -> None:
    worker.answer("/stream-app/cells/probe/", {"b": {"count": 1}, "a": {"count": 2}})
    parked = {"a": {"error": "RuntimeError: poison", "attempts": 2, "since_ms": 0, "waiting": 2}}
    worker.answer("/stream-app/parked/probe/", parked)
    worker.answer("/stream-app/parked/quiet/", {})
    worker.answer("/stream-app/cells/broken/", {"error": "boom"}, 500)

    listed = run("cells", "list", "probe", "--url", worker.url)
    assert listed.output.splitlines() == ['a  {"count":2}', 'b  {"count":1}']
    as_json = run("cells", "list", "probe", "--url", worker.url, "--json")
    assert json.loads(as_json.output) == {"a": {"count": 2}, "b": {"count": 1}}

    shown = run("cells", "parked", "probe", "--url", worker.url)
    assert shown.output.splitlines() == format_parked(parked)
    assert "waiting=2" in shown.output
    assert run("cells", "parked", "quiet", "--url", worker.url).output == (
        "no parked cells of quiet\n"
    )

    failed = run("cells", "list", "broken", "--url", worker.url)
    assert failed.exit_code == 1
    assert "answered 500" in failed.output


def test_unreachable_kafka_exits_1_and_names_the_bootstrap_servers() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        bootstrap = f"127.0.0.1:{sock.getsockname()[1]}"
    env = {"STREAM_APP_BOOTSTRAP_SERVERS": bootstrap}
    sent = run("cells", "send", "probe", "c1", "add", "--timeout", "0.5", env=env)
    assert sent.exit_code == 1
    assert f"not acknowledged by Kafka at {bootstrap}" in sent.output
    listed = run("dead-letters", "list", "--timeout", "0.5", env=env)
    assert listed.exit_code == 1
    assert f"cannot reach Kafka at {bootstrap}" in listed.output


# -- send: checked against the app's message types before anything is produced -----------------

COUNTER_APP = ("--app", "stream_app.examples.counter")


@pytest.fixture
def produced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes | str | None, Any]]:
    """What ``cells send`` produces, recorded by a CellClient that needs no broker."""
    records: list[tuple[str, bytes | str | None, Any]] = []

    class RecordingClient(CellClient):
        def __init__(self, settings: Settings | None = None, **_: Any) -> None:
            self.settings = settings or get_settings()

        def produce_raw(
            self, topic: str, key: str | bytes | None, value: bytes | None, **_: Any
        ) -> None:
            records.append((topic, key, json.loads(value or b"null")))

        def flush(self, timeout: float = 60.0) -> None:
            pass

    monkeypatch.setattr("stream_app.clients.cells.CellClient", RecordingClient)
    return records


@pytest.mark.parametrize("by", ['"2"', "true", "2.0"])
def test_send_refuses_what_the_worker_would_dead_letter(by: str, produced: list[Any]) -> None:
    body = f'{{"by": {by}}}'
    result = run("cells", "send", "counter", "c1", "increment", "--body", body, *COUNTER_APP)
    assert result.exit_code == 1, result.output
    assert "counter: increment.body.by: Input should be a valid integer" in result.output
    assert "nothing sent" in result.output
    assert produced == []


def test_send_refuses_an_unknown_type_or_a_missing_field(produced: list[Any]) -> None:
    unknown = run("cells", "send", "counter", "c1", "decrement", *COUNTER_APP)
    assert unknown.exit_code == 1
    assert "unknown message type 'decrement' for behaviour 'counter'" in unknown.output
    # A behaviour registered on the module's Runtime (a culture made inline) is found too.
    tickets = ("--app", "stream_app.examples.tickets")
    missing = run("cells", "send", "ticket", "00001042", "open", "--body", "{}", *tickets)
    assert missing.exit_code == 1
    assert "ticket: open.body.title: Field required" in missing.output
    assert produced == []


def test_send_with_app_sends_a_valid_message_and_says_it_was_validated(
    produced: list[Any],
) -> None:
    env = {"STREAM_APP_APP_ID": "shop"}
    args = ("cells", "send", "counter", "c1", "increment", "--body", '{"by": 2}', "--id", "m-1")
    result = run(*args, *COUNTER_APP, env=env)
    assert result.exit_code == 0, result.output
    assert produced == [
        ("shop.counter.in", "c1", {"type": "increment", "body": {"by": 2}, "id": "m-1"})
    ]
    assert "validated against stream_app.examples.counter" in result.output


def test_send_without_app_sends_unvalidated_and_says_so(produced: list[Any]) -> None:
    result = run("cells", "send", "counter", "c1", "increment", "--body", '{"by": "2"}')
    assert result.exit_code == 0, result.output
    assert [value["body"] for _, _, value in produced] == [{"by": "2"}]
    assert "unvalidated" in result.output
    assert "--app" in result.output


def test_send_names_what_the_app_module_lacks(produced: list[Any]) -> None:
    nope = run("cells", "send", "nope", "c1", "increment", *COUNTER_APP)
    assert nope.exit_code == 1
    assert "stream_app.examples.counter declares no behaviour 'nope'" in nope.output
    assert "['counter']" in nope.output
    missing = run("cells", "send", "counter", "c1", "increment", "--app", "no_such_module_x")
    assert missing.exit_code == 1
    assert "cannot import no_such_module_x" in missing.output
    assert produced == []


def test_send_help_says_what_app_is_for() -> None:
    shown = run("cells", "send", "--help")
    assert "--app MODULE" in shown.output
    assert "unvalidated" in shown.output


def test_entities_send_refuses_an_invalid_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_client(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an invalid command must not reach a client")

    monkeypatch.setattr("stream_app.clients.entities.EntityClient", no_client)
    args = ("entities", "send", "account", "alice", "deposit", '{"amount": "5"}')
    result = run(*args, "--app", "stream_app.examples.ledger")
    assert result.exit_code == 1, result.output
    assert "account: deposit.body.amount: Input should be a valid integer" in result.output
    assert "nothing sent" in result.output
