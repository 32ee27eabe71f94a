"""``stream-app kafka up|down|status|prune|fetch|tool``: the development broker, Kafka's tools."""

from __future__ import annotations

import fnmatch
import os
import sys
import time

import click

from stream_app.testing.console_tools import TOOLS, main_class, tool_command
from stream_app.testing.dev_broker import (
    DEFAULT_CLUSTER_PORT,
    DEFAULT_PORT,
    BrokerStatus,
    DockerBroker,
    KafkaJars,
    LocalBroker,
    LocalCluster,
    broker_answers,
    delete_topics,
    docker_available,
    kafka_home,
    user_topics,
)

__all__ = ["kafka"]

_port = click.option(
    "--port",
    type=int,
    default=None,
    help=f"Client port on 127.0.0.1 (of the first node with --brokers above 1) "
    f"[default: {DEFAULT_PORT}, or {DEFAULT_CLUSTER_PORT} for a cluster].",
)
_brokers = click.option(
    "--brokers",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="How many nodes: above 1, a replicated KRaft cluster from the jars (never Docker).",
)


def _cluster(port: int | None, brokers: int) -> LocalCluster:
    return LocalCluster(port or DEFAULT_CLUSTER_PORT, count=brokers)


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
@_brokers
@click.option("--timeout", type=float, default=120.0, show_default=True)
def up(port: int | None, brokers: int, timeout: float) -> None:
    """Start the broker (or cluster) and wait until it answers; prints the bootstrap servers.

    With --brokers 3: three combined broker+controller nodes (a quorum of 3 voters), internal
    topics replicated 3 times with min.insync.replicas 2; one node may be lost at a time.
    """
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        state = "answers" if broker_answers(external) else "does NOT answer"
        click.echo(f"KAFKA_BOOTSTRAP_SERVERS={external} is set and {state}; nothing started")
        return
    started = time.monotonic()
    if brokers > 1:
        cluster = _cluster(port, brokers)
        bootstrap = cluster.up(timeout=timeout)
        click.echo(
            f"kafka cluster of {brokers} up on {bootstrap} ({time.monotonic() - started:.1f}s); "
            f"logs: {cluster.folder}/node-*/broker.log"
        )
        return
    port = port or DEFAULT_PORT
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
@_brokers
@click.option("--purge", is_flag=True, help="Also delete the broker's data and logs.")
def down(port: int | None, brokers: int, purge: bool) -> None:
    """Stop the broker started by `up` (the local broker by pid, or its Docker container)."""
    if brokers > 1:
        stopped = _cluster(port, brokers).down(purge=purge)
        click.echo("kafka cluster stopped" if stopped else "kafka cluster was not running")
        return
    port = port or DEFAULT_PORT
    stopped = DockerBroker(port).down() if docker_available() else False
    stopped = LocalBroker(port).down(purge=purge) or stopped
    click.echo("kafka stopped" if stopped else "kafka was not running")


@kafka.command()
@_port
@_brokers
def status(port: int | None, brokers: int) -> None:
    """Say whether the broker runs; exit status 1 when it does not (or a cluster node does not)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        ok = broker_answers(external)
        click.echo(f"{external} (KAFKA_BOOTSTRAP_SERVERS): {'up' if ok else 'down'}")
        raise SystemExit(0 if ok else 1)
    if brokers > 1:
        states = _cluster(port, brokers).status()
        for number, state in enumerate(states, start=1):
            click.echo(f"node {number}: {_describe(state)}")
        raise SystemExit(0 if all(state.running for state in states) else 1)
    port = port or DEFAULT_PORT
    if docker_available() and DockerBroker(port).running():
        container = DockerBroker(port)
        ok = broker_answers(container.bootstrap)
        click.echo(
            f"kafka ({container.image}) {'up' if ok else 'starting'} on {container.bootstrap}"
        )
        raise SystemExit(0 if ok else 1)
    state = LocalBroker(port).status()
    click.echo(_describe(state))
    if not state.running:
        raise SystemExit(1)


def _describe(state: BrokerStatus) -> str:
    if not state.running:
        return f"kafka {state.version} down on {state.bootstrap}"
    files = ""
    if state.open_files is not None:
        files = f", {state.open_files[0]} of {state.open_files[1]} files open"
    return (
        f"kafka {state.version} up on {state.bootstrap} (pid {state.pid}{files}); log: {state.log}"
    )


@kafka.command()
@_port
@click.option(
    "--match",
    default="*",
    show_default=True,
    help="Delete only the topics whose name matches this glob (e.g. 't-*').",
)
@click.option("--yes", is_flag=True, help="Delete without asking.")
def prune(port: int | None, match: str, yes: bool) -> None:
    """Delete the topics of the development broker (all but Kafka's internal ones).

    Test runs and benchmarks leave topics behind; each keeps files open in the broker, which
    dies at its limit of open files. Pruning deletes the topics of apps that run too: stop them
    first, or narrow it with --match. The broker is KAFKA_BOOTSTRAP_SERVERS when set, else the
    local one on --port.
    """
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{port or DEFAULT_PORT}"
    if not broker_answers(bootstrap):
        raise click.ClickException(f"no Kafka broker answers on {bootstrap}")
    topics = sorted(t for t in user_topics(bootstrap) if fnmatch.fnmatchcase(t, match))
    if not topics:
        click.echo(f"no topic matches {match!r} on {bootstrap}")
        return
    if not yes:
        shown = ", ".join(topics[:10]) + (
            f" and {len(topics) - 10} more" if len(topics) > 10 else ""
        )
        click.confirm(f"delete {len(topics)} topic(s) on {bootstrap}: {shown}?", abort=True)
    started = time.monotonic()
    deleted = delete_topics(bootstrap, topics)
    click.echo(
        f"deleted {len(deleted)} topic(s) on {bootstrap} ({time.monotonic() - started:.1f}s)"
    )


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
