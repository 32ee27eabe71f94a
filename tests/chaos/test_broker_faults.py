"""A three-node cluster loses a broker, then its active controller, under load: nothing lost.

One :class:`~stream_app.testing.dev_broker.LocalCluster` serves the module. An ``exactly_once``
worker of the probe app runs on it with replication factor 3 and ``min.insync.replicas`` 2, fed
by a producer that counts what the cluster acknowledged; :func:`run_broker_faults` SIGKILLs a
node that is only a broker and restarts it, then does the same to the active controller. The
worker must go on applying while each node is down, run throughout, and end with every
acknowledged message applied exactly once.

(A single broker's outage, which a worker waits out, is ``test_broker_outage.py``.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from stream_app.testing import SteadyLoad, WorkerProcess, settings_from_env
from stream_app.testing.broker_faults import coordinator_loss, run_broker_faults
from stream_app.testing.dev_broker import LocalCluster, find_free_ports

pytestmark = pytest.mark.integration

CELLS = 40
#: About 400 messages a second offered: steady work, not a saturated worker on a shared machine.
PER_ROUND, PAUSE_S = 10, 0.025


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Three combined broker+controller nodes of the module's own, stopped and purged after."""
    cluster = LocalCluster(find_free_ports(6), count=3)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down(purge=True)


def test_a_broker_then_the_active_controller_die_and_nothing_acknowledged_is_lost(
    cluster: LocalCluster,
    start_worker: Callable[..., WorkerProcess],
    cells_env: dict[str, str],
) -> None:
    env = {
        **cells_env,
        "STREAM_APP_BOOTSTRAP_SERVERS": cluster.bootstrap,
        "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once",
        "STREAM_APP_REPLICATION_FACTOR": "3",
        "STREAM_APP_MIN_INSYNC_REPLICAS": "2",
        "STREAM_APP_SESSION_TIMEOUT_S": "10",
        "STREAM_APP_COMMIT_INTERVAL_S": "1",
        # A transaction call wedged by the killed coordinator (librdkafka 5456/5511) stops the
        # worker within 2 x 10 s + grace, and its stop within 10 s; the harness restarts it.
        "STREAM_APP_KAFKA_CALL_TIMEOUT_S": "10",
        "STREAM_APP_SHUTDOWN_TIMEOUT_S": "10",
    }
    settings = settings_from_env(env)
    worker = start_worker("tests.apps.probe", env)
    topic = settings.input_topic("probe")
    load = SteadyLoad(
        cluster.bootstrap, topic, "add", cells=CELLS, per_round=PER_ROUND, pause=PAUSE_S
    )

    report = run_broker_faults(cluster, worker, load, "probe", timeout=90)
    print(f"\nbroker faults: {json.dumps(report.as_json())}")

    assert [kill.role for kill in report.kills] == ["broker", "controller"]
    broker, controller = report.kills
    assert controller.new_controller != controller.node, "another controller took over"
    assert broker.node != controller.node
    assert report.acked > 0
    assert (report.lost, report.duplicated) == (0, 0), report
    assert report.worker_alive, worker.log_text()[-4000:]

    # A worker may only have stopped for the one known cause: a transaction call (offsets or
    # commit) to the killed coordinator that did not finish within the call time-out (wedged
    # in librdkafka, the batched input's own bound) or failed with the coordinator's loss; a
    # loud stop, and the restart loses and repeats nothing (asserted above).
    unexpected = [r for r in report.restarts if not coordinator_loss(r)]
    assert not unexpected, unexpected
    # librdkafka logs a retried CONCURRENT_TRANSACTIONS answer of a coordinator that is moving
    # at ERROR level; it retries it itself. Any other ERROR line fails the test.
    concurrent = "another concurrent operation on the same transaction was ongoing"
    errors = [line for line in worker.error_lines() if concurrent not in line]
    assert not errors, errors[:20]

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions.values()
    assert {len(p.replicas) for p in partitions} == {3}
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    assert config["min.insync.replicas"].value == "2"
