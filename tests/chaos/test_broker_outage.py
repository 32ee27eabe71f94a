"""A broker outage under steady load: the worker resumes, loses nothing, logs no ERROR, and stops
within a bounded time — under both guarantees, whether the broker stops cleanly or is killed.

Each case runs its own single-node broker (the session's is shared by other tests) and stops it
for :data:`OUTAGE_S` seconds, on the same data, while a producer keeps sending ``add`` messages
to cells of the probe behaviour. The producer's client buffers and retries across the outage, as
a careful client does; every message it has acknowledged must be applied: at least once under
``at_least_once`` and exactly once under ``exactly_once``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from stream_app.kafka.topics import apply_changes, load_definitions, plan_changes
from stream_app.testing import (
    ConditionTimeout,
    SteadyLoad,
    WorkerProcess,
    settings_from_env,
    wait_for,
)
from stream_app.testing.counts import cell_counts
from stream_app.testing.dev_broker import LocalBroker, find_free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CELLS = 40
#: How long the broker stays down.
OUTAGE_S = 15.0
#: Longest one blocking Kafka call of a commit may take (Settings.kafka_call_timeout_s), by
#: guarantee: at_least_once waits out the outage and the broker's restart (slower after a
#: SIGKILL, which recovers its logs); exactly_once cannot complete a transaction the outage
#: caught, so the shorter it is, the sooner the worker stops for its supervisor.
CALL_TIMEOUT_S = {"at_least_once": 90, "exactly_once": 20}
#: Longest SIGTERM may take to stop the worker (its shutdown_timeout_s, plus the exit).
SHUTDOWN_TIMEOUT_S = 20


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    """A broker of this test's own, stopped (by pid) and purged at the end."""
    broker = LocalBroker(find_free_port())
    try:
        broker.up()
        yield broker
    finally:
        broker.down(purge=True)


def _stop_broker(broker: LocalBroker, how: str) -> None:
    if how == "kill":
        pid = broker.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    broker.down()


@dataclass(frozen=True)
class App:
    """A worker module under test, its input behaviour and message, and its view of counts."""

    module: str
    behaviour: str
    message: str

    def counts(self, worker: WorkerProcess) -> dict[str, int]:
        return cell_counts(worker, self.behaviour)


#: Cells of the runtime (batched input; exactly_once with a transaction per input partition).
PROBE = App("tests.apps.probe", "probe", "add")
#: The counter example, its topics declared by ``topics/counter.toml`` ahead of the worker.
COUNTER = App("stream_app.examples.counter", "counter", "increment")


@pytest.mark.parametrize(
    ("app", "guarantee", "how"),
    [
        (PROBE, "at_least_once", "stop"),
        (PROBE, "at_least_once", "kill"),
        (PROBE, "exactly_once", "stop"),
        (PROBE, "exactly_once", "kill"),
        (COUNTER, "at_least_once", "stop"),
        (COUNTER, "exactly_once", "kill"),
    ],
    ids=lambda v: v.behaviour if isinstance(v, App) else v,
)
def test_a_broker_outage_is_ridden_out(
    app: App,
    guarantee: str,
    how: str,
    own_broker: LocalBroker,
    start_worker: Callable[..., WorkerProcess],
    cells_env: dict[str, str],
) -> None:
    env = {
        **cells_env,
        "STREAM_APP_BOOTSTRAP_SERVERS": own_broker.bootstrap,
        "STREAM_APP_PROCESSING_GUARANTEE": guarantee,
        "STREAM_APP_SESSION_TIMEOUT_S": "10",
        "STREAM_APP_COMMIT_INTERVAL_S": "1",
        "STREAM_APP_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
        "STREAM_APP_KAFKA_CALL_TIMEOUT_S": str(CALL_TIMEOUT_S[guarantee]),
    }
    settings = settings_from_env(env)
    if app is COUNTER:
        admin = AdminClient({"bootstrap.servers": own_broker.bootstrap})
        definitions = load_definitions([ROOT / "topics" / "counter.toml"], settings)
        apply_changes(admin, plan_changes(admin, definitions))
    worker = start_worker(app.module, env)
    load = SteadyLoad(
        own_broker.bootstrap, settings.input_topic(app.behaviour), app.message, cells=CELLS
    )
    load.start()
    try:
        wait_for(
            lambda: sum(app.counts(worker).values()),
            lambda applied: applied >= 500,
            timeout=60,
            what="the first 500 messages applied",
        )
        _stop_broker(own_broker, how)
        down = time.monotonic()
        while time.monotonic() - down < OUTAGE_S:
            assert worker.alive(), worker.log_text()[-4000:]
            time.sleep(0.5)  # the outage itself: nothing to wait for but time
        own_broker.up()
        back = time.monotonic()
        wait_for(
            load.total,
            lambda acked: acked > 0,
            timeout=30,
            what="acknowledgements after the outage",
        )
    finally:
        load.halt.set()
        load.join(timeout=150)
    assert not load.is_alive(), "the producer did not finish"
    expected = dict(load.acked)

    def all_applied() -> bool:
        counts = app.counts(worker)
        return all(counts.get(c, 0) >= n for c, n in expected.items())

    outcome = wait_for(
        lambda: "exited" if not worker.alive() else ("applied" if all_applied() else ""),
        bool,
        timeout=2 * CALL_TIMEOUT_S[guarantee] + 60,
        what=f"{sum(expected.values())} acknowledged messages applied, or a loud exit",
    )
    resumed_s = time.monotonic() - back
    stopped = None
    if outcome == "exited":
        # A clean, loud exit, for a supervisor to act on: never a silent stall.
        assert guarantee == "exactly_once", "at_least_once must ride an outage out"
        assert worker.process is not None
        assert worker.process.returncode not in (0, None)
        assert "stopping the worker" in worker.log_text(), worker.log_text()[-4000:]
        stopped = worker
        worker = start_worker(app.module, env, name="restarted")  # the supervisor's part
        try:
            wait_for(all_applied, bool, timeout=120, what="everything applied after a restart")
        except ConditionTimeout as exc:
            raise AssertionError(f"{exc}\n--- log ---\n{worker.log_text()[-6000:]}") from None
        resumed_s = time.monotonic() - back
    seen = app.counts(worker)
    if guarantee == "exactly_once":
        assert seen == expected, "applied more than once"
    else:
        assert set(seen) == set(expected)
    error_lines = worker.error_lines()
    assert not error_lines, f"{len(error_lines)} ERROR lines, first ones:\n" + "\n".join(
        error_lines[:20]
    )
    warnings = worker.log_text().count("[WARNING]")
    assert warnings < 200, f"{warnings} WARNING lines: retries are not rate-limited"
    stopping = time.monotonic()
    code = worker.stop(timeout=SHUTDOWN_TIMEOUT_S + 15)
    stop_s = time.monotonic() - stopping
    assert code == 0, worker.log_text()[-4000:]
    print(
        f"\n{app.behaviour}/{guarantee}/{how}: {sum(expected.values())} acked, all applied "
        f"{resumed_s:.1f}s after the broker was back"
        f"{' (after a loud exit and a restart)' if stopped else ''}; {warnings} WARNING "
        f"lines; SIGTERM stop took {stop_s:.1f}s"
    )
