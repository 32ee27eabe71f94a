"""``stream-app kafka up|down|status|fetch|tool``: the development broker and Kafka's tools."""

from __future__ import annotations

import os
import sys
import time

import click

from stream_app.testing.console_tools import TOOLS, main_class, tool_command
from stream_app.testing.dev_broker import (
    DEFAULT_PORT,
    DockerBroker,
    KafkaJars,
    LocalBroker,
    broker_answers,
    docker_available,
    kafka_home,
)

__all__ = ["kafka"]

_port = click.option(
    "--port", type=int, default=DEFAULT_PORT, show_default=True, help="Client port on 127.0.0.1."
)


@click.group()
def kafka() -> None:
    """Run a real Apache Kafka broker (KRaft) on 127.0.0.1 for development.

    With KAFKA_BOOTSTRAP_SERVERS set, up and status only report on that broker; `tool` runs
    Kafka's own command-line tools (console producer and consumer, topics, consumer groups...)
    against any broker.
    """


@kafka.command()
def fetch() -> None:
    """Download the Apache Kafka jars (broker and tools) with Maven into .kafka/jars (once)."""
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


@kafka.command(context_settings={"ignore_unknown_options": True})
@click.argument("name", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def tool(name: str | None, args: tuple[str, ...]) -> None:
    """Run Kafka's tool NAME (a bin/ script name) with ARGS; without NAME, list the tools.

    \b
    stream-app kafka tool kafka-console-producer -- --bootstrap-server 127.0.0.1:9092 \\
        --topic T --property parse.key=true --property key.separator=:

    The same Java and jars as the development broker (downloaded on first use), whether or
    not that broker runs. stdin, stdout and stderr are the tool's; the exit status is its.
    """
    if name is None:
        width = max(map(len, TOOLS))
        for script, main in sorted(TOOLS.items()):
            click.echo(f"{script:<{width}}  {main}")
        return
    try:
        main_class(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    jars = KafkaJars(kafka_home())
    if not jars.ready():
        click.echo(f"resolving the Kafka jars with Maven into {jars.dir} (once)...", err=True)
    command = tool_command(name, args, jars)
    jars.use(os.getpid())  # the pid stays the tool's across exec
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
