"""HTTP views of a worker (Faust web), for inspection and the ``stream-app cells`` commands.

- ``GET /stream-app/cells/<behaviour>/<id>/``: one cell (data, version, pending timers, parked
  work), answered by the worker that owns the cell's partition (routed there if needed).
- ``GET /stream-app/cells/<behaviour>/``: every live cell, gathered from every worker; with
  ``?limit=N`` (1 to :data:`MAX_LIMIT`) ``{"total": <live cells>, "cells": <the first N in id
  order>}``, each worker decoding only its first N.
- ``GET /stream-app/parked/<behaviour>/``: every parked cell, gathered from every worker.
- ``GET /stream-app/entities/<type>/<id>/``: an entity's current state and the sequence
  number of its last event (``init()`` and 0 for an entity without events), from its owner.
- ``GET /stream-app/quests/<behaviour>/<context>/``: a context's active quests (instance ids,
  variables, open windows, deadline), its pending timers and the events it ignored, from its
  owner.
- ``GET /stream-app/quests/<behaviour>/``: every active quest instance, gathered from every
  worker (a query across partitions, not a global set): ``instance id -> {context, quest,
  started_ms}``.
- ``GET /stream-app/workflows/<behaviour>/<run_id>/``: a workflow run's record (status, every
  node with its status, attempts, trace and payload, the fork bookkeeping), its pending retry
  timers and parked work, from its owner.
- ``GET /stream-app/workflows/<behaviour>/``: every run, gathered from every worker: ``run id
  -> {workflow, status, nodes, started_at, finished_at}``.
- ``GET /stream-app/atomic/<log>/<scope>/``: an atomic log's scope (sequence number, summary,
  recent events, the validation in flight, the queue behind it and its counters), its timer and
  parked work, from its owner.
- ``GET /stream-app/atomic/<log>/``: every scope, gathered from every worker: ``scope -> {seq,
  in_flight, queued, accepted, rejected, timed_out, late}``.
- ``GET /stream-app/metrics/``: this worker's counters, dead letters by reason, timer lag.

Listing views ask each worker that holds partitions of the behaviour's table for its own part
(``?local=1``) and merge the answers.

The views reach the worker only through two ports, :class:`WorkerStatus` and
:class:`CellInspection`, which the runtime fills (it installs the views; this module does not
import it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import faust

from stream_app.api.entities import Entity

__all__ = [
    "MAX_LIMIT",
    "CellInspection",
    "WorkerStatus",
    "install_atomic_views",
    "install_behaviour_views",
    "install_entity_views",
    "install_quest_views",
    "install_views",
    "install_workflow_views",
]


#: Most cells one page of ``/stream-app/cells/<behaviour>/?limit=`` lists.
MAX_LIMIT = 10_000


class CellInspection(Protocol):
    """What the views read of one behaviour's cells (a :class:`~stream_app.engine.cells.
    CellEngine`)."""

    @property
    def name(self) -> str:
        """The behaviour's name."""
        ...

    @property
    def owned_partitions(self) -> list[int]:
        """The behaviour's partitions this worker owns."""
        ...

    def describe(self, cell_id: str) -> dict[str, Any]:
        """One cell as this worker holds it (``alive``, ``data``, ``parked``, timers...)."""
        ...

    def local_cells(self) -> dict[str, Any]:
        """Every live cell on this worker: ``cell_id -> data``."""
        ...

    def local_cells_page(self, limit: int) -> tuple[int, dict[str, Any]]:
        """How many live cells this worker holds, and the first ``limit`` in id order."""
        ...

    def local_parked(self) -> dict[str, Any]:
        """Every parked cell on this worker."""
        ...


class WorkerStatus(Protocol):
    """What the views read of the worker as a whole."""

    @property
    def engines(self) -> Mapping[str, CellInspection]:
        """The cells of each behaviour this worker runs, by behaviour name."""
        ...

    def counters(self) -> dict[str, Any]:
        """This process's counters (timers, effects, parking...), as the metrics view serves
        them."""
        ...

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters this process published, by reason."""
        ...

    def batch_input_stats(self) -> dict[str, Any]:
        """The batched input's counters (records, batches, commits, partitions read)."""
        ...


def install_views(app: faust.App, status: WorkerStatus) -> None:
    """Install the views that do not depend on a behaviour."""

    @app.page("/stream-app/metrics/")
    async def metrics(web: Any, request: Any) -> Any:
        return web.json(
            {
                "dead_letters": status.dead_letter_counts(),
                **status.counters(),
                "batch_input": status.batch_input_stats(),
                "behaviours": {
                    name: {"partitions": engine.owned_partitions}
                    for name, engine in status.engines.items()
                },
            }
        )

    @app.page("/stream-app/dead-letters/")
    async def dead_letters(web: Any, request: Any) -> Any:
        return web.json(status.dead_letter_counts())


def install_behaviour_views(app: faust.App, engine: CellInspection, table: Any) -> None:
    """Install the views of one behaviour's cells; ``table`` is the Faust table of the cells,
    which routes a cell's view to the worker owning it."""
    name = engine.name

    @app.page(f"/stream-app/cells/{name}/{{cell_id}}/", name=f"stream_app.cell.{name}")
    @app.table_route(table=table, match_info="cell_id")
    async def one_cell(web: Any, request: Any, cell_id: str) -> Any:
        described = engine.describe(cell_id)
        status = 200 if described["alive"] or described["parked"] else 404
        return web.json(described, status=status)

    @app.page(f"/stream-app/cells/{name}/", name=f"stream_app.cells.{name}")
    async def all_cells(web: Any, request: Any) -> Any:
        if "limit" in request.query:
            try:
                limit = _limit(request.query["limit"])
            except ValueError as exc:
                return web.json({"error": str(exc)}, status=400)
            return web.json(await _gather_page(app, engine, request, limit))
        return web.json(await _gather(app, engine, request, engine.local_cells))

    @app.page(f"/stream-app/parked/{name}/", name=f"stream_app.parked.{name}")
    async def parked(web: Any, request: Any) -> Any:
        return web.json(await _gather(app, engine, request, engine.local_parked))


def install_entity_views(
    app: faust.App, entity: Entity[Any], engine: CellInspection, table: Any
) -> None:
    """Install the query view of one entity type (after its behaviour's views); ``table`` as
    for :func:`install_behaviour_views`."""
    name = entity.name

    @app.page(f"/stream-app/entities/{name}/{{entity_id}}/", name=f"stream_app.entity.{name}")
    @app.table_route(table=table, match_info="entity_id")
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


def install_quest_views(app: faust.App, engine: CellInspection, table: Any) -> None:
    """Install the views of a quest behaviour's contexts (after its behaviour's views);
    ``table`` as for :func:`install_behaviour_views`."""
    name = engine.name

    @app.page(f"/stream-app/quests/{name}/{{context}}/", name=f"stream_app.quests.{name}")
    @app.table_route(table=table, match_info="context")
    async def one_context(web: Any, request: Any, context: str) -> Any:
        described = engine.describe(context)
        data = described["data"] or {}
        return web.json(
            {
                "behaviour": name,
                "context": context,
                # The stored form leaves fields at their defaults out; the view shows them.
                "quests": {
                    quest: {"windows": {}, "deadline_ms": None, **instance}
                    for quest, instance in data.get("quests", {}).items()
                },
                "ignored": data.get("ignored", 0),
                "timers": described["timers"],
                "parked": described["parked"],
            },
            status=200 if described["alive"] or described["parked"] else 404,
        )

    def local_instances() -> dict[str, Any]:
        return {
            instance["instance"]: {
                "context": context,
                "quest": quest,
                "started_ms": instance["started_ms"],
            }
            for context, data in engine.local_cells().items()
            for quest, instance in data.get("quests", {}).items()
        }

    @app.page(f"/stream-app/quests/{name}/", name=f"stream_app.quest_instances.{name}")
    async def instances(web: Any, request: Any) -> Any:
        return web.json(await _gather(app, engine, request, local_instances))


def install_workflow_views(app: faust.App, engine: CellInspection, table: Any) -> None:
    """Install the views of a workflow behaviour's runs (after its behaviour's views);
    ``table`` as for :func:`install_behaviour_views`."""
    name = engine.name

    @app.page(f"/stream-app/workflows/{name}/{{run_id}}/", name=f"stream_app.workflow_run.{name}")
    @app.table_route(table=table, match_info="run_id")
    async def one_run(web: Any, request: Any, run_id: str) -> Any:
        described = engine.describe(run_id)
        return web.json(
            {
                "behaviour": name,
                "run_id": run_id,
                "run": described["data"],
                "timers": described["timers"],
                "parked": described["parked"],
            },
            status=200 if described["alive"] or described["parked"] else 404,
        )

    def local_runs() -> dict[str, Any]:
        return {
            run_id: {
                "workflow": record.get("workflow"),
                "status": record.get("status"),
                "nodes": len(record.get("nodes", {})),
                "started_at": record.get("started_at"),
                "finished_at": record.get("finished_at"),
            }
            for run_id, record in engine.local_cells().items()
        }

    @app.page(f"/stream-app/workflows/{name}/", name=f"stream_app.workflow_runs.{name}")
    async def runs(web: Any, request: Any) -> Any:
        return web.json(await _gather(app, engine, request, local_runs))


def install_atomic_views(app: faust.App, engine: CellInspection, table: Any) -> None:
    """Install the views of an atomic log's scopes (after its behaviour's views); ``table`` as
    for :func:`install_behaviour_views`."""
    name = engine.name

    @app.page(f"/stream-app/atomic/{name}/{{scope}}/", name=f"stream_app.atomic_scope.{name}")
    @app.table_route(table=table, match_info="scope")
    async def one_scope(web: Any, request: Any, scope: str) -> Any:
        described = engine.describe(scope)
        data = described["data"] or {}
        queue = data.get("queue", [])
        return web.json(
            {
                "log": name,
                "scope": scope,
                "seq": data.get("seq", 0),
                "summary": data.get("summary"),
                "recent": data.get("recent", []),
                "in_flight": data.get("in_flight"),
                "queued": len(queue),
                "queue": [pending["request_id"] for pending in queue],
                **{counter: data.get(counter, 0) for counter in _ATOMIC_COUNTERS},
                "timers": described["timers"],
                "parked": described["parked"],
            },
            status=200 if described["alive"] or described["parked"] else 404,
        )

    def local_scopes() -> dict[str, Any]:
        return {
            scope: {
                "seq": data.get("seq", 0),
                "in_flight": (data.get("in_flight") or {}).get("request_id"),
                "queued": len(data.get("queue", [])),
                **{counter: data.get(counter, 0) for counter in _ATOMIC_COUNTERS},
            }
            for scope, data in engine.local_cells().items()
        }

    @app.page(f"/stream-app/atomic/{name}/", name=f"stream_app.atomic_scopes.{name}")
    async def scopes(web: Any, request: Any) -> Any:
        return web.json(await _gather(app, engine, request, local_scopes))


#: The counters of an atomic scope (:class:`~stream_app.core.atomic.AtomicScope`).
_ATOMIC_COUNTERS = ("accepted", "rejected", "timed_out", "late")


async def _gather(
    app: faust.App, engine: CellInspection, request: Any, local: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    mine = local()
    if request.query.get("local"):
        return mine
    for part in await _ask_others(app, engine, f"{request.path}?local=1"):
        mine.update(part)
    return mine


async def _ask_others(app: faust.App, engine: CellInspection, path: str) -> list[dict[str, Any]]:
    """The JSON answers to ``path`` of every other worker holding partitions of ``engine``'s
    table."""
    me = str(app.conf.canonical_url).rstrip("/")
    try:
        hosts = [str(h).rstrip("/") for h in app.router.table_metadata(engine.name)]
    except KeyError:
        hosts = []

    async def fetch(host: str) -> dict[str, Any]:
        async with app.http_client.get(f"{host}{path}") as response:
            response.raise_for_status()
            result: dict[str, Any] = await response.json()
            return result

    return list(await asyncio.gather(*(fetch(h) for h in hosts if h != me)))


def _limit(text: str) -> int:
    """The ``limit`` of a listing: a whole number from 1 to :data:`MAX_LIMIT`."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text[:20]!r}")
    return int(text)


async def _gather_page(
    app: faust.App, engine: CellInspection, request: Any, limit: int
) -> dict[str, Any]:
    """``{"total", "cells"}``: this worker's page of cells, or (without ``?local=1``) every
    worker's merged: the totals added, the first ``limit`` ids of their pages kept."""
    total, cells = engine.local_cells_page(limit)
    if request.query.get("local"):
        return {"total": total, "cells": cells}
    for part in await _ask_others(app, engine, f"{request.path}?local=1&limit={limit}"):
        total += part["total"]
        cells.update(part["cells"])
    return {"total": total, "cells": {cell: cells[cell] for cell in sorted(cells)[:limit]}}
