"""Declarative topics: definitions in ``topics/*.toml``, applied with the AdminClient.

A definition file holds one or more ``[[topics]]`` tables::

    [[topics]]
    name = "{app_id}.counter.in"      # {app_id} is replaced by the app id from the settings
    partitions = 8                     # optional: defaults to settings.partitions
    replication_factor = 1             # optional: defaults to settings.replication_factor
    cleanup_policy = "delete"          # delete | compact | compact,delete
    retention_ms = 604800000           # optional; -1 keeps records forever
    [topics.config]                    # any other topic-level config, verbatim
    "max.message.bytes" = 1048576      # (min.insync.replicas defaults to the settings' one)

:func:`load_definitions` validates the files (errors name the file and the field),
:func:`plan_changes` compares them with the cluster, and :func:`apply_changes` makes the cluster
match: it creates missing topics, adds partitions, and sets configs, and it refuses to shrink a
topic or change its replication factor.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stream_app.errors import TopicDefinitionError, TopicPlanError
from stream_app.settings import Settings

__all__ = [
    "TopicChange",
    "TopicDefinition",
    "TopicSpec",
    "apply_changes",
    "load_definitions",
    "plan_changes",
]

CleanupPolicy = Literal["delete", "compact", "compact,delete"]


class TopicSpec(BaseModel):
    """One ``[[topics]]`` entry as written in a definition file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=249)
    partitions: int | None = Field(default=None, ge=1, le=10_000)
    replication_factor: int | None = Field(default=None, ge=1, le=32)
    cleanup_policy: CleanupPolicy = "delete"
    retention_ms: int | None = Field(default=None, ge=-1)
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    description: str = ""


class _DefinitionFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topics: list[TopicSpec] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class TopicDefinition:
    """A topic definition resolved against the settings: the wanted state of one topic.

    Attributes:
        name: The topic name, ``{app_id}`` substituted.
        partitions: Wanted partition count.
        replication_factor: Wanted replication factor.
        config: Wanted topic-level configs, as Kafka spells them (``cleanup.policy``...).
        source: The file that declared it.
    """

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]
    source: Path


@dataclass(frozen=True, slots=True)
class TopicChange:
    """What ``topics apply`` will do to one topic.

    Attributes:
        topic: The definition the change comes from.
        action: ``create``, ``update`` (configs and/or partitions) or ``unchanged``.
        add_partitions: New total partition count, when partitions are added.
        set_configs: Config name -> (current value or ``None``, wanted value).
    """

    topic: TopicDefinition
    action: Literal["create", "update", "unchanged"]
    add_partitions: int | None = None
    set_configs: dict[str, tuple[str | None, str]] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """Human-readable diff lines, as ``--dry-run`` prints them."""
        t = self.topic
        if self.action == "create":
            lines = [
                f"+ {t.name} (partitions={t.partitions}, replication_factor={t.replication_factor})"
            ]
            lines += [f"    + {k}={v}" for k, v in sorted(t.config.items())]
            return lines
        if self.action == "unchanged":
            return [f"  {t.name} (unchanged)"]
        lines = [f"~ {t.name}"]
        if self.add_partitions is not None:
            lines.append(f"    ~ partitions: -> {self.add_partitions}")
        lines += [
            f"    ~ {k}: {old if old is not None else '<default>'} -> {new}"
            for k, (old, new) in sorted(self.set_configs.items())
        ]
        return lines


def load_definitions(paths: Iterable[Path] | Path, settings: Settings) -> list[TopicDefinition]:
    """Read and validate topic definition files.

    Args:
        paths: A folder (every ``*.toml`` in it, sorted) or an iterable of files.
        settings: Supplies ``app_id``, default partitions and replication factor.

    Raises:
        TopicDefinitionError: A file is unreadable, not TOML, has a bad field, or declares a
            topic that another file declares too. The message names the file and the field.
    """
    files = sorted(paths.glob("*.toml")) if isinstance(paths, Path) else list(paths)
    if isinstance(paths, Path) and not files:
        raise TopicDefinitionError(str(paths), "<folder>", "no *.toml topic definitions found")
    seen: dict[str, Path] = {}
    result: list[TopicDefinition] = []
    for path in files:
        for index, spec in enumerate(_read_file(path)):
            where = f"topics[{index}]"
            try:
                name = spec.name.format(app_id=settings.app_id)
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise TopicDefinitionError(
                    str(path), f"{where}.name", f"bad placeholder in {spec.name!r}: {exc}"
                ) from exc
            _check_topic_name(path, f"{where}.name", name)
            if name in seen:
                raise TopicDefinitionError(
                    str(path), f"{where}.name", f"topic {name!r} is also declared in {seen[name]}"
                )
            seen[name] = path
            result.append(_resolve(spec, name, path, settings))
    return result


