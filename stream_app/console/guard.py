"""Who may change things through the console, and the checks every action passes.

An action (send, release, redrive, cancel) is a ``POST`` that must pass, in order:

1. **switched on**: :attr:`~stream_app.settings.Settings.console_actions`;
2. **authorised**: with a :attr:`~stream_app.settings.Settings.console_token`, the request
   carries it (the cookie ``/console/login`` sets, or ``Authorization: Bearer <token>``);
   without one, only a worker whose views bind a loopback address accepts actions;
3. **same origin**: the ``X-Console-CSRF`` header (or ``csrf`` form field) equals this worker's
   CSRF token, which only its own pages carry, and an ``Origin`` header, if sent, names this
   worker's host. Another site open in the operator's browser can neither read the token nor
   forge the header.

Each refusal is an :class:`ActionRefused` with the HTTP status and a sentence for the page.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from stream_app.settings import Settings

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "TOKEN_COOKIE",
    "ActionRefused",
    "Guard",
]

#: Header the console's pages send their CSRF token in (``console.js`` adds it to every htmx
#: request).
CSRF_HEADER = "X-Console-CSRF"

#: Form field a plain (non-htmx) form sends its CSRF token in.
CSRF_FIELD = "csrf"

#: Cookie that holds the console token after ``/console/login``.
TOKEN_COOKIE = "stream_app_console_token"


class ActionRefused(Exception):
    """An action the guard refuses.

    Attributes:
        status: The HTTP status to answer (403, or 401 when a login would help).
        reason: What the operator reads.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Guard:
    """The console's access checks for one worker.

    Args:
        settings: The worker's settings (``console_actions``, ``console_token``, ``web_host``).

    Attributes:
        csrf_token: This worker's CSRF token, random per process; its pages embed it.
    """

    settings: Settings
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def actions_enabled(self) -> bool:
        """Whether this console offers actions at all (switched on, and either a token is set
        or the views bind a loopback address)."""
        return self.settings.console_actions and (
            self.settings.console_token is not None or self.settings.web_is_loopback
        )

    @property
    def needs_login(self) -> bool:
        """Whether actions need the token (one is configured)."""
        return self.settings.console_token is not None

    def token_matches(self, given: str | None) -> bool:
        """Whether ``given`` is the configured token (compared in constant time)."""
        token = self.settings.console_token
        if token is None or not given:
            return False
        return hmac.compare_digest(given.encode(), token.get_secret_value().encode())

    def logged_in(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        """Whether the request carries the token (cookie or bearer header); ``True`` when no
        token is configured."""
        if not self.needs_login:
            return True
        bearer = headers.get("Authorization", "")
        given = bearer[7:] if bearer.startswith("Bearer ") else cookies.get(TOKEN_COOKIE)
        return self.token_matches(given)

    def check_action(
        self,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        form: Mapping[str, str],
        host: str | None,
    ) -> None:
        """Refuse the action unless it is switched on, authorised and from this worker's pages.

        Args:
            headers: The request's headers.
            cookies: The request's cookies.
            form: The request's form fields (may be empty).
            host: The ``Host`` the request was sent to.

        Raises:
            ActionRefused: With the status and the reason.
        """
        if not self.settings.console_actions:
            raise ActionRefused(
                403, "actions are turned off on this worker (STREAM_APP_CONSOLE_ACTIONS=false)"
            )
        if not self.actions_enabled:
            raise ActionRefused(
                403,
                "actions are refused: the console is exposed beyond this machine "
                f"(web_host {self.settings.web_host}) and no STREAM_APP_CONSOLE_TOKEN is set",
            )
        if not self.logged_in(headers, cookies):
            raise ActionRefused(401, "log in with the console token first (/console/login)")
        given = headers.get(CSRF_HEADER) or form.get(CSRF_FIELD) or ""
        if not hmac.compare_digest(given.encode(), self.csrf_token.encode()):
            raise ActionRefused(403, "missing or stale CSRF token: reload the page and try again")
        origin = headers.get("Origin")
        if origin and host and urlsplit(origin).netloc != host:
            raise ActionRefused(403, f"cross-origin request from {origin} refused")
