"""The operator console: HTML pages served by every worker's own web server at ``/console/``.

An operator inspects and repairs the app from a browser: the overview (workers, partitions,
lag, throughput, dead letters, timers), cells and entities (search, data, timers, parked work,
send a message), parked cells and dead letters (release, redrive), quests and workflow runs
(a run's graph and trace). Pages are server-rendered Jinja templates; htmx and Cytoscape.js
ship inside the package (``static/vendor``, pinned in ``assets.json``), nothing is fetched at
run time and there is no build step.

Safe by default: the console binds where the views bind (``127.0.0.1``); the actions can be
turned off (``STREAM_APP_CONSOLE_ACTIONS=false``) and need a token when the views are exposed
(``STREAM_APP_CONSOLE_TOKEN``); see :mod:`stream_app.console.guard`. ``STREAM_APP_CONSOLE=false``
leaves it out.
"""

from __future__ import annotations

import faust

from stream_app.console import cells, letters, overview, quests, session, workflows
from stream_app.console.server import PREFIX, BehaviourInfo, Console, ConsoleSource
from stream_app.settings import Settings

__all__ = ["PREFIX", "BehaviourInfo", "Console", "ConsoleSource", "install_console"]


def install_console(app: faust.App, source: ConsoleSource, settings: Settings) -> Console:
    """Serve the console on ``app``'s web server, reading ``source``; returns it."""
    console = Console(app, source, settings)
    for pages in (overview, cells, letters, quests, workflows, session):
        pages.install(console)
    return console