def _read_file(path: Path) -> list[TopicSpec]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TopicDefinitionError(str(path), "<file>", f"cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TopicDefinitionError(str(path), "<file>", f"not valid TOML: {exc}") from exc
    try:
        return _DefinitionFile.model_validate(data).topics
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise TopicDefinitionError(
            str(path), loc.lstrip(".") or "<root>", f"{first['msg']} (got {first['input']!r})"
        ) from exc


def _check_topic_name(path: Path, where: str, name: str) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if name in {".", ".."} or not set(name) <= allowed or len(name) > 249:
        raise TopicDefinitionError(
            str(path), where, f"{name!r} is not a legal Kafka topic name ([a-zA-Z0-9._-]{{1,249}})"
        )


def _resolve(spec: TopicSpec, name: str, path: Path, settings: Settings) -> TopicDefinition:
    config = {**settings.durability_config}
    config.update((k, _config_value(v)) for k, v in spec.config.items())
    config["cleanup.policy"] = spec.cleanup_policy
    if spec.retention_ms is not None:
        config["retention.ms"] = str(spec.retention_ms)
    return TopicDefinition(
        name=name,
        partitions=spec.partitions or settings.partitions,
        replication_factor=spec.replication_factor or settings.replication_factor,
        config=config,
        source=path,
    )


def _config_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def plan_changes(
    admin: Any, topics: Sequence[TopicDefinition], *, timeout: float = 30.0
) -> list[TopicChange]:
    """Compare ``topics`` with the cluster behind the confluent-kafka ``admin`` client.

    Raises:
        TopicPlanError: A definition asks for fewer partitions than the topic has, or for a
            different replication factor; neither can be done by ``apply``.
    """
    from confluent_kafka.admin import ConfigResource

    metadata = admin.list_topics(timeout=timeout)
    existing = [t for t in topics if t.name in metadata.topics]
    current_configs: dict[str, dict[str, str | None]] = {}
    if existing:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t.name) for t in existing]
        for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
            entries = future.result()
            current_configs[resource.name] = {name: entry.value for name, entry in entries.items()}
    changes: list[TopicChange] = []
    problems: list[str] = []
    for topic in topics:
        meta = metadata.topics.get(topic.name)
        if meta is None:
            changes.append(TopicChange(topic, "create"))
            continue
        have = len(meta.partitions)
        replicas = {len(p.replicas) for p in meta.partitions.values()}
        if topic.partitions < have:
            problems.append(
                f"{topic.name}: has {have} partitions, {topic.source} asks for "
                f"{topic.partitions}; Kafka cannot remove partitions (records and keys would "
                "move). Create a new topic and migrate, or raise the definition to "
                f"{have}."
            )
            continue
        if replicas and replicas != {topic.replication_factor}:
            problems.append(
                f"{topic.name}: replication factor is {sorted(replicas)}, {topic.source} asks "
                f"for {topic.replication_factor}; change it with a partition reassignment, "
                "not topics apply."
            )
            continue
        current = current_configs.get(topic.name, {})
        diff = {k: (current.get(k), v) for k, v in topic.config.items() if current.get(k) != v}
        grow = topic.partitions if topic.partitions > have else None
        if diff or grow is not None:
            changes.append(TopicChange(topic, "update", add_partitions=grow, set_configs=diff))
        else:
            changes.append(TopicChange(topic, "unchanged"))
    if problems:
        raise TopicPlanError("refusing to apply topic definitions:\n  " + "\n  ".join(problems))
    return changes


def apply_changes(
    admin: Any, changes: Sequence[TopicChange], *, timeout: float = 30.0, exists_ok: bool = False
) -> None:
    """Make the cluster match the planned ``changes`` (creations, partitions, configs).

    With ``exists_ok`` a topic to create that another client created meanwhile is no error
    (workers of a new app starting together all create its topics)."""
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
    )

    creates = [
        NewTopic(
            c.topic.name,
            num_partitions=c.topic.partitions,
            replication_factor=c.topic.replication_factor,
            config=dict(c.topic.config),
        )
        for c in changes
        if c.action == "create"
    ]
    if creates:
        _wait_all(
            admin.create_topics(creates, request_timeout=timeout),
            ignore="TOPIC_ALREADY_EXISTS" if exists_ok else None,
        )
    grows = [
        NewPartitions(c.topic.name, c.add_partitions)
        for c in changes
        if c.action == "update" and c.add_partitions is not None
    ]
    if grows:
        _wait_all(admin.create_partitions(grows, request_timeout=timeout))
    alters = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            c.topic.name,
            incremental_configs=[
                ConfigEntry(k, new, incremental_operation=AlterConfigOpType.SET)
                for k, (_, new) in sorted(c.set_configs.items())
            ],
        )
        for c in changes
        if c.action == "update" and c.set_configs
    ]
    if alters:
        _wait_all(admin.incremental_alter_configs(alters, request_timeout=timeout))


def _wait_all(futures: dict[Any, Any], *, ignore: str | None = None) -> None:
    errors = []
    for name, future in futures.items():
        try:
            future.result()
        except Exception as exc:
            error = exc.args[0] if exc.args else None
            if ignore is not None and getattr(error, "name", lambda: None)() == ignore:
                continue
            errors.append(f"{getattr(name, 'name', name)}: {exc}")
    if errors:
        raise TopicPlanError("the broker refused:\n  " + "\n  ".join(errors))
