"""Cell cultures and cell runs: the class-based way to write a behaviour.

A :class:`CellCulture` is a :class:`~stream_app.api.behaviour.Behaviour` described by
class attributes, and it names a :class:`CellRun` class. For every invocation (a message, a
timer, a boot) the culture makes one run object around the cell's state and calls it:

- messages go to the run's ``on_<type>(body)`` method (``-`` and ``.`` in the type name become
  ``_``), or to :meth:`CellRun.on_unhandled`;
- timers go to ``on_timeout(timer)``, boots to ``on_boot()``;
- every call goes through :meth:`CellRun.around`, the place to log with the cell id, translate
  exceptions, or time calls.

::

    class Greeter(CellCulture[Greeting]):
        name = "greeter"
        messages = {"hello": Hello}
        data = Greeting

        class Run(CellRun[Greeting]):
            def on_hello(self, body: Hello) -> None:
                self.data = Greeting(last=body.who)

    greeter = Greeter()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from stream_app.api.behaviour import Behaviour
from stream_app.core.cell import CellState, FiredTimer
from stream_app.core.retry import RetryPolicy
from stream_app.errors import RejectMessage

__all__ = ["CellCulture", "CellRun"]

DataT = TypeVar("DataT", bound=BaseModel)


class _RunLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each line with ``<behaviour>/<display id>: `` and adds ``cell_id`` to records."""

    def __init__(self, run: CellRun[Any]) -> None:
        super().__init__(
            logging.getLogger(f"stream_app.cells.{run.state.behaviour}"),
            {"cell_id": run.state.cell_id},
        )
        self.run = run

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[str, MutableMapping[str, Any]]:
        # display_id is read per line (not once) because a subclass may derive it from data
        # that the run changes.
        msg, kwargs = super().process(msg, kwargs)
        return f"{self.run.state.behaviour}/{self.run.display_id}: {msg}", kwargs


class CellRun(Generic[DataT]):
    """One invocation of a cell, as an object. Subclass it inside your culture as ``Run``.

    Attributes:
        state: The invocation's :class:`~stream_app.core.cell.CellState` (timers, sends,
            effects, the message).
        log: A logger adapter that prefixes every line with the behaviour and display id.
    """

    def __init__(self, state: CellState[DataT]) -> None:
        self.state = state
        self.log: logging.LoggerAdapter[logging.Logger] = _RunLog(self)

    @property
    def cell_id(self) -> str:
        """The cell's id, as stored."""
        return self.state.cell_id

    @property
    def display_id(self) -> str:
        """The cell's id as people should read it; override to present it differently."""
        return self.cell_id

    @property
    def data(self) -> DataT | None:
        """The cell's data (``None`` = dead); assign to change it."""
        return self.state.data

    @data.setter
    def data(self, value: DataT | None) -> None:
        self.state.data = value

    def around(self, call: Callable[[], None]) -> None:
        """Wrap every call of this run; the default just makes it.

        Override to log with :attr:`display_id`, turn exceptions into
        :class:`~stream_app.errors.RejectMessage`, measure time, and so on.
        """
        call()

    def on_boot(self) -> None:
        """The cell's partition was assigned to this worker; the default does nothing."""

    def on_timeout(self, timer: FiredTimer) -> None:
        """A timer of the cell fired; the default does nothing."""

    def on_unhandled(self, type: str, body: BaseModel) -> None:
        """A message type with no ``on_<type>`` method; the default rejects it."""
        raise RejectMessage(f"{type!r} is not handled by {self.state.behaviour}")


#: CellRun methods that are not message handlers although their names start with ``on_``.
_HOOKS = frozenset({"on_boot", "on_timeout", "on_unhandled"})


class CellCulture(Behaviour[DataT]):
    """A behaviour declared by class attributes, whose invocations are :class:`CellRun` objects.

    Class attributes:
        name: The behaviour's name.
        messages: Message type name -> body model.
        data: The model of a live cell's data.
        version: The data version (see :meth:`Behaviour.migrate`).
        retry: How a raising run is tried again before the cell is parked (a
            :class:`~stream_app.core.retry.RetryPolicy`; ``None``, the default: the worker's
            ``Settings.cell_retry``, 3 tries).
        Run: The :class:`CellRun` subclass made for each invocation.

    Raises:
        TypeError: A class attribute ``name``, ``messages`` or ``data`` is missing, or a message
            type would be dispatched to a hook of the run (``boot``, ``timeout``,
            ``unhandled``).
    """

    name: str
    messages: ClassVar[Mapping[str, type[BaseModel]]]
    data: ClassVar[type[BaseModel]]
    version = 1
    retry: RetryPolicy | None = None
    Run: ClassVar[type[CellRun[Any]]] = CellRun

    def __init__(self) -> None:
        cls = type(self)
        for attribute in ("name", "messages", "data"):
            if not hasattr(cls, attribute):
                raise TypeError(f"{cls.__name__} must define the class attribute {attribute!r}")
        super().__init__(
            cls.name,
            messages=cls.messages,
            data=cls.data,  # type: ignore[arg-type]
            version=cls.version,
            retry=cls.retry,
        )
        self._methods = {
            type_name: "on_" + type_name.replace("-", "_").replace(".", "_")
            for type_name in self.message_types.types
        }
        # A type whose method name is one of the run's own hooks would call that hook with a
        # message body (a TypeError on every such message, parking the cell): refuse it here.
        clashes = sorted(t for t, method in self._methods.items() if method in _HOOKS)
        if clashes:
            raise TypeError(
                f"{cls.__name__}: message type(s) {clashes} would be handled by the CellRun "
                f"hook(s) {sorted(self._methods[t] for t in clashes)}; rename the type(s)"
            )

    def handle_message(self, state: CellState[DataT]) -> None:
        """Make a run and call its ``on_<type>(body)`` (or ``on_unhandled``) through ``around``."""
        message = state.message
        assert message is not None
        run = self.Run(state)
        method = getattr(run, self._methods[message.type], None)
        if method is None:
            run.around(lambda: run.on_unhandled(message.type, message.body))
        else:
            run.around(lambda: method(message.body))

    @property
    def boots(self) -> bool:
        """Whether the run class overrides :meth:`CellRun.on_boot` or :meth:`CellRun.around`
        (which wraps boots too); otherwise booting a cell does nothing and is skipped."""
        run = self.Run
        return run.on_boot is not CellRun.on_boot or run.around is not CellRun.around

    def on_boot(self, state: CellState[DataT]) -> None:
        """Make a run and call its ``on_boot()`` through ``around``."""
        run = self.Run(state)
        run.around(run.on_boot)

    def on_timeout(self, state: CellState[DataT]) -> None:
        """Make a run and call its ``on_timeout(timer)`` through ``around``."""
        timer = state.timer
        assert timer is not None
        run = self.Run(state)
        run.around(lambda: run.on_timeout(timer))
