"""Workflows pages of the console."""

from __future__ import annotations

from typing import Any

from stream_app.console.server import Console

__all__ = ["install"]


def install(console: Console) -> None:
    """Register /console/workflows."""

    @console.page("/workflows", title="Workflows")
    async def workflows_index(web: Any, request: Any) -> Any:
        return console.render(web, request, "workflows.html")
