"""The console's frame: templates, static files, pages, actions and the reads they share.

Every page is HTML rendered on the worker that serves it, from the same JSON views the CLI
reads (``/stream-app/...``, :mod:`stream_app.web.views`): :meth:`Console.view_json` asks this
worker's own views, which route a cell to the worker that owns it and gather lists from every
worker, so any worker serves any page. Parts of a page that refresh are fragments that htmx
(shipped in ``static/vendor``) polls and swaps; the pages work without JavaScript, only
without the live refresh, the graph and the in-page validation.

Templates are Jinja with autoescaping on for everything and undefined names an error; data for
scripts goes through ``|tojson`` into ``<script type="application/json">`` blocks, and the
Content-Security-Policy allows scripts from this worker's ``/console/static/`` only, so a cell
id or a value carrying markup is shown as text and never runs.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, Protocol
from urllib.parse import quote

import aiohttp
import faust
import jinja2

from stream_app.console.guard import CSRF_HEADER, ActionRefused, Guard
from stream_app.core.envelope import MessageTypes
from stream_app.settings import Settings
from stream_app.web.prometheus import MetricsSource

__all__ = [
    "PREFIX",
    "BehaviourInfo",
    "BehaviourKind",
    "Console",
    "ConsoleSource",
    "Handler",
    "ViewAnswer",
    "static_file",
]

#: Where the console is served on each worker.
PREFIX = "/console"

#: What a behaviour is, as the console groups them.
BehaviourKind = Literal["cells", "entity", "quests", "workflows", "atomic"]

#: A page or action handler: ``(web, request) -> response``.
Handler = Callable[[Any, Any], Awaitable[Any]]

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class BehaviourInfo:
    """One behaviour the worker runs, as the console shows it.

    Attributes:
        name: The behaviour's name.
        kind: ``cells``, ``entity``, ``quests``, ``workflows`` or ``atomic``.
        input_topic: The topic its cells' messages arrive on.
        message_types: The envelopes it accepts (validation and the JSON Schema).
        events_topic: Where an entity's events (or an atomic log's) are appended; ``None``
            for the other kinds.
    """

    name: str
    kind: BehaviourKind
    input_topic: str
    message_types: MessageTypes
    events_topic: str | None = None


class ConsoleSource(Protocol):
    """What the console reads of the runtime that serves it (the runtime fills it)."""

    def behaviours(self) -> Mapping[str, BehaviourInfo]:
        """Every behaviour the worker runs, by name, in registration order."""
        ...

    def metrics_source(self, *, count_timers: bool = True) -> MetricsSource:
        """What the worker's Prometheus collector reads (the overview samples it); without
        ``count_timers`` the pending timers read as 0 (counting them scans the timers
        tables)."""
        ...

    def guarantee(self) -> str:
        """The processing guarantee the worker runs under (``at_least_once`` or
        ``exactly_once``)."""
        ...


@dataclass(frozen=True)
class ViewAnswer:
    """A JSON view's answer as :meth:`Console.view_json` read it.

    Attributes:
        status: The HTTP status.
        data: The decoded JSON body (``None`` if it was not JSON).
    """

    status: int
    data: Any

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300


@dataclass
class Console:
    """The operator console of one worker: its templates, guard and registered pages.

    Args:
        app: The Faust app whose web server serves the console.
        source: What the console reads of the runtime.
        settings: The worker's settings.

    Attributes:
        guard: The access checks of the actions.
        templates: The Jinja environment (package ``stream_app.console``, ``templates/``).
        nav: The pages listed in the navigation, in order: ``(title, path)``.
        actions: The paths of every registered action (route patterns, ``{name}`` for a
            parameter).
    """

    app: faust.App
    source: ConsoleSource
    settings: Settings
    guard: Guard = field(init=False)
    templates: jinja2.Environment = field(init=False)
    nav: list[tuple[str, str]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.guard = Guard(self.settings)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("stream_app.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["pretty_json"] = _pretty_json
        self.templates.filters["url_part"] = _url_part
        self.templates.globals["prefix"] = PREFIX

    # -- registration ------------------------------------------------------------------------

    def page(self, path: str, *, title: str | None = None) -> Callable[[Handler], Handler]:
        """Register a ``GET`` page at ``PREFIX + path``; with ``title`` it is listed in the
        navigation. The handler returns a response (usually :meth:`render`)."""

        def register(handler: Handler) -> Handler:
            if title is not None:
                self.nav.append((title, PREFIX + path))
            self.app.page(PREFIX + path, name=f"stream_app.console{path}")(handler)
            return handler

        return register

    def action(self, path: str) -> Callable[[Handler], Handler]:
        """Register a ``POST`` action at ``PREFIX + path``: the handler runs only once the
        :class:`~stream_app.console.guard.Guard` accepts the request; a refusal answers the
        ``action_result.html`` fragment with the refusal's status and reason."""

        def register(handler: Handler) -> Handler:
            console = self

            async def post(view: Any, request: Any) -> Any:
                form = await _form(request)
                try:
                    console.guard.check_action(request.headers, request.cookies, form, request.host)
                except ActionRefused as refused:
                    return console.render(
                        view,
                        request,
                        "action_result.html",
                        status=refused.status,
                        ok=False,
                        message=refused.reason,
                    )
                request["console_form"] = form
                return await handler(view, request)

            view = type(
                handler.__name__,
                (faust.web.View,),
                {"post": post, "__doc__": handler.__doc__, "__module__": handler.__module__},
            )
            self.app.page(PREFIX + path, name=f"stream_app.console.action{path}")(view)
            self.actions.append(PREFIX + path)
            return handler

        return register

    # -- responses ---------------------------------------------------------------------------

    def render(
        self, web: Any, request: Any, template: str, *, status: int = 200, **context: Any
    ) -> Any:
        """Render ``template`` with ``context`` and the frame's own names (navigation, app id,
        CSRF token, whether actions are offered), as an HTML response with the console's
        security headers."""
        body = self.templates.get_template(template).render(
            nav=self.nav,
            path=request.path,
            app_id=self.settings.app_id,
            worker=str(self.app.conf.canonical_url).rstrip("/"),
            csrf_token=self.guard.csrf_token,
            csrf_header=CSRF_HEADER,
            actions=self.guard.actions_enabled,
            needs_login=self.guard.needs_login,
            logged_in=self.guard.logged_in(request.headers, request.cookies),
            behaviours=self.source.behaviours(),
            **context,
        )
        return web.html(body, status=status, headers=dict(_SECURITY_HEADERS))

    def form(self, request: Any) -> Mapping[str, str]:
        """The form fields of an action's request (read by :meth:`action` before the guard)."""
        form: Mapping[str, str] = request["console_form"]
        return form

    # -- reads -------------------------------------------------------------------------------

    async def view_json(self, path: str, *, timeout: float = 10.0) -> ViewAnswer:
        """GET one of this worker's JSON views (``path`` under ``/stream-app/``, already
        URL-quoted), which routes to the owning worker or gathers from all of them."""
        url = f"{self.own_url}/stream-app/{path.lstrip('/')}"
        async with self.app.http_client.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            text = await response.text()
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            return ViewAnswer(response.status, data)

    @property
    def own_url(self) -> str:
        """This worker's web server as this process reaches it (the port Faust serves on,
        which ``faust worker --web-port`` may have changed)."""
        bind = str(self.app.conf.web_bind)
        host = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
        return f"http://{host}:{self.app.conf.web_port}"

    def behaviour(self, name: str, *kinds: BehaviourKind) -> BehaviourInfo | None:
        """The behaviour named ``name`` if this worker runs it (and it is of one of ``kinds``,
        when given)."""
        info = self.source.behaviours().get(name)
        if info is None or (kinds and info.kind not in kinds):
            return None
        return info

    async def in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking call (a Kafka client's) off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)


async def _form(request: Any) -> dict[str, str]:
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        posted = await request.post()
        return {key: str(value) for key, value in posted.items()}
    return {}


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _url_part(value: Any) -> str:
    return quote(str(value), safe="")


def static_file(name: str) -> tuple[bytes, str] | None:
    """The bytes and content type of a file shipped in ``static/`` (or ``static/vendor/``);
    ``None`` for any other name."""
    root = resources.files("stream_app.console") / "static"
    parts = name.split("/")
    if not 1 <= len(parts) <= 2 or any(p in ("", ".", "..") for p in parts):
        return None
    resource = root.joinpath(*parts)
    if not resource.is_file():
        return None
    kind = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
    return resource.read_bytes(), kind
