"""stream_app.web.health: readiness follows Faust's own rebalance and recovery transitions."""

from __future__ import annotations

import faust

from stream_app.kafka.app import create_app
from stream_app.settings import Settings
from stream_app.web.health import readiness


def app_with_a_table() -> faust.App:
    app = create_app(Settings(app_id="health-unit"))
    app.Table("cells", default=int)
    return app


def rebalance(app: faust.App) -> list[str | None]:
    """Take ``app`` through a rebalance as Faust does (its consumer's revocation callback, its
    recovery's start and end, the tables' readiness, the end of the rebalance); the reason the
    worker is not ready after each step (None: ready)."""
    reasons: list[str | None] = []
    app.on_rebalance_start()
    reasons.append(readiness(app).reason)
    app.in_recovery = True
    reasons.append(readiness(app).reason)
    app.in_recovery = False
    app.tables.on_actives_ready()
    reasons.append(readiness(app).reason)
    app.on_rebalance_end()
    reasons.append(readiness(app).reason)
    return reasons


def test_a_worker_is_ready_only_after_a_rebalance_and_the_recovery_of_its_tables() -> None:
    app = app_with_a_table()
    assert readiness(app).body() == {
        "ready": False,
        "reason": "joining",
        "detail": "waiting for the first assignment of the consumer group",
        "rebalances": 0,
    }
    assert rebalance(app) == ["rebalancing", "recovering", "rebalancing", None]
    assert readiness(app).body() == {"ready": True, "rebalances": 1}
    # Every later rebalance makes the worker unready until its tables are recovered again.
    assert rebalance(app) == ["rebalancing", "recovering", "rebalancing", None]
    assert readiness(app).body() == {"ready": True, "rebalances": 2}


def test_tables_not_yet_up_to_date_keep_a_worker_unready() -> None:
    app = app_with_a_table()
    app.on_rebalance_start()
    app.on_rebalance_end()
    assert readiness(app).reason == "recovering"
    app.tables.on_actives_ready()
    assert readiness(app).ready


def test_an_app_without_tables_is_ready_once_its_rebalance_ends() -> None:
    app = create_app(Settings(app_id="health-unit-no-tables"))
    app.on_rebalance_start()
    assert readiness(app).reason == "rebalancing"
    app.on_rebalance_end()
    assert readiness(app).ready
