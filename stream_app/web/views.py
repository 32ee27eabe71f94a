"""HTTP views of a worker (Faust web), for inspection and the ``stream-app cells`` commands.

- ``GET /stream-app/cells/<behaviour>/<id>/``: one cell (data, version, pending timers, parked
  work), answered by the worker that owns the cell's partition (routed there if needed).
- ``GET /stream-app/cells/<behaviour>/``: every live cell, gathered from every worker.
- ``GET /stream-app/parked/<behaviour>/``: every parked cell, gathered from every worker.
- ``GET /stream-app/entities/<type>/<id>/``: an entity's current state and the sequence
  number of its last event (``init()`` and 0 for an entity without events), from its owner.
- ``GET /stream-app/metrics/``: this worker's counters, dead letters by reason, timer lag.

Listing views ask each worker that holds partitions of the behaviour's table for its own part
(``?local=1``) and merge the answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream_app.api.entities import Entity
    from stream_app.engine.cells import CellEngine
    from stream_app.runtime import Runtime

__all__ = ["install_behaviour_views", "install_entity_views", "install_views"]


def install_views(runtime: Runtime) -> None:
    """Install the views that do not depend on a behaviour."""
    app = runtime.app

    @app.page("/stream-app/metrics/")
    async def metrics(web: Any, request: Any) -> Any:
        m = runtime.metrics
        return web.json(
            {
                "dead_letters": dict(runtime.dead_letters.counts),
                "timers_fired": m.timers_fired,
                "timers_skipped": m.timers_skipped,
                "timer_lag_ms": m.lag_percentiles(),
                "effects_emitted": m.effects_emitted,
                "effects_done": m.effects_done,
                "effect_failures": m.effect_failures,
                "parked": m.parked,
                "released": m.released,
                "booted": m.booted,
                "misrouted": m.misrouted,
                "batch_input": runtime.batch_input.stats() if runtime.batch_input else None,
                "behaviours": {
                    name: {"partitions": engine.owned_partitions}
                    for name, engine in runtime.engines.items()
                },
            }
        )

    @app.page("/stream-app/dead-letters/")
    async def dead_letters(web: Any, request: Any) -> Any:
        return web.json(dict(runtime.dead_letters.counts))


def install_behaviour_views(runtime: Runtime, engine: CellEngine) -> None:
    """Install the views of one behaviour's cells."""
    app = runtime.app
    name = engine.name

    @app.page(f"/stream-app/cells/{name}/{{cell_id}}/", name=f"stream_app.cell.{name}")
    @app.table_route(table=runtime.cell_tables[name].cells.table, match_info="cell_id")
    async def one_cell(web: Any, request: Any, cell_id: str) -> Any:
        described = engine.describe(cell_id)
        status = 200 if described["alive"] or described["parked"] else 404
        return web.json(described, status=status)

    @app.page(f"/stream-app/cells/{name}/", name=f"stream_app.cells.{name}")
    async def all_cells(web: Any, request: Any) -> Any:
        return web.json(await _gather(runtime, engine, request, engine.local_cells))

    @app.page(f"/stream-app/parked/{name}/", name=f"stream_app.parked.{name}")
    async def parked(web: Any, request: Any) -> Any:
        return web.json(await _gather(runtime, engine, request, engine.local_parked))


def install_entity_views(runtime: Runtime, entity: Entity[Any], engine: CellEngine) -> None:
    """Install the query view of one entity type (after its behaviour's views)."""
    app = runtime.app
    name = entity.name

    @app.page(f"/stream-app/entities/{name}/{{entity_id}}/", name=f"stream_app.entity.{name}")
    @app.table_route(table=runtime.cell_tables[name].cells.table, match_info="entity_id")
    async def one_entity(web: Any, request: Any, entity_id: str) -> Any:
        described = engine.describe(entity_id)
        data = described["data"]
        if data is None:
            seq, state = 0, entity.init().model_dump(mode="json")
        else:
            seq, state = data["seq"], data["state"]
        return web.json(
            {
                "entity": name,
                "id": entity_id,
                "seq": seq,
                "state": state,
                "parked": described["parked"] is not None,
            }
        )


async def _gather(
    runtime: Runtime, engine: CellEngine, request: Any, local: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    mine = local()
    if request.query.get("local"):
        return mine
    app = runtime.app
    me = str(app.conf.canonical_url).rstrip("/")
    try:
        hosts = [str(h).rstrip("/") for h in app.router.table_metadata(engine.cells.name)]
    except KeyError:
        hosts = []
    others = [h for h in hosts if h != me]

    async def fetch(host: str) -> dict[str, Any]:
        url = f"{host}{request.path}?local=1"
        async with app.http_client.get(url) as response:
            response.raise_for_status()
            result: dict[str, Any] = await response.json()
            return result

    for part in await asyncio.gather(*(fetch(h) for h in others)):
        mine.update(part)
    return mine
