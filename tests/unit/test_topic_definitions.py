"""Unit tests of stream_app.kafka.topics that need no broker: loading files, describing changes.

plan_changes / apply_changes talk to a cluster and are covered by tests/integration.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream_app.errors import ConfigError, TopicDefinitionError
from stream_app.kafka.topics import TopicChange, TopicDefinition, load_definitions
from stream_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COUNTER_TOML = ROOT / "topics" / "counter.toml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("STREAM_APP_") or name.upper() == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings(app_id: str = "x", partitions: int = 8) -> Settings:
    # NB: the bootstrap_servers keyword is currently ignored by Settings (see test_settings);
    # the env is clean, so the default 127.0.0.1:9092 applies either way.
    return Settings(app_id=app_id, partitions=partitions, bootstrap_servers="127.0.0.1:9092")


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def load_error(text: str, tmp_path: Path) -> tuple[TopicDefinitionError, Path]:
    path = write(tmp_path / "defs", "bad.toml", text)
    with pytest.raises(TopicDefinitionError) as info:
        load_definitions([path], settings())
    return info.value, path


# -- the repo's definitions --------------------------------------------------------------------


def test_repo_counter_definitions() -> None:
    topics = load_definitions([COUNTER_TOML], settings("x", partitions=8))
    by_name = {t.name: t for t in topics}
    assert [t.name for t in topics] == [
        "x.counter.in",
        "x-counter-changelog",
        "x-counter-timers-changelog",
        "x-counter-parked-changelog",
        "x.effects",
        "x.replies",
        "x.dead-letters",
    ]
    assert all(t.partitions == 8 for t in topics)
    assert all(t.replication_factor == 1 for t in topics)
    assert all(t.source == COUNTER_TOML for t in topics)

    inp = by_name["x.counter.in"].config
    assert inp["cleanup.policy"] == "delete"
    assert inp["retention.ms"] == "604800000"
    assert inp["max.message.bytes"] == "1048576"

    changelog = by_name["x-counter-changelog"].config
    assert changelog["cleanup.policy"] == "compact"
    assert "retention.ms" not in changelog
    assert changelog["min.compaction.lag.ms"] == "0"

    dlq = by_name["x.dead-letters"].config
    assert dlq["cleanup.policy"] == "delete"
    assert dlq["retention.ms"] == "2592000000"
    assert dlq["max.message.bytes"] == "2097152"

    for t in topics:
        assert all(isinstance(v, str) for v in t.config.values()), t.name


def test_repo_names_match_settings_helpers() -> None:
    s = settings("shop", partitions=4)
    names = {t.name for t in load_definitions([COUNTER_TOML], s)}
    assert names == {
        s.input_topic("counter"),
        s.changelog_topic("counter"),
        s.changelog_topic("counter-timers"),
        s.changelog_topic("counter-parked"),
        s.effects_topic,
        s.replies_topic,
        s.dead_letter_topic,
    }


def test_repo_counter_definitions_are_the_counter_runtimes_topics() -> None:
    from stream_app import Runtime
    from stream_app.examples.counter import counter

    s = settings("shop", partitions=4)
    runtime = Runtime(s)
    runtime.behaviour(counter)
    declared = {t.name: t for t in load_definitions([COUNTER_TOML], s)}
    needed = {t.name: t for t in runtime.topic_definitions()}
    assert sorted(declared) == sorted(needed)
    for name, topic in needed.items():
        assert declared[name].partitions == topic.partitions, name
        # What the runtime would create, the file declares alike (it may add to it).
        assert declared[name].config.items() >= topic.config.items(), name


def test_folder_loads_every_toml_sorted(tmp_path: Path) -> None:
    write(tmp_path, "b.toml", '[[topics]]\nname = "{app_id}.b"\n')
    write(tmp_path, "a.toml", '[[topics]]\nname = "{app_id}.a"\n')
    write(tmp_path, "notes.txt", "not a definition")
    topics = load_definitions(tmp_path, settings("app"))
    assert [t.name for t in topics] == ["app.a", "app.b"]
    assert [t.source.name for t in topics] == ["a.toml", "b.toml"]


def test_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(TopicDefinitionError, match=r"no \*\.toml") as info:
        load_definitions(tmp_path, settings())
    assert info.value.path == str(tmp_path)
    assert info.value.field == "<folder>"


# -- resolution ----------------------------------------------------------------------------------


def test_partitions_default_and_explicit(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.toml",
        '[[topics]]\nname = "implicit"\n\n'
        '[[topics]]\nname = "explicit"\npartitions = 3\nreplication_factor = 2\n',
    )
    implicit, explicit = load_definitions([path], settings(partitions=12))
    assert implicit.partitions == 12
    assert implicit.replication_factor == 1
    assert explicit.partitions == 3
    assert explicit.replication_factor == 2


def test_config_values_are_kafka_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.toml",
        '[[topics]]\nname = "t"\ncleanup_policy = "compact,delete"\nretention_ms = -1\n'
        '[topics.config]\n"unclean.leader.election.enable" = false\n'
        '"preallocate" = true\n"min.cleanable.dirty.ratio" = 0.25\n"segment.bytes" = 1048576\n'
        '"compression.type" = "zstd"\n',
    )
    (topic,) = load_definitions([path], settings())
    assert topic.config == {
        "cleanup.policy": "compact,delete",
        "retention.ms": "-1",
        "unclean.leader.election.enable": "false",
        "preallocate": "true",
        "min.cleanable.dirty.ratio": "0.25",
        "segment.bytes": "1048576",
        "compression.type": "zstd",
    }


def test_cleanup_policy_field_overrides_config_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.toml",
        '[[topics]]\nname = "t"\ncleanup_policy = "compact"\n'
        '[topics.config]\n"cleanup.policy" = "delete"\n',
    )
    (topic,) = load_definitions([path], settings())
    assert topic.config["cleanup.policy"] == "compact"


# -- malformed files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ('[[topics]\nname = "a"\n', "<file>", "not valid TOML"),
        ('[[topics]]\nname = "a"\npartiton = 3\n', "topics[0].partiton", "Extra inputs"),
        ('[[topics]]\nname = "a"\npartitions = 0\n', "topics[0].partitions", "greater than"),
        ('[[topics]]\nname = "a"\npartitions = "three"\n', "topics[0].partitions", "'three'"),
        (
            '[[topics]]\nname = "a"\ncleanup_policy = "sometimes"\n',
            "topics[0].cleanup_policy",
            "'sometimes'",
        ),
        ("[[topics]]\npartitions = 2\n", "topics[0].name", "Field required"),
        ('[[topics]]\nname = ""\n', "topics[0].name", "at least 1"),
        ('[[topics]]\nname = "a"\nretention_ms = -2\n', "topics[0].retention_ms", "-1"),
        ("", "topics", "Field required"),
        ("retention_ms = 5\n", "topics", "Field required"),
        ("topics = []\n", "topics", "at least 1"),
        (
            '[[topics]]\nname = "ok"\n\n[[topics]]\nname = "b"\npartitions = -1\n',
            "topics[1].partitions",
            "greater than",
        ),
        ('[[topics]]\nname = "{app_id} in"\n', "topics[0].name", "'x in' is not a legal"),
        ('[[topics]]\nname = "a/b"\n', "topics[0].name", "not a legal Kafka topic name"),
        ('[[topics]]\nname = ".."\n', "topics[0].name", "not a legal Kafka topic name"),
        ('[[topics]]\nname = "{nope}.in"\n', "topics[0].name", "bad placeholder in '{nope}.in'"),
        ('[[topics]]\nname = "{0}.in"\n', "topics[0].name", "bad placeholder"),
        ('[[topics]]\nname = "{app_id.in"\n', "topics[0].name", "bad placeholder"),
    ],
    ids=[
        "bad-toml",
        "unknown-key",
        "zero-partitions",
        "string-partitions",
        "bad-cleanup-policy",
        "missing-name",
        "empty-name",
        "retention-below-minus-one",
        "empty-file",
        "no-topics-table",
        "empty-topics-list",
        "second-topic-bad",
        "space-after-substitution",
        "slash",
        "dot-dot",
        "unknown-placeholder",
        "positional-placeholder",
        "unclosed-brace",
    ],
)
def test_malformed_definition(text: str, field: str, problem: str, tmp_path: Path) -> None:
    error, path = load_error(text, tmp_path)
    assert isinstance(error, ConfigError)
    assert error.path == str(path)
    assert error.field == field
    assert problem in error.problem
    assert str(error).startswith(f"{path}: {field}: ")
    assert error.retriable is False


def test_too_long_name_after_substitution(tmp_path: Path) -> None:
    path = write(tmp_path, "t.toml", '[[topics]]\nname = "{app_id}.' + "a" * 240 + '"\n')
    with pytest.raises(TopicDefinitionError, match="not a legal Kafka topic name") as info:
        load_definitions([path], settings("long-app-id"))
    assert info.value.field == "topics[0].name"


def test_attribute_placeholder_is_a_definition_error(tmp_path: Path) -> None:
    error, _ = load_error('[[topics]]\nname = "{app_id.foo}"\n', tmp_path)
    assert error.field == "topics[0].name"


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(TopicDefinitionError, match="cannot read") as info:
        load_definitions([missing], settings())
    assert info.value.path == str(missing)
    assert info.value.field == "<file>"


def test_duplicate_topic_across_files_names_both(tmp_path: Path) -> None:
    first = write(tmp_path, "a.toml", '[[topics]]\nname = "{app_id}.shared"\n')
    second = write(
        tmp_path, "b.toml", '[[topics]]\nname = "x.other"\n\n[[topics]]\nname = "x.shared"\n'
    )
    with pytest.raises(TopicDefinitionError) as info:
        load_definitions(tmp_path, settings("x"))
    error = info.value
    assert error.path == str(second)
    assert error.field == "topics[1].name"
    assert "'x.shared'" in str(error)
    assert str(first) in str(error)
    assert str(second) in str(error)


def test_duplicate_topic_within_one_file(tmp_path: Path) -> None:
    path = write(tmp_path, "a.toml", '[[topics]]\nname = "t"\n\n[[topics]]\nname = "t"\n')
    with pytest.raises(TopicDefinitionError, match="also declared") as info:
        load_definitions([path], settings())
    assert info.value.field == "topics[1].name"


# -- TopicChange.describe ----------------------------------------------------------------------


def definition() -> TopicDefinition:
    return TopicDefinition(
        name="x.counter.in",
        partitions=6,
        replication_factor=1,
        config={"retention.ms": "604800000", "cleanup.policy": "delete"},
        source=COUNTER_TOML,
    )


def test_describe_create() -> None:
    lines = TopicChange(definition(), "create").describe()
    assert lines == [
        "+ x.counter.in (partitions=6, replication_factor=1)",
        "    + cleanup.policy=delete",
        "    + retention.ms=604800000",
    ]


def test_describe_unchanged() -> None:
    assert TopicChange(definition(), "unchanged").describe() == ["  x.counter.in (unchanged)"]


def test_describe_update_partitions_and_configs() -> None:
    change = TopicChange(
        definition(),
        "update",
        add_partitions=6,
        set_configs={"retention.ms": ("86400000", "604800000"), "cleanup.policy": (None, "delete")},
    )
    assert change.describe() == [
        "~ x.counter.in",
        "    ~ partitions: -> 6",
        "    ~ cleanup.policy: <default> -> delete",
        "    ~ retention.ms: 86400000 -> 604800000",
    ]


def test_describe_update_configs_only() -> None:
    change = TopicChange(definition(), "update", set_configs={"retention.ms": ("1", "604800000")})
    lines = change.describe()
    assert lines == ["~ x.counter.in", "    ~ retention.ms: 1 -> 604800000"]
    assert not any("partitions" in line for line in lines)


def test_a_topic_both_read_and_published_is_declared_once() -> None:
    from pydantic import BaseModel

    from stream_app import Accept, AtomicLog, Runtime

    class Event(BaseModel):
        scope: str

    log: AtomicLog[Event, Event] = AtomicLog(
        "log",
        event=Event,
        reason=Event,
        scope=lambda event: event.scope,
        timeout_reason=Event(scope="-"),
        validation_timeout=1,
    )
    log.validator(lambda validation: Accept())
    s = settings("shop", partitions=4).model_copy(update={"processing_guarantee": "exactly_once"})
    runtime = Runtime(s)
    runtime.atomic(log)
    names = [t.name for t in runtime.topic_definitions()]
    assert "shop.log.validation" in runtime.reactor.topics, "read by the in-worker validator"
    assert sorted(names) == sorted(set(names))
    [validation] = [t for t in runtime.topic_definitions() if t.name == "shop.log.validation"]
    assert validation.config == {"cleanup.policy": "delete", "retention.ms": "604800000"}


# -- durability on a replicated cluster -----------------------------------------------------------


def test_min_insync_replicas_reaches_every_topic_unless_a_file_sets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stream_app import Runtime
    from stream_app.examples.counter import counter

    monkeypatch.setenv("STREAM_APP_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("STREAM_APP_MIN_INSYNC_REPLICAS", "2")
    monkeypatch.setenv("STREAM_APP_CLOCK", "driven")
    s = Settings(app_id="shop", partitions=4)
    assert (s.replication_factor, s.min_insync_replicas) == (3, 2)
    path = write(
        tmp_path,
        "t.toml",
        '[[topics]]\nname = "{app_id}.plain"\n\n'
        '[[topics]]\nname = "{app_id}.own"\n[topics.config]\n"min.insync.replicas" = 3\n',
    )
    plain, own = load_definitions([path], s)
    assert plain.replication_factor == 3 and plain.config["min.insync.replicas"] == "2"
    assert own.config["min.insync.replicas"] == "3", "a file's own setting wins"
    runtime = Runtime(s)
    runtime.behaviour(counter)
    created = runtime.topic_definitions()
    assert s.clock_topic in {t.name for t in created}
    assert {t.name: t.config.get("min.insync.replicas") for t in created} == {
        t.name: "2" for t in created
    }
    assert {t.replication_factor for t in created} == {3}


def test_without_min_insync_replicas_the_broker_default_applies(tmp_path: Path) -> None:
    path = write(tmp_path, "t.toml", '[[topics]]\nname = "{app_id}.plain"\n')
    [plain] = load_definitions([path], settings())
    assert "min.insync.replicas" not in plain.config
