"""``stream-app topics apply``: make the cluster match ``topics/*.toml``."""

from __future__ import annotations

from pathlib import Path

import click

from stream_app.kafka.security import check_credentials
from stream_app.kafka.topics import apply_changes, load_definitions, plan_changes
from stream_app.settings import Settings

__all__ = ["topics"]


@click.group()
def topics() -> None:
    """Declared topics (definitions under topics/)."""


@topics.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the changes without making them.")
def apply(paths: tuple[Path, ...], dry_run: bool) -> None:
    """Create missing topics, add partitions and update configs.

    PATHS are definition files or folders (default: the settings' topics_dir). Shrinking a
    topic or changing its replication factor is refused.
    """
    from confluent_kafka.admin import AdminClient

    settings = Settings()
    files: list[Path] = []
    for path in paths or (settings.topics_dir,):
        files += sorted(path.glob("*.toml")) if path.is_dir() else [path]
    definitions = load_definitions(files, settings)
    check_credentials(settings)
    admin = AdminClient(settings.kafka_client_config())
    changes = plan_changes(admin, definitions)
    for change in changes:
        for line in change.describe():
            click.echo(line)
    pending = [c for c in changes if c.action != "unchanged"]
    if dry_run:
        click.echo(f"dry run: {len(pending)} topic(s) would change")
        return
    apply_changes(admin, pending)
    click.echo(f"applied: {len(pending)} topic(s) changed on {settings.bootstrap_servers}")
