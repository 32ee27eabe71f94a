"""Effect handlers: run the side effects cells emit, outside the cells, at least once.

Cells emit effects with :meth:`~stream_app.core.cell.CellState.emit_effect`; they are produced to
``<app_id>.effects`` in the same commit as the cell's state change. A worker that registers
handlers consumes that topic (one Faust agent, :mod:`stream_app.kafka.agents`, which hands each
record to :meth:`EffectDispatcher.dispatch` and acknowledges it once that returns) and calls the
handler of each effect's ``kind``:

1. A failing handler is tried again under its :class:`~stream_app.core.retry.RetryPolicy`
   (default :data:`~stream_app.core.retry.HANDLER_RETRY`: 5 tries, pauses from 0.2 s
   doubling up to 5 s, with jitter), in order, before the next effect of the partition.
2. An effect that still fails, has no handler, or cannot be parsed goes to the dead-letter
   topic (reasons ``effect-failed``, ``no-effect-handler``, ``malformed-effect``) and the worker
   moves on.
3. A crash before the offset is committed delivers the effect again: handlers get the same
   :attr:`~stream_app.core.cell.Effect.id` each time and use it to be idempotent.

The dispatcher is handling logic only: it reaches the dead-letter topic, the counters and the
clock through the ports of :mod:`stream_app.engine.ports`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import ValidationError

from stream_app.core.cell import Effect
from stream_app.core.retry import HANDLER_RETRY, RetryPolicy
from stream_app.engine.ports import DeadLetterPublisher, EffectCounters, Pauses, SourceRecord
from stream_app.engine.retrying import call_with_retry, dead_lettering

__all__ = ["EffectDispatcher", "EffectHandler"]

logger = logging.getLogger(__name__)

#: An effect handler: called with the effect, sync or async; raising means "try again".
EffectHandler = Callable[[Effect], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class _Registration:
    handler: EffectHandler
    retry: RetryPolicy


class EffectDispatcher:
    """The effect handlers of one worker, by kind.

    Args:
        dead_letters: Where effects that fail for good go.
        counters: Where handled effects and failed tries are counted.
        pauses: How the pauses between tries are taken (real sleeps by default).
    """

    def __init__(
        self,
        dead_letters: DeadLetterPublisher,
        counters: EffectCounters,
        *,
        pauses: Pauses | None = None,
    ) -> None:
        self.dead_letters = dead_letters
        self.counters = counters
        self.pauses = pauses or Pauses()
        self.handlers: dict[str, _Registration] = {}

    def register(
        self, kind: str, handler: EffectHandler, *, retry: RetryPolicy = HANDLER_RETRY
    ) -> None:
        """Make ``handler`` the handler of effects of ``kind``, tried under ``retry``.

        Raises:
            ValueError: ``kind`` already has a handler, or ``retry`` does not end in a dead
                letter.
        """
        if kind in self.handlers:
            raise ValueError(f"effect kind {kind!r} already has a handler")
        self.handlers[kind] = _Registration(
            handler, dead_lettering(retry, f"effect handler of {kind!r}")
        )

    async def dispatch(self, record: SourceRecord) -> None:
        """Run the handler of one effect record, retrying, and dead-letter it if it fails."""
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

        def failed(attempt: int, exc: Exception, pause: float | None) -> None:
            self.counters.effect_failures += 1
            if pause is not None:
                self.counters.effect_retries += 1
            if pause is None:
                logger.error(
                    "effect %s (%s) failed %d times, dead-lettering: %r",
                    effect.id,
                    effect.kind,
                    attempt,
                    exc,
                )
            else:
                logger.warning(
                    "effect %s (%s) attempt %d failed, retrying in %.2fs: %r",
                    effect.id,
                    effect.kind,
                    attempt,
                    pause,
                    exc,
                )

        error = await call_with_retry(
            registration.handler, effect, registration.retry, self.pauses, failed
        )
        if error is None:
            self.counters.effects_done += 1
            return
        await self._dead_letter(
            record,
            "effect-failed",
            f"{type(error).__name__}: {error} (after {registration.retry.attempts} attempts)",
            effect.kind,
        )

    async def _dead_letter(self, record: SourceRecord, reason: str, error: str, kind: str) -> None:
        await self.dead_letters.publish_record(
            key=record.key,
            value=record.value,
            reason=reason,
            error=error,
            behaviour=f"effect:{kind}",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
