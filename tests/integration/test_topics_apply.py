"""`stream-app topics apply` against a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from stream_app.errors import TopicPlanError
from stream_app.kafka.topics import apply_changes, load_definitions, plan_changes
from stream_app.settings import Settings
from stream_app.testing import wait_for

pytestmark = pytest.mark.integration

DEFINITION = """
[[topics]]
name = "{{app_id}}.orders.in"
partitions = {partitions}
cleanup_policy = "delete"
retention_ms = {retention}

[[topics]]
name = "{{app_id}}-orders-changelog"
cleanup_policy = "compact"
[topics.config]
"min.compaction.lag.ms" = 0
"""


def write(folder: Path, *, partitions: int, retention: int) -> Path:
    path = folder / "orders.toml"
    path.write_text(DEFINITION.format(partitions=partitions, retention=retention))
    return path


def describe(admin: AdminClient, topic: str) -> tuple[int, dict[str, str | None]]:
    metadata = admin.list_topics(topic, timeout=10)
    partitions = len(metadata.topics[topic].partitions)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    # A topic just created may not be known yet to the broker answering describe_configs.
    entries = wait_for(
        lambda: admin.describe_configs([resource])[resource].result(),
        lambda found: bool(found),
        timeout=30,
        what=f"the configs of {topic}",
    )
    return partitions, {name: entry.value for name, entry in entries.items()}


def test_apply_creates_updates_and_refuses_to_shrink(bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(
        app_id=f"topics-{uuid.uuid4().hex[:8]}", bootstrap_servers=bootstrap, partitions=3
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    path = write(tmp_path, partitions=2, retention=60_000)
    inbound, changelog = f"{settings.app_id}.orders.in", f"{settings.app_id}-orders-changelog"

    first = plan_changes(admin, load_definitions([path], settings))
    assert [c.action for c in first] == ["create", "create"]
    apply_changes(admin, first)
    partitions, config = describe(admin, inbound)
    assert partitions == 2
    assert config["retention.ms"] == "60000"
    assert config["cleanup.policy"] == "delete"
    partitions, config = describe(admin, changelog)
    assert partitions == 3, "partitions default to the settings' count"
    assert config["cleanup.policy"] == "compact"

    again = plan_changes(admin, load_definitions([path], settings))
    assert [c.action for c in again] == ["unchanged", "unchanged"]

    write(tmp_path, partitions=4, retention=120_000)
    grow = plan_changes(admin, load_definitions([path], settings))
    assert grow[0].action == "update"
    assert grow[0].add_partitions == 4
    assert grow[0].set_configs == {"retention.ms": ("60000", "120000")}
    assert grow[1].action == "unchanged"
    apply_changes(admin, grow)
    partitions, config = describe(admin, inbound)
    assert (partitions, config["retention.ms"]) == (4, "120000")

    write(tmp_path, partitions=1, retention=120_000)
    with pytest.raises(TopicPlanError) as refused:
        plan_changes(admin, load_definitions([path], settings))
    assert inbound in str(refused.value)
    assert "has 4 partitions" in str(refused.value)
    assert "asks for 1" in str(refused.value)
    assert describe(admin, inbound)[0] == 4, "nothing changed"


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("stream-app")
    return subprocess.run(
        [str(cli), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_dry_run_prints_the_diff_and_changes_nothing(bootstrap: str, tmp_path: Path) -> None:
    app_id = f"cli-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "STREAM_APP_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_APP_ID": app_id,
        "STREAM_APP_PARTITIONS": "2",
    }
    folder = tmp_path / "topics"
    folder.mkdir()
    write(folder, partitions=2, retention=60_000)

    dry = run_cli("topics", "apply", "--dry-run", str(folder), env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert f"+ {app_id}.orders.in (partitions=2, replication_factor=1)" in dry.stdout
    assert "+ retention.ms=60000" in dry.stdout
    assert "dry run: 2 topic(s) would change" in dry.stdout
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert f"{app_id}.orders.in" not in admin.list_topics(timeout=10).topics

    applied = run_cli("topics", "apply", str(folder), env=env, cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "applied: 2 topic(s) changed" in applied.stdout
    assert f"{app_id}.orders.in" in admin.list_topics(timeout=10).topics

    write(folder, partitions=3, retention=90_000)
    diff = run_cli("topics", "apply", "--dry-run", str(folder), env=env, cwd=tmp_path)
    assert f"~ {app_id}.orders.in" in diff.stdout
    assert "~ partitions: -> 3" in diff.stdout
    assert "~ retention.ms: 60000 -> 90000" in diff.stdout

    write(folder, partitions=1, retention=90_000)
    shrink = run_cli("topics", "apply", str(folder), env=env, cwd=tmp_path)
    assert shrink.returncode == 2
    assert "Kafka cannot remove partitions" in shrink.stderr

    (folder / "broken.toml").write_text("[[topics]]\nname = 'x'\npartitions = 'three'\n")
    broken = run_cli("topics", "apply", str(folder), env=env, cwd=tmp_path)
    assert broken.returncode == 2
    assert "broken.toml" in broken.stderr and "topics[0].partitions" in broken.stderr


def test_workers_of_a_new_app_create_its_topics_together(bootstrap: str) -> None:
    """Workers of a new app started at once all find its topics missing and create them; the
    ones that lose the race start all the same."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from stream_app import Runtime
    from stream_app.examples.counter import counter
    from stream_app.testing.dev_broker import session_name

    settings = Settings(bootstrap_servers=bootstrap, app_id=session_name("race"), partitions=2)
    runtimes = [Runtime(settings) for _ in range(4)]
    for runtime in runtimes:
        runtime.behaviour(counter)
    barrier = Barrier(len(runtimes))

    def start(runtime: Runtime) -> set[str]:
        barrier.wait()
        runtime.ensure_topics()
        return set(runtime.app.existing_topics)

    with ThreadPoolExecutor(len(runtimes)) as pool:
        seen = list(pool.map(start, runtimes))
    expected = {d.name for d in runtimes[0].topic_definitions()}
    assert all(expected <= topics for topics in seen)
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    assert expected <= set(metadata.topics)
