"""``stream-app kafka up|down|status|fetch``: the development broker."""

from __future__ import annotations

import os
import time

import click

from stream_app.kafka.dev_broker import (
    DEFAULT_PORT,
    DockerBroker,
    LocalBroker,
    broker_answers,
    docker_available,
)

__all__ = ["kafka"]

_port = click.option(
    "--port", type=int, default=DEFAULT_PORT, show_default=True, help="Client port on 127.0.0.1."
)


@click.group()
def kafka() -> None:
    """Run a real Apache Kafka broker (KRaft) on 127.0.0.1 for development.

    With KAFKA_BOOTSTRAP_SERVERS set, these commands only report on that broker.
    """


@kafka.command()
def fetch() -> None:
    """Download the Apache Kafka jars with Maven into .kafka/libs (once)."""
    broker = LocalBroker()
    started = time.monotonic()
    downloaded = broker.fetch()
    verb = "downloaded" if downloaded else "already present"
    click.echo(f"kafka jars {verb} in {broker.libs} ({time.monotonic() - started:.1f}s)")


@kafka.command()
@_port
@click.option("--timeout", type=float, default=120.0, show_default=True)
def up(port: int, timeout: float) -> None:
    """Start the broker and wait until it answers; prints the bootstrap servers."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        state = "answers" if broker_answers(external) else "does NOT answer"
        click.echo(f"KAFKA_BOOTSTRAP_SERVERS={external} is set and {state}; nothing started")
        return
    started = time.monotonic()
    if docker_available():
        container = DockerBroker(port)
        bootstrap = container.up(timeout=timeout)
        click.echo(
            f"kafka up on {bootstrap} (docker {container.image}, {time.monotonic() - started:.1f}s)"
        )
        return
    broker = LocalBroker(port)
    bootstrap = broker.up(timeout=timeout)
    click.echo(
        f"kafka up on {bootstrap} (pid {broker.pid()}, {time.monotonic() - started:.1f}s); "
        f"log: {broker.log}"
    )


@kafka.command()
@_port
@click.option("--purge", is_flag=True, help="Also delete the broker's data and logs.")
def down(port: int, purge: bool) -> None:
    """Stop the broker started by `up` (the local broker by pid, or its Docker container)."""
    stopped = DockerBroker(port).down() if docker_available() else False
    stopped = LocalBroker(port).down(purge=purge) or stopped
    click.echo("kafka stopped" if stopped else "kafka was not running")


@kafka.command()
@_port
def status(port: int) -> None:
    """Say whether the broker runs; exit status 1 when it does not."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        ok = broker_answers(external)
        click.echo(f"{external} (KAFKA_BOOTSTRAP_SERVERS): {'up' if ok else 'down'}")
        raise SystemExit(0 if ok else 1)
    if docker_available() and DockerBroker(port).running():
        container = DockerBroker(port)
        ok = broker_answers(container.bootstrap)
        click.echo(
            f"kafka ({container.image}) {'up' if ok else 'starting'} on {container.bootstrap}"
        )
        raise SystemExit(0 if ok else 1)
    state = LocalBroker(port).status()
    if state.running:
        click.echo(
            f"kafka {state.version} up on {state.bootstrap} (pid {state.pid}); log: {state.log}"
        )
    else:
        click.echo(f"kafka {state.version} down on {state.bootstrap}")
        raise SystemExit(1)
