"""The console's own routes: its static files, and the login that gives actions their token."""

from __future__ import annotations

from typing import Any

import faust

from stream_app.console.guard import TOKEN_COOKIE
from stream_app.console.server import PREFIX, Console, static_file

__all__ = ["install"]


def install(console: Console) -> None:
    """Register the static files and ``/console/login`` (``GET`` the form, ``POST`` the token or
    ``logout=1``)."""
    app = console.app

    @app.page(PREFIX + "/static/{name:.+}", name="stream_app.console.static")
    async def static(web: Any, request: Any, name: str) -> Any:
        found = static_file(name)
        if found is None:
            return web.text("not found", status=404)
        body, content_type = found
        return web.bytes(
            body,
            content_type=content_type,
            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    class Login(faust.web.View):
        """The login form, and the ``POST`` that checks the token and sets its cookie."""

        async def get(self, request: Any) -> Any:
            return console.render(self, request, "login.html", failed=False)

        async def post(self, request: Any) -> Any:
            form = await request.post()
            home: Any = self.text("", status=303, headers={"Location": PREFIX + "/"})
            if form.get("logout"):
                home.del_cookie(TOKEN_COOKIE, path=PREFIX)
                return home
            token = str(form.get("token", ""))
            if not console.guard.token_matches(token):
                return console.render(self, request, "login.html", status=401, failed=True)
            home.set_cookie(
                TOKEN_COOKIE,
                token,
                path=PREFIX,
                httponly=True,
                samesite="Strict",
                secure=request.secure,
            )
            return home

    app.page(PREFIX + "/login", name="stream_app.console.login")(Login)
