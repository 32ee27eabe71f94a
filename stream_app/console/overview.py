"""The overview page: the app, its workers and behaviours at a glance."""

from __future__ import annotations

from typing import Any

from stream_app.console.server import Console

__all__ = ["install"]


def install(console: Console) -> None:
    """Register ``/console/``."""

    @console.page("/", title="Overview")
    async def overview(web: Any, request: Any) -> Any:
        metrics = await console.view_json("metrics/")
        return console.render(web, request, "overview.html", metrics=metrics.data)
