"""One retry policy for everything stream_app calls on a user's behalf.

Cell callbacks, effect handlers and reactor handlers are all retried the same way: up to
``attempts`` tries, with capped exponential backoff and jitter between them, and one outcome
when the last try fails (``on_exhausted``)::

    RetryPolicy(attempts=5, backoff_s=0.2, max_backoff_s=5.0)

``on_exhausted`` left out (``None``) means the outcome of where the policy is used: a cell is
parked, an effect or a reactor record is dead-lettered. A policy that names an outcome its place
cannot take (a behaviour's policy saying ``dead_letter``, a handler's saying ``park``) is refused
when it is registered.

The pause before try ``n`` (``n >= 2``) is ``min(max_backoff_s, backoff_s * 2 ** (n - 2))``,
scaled by a random factor in ``[1 - jitter, 1 + jitter]`` so that many cells failing together
do not retry in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = ["CELL_RETRY", "HANDLER_RETRY", "Exhausted", "RetryPolicy"]


class Exhausted(StrEnum):
    """What happens to work whose last try failed.

    Attributes:
        PARK: The cell is parked with the work; later work for the cell waits behind it until an
            operator releases it (cells and entities).
        DEAD_LETTER: The work goes to the dead-letter topic with the error, and the next work
            is taken (effects and reactor records).
    """

    PARK = "park"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing call is tried again, and what happens when it keeps failing.

    Attributes:
        attempts: Tries in all, the first included (at least 1).
        backoff_s: Pause before the second try; doubled before each further one.
        max_backoff_s: Longest pause between two tries.
        jitter: Each pause is scaled by a random factor in ``[1 - jitter, 1 + jitter]``
            (0 for none, at most 1).
        on_exhausted: What happens after the last failed try; ``None``: what the place the
            policy is used does (cells park, effect and reactor handlers dead-letter).

    Raises:
        ValueError: ``attempts`` below 1, a negative pause, or ``jitter`` outside ``[0, 1]``.
    """

    attempts: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    jitter: float = 0.2
    on_exhausted: Exhausted | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("RetryPolicy pauses must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1], got {self.jitter}")
        if self.on_exhausted is not None:
            object.__setattr__(self, "on_exhausted", Exhausted(self.on_exhausted))

    def ending_in(self, outcome: Exhausted, what: str) -> RetryPolicy:
        """This policy with ``on_exhausted`` set to ``outcome`` if it was left out.

        Raises:
            ValueError: The policy names another outcome (``what`` names its user).
        """
        if self.on_exhausted is None:
            return replace(self, on_exhausted=outcome)
        if self.on_exhausted is not outcome:
            raise ValueError(
                f"{what}: its RetryPolicy ends in {self.on_exhausted.value!r}, but it can only "
                f"{outcome.value.replace('_', '-')} (leave on_exhausted out)"
            )
        return self

    def delay(self, attempt: int, *, random_factor: Callable[[], float] = random.random) -> float:
        """Seconds to wait before try number ``attempt`` (1-based; 0 before the first)."""
        if attempt <= 1:
            return 0.0
        base: float = min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 2))
        if not self.jitter:
            return base
        return base * (1 - self.jitter + 2 * self.jitter * random_factor())


#: The default policy of a cell's callbacks (``Settings.cell_retry``, ``STREAM_APP_CELL_RETRY``):
#: 3 tries, 0.1 s then 0.2 s apart (with jitter), then the cell is parked.
CELL_RETRY = RetryPolicy(attempts=3, backoff_s=0.1)

#: The default policy of effect and reactor handlers (``Settings.handler_retry``,
#: ``STREAM_APP_HANDLER_RETRY``): 5 tries, pauses from 0.2 s doubling up to 5 s (with jitter),
#: then a dead letter.
HANDLER_RETRY = RetryPolicy(attempts=5, backoff_s=0.2, max_backoff_s=5.0)
