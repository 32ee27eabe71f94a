"""What the quests and workflow runs pages share: refusing a bad request with a readable
message, checking a text input, and reading a JSON view without letting its failure become a
500."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from stream_app.console.server import BehaviourKind, Console, Handler, ViewAnswer

__all__ = [
    "MAX_TEXT",
    "Invalid",
    "as_view",
    "behaviour_field",
    "behaviours_of",
    "path_part",
    "read_view",
    "text_field",
]

#: The longest id, name or reason the pages accept.
MAX_TEXT = 1000


class Invalid(ValueError):
    """A request a page refuses.

    Attributes:
        status: The HTTP status to answer (400, 404, 409, 502).
        message: What the operator reads.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def text_field(value: str | None, what: str, *, required: bool = True) -> str:
    """``value`` as given (an id keeps its spaces), or ``""`` when it is not required.

    Raises:
        Invalid: It is required and empty (or only spaces), or longer than :data:`MAX_TEXT`.
    """
    text = value or ""
    if required and not text.strip():
        raise Invalid(400, f"give a {what}")
    if len(text) > MAX_TEXT:
        raise Invalid(400, f"the {what} is longer than {MAX_TEXT} characters")
    return text


async def read_view(console: Console, path: str) -> ViewAnswer:
    """:meth:`Console.view_json` of ``path``.

    Raises:
        Invalid: (502) the view did not answer (refused, timed out).
    """
    try:
        return await console.view_json(path)
    except Exception as exc:  # aiohttp's errors, a time-out: the page says so
        reason = str(exc) or type(exc).__name__
        raise Invalid(502, f"the workers did not answer: {reason}") from exc


def behaviours_of(console: Console, kind: BehaviourKind) -> list[str]:
    """The names of the behaviours of ``kind`` the console's worker runs, in their order."""
    return [b.name for b in console.source.behaviours().values() if b.kind == kind]


def behaviour_field(console: Console, name: str | None, kind: BehaviourKind) -> str:
    """``name`` if it is a behaviour of ``kind`` (none given: the first of that kind).

    Raises:
        Invalid: There is none, or (404) no behaviour of ``kind`` has that name.
    """
    choices = behaviours_of(console, kind)
    behaviour = text_field(name or (choices[0] if choices else ""), f"{kind} behaviour")
    if console.behaviour(behaviour, kind) is None:
        raise Invalid(404, f"no {kind} behaviour is called {behaviour!r}")
    return behaviour


def path_part(value: str) -> str:
    """``value`` quoted as one segment of a URL path (``/`` included)."""
    return quote(value, safe="")


def as_view(method: Callable[..., Awaitable[Any]]) -> Handler:
    """A bound handler method as the plain function Faust makes a view of (Faust sets it as
    the view's ``get``, so a bound method would get the view's arguments shifted); the path's
    parameters are passed on as keywords."""

    async def view(web: Any, request: Any, **match: str) -> Any:
        return await method(web, request, **match)

    view.__name__ = method.__name__
    view.__doc__ = method.__doc__
    view.__qualname__ = getattr(method, "__qualname__", method.__name__)
    return view
