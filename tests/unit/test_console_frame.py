"""The console's frame without a worker: pinned assets, static files, the guard's checks."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import pytest
from pydantic import SecretStr

from stream_app.console.guard import CSRF_HEADER, TOKEN_COOKIE, ActionRefused, Guard
from stream_app.console.server import static_file
from stream_app.settings import Settings

TOKEN = "a-console-token-of-some-length"


def test_vendored_assets_match_their_pins() -> None:
    vendor = resources.files("stream_app.console") / "static" / "vendor"
    pins = json.loads((vendor / "assets.json").read_text())
    assert set(pins) == {"htmx.min.js", "cytoscape.min.js"}
    for name, pin in pins.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == pin["sha256"], name
        assert (vendor / f"{name.split('.')[0]}.LICENSE").read_text().strip()


@pytest.mark.parametrize(
    "name", ["../server.py", "vendor/../../guard.py", "", "a/b/c", "./console.css", "nope.js"]
)
def test_static_files_outside_the_folder_are_not_served(name: str) -> None:
    assert static_file(name) is None


def test_static_files_have_their_content_type() -> None:
    found = static_file("vendor/htmx.min.js")
    assert found is not None and found[1] == "text/javascript" and found[0].startswith(b"var htmx")
    css = static_file("console.css")
    assert css is not None and css[1] == "text/css"


def _check(guard: Guard, *, csrf: str | None = None, **extra: str) -> None:
    headers = {CSRF_HEADER: guard.csrf_token if csrf is None else csrf, **extra}
    cookies = {TOKEN_COOKIE: extra.pop("cookie")} if "cookie" in extra else {}
    headers.pop("cookie", None)
    guard.check_action(headers, cookies, {}, "127.0.0.1:6066")


def test_loopback_without_a_token_accepts_an_action_from_its_pages() -> None:
    guard = Guard(Settings())
    assert guard.actions_enabled and not guard.needs_login
    _check(guard)
    _check(guard, Origin="http://127.0.0.1:6066")


@pytest.mark.parametrize(
    ("csrf", "origin", "status"),
    [("", None, 403), ("stale", None, 403), (None, "http://evil.example", 403)],
)
def test_a_forged_action_is_refused(csrf: str | None, origin: str | None, status: int) -> None:
    guard = Guard(Settings())
    with pytest.raises(ActionRefused) as refused:
        _check(guard, csrf=csrf, **({"Origin": origin} if origin else {}))
    assert refused.value.status == status


def test_actions_turned_off_are_refused() -> None:
    guard = Guard(Settings(console_actions=False))
    assert not guard.actions_enabled
    with pytest.raises(ActionRefused, match="turned off") as refused:
        _check(guard)
    assert refused.value.status == 403


def test_an_exposed_console_without_a_token_refuses_actions() -> None:
    guard = Guard(Settings(web_host="0.0.0.0"))
    assert not guard.actions_enabled
    with pytest.raises(ActionRefused, match="CONSOLE_TOKEN"):
        _check(guard)


def test_a_token_is_needed_when_one_is_set() -> None:
    guard = Guard(Settings(web_host="0.0.0.0", console_token=SecretStr(TOKEN)))
    assert guard.actions_enabled and guard.needs_login
    with pytest.raises(ActionRefused) as refused:
        _check(guard)
    assert refused.value.status == 401
    with pytest.raises(ActionRefused):
        _check(guard, cookie="not-the-token-at-all")
    _check(guard, cookie=TOKEN)
    _check(guard, Authorization=f"Bearer {TOKEN}")


def test_a_short_token_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Settings(console_token=SecretStr("short"))
