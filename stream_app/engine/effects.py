"""Effect handlers: run the side effects cells emit, outside the cells, at least once.

Cells emit effects with :meth:`~stream_app.core.cell.CellState.emit_effect`; they are produced to
``<app_id>.effects`` in the same commit as the cell's state change. A worker that registers
handlers consumes that topic and calls the handler of each effect's ``kind``:

1. A failing handler is retried with exponential backoff (``backoff_s``, doubled each time, at
   most ``max_backoff_s``) up to ``max_attempts`` tries, in order, before the next effect of the
   partition.
2. An effect that still fails, has no handler, or cannot be parsed goes to the dead-letter
   topic (reasons ``effect-failed``, ``no-effect-handler``, ``malformed-effect``) and the worker
   moves on.
3. A crash before the offset is committed delivers the effect again: handlers get the same
   :attr:`~stream_app.core.cell.Effect.id` each time and use it to be idempotent.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stream_app.core.cell import Effect

if TYPE_CHECKING:
    from stream_app.runtime import Runtime

__all__ = ["EffectDispatcher", "EffectHandler"]

logger = logging.getLogger(__name__)

#: An effect handler: called with the effect, sync or async; raising means "try again".
EffectHandler = Callable[[Effect], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class _Registration:
    handler: EffectHandler
    max_attempts: int
    backoff_s: float
    max_backoff_s: float


class EffectDispatcher:
    """The effect handlers of one worker, by kind. Made by :class:`~stream_app.runtime.Runtime`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.handlers: dict[str, _Registration] = {}
        self._agent_started = False

    def register(
        self,
        kind: str,
        handler: EffectHandler,
        *,
        max_attempts: int = 5,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
    ) -> None:
        """Make ``handler`` the handler of effects of ``kind``."""
        if kind in self.handlers:
            raise ValueError(f"effect kind {kind!r} already has a handler")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.handlers[kind] = _Registration(handler, max_attempts, backoff_s, max_backoff_s)
        if not self._agent_started:
            self._agent_started = True
            self.runtime.app.agent(self.runtime.effects_topic, name="stream_app.effects")(
                self._agent
            )

    async def _agent(self, stream: Any) -> None:
        async for event in stream.events():
            await self.dispatch(event.message)

    async def dispatch(self, record: Any) -> None:
        """Run the handler of one effect record, retrying, and dead-letter it if it fails."""
        metrics = self.runtime.metrics
        try:
            effect = Effect.model_validate_json(record.value or b"")
        except ValidationError as exc:
            await self._dead_letter(record, "malformed-effect", f"not an effect: {exc}", "?")
            return
        registration = self.handlers.get(effect.kind)
        if registration is None:
            known = ", ".join(sorted(self.handlers)) or "none"
            await self._dead_letter(
                record,
                "no-effect-handler",
                f"no handler for effect kind {effect.kind!r} (known: {known})",
                effect.kind,
            )
            return
        delay = registration.backoff_s
        for attempt in range(1, registration.max_attempts + 1):
            try:
                result = registration.handler(effect)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                metrics.effect_failures += 1
                if attempt == registration.max_attempts:
                    logger.error(
                        "effect %s (%s) failed %d times, dead-lettering: %r",
                        effect.id,
                        effect.kind,
                        attempt,
                        exc,
                    )
                    await self._dead_letter(
                        record,
                        "effect-failed",
                        f"{type(exc).__name__}: {exc} (after {attempt} attempts)",
                        effect.kind,
                    )
                    return
                logger.warning(
                    "effect %s (%s) attempt %d failed, retrying in %.2fs: %r",
                    effect.id,
                    effect.kind,
                    attempt,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, registration.max_backoff_s)
            else:
                metrics.effects_done += 1
                return

    async def _dead_letter(self, record: Any, reason: str, error: str, kind: str) -> None:
        await self.runtime.dead_letters.publish_record(
            key=record.key,
            value=record.value,
            reason=reason,
            error=error,
            behaviour=f"effect:{kind}",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
