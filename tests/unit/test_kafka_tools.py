"""`stream-app kafka tool`: script names to main classes, and the java command (no java run)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream_app.cli.kafka import kafka
from stream_app.testing import console_tools
from stream_app.testing.console_tools import TOOLS, main_class, tool_command
from stream_app.testing.dev_broker import KafkaJars

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "main"),
    [
        ("kafka-console-producer", "org.apache.kafka.tools.ConsoleProducer"),
        ("kafka-console-consumer", "org.apache.kafka.tools.consumer.ConsoleConsumer"),
        ("kafka-console-consumer.sh", "org.apache.kafka.tools.consumer.ConsoleConsumer"),
        ("kafka-topics", "org.apache.kafka.tools.TopicCommand"),
        ("kafka-consumer-groups", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"),
        ("kafka-transactions.sh", "org.apache.kafka.tools.TransactionsCommand"),
        ("kafka-configs", "kafka.admin.ConfigCommand"),
    ],
)
def test_script_names_map_to_main_classes(name: str, main: str) -> None:
    assert main_class(name) == main


@pytest.mark.parametrize("name", ["kafka-nope", "console-producer", "kafka-console-producer.py"])
def test_an_unknown_tool_lists_the_known_ones(name: str) -> None:
    with pytest.raises(ValueError, match=f"unknown Kafka tool '{name}'") as info:
        main_class(name)
    listed = str(info.value).split("known tools: ", 1)[1].split(", ")
    assert listed == sorted(TOOLS)


def test_the_cli_rejects_an_unknown_tool_before_looking_for_java(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn: neither is reached
    result = CliRunner().invoke(kafka, ["tool", "kafka-nope", "--", "--bootstrap-server", "x"])
    assert result.exit_code == 2
    assert "unknown Kafka tool 'kafka-nope'" in result.output
    assert "kafka-console-producer" in result.output and "kafka-topics" in result.output
    assert "java" not in result.output


def test_the_cli_without_a_name_lists_the_tools() -> None:
    result = CliRunner().invoke(kafka, ["tool"])
    assert result.exit_code == 0
    rows = [line.split() for line in result.output.splitlines()]
    assert rows == [[name, main] for name, main in sorted(TOOLS.items())]


def test_the_command_runs_the_main_class_on_the_resolved_jars(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pom = ROOT / "tools" / "kafka" / "pom.xml"
    jars = KafkaJars(tmp_path / "home", pom)
    jars.dir.mkdir(parents=True)
    (jars.dir / ".resolved-from").write_text(hashlib.sha256(pom.read_bytes()).hexdigest())
    monkeypatch.setattr(console_tools, "find_java", lambda purpose: "/opt/jdk-21/bin/java")
    monkeypatch.setenv("PATH", str(tmp_path))  # ready jars: no Maven needed

    command = tool_command("kafka-console-consumer.sh", ["--topic", "t", "--from-beginning"], jars)

    assert command[0] == "/opt/jdk-21/bin/java"
    assert command[command.index("-cp") + 1] == f"{jars.dir}/*"
    assert command[-4:] == [
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--topic",
        "t",
        "--from-beginning",
    ]
    (log_option,) = [arg for arg in command if arg.startswith("-Dlog4j2.configurationFile=")]
    log_config = Path(log_option.split("=", 1)[1]).read_text()
    assert "appender.err.target = SYSTEM_ERR" in log_config, "stdout is left to the tool"
    assert "rootLogger.level = warn" in log_config
