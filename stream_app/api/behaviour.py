"""Behaviours: the functional API of cells.

A :class:`Behaviour` owns the realm of its cells: every cell ``(behaviour, id)`` is handled by
it, on the worker that owns the cell's partition. It declares the message types it accepts, the
pydantic model of a live cell's data (and its version), and three callbacks, each given a
:class:`~stream_app.core.cell.CellState`:

- ``handle_message(state)``: a message arrived; the cell may be dead or alive before and after.
- ``on_boot(state)``: once for every live cell after its partition is assigned to a worker and
  its state recovered (after a restart or a partition move too), before its next message.
- ``on_timeout(state)``: a timer the cell requested came due; the cell is alive.

Write one by passing functions::

    counter = Behaviour(
        "counter",
        messages={"increment": Increment},
        data=Count,
        handle_message=lambda s: ...,
    )

or by subclassing and overriding the methods. A callback that raises is tried again from the same
stored state as its :class:`~stream_app.core.retry.RetryPolicy` says (``retry=``; by default the
worker's ``Settings.cell_retry``: 3 tries, 0.1 s apart and doubling); when the last try fails the
cell is parked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from stream_app.core.cell import CellState
from stream_app.core.envelope import MessageTypes
from stream_app.core.retry import Exhausted, RetryPolicy
from stream_app.errors import DataVersionError

__all__ = ["Behaviour", "Callback", "Migration"]

DataT = TypeVar("DataT", bound=BaseModel)

#: The name becomes part of topic names (``<app_id>.<name>.in``, changelogs), so it may only hold
#: what Kafka allows there; checked here so a bad name fails at import, not at topic creation.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")

#: A behaviour callback: changes ``state.data`` and requests outputs; returns nothing.
Callback = Callable[[CellState[Any]], None]
#: ``migrate(stored_version, stored_data) -> data as the current version expects it``.
Migration = Callable[[int, dict[str, Any]], dict[str, Any]]


class Behaviour(Generic[DataT]):
    """The realm of one kind of cell: its messages, its data and its callbacks.

    Args:
        name: The behaviour's name: its input topic is ``<app_id>.<name>.in`` and its tables
            are ``<name>``, ``<name>-timers`` and ``<name>-parked``.
        messages: Message type name -> pydantic model of the body.
        data: The pydantic model of a live cell's data.
        version: The data version this code writes. Data stored by an older version goes
            through :meth:`migrate` when it is read.
        handle_message: Overrides :meth:`handle_message`.
        on_boot: Overrides :meth:`on_boot`.
        on_timeout: Overrides :meth:`on_timeout`.
        migrate: Overrides :meth:`migrate`.
        retry: How a raising callback is tried again before the cell is parked (default: the
            worker's ``Settings.cell_retry``, 3 tries). Its ``on_exhausted``, if given, must be
            ``park``: a cell's work is never dropped.

    Raises:
        ValueError: A name Kafka cannot use in a topic name, a version below 1, or a retry
            policy that does not park.

    Callbacks are plain synchronous functions: they must not block, and should take time,
    randomness and ids from the state so that a replay decides the same way.
    """

    def __init__(
        self,
        name: str,
        *,
        messages: Mapping[str, type[BaseModel]],
        data: type[DataT],
        version: int = 1,
        handle_message: Callable[[CellState[DataT]], None] | None = None,
        on_boot: Callable[[CellState[DataT]], None] | None = None,
        on_timeout: Callable[[CellState[DataT]], None] | None = None,
        migrate: Migration | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"behaviour name {name!r} must be 1-200 of the characters Kafka allows in topic "
                "names (letters, digits, '.', '_', '-'), not starting with '.'"
            )
        if version < 1:
            raise ValueError(f"behaviour {name!r}: version must be >= 1, got {version}")
        if retry is not None:
            retry = retry.ending_in(Exhausted.PARK, f"behaviour {name!r}")
        self.name = name
        self.message_types = MessageTypes(name, messages)
        self.data_model = data
        self.version = version
        #: How a raising callback is tried again before the cell is parked; ``None``: as the
        #: worker's ``Settings.cell_retry`` says.
        self.retry = retry
        self._handle_message = handle_message
        self._on_boot = on_boot
        self._on_timeout = on_timeout
        self._migrate = migrate

    def handle_message(self, state: CellState[DataT]) -> None:
        """Handle ``state.message`` (the cell may be dead). Override it, or pass
        ``handle_message=``; without either, messages change nothing."""
        if self._handle_message is not None:
            self._handle_message(state)

    def on_boot(self, state: CellState[DataT]) -> None:
        """Called once per live cell after its partition is assigned; the default does nothing
        (or calls the ``on_boot=`` function)."""
        if self._on_boot is not None:
            self._on_boot(state)

    @property
    def boots(self) -> bool:
        """Whether booting a cell can do anything: an ``on_boot=`` function was given, or a
        subclass overrides :meth:`on_boot`.

        A worker that takes a partition boots every live cell of it before the partition's
        next record (:meth:`on_boot`); for a behaviour that does not boot it skips that pass,
        which costs a read and a decode per cell (seconds for 100,000 cells) while the
        partition waits.
        """
        return self._on_boot is not None or type(self).on_boot is not Behaviour.on_boot

    def on_timeout(self, state: CellState[DataT]) -> None:
        """Called when a timer of the (live) cell fires; the default does nothing (or calls
        the ``on_timeout=`` function)."""
        if self._on_timeout is not None:
            self._on_timeout(state)

    def migrate(self, version: int, data: dict[str, Any]) -> dict[str, Any]:
        """Turn data stored by ``version`` into what :attr:`data_model` of this version reads.

        The default calls the ``migrate=`` function if one was given, else accepts older data
        unchanged (fields added since must have defaults).

        Raises:
            DataVersionError: The data was written by a newer version than this code.
        """
        if self._migrate is not None and version < self.version:
            return self._migrate(version, data)
        if version > self.version:
            raise DataVersionError(
                f"{self.name}: stored data is version {version}, this code reads up to "
                f"version {self.version}; deploy the newer code"
            )
        return data

    def load(self, version: int, data: dict[str, Any]) -> DataT:
        """Validate stored ``data`` of ``version`` into :attr:`data_model`, migrating if needed.

        Raises:
            DataVersionError: Migration failed or the migrated data does not validate.
        """
        try:
            if version != self.version:
                data = self.migrate(version, data)
            return self.data_model.model_validate(data)
        except DataVersionError:
            raise
        except Exception as exc:
            raise DataVersionError(
                f"{self.name}: cannot read stored data of version {version} as version "
                f"{self.version}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"<Behaviour {self.name} v{self.version} types={sorted(self.message_types.types)}>"
