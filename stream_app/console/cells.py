"""Cells pages of the console."""

from __future__ import annotations

from typing import Any

from stream_app.console.server import Console

__all__ = ["install"]


def install(console: Console) -> None:
    """Register /console/cells."""

    @console.page("/cells", title="Cells")
    async def cells_index(web: Any, request: Any) -> Any:
        return console.render(web, request, "cells.html")
