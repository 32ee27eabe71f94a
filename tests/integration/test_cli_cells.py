"""``stream-app cells`` and ``stream-app dead-letters`` against a real broker and a probe worker.

The CLI runs in-process (click's CliRunner) with the worker's ``STREAM_APP_*`` environment and
its web address, as an operator would run it next to a deployment.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from stream_app.cli.main import cli
from stream_app.clients.cells import CellClient
from stream_app.core.partitioner import partition_for
from stream_app.ops.redrive import REDRIVEN_FROM_HEADER
from stream_app.testing import (
    ConditionTimeout,
    WorkerProcess,
    read_topic,
    settings_from_env,
    wait_for,
)

pytestmark = pytest.mark.integration

PROBE = "tests.apps.probe"
T = TypeVar("T")


class Cli:
    """Runs ``stream-app`` commands with one app's environment and one worker's URL."""

    def __init__(self, env: dict[str, str], worker: WorkerProcess) -> None:
        self.env = env
        self.url = f"http://127.0.0.1:{worker.web_port}"
        self.worker = worker

    def __call__(self, *args: str, code: int | None = 0) -> Result:
        result = CliRunner().invoke(cli, list(args), env=self.env, catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, (
                f"stream-app {' '.join(args)} exited {result.exit_code}:\n{result.output}\n"
                f"--- worker log tail ---\n{self.worker.log_text()[-3000:]}"
            )
        return result

    def web(self, *args: str) -> Result:
        """A read command, pointed at the worker."""
        return self(*args, "--url", self.url, code=None)

    def cell(self, cell_id: str) -> dict[str, Any] | None:
        """``cells get probe <id>`` decoded, ``None`` while the cell is dead and not parked."""
        result = self.web("cells", "get", "probe", cell_id)
        if result.exit_code == 1 and "is dead (no data) and not parked" in result.output:
            return None
        assert result.exit_code == 0, result.output
        described: dict[str, Any] = json.loads(result.output)
        return described

    def wait(self, probe: Callable[[], T], done: Callable[[T], bool], *, what: str) -> T:
        """:func:`wait_for` with a deadline of 60 s, showing the worker's log if it passes."""
        try:
            return wait_for(probe, done, timeout=60, interval=0.3, what=what)
        except ConditionTimeout as exc:
            tail = self.worker.log_text()[-4000:]
            raise ConditionTimeout(f"{exc}\n--- worker log tail ---\n{tail}") from None

    def dead_letters(self, reason: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(
            self("dead-letters", "list", "--reason", reason, "--json").output
        )
        return rows


def same_partition_as(cell_id: str, partitions: int) -> str:
    """Another cell id whose records go to the same partition as ``cell_id``'s."""
    home = partition_for(cell_id.encode(), partitions)
    return next(
        f"healthy-{i}"
        for i in range(1000)
        if partition_for(f"healthy-{i}".encode(), partitions) == home
    )


def test_inspect_park_release_and_redrive_dead_letters(
    cells_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    fix = tmp_path / "fixed"
    env = {**cells_env, "PROBE_FIX_FILE": str(fix)}
    settings = settings_from_env(env)
    worker = start_worker(PROBE, env)
    run = Cli(env, worker)

    # send + get: the message reaches the cell, get shows its data.
    sent = run("cells", "send", "probe", "c1", "add", "--body", '{"by": 2}')
    assert "sent add" in sent.output
    cell = run.wait(
        lambda: run.cell("c1"),
        lambda c: c is not None and c["data"]["count"] == 2,
        what="c1 counted 2",
    )
    assert cell is not None and cell["alive"] is True and cell["parked"] is None
    assert run.web("cells", "list", "probe").output.splitlines() == [
        'c1  {"applied":[],"boots":0,"count":2,"fired":0,"value":null}'
    ]

    # A poison message parks the cell; the note after it waits behind it.
    healthy = same_partition_as("sick", settings.partitions)
    run("cells", "send", "probe", "sick", "poison", "--body", '{"tag": "p1"}')
    run("cells", "send", "probe", "sick", "note", "--body", '{"tag": "n1"}')
    parked = run.wait(
        lambda: json.loads(run.web("cells", "parked", "probe", "--json").output),
        lambda p: p.get("sick", {}).get("waiting") == 2,
        what="sick parked with 2 waiting",
    )
    assert parked["sick"]["error"] == "RuntimeError: poison p1"
    listing = run.web("cells", "parked", "probe").output
    assert listing.startswith("sick  waiting=2  since=")
    assert "error=RuntimeError: poison p1" in listing
    sick = run.cell("sick")
    assert sick is not None and sick["alive"] is False
    assert [item["kind"] for item in sick["parked"]["items"]] == ["message", "message"]

    # Another cell on the same partition is still served.
    run("cells", "send", "probe", healthy, "add")
    run.wait(
        lambda: run.cell(healthy),
        lambda c: c is not None and c["data"]["count"] == 1,
        what=f"{healthy} (same partition as sick) counted 1",
    )

    # After the fix, release runs the waiting work again, in order.
    fix.write_text("fixed\n")
    released = run("cells", "release", "probe", "sick")
    assert "asked to release probe/sick" in released.output
    sick = run.wait(
        lambda: run.cell("sick"),
        lambda c: c is not None and c["parked"] is None and c["alive"],
        what="sick released",
    )
    assert sick is not None and sick["data"]["applied"] == ["p1", "n1"]
    assert run.web("cells", "parked", "probe").output == "no parked cells of probe\n"

    # A malformed record is dead-lettered with its source offset...
    in_topic = settings.input_topic("probe")
    with CellClient(settings) as client:
        client.produce_raw(in_topic, "m1", b"{nope")
    (source,) = [r for r in read_topic(settings.bootstrap_servers, in_topic) if r.value == b"{nope"]
    (letter,) = run.wait(
        lambda: run.dead_letters("malformed-json"),
        lambda rows: len(rows) == 1,
        what="one malformed-json dead letter",
    )
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        in_topic,
        source.partition,
        source.offset,
    )
    assert letter["value_preview"] == "{nope"
    text = run("dead-letters", "list").output
    assert f"source={in_topic}/{source.partition}/{source.offset}" in text
    assert "reason=malformed-json  behaviour=probe" in text

    # ...a dry run produces nothing...
    position = f"{letter['partition']}:{letter['offset']}"
    inputs = len(read_topic(settings.bootstrap_servers, in_topic))
    dry = run("dead-letters", "redrive", "--all", "--reason", "malformed-json", "--dry-run")
    assert f"would redrive {position} (malformed-json" in dry.output
    assert "1 dead letter(s) would be redriven (dry run)" in dry.output
    assert len(read_topic(settings.bootstrap_servers, in_topic)) == inputs

    # ...and a redrive produces it again, to be rejected again as a second dead letter.
    redriven = run("dead-letters", "redrive", "--all", "--reason", "malformed-json")
    assert f"redriven {position} (malformed-json" in redriven.output
    assert "1 dead letter(s) redriven" in redriven.output
    again = sorted(
        (r for r in read_topic(settings.bootstrap_servers, in_topic) if r.value == b"{nope"),
        key=lambda r: r.offset,
    )
    assert len(again) == 2
    origin = f"{settings.dead_letter_topic}/{letter['partition']}/{letter['offset']}"
    assert (REDRIVEN_FROM_HEADER, origin.encode()) in again[1].headers
    assert (again[1].partition, again[1].key) == (source.partition, b"m1")
    rows = run.wait(
        lambda: run.dead_letters("malformed-json"),
        lambda rows: len(rows) == 2,
        what="a second malformed-json dead letter",
    )
    assert sorted(r["source_offset"] for r in rows) == [source.offset, again[1].offset]

    # An offset that holds nothing is reported, with exit status 1.
    missing = run("dead-letters", "redrive", "--offset", "0:999999", code=1)
    assert "missing 0:999999: no record at that position" in missing.output


def test_send_with_app_refuses_what_the_worker_would_dead_letter(
    cells_env: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = settings_from_env(cells_env)
    worker = start_worker(PROBE, cells_env)
    run = Cli(cells_env, worker)
    app = ("--app", PROBE)

    for by in ('"2"', "true", "2.0"):
        refused = run(
            "cells", "send", "probe", "c1", "add", "--body", f'{{"by": {by}}}', *app, code=1
        )
        assert "refused, nothing sent: probe: add.body.by: Input should be a valid integer" in (
            refused.output
        )
    sent = run("cells", "send", "probe", "c1", "add", "--body", '{"by": 3}', *app)
    assert sent.output.startswith('sent add {"by": 3} to probe/c1')
    assert "validated against tests.apps.probe" in sent.output

    run.wait(
        lambda: run.cell("c1"),
        lambda c: c is not None and c["data"]["count"] == 3,
        what="c1 counted the valid 3",
    )
    # The refused bodies never reached Kafka: the input topic holds c1's valid message only,
    # and the worker dead-lettered nothing.
    records = read_topic(settings.bootstrap_servers, settings.input_topic("probe"))
    assert [json.loads(r.value or b"")["body"] for r in records if r.key == b"c1"] == [{"by": 3}]
    assert run.dead_letters("schema") == []
