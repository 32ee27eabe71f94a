"""What the ``stream-app`` commands share: options, settings, talking to workers, app modules.

Each command group (``cells``, ``entities``, ``dead-letters``) is a thin layer of ``click`` over
the clients (:mod:`stream_app.clients`) and the operations (:mod:`stream_app.ops`); the helpers
here keep their options and messages the same across groups.
"""

from __future__ import annotations

import importlib
import json
import urllib.error
import urllib.parse
import urllib.request
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from stream_app.errors import InvalidMessageError
from stream_app.settings import Settings

if TYPE_CHECKING:
    from stream_app.core.envelope import MessageTypes

__all__ = [
    "app_option",
    "check_message",
    "current_settings",
    "expect_ok",
    "find_message_types",
    "import_app",
    "json_object",
    "json_output_option",
    "quote",
    "timeout_option",
    "url_option",
    "worker_get",
]

#: ``--url``: the worker to ask.
url_option = click.option(
    "--url",
    metavar="URL",
    help="A worker's web address (default: http://<STREAM_APP_WEB_HOST>:<STREAM_APP_WEB_PORT>).",
)
#: ``--timeout``: seconds to wait for an answer.
timeout_option = click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for an answer."
)
#: ``--json``: print the worker's JSON answer instead of the formatted lines.
json_output_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the worker's JSON answer."
)
#: ``--app MODULE``: the app module whose messages to check before sending.
app_option = click.option(
    "--app",
    "module",
    metavar="MODULE",
    help="The app module the workers run (faust -A MODULE, e.g. stream_app.examples.counter). "
    "The message is first checked against the behaviour's message types, as a worker of that app "
    "checks it, and refused if invalid. Without --app it is sent unvalidated.",
)


def worker_get(base_url: str, path: str, *, timeout: float) -> tuple[int, Any]:
    """GET ``path`` from the worker at ``base_url``; return the status and the decoded body.

    An HTTP error status is returned, not raised (its body decoded when it is JSON, else
    ``None``), so callers can tell a dead cell from a missing view.

    Raises:
        click.ClickException: The worker could not be reached (the URL is in the message).
    """
    url = base_url.rstrip("/") + path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(
            f"cannot reach the worker at {url}: {reason} "
            "(is a worker running? pass its address with --url)"
        ) from None
    try:
        return status, json.loads(raw)
    except ValueError:
        if 200 <= status < 300:
            raise click.ClickException(
                f"the worker at {url} answered {status} with a body that is not JSON: {raw[:200]!r}"
            ) from None
        return status, None


def expect_ok(status: int, body: Any, url: str, behaviour: str) -> Any:
    """``body`` if ``status`` is a success; else a :class:`click.ClickException` that says what
    a 404 (no such behaviour) or another status means."""
    if status == 404:
        raise click.ClickException(
            f"the worker at {url} has no view for behaviour {behaviour!r} (404): "
            "is it a behaviour of that app?"
        )
    if not 200 <= status < 300:
        raise click.ClickException(f"the worker at {url} answered {status}: {body!r}")
    return body


def current_settings() -> Settings:
    """The settings from the environment, read on each call."""
    # Read on each call, not cached: one process (a test, a script) may run several apps.
    return Settings()


def import_app(module_name: str) -> ModuleType:
    """Import the app module ``module_name`` (what ``faust -A`` is given).

    Raises:
        click.ClickException: The module cannot be imported.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise click.ClickException(f"cannot import {module_name}: {exc}") from None


def find_message_types(module_name: str, behaviour: str) -> MessageTypes:
    """The message types of ``behaviour`` as the app module ``module_name`` declares them.

    Looks at the module's Behaviours, cultures and Entities, at those registered on its
    Runtime, and at its MessageTypes (an app that decodes records itself, like the counter).

    Raises:
        click.ClickException: The module cannot be imported or declares no such behaviour.
    """
    declared: dict[str, MessageTypes] = {}
    for value in vars(import_app(module_name)).values():
        for types in _message_types_in(value):
            declared.setdefault(types.behaviour, types)
    if behaviour not in declared:
        raise click.ClickException(
            f"{module_name} declares no behaviour {behaviour!r} (it declares {sorted(declared)})"
        )
    return declared[behaviour]


def _message_types_in(value: Any) -> list[MessageTypes]:
    from stream_app.api.behaviour import Behaviour
    from stream_app.api.entities import Entity
    from stream_app.core.envelope import MessageTypes
    from stream_app.runtime import Runtime

    if isinstance(value, Runtime):
        return [engine.behaviour.message_types for engine in value.engines.values()]
    if isinstance(value, Entity):
        value = value.behaviour
    if isinstance(value, Behaviour):
        value = value.message_types
    return [value] if isinstance(value, MessageTypes) else []


def check_message(
    module: str | None, behaviour: str, cell_id: str, value: bytes, settings: Settings
) -> str:
    """Check the record ``cell_id`` -> ``value`` as a worker of the app ``module`` decodes it.

    Returns:
        How it was checked, for the output: ``validated against <module>``, or ``unvalidated``
        and why when ``module`` is ``None``.

    Raises:
        click.ClickException: A worker would dead-letter it; the message names the field and
            the problem (the dead letter's error) and its reason.
    """
    if module is None:
        return "unvalidated: pass --app MODULE to check it against the behaviour's messages first"
    types = find_message_types(module, behaviour)
    try:
        types.decode(cell_id.encode(), value, max_bytes=settings.max_message_bytes)
    except InvalidMessageError as exc:
        raise click.ClickException(
            f"refused, nothing sent: {exc} (a worker of {module} would dead-letter it with "
            f"reason {exc.reason!r})"
        ) from None
    return f"validated against {module}"


def quote(part: str) -> str:
    """``part`` quoted as one segment of a URL path."""
    return urllib.parse.quote(part, safe="")


def json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """A ``click`` callback: the argument parsed as a JSON object (``None`` stays ``None``).

    Raises:
        click.BadParameter: The value is not JSON, or not an object.
    """
    if value is None:
        return None
    try:
        body = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc}): {value!r}") from None
    if not isinstance(body, dict):
        raise click.BadParameter(
            f"expected a JSON object like '{{\"by\": 2}}', got a {type(body).__name__}: {value!r}"
        )
    return body
