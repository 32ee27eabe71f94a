"""Unit tests of StreamApp's recovery fixes: flow control that keeps queued records, and the
discard of table databases left by an unclean stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mode.utils.queues import FlowControlQueue

from stream_app.kafka.app import create_app
from stream_app.kafka.faust_patches import CLEAN_MARKER, KeepingFlowControl, discard_unclean_tables
from stream_app.settings import Settings


def test_resuming_a_running_flow_keeps_the_records_already_queued() -> None:
    async def scenario() -> tuple[int, int]:
        flow = KeepingFlowControl(initially_suspended=False)
        queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        queue.put_nowait("record handed to the agent")
        flow.resume()  # Faust's recovery does this once more when it completes
        kept = queue.qsize()
        flow.suspend()  # a rebalance
        flow.resume()  # stale records from before the suspension are dropped
        return kept, queue.qsize()

    kept, after_rebalance = asyncio.run(scenario())
    assert kept == 1, "resuming a running flow must not drop the queued record"
    assert after_rebalance == 0, "resuming a suspended flow still empties the queues"


def test_an_unclean_stop_discards_the_table_databases(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    (tables / "counter-0.db").mkdir(parents=True)
    (tables / "counter-0.db" / "CURRENT").write_text("x")
    (tables / "counter-1.db").mkdir()
    assert sorted(p.name for p in discard_unclean_tables(tables)) == [
        "counter-0.db",
        "counter-1.db",
    ]
    assert list(tables.iterdir()) == []


def test_a_clean_stop_keeps_them_once(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    (tables / "counter-0.db").mkdir(parents=True)
    (tables / CLEAN_MARKER).touch()
    assert discard_unclean_tables(tables) == []
    assert (tables / "counter-0.db").is_dir()
    assert not (tables / CLEAN_MARKER).exists(), "the marker is consumed"
    assert [p.name for p in discard_unclean_tables(tables)] == ["counter-0.db"], (
        "the next start without a new clean stop discards them"
    )


def test_no_table_directory_is_nothing_to_discard(tmp_path: Path) -> None:
    assert discard_unclean_tables(tmp_path / "missing") == []


def test_a_clean_stop_is_marked_under_either_guarantee(tmp_path: Path) -> None:
    # Under at_least_once too: a batch's writes reach RocksDB before the broker acknowledges
    # their changelog records, so only a clean stop may keep the databases.
    for guarantee in ("at_least_once", "exactly_once"):
        settings = Settings(
            app_id=f"recovery-{guarantee}",
            data_dir=tmp_path / guarantee,
            processing_guarantee=guarantee,
        )
        app = create_app(settings)
        tables = Path(app.conf.tabledir)
        tables.mkdir(parents=True)
        asyncio.run(app.on_shutdown())
        assert (tables / CLEAN_MARKER).exists(), guarantee
