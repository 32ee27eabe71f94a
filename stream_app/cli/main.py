"""Entry point of the ``stream-app`` console script."""

from __future__ import annotations

import sys

import click

from stream_app.cli.atomic import atomic
from stream_app.cli.cells import cells
from stream_app.cli.dead_letters import dead_letters
from stream_app.cli.demo import demo
from stream_app.cli.entities import entities
from stream_app.cli.kafka import kafka
from stream_app.cli.quests import quests
from stream_app.cli.schemas import schemas
from stream_app.cli.topics import topics
from stream_app.cli.workflows import workflows
from stream_app.errors import StreamAppError

__all__ = ["cli", "main"]


@click.group()
@click.version_option(package_name="stream_app")
def cli() -> None:
    """stream_app: durable, stateful cells on Apache Kafka."""


cli.add_command(kafka)
cli.add_command(topics)
cli.add_command(schemas)
cli.add_command(demo)
cli.add_command(cells)
cli.add_command(dead_letters)
cli.add_command(entities)
cli.add_command(quests)
cli.add_command(workflows)
cli.add_command(atomic)


def main() -> None:
    """Run the CLI; a :class:`StreamAppError` prints its message and exits with status 2."""
    try:
        cli.main(standalone_mode=False)
    except StreamAppError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
