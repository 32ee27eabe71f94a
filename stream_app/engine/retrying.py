"""Calling a user's effect or reactor handler under a :class:`~stream_app.core.retry.RetryPolicy`.

Effect handlers and reactor handlers are retried the same way: up to ``policy.attempts`` tries,
with the policy's capped, jittered pause between two, and, after the last failed try, a dead
letter (:attr:`~stream_app.core.retry.Exhausted.DEAD_LETTER`: they have no cell to park).
:func:`call_with_retry` runs the tries; the caller dead-letters.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from stream_app.core.retry import Exhausted, RetryPolicy
from stream_app.engine.ports import Pauses

__all__ = ["call_with_retry", "dead_lettering"]

T = TypeVar("T")

#: Told of each failed try: ``(attempt, error, pause before the next try or None after the last)``.
FailureReport = Callable[[int, Exception, float | None], None]


def dead_lettering(policy: RetryPolicy, what: str) -> RetryPolicy:
    """``policy``, ending in a dead letter (what ``what`` does after its last try).

    Raises:
        ValueError: The policy says to park: only cells park.
    """
    return policy.ending_in(Exhausted.DEAD_LETTER, what)


async def call_with_retry(
    handler: Callable[[T], Awaitable[None] | None],
    argument: T,
    policy: RetryPolicy,
    pauses: Pauses,
    failed: FailureReport,
) -> Exception | None:
    """Call ``handler(argument)`` (sync or async) until it returns, at most ``policy.attempts``
    times, pausing ``pauses.before(policy, n)`` before try ``n``.

    Returns ``None`` once a try succeeds, or the last try's exception. ``failed`` is told of
    every failed try first.
    """
    attempt = 1
    while True:
        try:
            result = handler(argument)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            if attempt >= policy.attempts:
                failed(attempt, exc, None)
                return exc
            attempt += 1
            pause = pauses.before(policy, attempt)
            failed(attempt - 1, exc, pause)
            await pauses.sleep(pause)
        else:
            return None
