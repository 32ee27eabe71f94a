"""A worker's first start freezes the objects made so far out of the garbage collector's sight
(stream_app.kafka.app.StreamApp.on_first_start), so that Faust's full collection at every
partition assignment does not walk them; an app run inside another program is left alone."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from stream_app.kafka.app import create_app
from stream_app.settings import Settings


@pytest.mark.parametrize("in_worker", [True, False])
def test_a_worker_freezes_what_its_start_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_worker: bool
) -> None:
    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    app = create_app(
        Settings(app_id="freeze", bootstrap_servers="127.0.0.1:9", data_dir=tmp_path / "data")
    )
    app.in_worker = in_worker
    asyncio.run(app.on_first_start())
    assert frozen == ([True] if in_worker else [])
    assert Path(app.conf.datadir).is_dir()
