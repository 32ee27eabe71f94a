"""A worker's ``GET /metrics`` across a real broker, parsed with prometheus-client's own parser.

One worker of ``tests.apps.probe`` on two partitions is sent a known set of records (cell
messages that count, set timers, park a cell and emit an effect that fails twice, and one
malformed record); the test scrapes until the input is drained and checks each metric against
what it sent. A second worker with an empty data directory then restores the tables from their
changelogs, and its restore metrics count every changelog record.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from stream_app.clients.cells import CellClient
from stream_app.testing import WorkerProcess, read_topic, settings_from_env, wait_for

MODULE = "tests.apps.probe"

#: Samples of one scrape: ``(sample name, sorted label items) -> value``.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(worker: WorkerProcess) -> Samples:
    """Every sample of the worker's ``/metrics``, parsed by prometheus-client."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 when absent: a counter not yet counted)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def matching(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample named ``name``, by labels."""
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_metrics_count_what_the_worker_did(
    cells_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    bootstrap: str,
    tmp_path: Path,
) -> None:
    env = {
        **cells_env,
        "STREAM_APP_PARTITIONS": "2",
        "PROBE_FIX_FILE": str(tmp_path / "never-fixed"),
    }
    app_id = env["STREAM_APP_APP_ID"]
    settings = settings_from_env(env)
    topic = settings.input_topic("probe")
    try:
        worker = start_worker(MODULE, env)
        messages: list[tuple[str, str, dict[str, Any]]] = [
            *((f"c{i % 5}", "add", {"by": 1}) for i in range(15)),
            ("later", "timer", {"name": "later", "after_ms": 600_000}),
            ("soon", "timer", {"name": "soon", "after_ms": 10}),
            ("mailer", "emit", {"kind": "flaky", "payload": {"n": 1}}),
            ("sick", "poison", {"tag": "p"}),
        ]
        with CellClient(settings) as client:
            for cell_id, type_, body in messages:
                client.send("probe", cell_id, type_, body)
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, key=b"bad", value=b"{not json", partition=1)
        assert producer.flush(30) == 0
        sent = len(messages) + 1
        dead_letters = settings.dead_letter_topic

        def drained(samples: Samples) -> bool:
            lags = matching(samples, "stream_app_consumer_lag")
            return (
                value(samples, "stream_app_records_in_total", topic=topic, kind="message") == sent
                and len(lags) == 2
                and all(lag == 0 for lag in lags.values())
                and value(samples, "stream_app_effects_done_total") == 1
                and value(samples, "stream_app_timers_fired_total") == 1
                # The dead letter counts once the broker has acknowledged it, the pending
                # timer once the batch that set it has ended.
                and value(samples, "stream_app_records_out_total", topic=dead_letters) == 1
                and value(samples, "stream_app_timers_pending", behaviour="probe") == 1
            )

        samples = wait_for(
            lambda: scrape(worker), drained, timeout=60, what="the input drained and counted"
        )
        assert value(samples, "stream_app_dead_letters_total", reason="malformed-json") == 1
        assert sum(matching(samples, "stream_app_dead_letters_total").values()) == 1
        assert value(samples, "stream_app_timers_overdue_seconds", behaviour="probe") == 0
        assert value(samples, "stream_app_timer_lag_seconds_count") == 1
        assert value(samples, "stream_app_parked_cells", behaviour="probe") == 1
        assert value(samples, "stream_app_cells_parked_total") == 1
        assert value(samples, "stream_app_effects_emitted_total") == 1
        assert value(samples, "stream_app_effect_failures_total") == 2
        assert value(samples, "stream_app_effect_retries_total") == 2
        effects = settings.effects_topic
        assert value(samples, "stream_app_records_in_total", topic=effects, kind="message") == 1
        assert value(samples, "stream_app_records_out_total", topic=effects) == 1
        controls = value(samples, "stream_app_records_in_total", topic=topic, kind="control")
        assert controls >= 2, "each partition booted on a wake record"
        assert value(samples, "stream_app_processing_seconds_count", behaviour="probe") == (
            sent + controls
        )
        assert value(samples, "stream_app_processing_seconds_bucket", behaviour="probe", le="+Inf")
        assert value(samples, "stream_app_transactions_total", outcome="committed") == 0
        assert value(samples, "stream_app_offset_commits_total") >= 1
        fresh = matching(samples, "stream_app_restore_records_restored")
        assert len(fresh) == 6 and set(fresh.values()) == {0.0}, "3 empty changelogs x 2"
        worker.stop()

        # A worker with an empty disk restores every changelog record; under exactly_once it
        # commits transactions, and a message one cell sends another (in a transaction, so
        # followed by its marker) still drains the lag to 0.
        changelogs = [
            settings.changelog_topic(t) for t in ("probe", "probe-timers", "probe-parked")
        ]
        written = {t: len(read_topic(bootstrap, t)) for t in changelogs}
        assert written[settings.changelog_topic("probe")] > 0
        restored_env = {
            **env,
            "STREAM_APP_DATA_DIR": str(tmp_path / "empty"),
            "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once",
        }
        again = start_worker(MODULE, restored_env, name="restored")
        samples = scrape(again)
        restored = matching(samples, "stream_app_restore_records_restored")
        by_topic = {t: 0.0 for t in changelogs}
        for labels, records in restored.items():
            by_topic[dict(labels)["topic"]] += records
        assert by_topic == {t: float(n) for t, n in written.items()}
        assert set(matching(samples, "stream_app_restore_records_remaining").values()) == {0.0}
        with CellClient(settings) as client:
            client.send("probe", "c0", "forward", {"to": "c3"})

        def forwarded(samples: Samples) -> bool:
            lags = matching(samples, "stream_app_consumer_lag")
            return (
                value(samples, "stream_app_records_in_total", topic=topic, kind="message") == 2
                and len(lags) == 2
                and all(lag == 0 for lag in lags.values())
                and value(samples, "stream_app_transactions_total", outcome="committed") >= 2
            )

        samples = wait_for(
            lambda: scrape(again), forwarded, timeout=60, what="the forwarded message, drained"
        )
        assert value(samples, "stream_app_transactions_total", outcome="failed") == 0
        again.stop()
    finally:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        mine = [t for t in admin.list_topics(timeout=30).topics if t.startswith(app_id)]
        if mine:
            for future in admin.delete_topics(mine).values():
                future.result(30)
