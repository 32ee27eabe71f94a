"""Apache Kafka's own command-line tools, run from the jars of the development broker.

``stream-app kafka tool kafka-console-producer -- --bootstrap-server … --topic …`` does what
``bin/kafka-console-producer.sh`` of a Kafka download does: it runs the same main class with
Java 17+ (:func:`~stream_app.testing.dev_broker.find_java`) on the jars Maven resolves from
``tools/kafka/pom.xml`` (:class:`~stream_app.testing.dev_broker.KafkaJars`, downloaded on first
use). A tool needs only the jars, not a local broker: ``--bootstrap-server`` can name any
cluster, and the tool works the same whether ``stream-app kafka up`` started a broker or not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stream_app.testing.dev_broker import KafkaJars, find_java

__all__ = ["TOOLS", "main_class", "tool_command"]

#: Script name (as in Kafka's ``bin/``, without ``.sh``) -> main class, for Kafka 4.1.
TOOLS: Mapping[str, str] = {
    "kafka-acls": "org.apache.kafka.tools.AclCommand",
    "kafka-broker-api-versions": "org.apache.kafka.tools.BrokerApiVersionsCommand",
    "kafka-client-metrics": "org.apache.kafka.tools.ClientMetricsCommand",
    "kafka-cluster": "org.apache.kafka.tools.ClusterTool",
    "kafka-configs": "kafka.admin.ConfigCommand",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-share-consumer": "org.apache.kafka.tools.consumer.ConsoleShareConsumer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "kafka-delegation-tokens": "org.apache.kafka.tools.DelegationTokenCommand",
    "kafka-delete-records": "org.apache.kafka.tools.DeleteRecordsCommand",
    "kafka-dump-log": "kafka.tools.DumpLogSegments",
    "kafka-e2e-latency": "org.apache.kafka.tools.EndToEndLatency",
    "kafka-features": "org.apache.kafka.tools.FeatureCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-groups": "org.apache.kafka.tools.GroupsCommand",
    "kafka-jmx": "org.apache.kafka.tools.JmxTool",
    "kafka-leader-election": "org.apache.kafka.tools.LeaderElectionCommand",
    "kafka-log-dirs": "org.apache.kafka.tools.LogDirsCommand",
    "kafka-metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "kafka-reassign-partitions": "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
    "kafka-replica-verification": "org.apache.kafka.tools.ReplicaVerificationTool",
    "kafka-share-consumer-perf-test": "org.apache.kafka.tools.ShareConsumerPerformance",
    "kafka-share-groups": "org.apache.kafka.tools.consumer.group.ShareGroupCommand",
    "kafka-storage": "kafka.tools.StorageTool",
    "kafka-streams-groups": "org.apache.kafka.tools.streams.StreamsGroupCommand",
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-transactions": "org.apache.kafka.tools.TransactionsCommand",
    "kafka-verifiable-consumer": "org.apache.kafka.tools.VerifiableConsumer",
    "kafka-verifiable-producer": "org.apache.kafka.tools.VerifiableProducer",
}

# Kafka's config/tools-log4j2.yaml: warnings and errors on stderr, stdout left to the tool.
_LOG_CONFIG = """\
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = err
"""


def main_class(name: str) -> str:
    """The main class of the Kafka tool ``name``: its script name, with or without ``.sh``.

    Raises:
        ValueError: ``name`` is not a known tool; the message lists the known ones.
    """
    try:
        return TOOLS[name.removesuffix(".sh")]
    except KeyError:
        raise ValueError(
            f"unknown Kafka tool {name!r}; known tools: {', '.join(sorted(TOOLS))}"
        ) from None


def tool_command(name: str, args: Sequence[str], jars: KafkaJars) -> list[str]:
    """The java command line that runs Kafka tool ``name`` with ``args``.

    Checks java, fetches the jars if they are missing (Maven, once) and writes the tools'
    log4j2 config into ``jars.home``.

    Raises:
        ValueError: Unknown tool (checked first, before java or the jars).
        ToolMissingError: No java 17+, or no jars and no Maven.
    """
    main = main_class(name)
    java = find_java(f"Kafka's {name}")
    jars.fetch()
    log_config = jars.home / "tools-log4j2.properties"
    if not log_config.is_file() or log_config.read_text() != _LOG_CONFIG:
        log_config.write_text(_LOG_CONFIG)
    return [
        java,
        "-Xmx512m",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log_config}",
        "-cp",
        jars.classpath,
        main,
        *args,
    ]
