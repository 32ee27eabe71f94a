"""Dead letters pages of the console."""

from __future__ import annotations

from typing import Any

from stream_app.console.server import Console

__all__ = ["install"]


def install(console: Console) -> None:
    """Register /console/dead-letters."""

    @console.page("/dead-letters", title="Dead letters")
    async def letters_index(web: Any, request: Any) -> Any:
        return console.render(web, request, "letters.html")
