"""Browser tests of the operator console: Debian's Chromium driven by Playwright, against two
real workers of :mod:`stream_app.examples.console_demo` on the session's broker.

Every page a test opens must load without a script error or a Content-Security-Policy
violation (an inline script or style would be one): the ``page`` fixture fails the test that
saw one. Screenshots go to ``build/console-screenshots/`` (the docs' pictures are copied from
there).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stream_app.examples.console_demo import seed
from stream_app.settings import Settings
from stream_app.testing import WorkerProcess, settings_from_env, wait_for
from stream_app.testing.dev_broker import find_free_port, session_name

ROOT = Path(__file__).resolve().parents[2]

#: Where the screenshots are saved (a test artefact; docs/console/ holds the chosen ones).
SHOTS = ROOT / "build" / "console-screenshots"

#: The browser: Debian's chromium (scripts/browser.sh installs it).
CHROMIUM = os.environ.get("STREAM_APP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

PARTITIONS = 4


@dataclass
class ConsoleDemo:
    """Two workers of the console demo app, seeded (see :func:`~stream_app.examples.
    console_demo.seed`).

    Attributes:
        env: The workers' ``STREAM_APP_*`` settings (without the per-worker ones).
        settings: The same as :class:`Settings`, for clients in the test.
        workers: The worker processes.
    """

    env: dict[str, str]
    settings: Settings
    workers: list[WorkerProcess]

    def url(self, path: str = "/console/", *, worker: int = 0) -> str:
        """The address of ``path`` on one worker's web server."""
        return f"http://127.0.0.1:{self.workers[worker].web_port}{path}"

    def get_json(self, path: str, *, worker: int = 0) -> Any:
        """A JSON view of one worker."""
        return self.workers[worker].get_json(path)


def start_demo(
    bootstrap: str,
    folder: Path,
    *,
    workers: int = 2,
    extra: dict[str, str] | None = None,
    seeded: bool = True,
) -> ConsoleDemo:
    """Start ``workers`` workers of the console demo (ready, their partitions spread) and seed
    them (unless not ``seeded``); the caller stops them (:func:`stop_demo`)."""
    env = {
        "STREAM_APP_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_APP_ID": session_name("console"),
        "STREAM_APP_PARTITIONS": str(PARTITIONS),
        "STREAM_APP_COMMIT_INTERVAL_S": "0.5",
        "STREAM_APP_STANDBY_REPLICAS": "1",
        **(extra or {}),
    }
    procs = [
        WorkerProcess(
            "stream_app.examples.console_demo",
            env={**env, "STREAM_APP_DATA_DIR": str(folder / f"w{i}")},
            log_path=folder / f"w{i}.log",
            web_port=find_free_port(),
        )
        for i in range(workers)
    ]
    demo = ConsoleDemo(env=env, settings=settings_from_env(env), workers=procs)
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready(timeout=180)
        wait_for(
            lambda: [
                sorted(p.get_json("/stream-app/metrics/")["behaviours"]["counter"]["partitions"])
                for p in procs
            ],
            lambda seen: (
                sorted(x for part in seen for x in part) == list(range(PARTITIONS)) and all(seen)
            ),
            timeout=120,
            what="the counter's partitions spread over every worker",
        )
        if seeded:
            seed_demo(demo)
    except BaseException:
        stop_demo(demo)
        raise
    return demo


def seed_demo(demo: ConsoleDemo) -> None:
    """Send the demo's sample work and wait until the workers have handled it."""
    seed(demo.settings)
    wait_for(
        lambda: demo.get_json("/stream-app/cells/counter/"),
        lambda cells: cells.get("alice") == {"count": 3} and cells.get("bob") == {"count": 5},
        timeout=120,
        what="the seeded counters",
    )
    wait_for(
        lambda: demo.get_json("/stream-app/parked/wallet/"),
        lambda parked: "w-2" in parked,
        timeout=120,
        what="the seeded wallet w-2 parked",
    )


def stop_demo(demo: ConsoleDemo) -> None:
    """Stop the demo's workers (by pid)."""
    for proc in demo.workers:
        if proc.process is not None:
            proc.stop()


@pytest.fixture(scope="package")
def console_demo(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDemo]:
    """Two seeded workers of the console demo app, shared by the browser tests (stopped when
    the last of them is done)."""
    demo = start_demo(bootstrap, tmp_path_factory.mktemp("console-demo"))
    yield demo
    stop_demo(demo)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), through Playwright.

    Package-scoped, not session-scoped: while Playwright's sync API is open, the main thread
    has a running event loop, and every later test that calls ``asyncio.run`` would fail.
    """
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"no Chromium at {CHROMIUM}: run scripts/browser.sh (apt-get install chromium) or set "
            "STREAM_APP_CHROMIUM"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (1280x800) that fails its test on any script error, CSP violation or static
    file that does not load."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_console(msg: Any) -> None:
        # An answer of 4xx the test asked for (a refused action) is logged as a failed load;
        # failed loads are judged by on_response instead.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            problems.append(f"console {msg.type}: {msg.text}")

    def on_response(response: Any) -> None:
        if "/console/static/" in response.url and response.status >= 400:
            problems.append(f"static file {response.url}: {response.status}")

    page.on("console", on_console)
    page.on("response", on_response)
    yield page
    context.close()
    assert not problems, "the page logged errors:\n" + "\n".join(problems)


@pytest.fixture
def shot() -> Callable[[Any, str], Path]:
    """``shot(page, name)``: save a full-page screenshot as
    ``build/console-screenshots/<name>.png``."""

    def take(page: Any, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
