"""`stream-app kafka tool`: Kafka's own console tools, run from .kafka's jars, on a real broker."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from stream_app.core.partitioner import partition_for
from stream_app.testing import keyed_producer, read_topic
from stream_app.testing.console_tools import TOOLS
from stream_app.testing.dev_broker import (
    KafkaJars,
    LocalBroker,
    broker_answers,
    find_free_port,
    kafka_home,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3


def tool(
    *args: str, stdin: str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """`stream-app kafka tool ARGS` as a user runs it; the process ends within ``timeout``."""
    exe = Path(sys.executable).with_name("stream-app")
    return subprocess.run(
        [str(exe), "kafka", "tool", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_named_tool_is_a_class_in_the_jars() -> None:
    jars = KafkaJars(kafka_home())
    jars.fetch()
    classes: set[str] = set()
    for jar in jars.dir.glob("*.jar"):
        with zipfile.ZipFile(jar) as archive:
            classes.update(archive.namelist())
    missing = {
        name: main
        for name, main in TOOLS.items()
        if main.replace(".", "/") + ".class" not in classes
    }
    assert missing == {}
    assert "org/apache/kafka/tools/ConsoleProducer.class" in classes
    assert "org/apache/kafka/tools/consumer/ConsoleConsumer.class" in classes


def test_console_producer_and_consumer_round_trip(bootstrap: str) -> None:
    topic = f"tools-{uuid.uuid4().hex[:10]}"
    created = tool(
        "kafka-topics",
        "--",
        "--bootstrap-server",
        bootstrap,
        "--create",
        "--topic",
        topic,
        "--partitions",
        str(PARTITIONS),
        "--replication-factor",
        "1",
    )
    assert created.returncode == 0, created.stderr
    assert f"Created topic {topic}" in created.stdout

    sent = [(f"cell-{i}", f'{{"type": "increment", "body": {{"by": {i}}}}}') for i in range(12)]
    produced = tool(
        "kafka-console-producer",
        "--",
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--property",
        "parse.key=true",
        "--property",
        "key.separator=:",
        stdin="".join(f"{key}:{value}\n" for key, value in sent),
    )
    assert produced.returncode == 0, produced.stderr

    records = read_topic(bootstrap, topic)
    assert sorted((r.key, r.value) for r in records) == sorted(
        (key.encode(), value.encode()) for key, value in sent
    )
    # The Java client's partitioner puts each key where stream_app's murmur2 says it belongs.
    for record in records:
        assert record.key is not None
        assert record.partition == partition_for(record.key, PARTITIONS)

    consumed = tool(
        "kafka-console-consumer",
        "--",
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--max-messages",
        str(len(sent)),
        "--timeout-ms",
        "60000",
        "--property",
        "print.key=true",
        "--property",
        "key.separator=:",
    )
    assert consumed.returncode == 0, consumed.stderr
    lines = consumed.stdout.splitlines()
    assert sorted(lines) == sorted(f"{key}:{value}" for key, value in sent)
    assert f"Processed a total of {len(sent)} messages" in consumed.stderr


def test_the_exit_status_is_the_tools(bootstrap: str) -> None:
    missing = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    result = tool(
        "kafka-topics", "--", "--bootstrap-server", bootstrap, "--describe", "--topic", missing
    )
    assert result.returncode == 1
    # TopicCommand prints its one-line error on stdout and the stack trace on stderr.
    assert f"Topic '{missing}' does not exist" in result.stdout
    assert "IllegalArgumentException" in result.stderr


def test_changed_pom_resolves_beside_the_jars_of_a_running_broker(tmp_path: Path) -> None:
    """A re-resolve (a new pom) while a broker runs leaves that broker's jars alone."""
    real = KafkaJars(kafka_home())
    real.fetch()
    home = tmp_path / "kafka-home"
    # The running broker's jars: the resolved set, copied instead of downloaded again.
    shutil.copytree(
        real.dir, home / "jars" / real.dir.name, ignore=shutil.ignore_patterns(".users")
    )
    broker = LocalBroker(find_free_port(), home=home)
    assert broker.jars_ready()
    pom = tmp_path / "pom.xml"
    pom.write_text(real.pom.read_text() + "<!-- another pom: another hash -->\n")
    changed = KafkaJars(home, pom)
    try:
        broker.up()
        assert changed.fetch() is True, "a different pom resolves with Maven"
        assert changed.dir != broker.libs
        assert {p.name for p in changed.dir.glob("*.jar")} == {
            p.name for p in broker.libs.glob("*.jar")
        }
        assert broker.libs.is_dir(), "the running broker's jars are kept"
        assert broker_answers(broker.bootstrap)
        # The broker still serves: a topic created and a record written and read back.
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("after-resolve", 1, 1)])["after-resolve"].result(30)
        producer = keyed_producer(broker.bootstrap)
        producer.produce("after-resolve", key=b"k", value=b"v")
        assert producer.flush(30) == 0
        assert [(r.key, r.value) for r in read_topic(broker.bootstrap, "after-resolve")] == [
            (b"k", b"v")
        ]
    finally:
        broker.down(purge=True)
    assert broker.libs.is_dir()
    assert changed.fetch() is False
    assert not broker.libs.exists(), "unused once the broker stopped: the next fetch deletes it"
    assert changed.ready()
