"""``stream-app schemas export``: JSON Schemas of message envelopes for other producers, and of
every document of an atomic log (:mod:`stream_app.api.atomic_schemas`)."""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from stream_app.api.atomic import AtomicLog
from stream_app.api.atomic_schemas import export_atomic_schemas
from stream_app.api.behaviour import Behaviour
from stream_app.core.envelope import MessageTypes

__all__ = ["schemas"]


@click.group()
def schemas() -> None:
    """JSON Schemas of the envelopes a behaviour accepts."""


@schemas.command()
@click.argument("target", default="stream_app.examples.counter:counter")
@click.option("--out", type=click.Path(path_type=Path), default=Path("schemas"), show_default=True)
def export(target: str, out: Path) -> None:
    """Write the schema of TARGET (module:attribute, a Behaviour or a MessageTypes) to
    OUT/<name>.schema.json; for an atomic log, the schemas of its other documents too
    (OUT/<name>.validation-request.schema.json, ...)."""
    module_name, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module_name), attribute or "MESSAGES")
    if isinstance(value, AtomicLog):
        for path in export_atomic_schemas(value, out):
            click.echo(str(path))
        return
    if isinstance(value, Behaviour):
        value = value.message_types
    if not isinstance(value, MessageTypes):
        raise click.BadParameter(
            f"{target} is a {type(value).__name__}, not a Behaviour or MessageTypes"
        )
    click.echo(str(value.export_schema(out)))
