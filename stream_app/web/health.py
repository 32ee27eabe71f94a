"""Health views of a worker, for an orchestrator's probes (Kubernetes, Docker healthchecks).

- ``GET /stream-app/health/live``: 200 whenever the worker's event loop answers. A worker whose
  loop is blocked or dead answers nothing, and the orchestrator restarts it.
- ``GET /stream-app/health/ready``: 200 once the worker has joined its consumer group, holds its
  assignment and has recovered the table partitions it was given; 503 before that and during
  every later rebalance and recovery, with a JSON body saying which step it is in.

Readiness is what an orchestrator waits for before it takes down the next worker of a rolling
update, and what keeps a worker out of a load balancer while its state is not yet local. A
worker that is recovering is alive (it is reading its changelogs), so liveness never waits for
readiness: a liveness probe that did would kill a worker restoring a large table, again and
again.

The steps, in the order a starting worker goes through them (the ``reason`` of a 503):

1. ``joining``: the consumer has not yet been through a rebalance (the group join is pending).
2. ``rebalancing``: a rebalance is in progress: partitions are being revoked and assigned, or
   the recovery that follows is finishing (Faust ends a rebalance once its tables are ready).
3. ``recovering``: the assigned table partitions are being restored from their changelogs.

The views read Faust's own state (``app.rebalancing``, ``app.in_recovery`` and the table
manager's ``actives_ready``), so they agree with what Faust logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import faust

__all__ = [
    "LIVE_PATH",
    "READY_PATH",
    "NotReadyReason",
    "Readiness",
    "install_health_views",
    "readiness",
]

#: Path of the liveness view.
LIVE_PATH = "/stream-app/health/live"

#: Path of the readiness view.
READY_PATH = "/stream-app/health/ready"

#: Why a worker is not ready (see the module's steps).
NotReadyReason = Literal["joining", "rebalancing", "recovering"]

_DETAILS: dict[NotReadyReason, str] = {
    "joining": "waiting for the first assignment of the consumer group",
    "rebalancing": "a rebalance of the consumer group is in progress",
    "recovering": "restoring the assigned table partitions from their changelogs",
}


@dataclass(frozen=True)
class Readiness:
    """Whether a worker is ready, and if not, why.

    Attributes:
        reason: ``None`` when the worker is ready, else the step it is in.
        rebalances: Rebalances this worker has been through (0 before it joined its group).
    """

    reason: NotReadyReason | None
    rebalances: int

    @property
    def ready(self) -> bool:
        """Whether the worker is ready."""
        return self.reason is None

    def body(self) -> dict[str, Any]:
        """The readiness view's JSON body."""
        if self.reason is None:
            return {"ready": True, "rebalances": self.rebalances}
        return {
            "ready": False,
            "reason": self.reason,
            "detail": _DETAILS[self.reason],
            "rebalances": self.rebalances,
        }


def readiness(app: faust.App) -> Readiness:
    """The readiness of the worker running ``app``, from Faust's rebalance and recovery state."""
    rebalances = app.rebalancing_count
    reason: NotReadyReason | None = None
    if rebalances == 0:
        reason = "joining"
    elif app.in_recovery:
        reason = "recovering"
    elif app.rebalancing:
        # From the revocation until Faust's recovery has finished (it ends the rebalance last).
        reason = "rebalancing"
    elif _has_tables(app) and not app.tables.actives_ready:
        # Faust resets actives_ready when a rebalance starts, and sets it once every assigned
        # table partition is up to date.
        reason = "recovering"
    return Readiness(reason=reason, rebalances=rebalances)


def _has_tables(app: faust.App) -> bool:
    # An app without tables resumes its streams without a recovery, and never sets
    # actives_ready.
    return bool(app.tables.keys())


def install_health_views(app: faust.App) -> None:
    """Install the liveness and readiness views on ``app``."""

    @app.page(LIVE_PATH, name="stream_app.health.live")
    async def live(web: Any, request: Any) -> Any:
        return web.json({"live": True})

    @app.page(READY_PATH, name="stream_app.health.ready")
    async def ready(web: Any, request: Any) -> Any:
        state = readiness(app)
        return web.json(state.body(), status=200 if state.ready else 503)
