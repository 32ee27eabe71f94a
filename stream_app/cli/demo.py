"""``stream-app demo``: the counter app end to end on a real broker, started and stopped for you.

The worker runs the counter example (a Behaviour on a Runtime) under ``exactly_once``, the
guarantee the README's tour promises for it; the cells are read from the runtime's cells view.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import click

from stream_app.core.dead_letters import DeadLetter
from stream_app.kafka.topics import apply_changes, load_definitions, plan_changes
from stream_app.testing import WorkerProcess, read_topic, settings_from_env, wait_for
from stream_app.testing.counts import cell_counts
from stream_app.testing.dev_broker import find_free_port, kafka_broker, project_root

__all__ = ["demo"]

# (cell id, value) pairs the demo produces, in order; bad ones end in the dead-letter topic.
SAMPLE: list[tuple[bytes, bytes]] = (
    [(b"alice", b'{"type": "increment"}')] * 10
    + [(b"bob", b'{"type": "increment", "body": {"by": 5}}')] * 3
    + [(b"carol", b'{"type": "increment", "body": {"by": 7}, "id": "c-1"}')]
    + [(b"dave", b'{"type": "increment"}')] * 4
    + [(b"dave", b'{"type": "reset"}')]
    + [(b"erin", b'{"type": "increment", "body": {"by": 2}}')] * 2
    + [
        (b"bob", b'{"type": "increment", "body": {"by": "lots"}}'),
        (b"bob", b"{not json"),
        (b"erin", b'{"type": "explode"}'),
    ]
)
EXPECTED = {"alice": 10, "bob": 15, "carol": 7, "erin": 4}


@click.command()
@click.option("--keep-data", is_flag=True, help="Keep the worker's data dir and log.")
def demo(keep_data: bool) -> None:
    """Start Kafka, apply topics, run a counter worker, send messages, print the cells."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    workdir = Path(tempfile.mkdtemp(prefix="stream-app-demo-"))
    with kafka_broker() as broker:
        click.echo(
            f"[1/5] kafka ({broker.source}) on {broker.bootstrap} in {broker.started_s:.1f}s"
        )
        env = {
            "STREAM_APP_BOOTSTRAP_SERVERS": broker.bootstrap,
            "STREAM_APP_APP_ID": f"demo-{uuid.uuid4().hex[:8]}",
            "STREAM_APP_DATA_DIR": str(workdir / "data"),
            "STREAM_APP_PARTITIONS": "4",
            "STREAM_APP_SESSION_TIMEOUT_S": "10",
            "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once",
        }
        settings = settings_from_env(env)
        # The demo stops the broker under its clients; their disconnect notices are noise.
        quiet: dict[str, str | int | float | bool] = {
            "bootstrap.servers": broker.bootstrap,
            "log.connection.close": False,
        }
        admin = AdminClient(quiet)
        definitions = load_definitions([project_root() / "topics" / "counter.toml"], settings)
        apply_changes(admin, plan_changes(admin, definitions))
        click.echo(f"[2/5] topics applied: {', '.join(d.name for d in definitions)}")

        worker = WorkerProcess(
            "stream_app.examples.counter",
            env={**os.environ, **env},
            log_path=workdir / "worker.log",
            web_port=find_free_port(),
        )
        worker.start()
        try:
            started = time.monotonic()
            worker.wait_ready()
            click.echo(
                f"[3/5] worker pid {worker.pid} ({settings.processing_guarantee}) ready in "
                f"{time.monotonic() - started:.1f}s"
            )

            # Keys partitioned with murmur2, as the runtime does (records produced otherwise are
            # forwarded to their cell's partition by the worker, at the cost of a hop).
            producer = Producer({**quiet, "acks": "all", "partitioner": "murmur2_random"})
            for key, value in SAMPLE:
                producer.produce(settings.input_topic("counter"), key=key, value=value)
            producer.flush(30)
            click.echo(f"[4/5] produced {len(SAMPLE)} records to {settings.input_topic('counter')}")

            def cells() -> dict[str, int | None]:
                counts = cell_counts(worker, "counter")
                return {cell: counts.get(cell) for cell in [*EXPECTED, "dave"]}

            seen = wait_for(
                cells, lambda got: got == {**EXPECTED, "dave": None}, timeout=60, what="counts"
            )
            letters = wait_for(
                lambda: read_topic(broker.bootstrap, settings.dead_letter_topic),
                lambda rs: len(rs) >= 3,
                timeout=60,
                what="dead letters",
            )
            click.echo("[5/5] cell state, read from the worker's HTTP view:")
            for cell, count in seen.items():
                shown = "dead (reset: key deleted)" if count is None else f"count = {count}"
                click.echo(f"    {cell:<6} {shown}")
            click.echo(f"  dead letters on {settings.dead_letter_topic}:")
            for record in letters:
                letter = DeadLetter.from_record(record.key, record.value, record.headers)
                click.echo(
                    f"    {letter.reason:<14} {letter.error}  "
                    f"(from {letter.source_topic}[{letter.source_partition}]@"
                    f"{letter.source_offset}, value {json.dumps((letter.value or b'').decode())})"
                )
        finally:
            worker.stop()
            # librdkafka clients must go before the broker does, or they log its shutdown.
            del admin
            if "producer" in locals():
                del producer
            gc.collect()
            if keep_data:
                click.echo(f"worker data and log kept in {workdir}")
    click.echo("demo done: worker stopped, broker stopped")
