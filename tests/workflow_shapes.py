"""Hypothesis strategies for workflow shapes (:mod:`stream_app.testing.workflows`).

Shared by the local property tests and the local-vs-Kafka one: ``shapes()`` draws a
:class:`~stream_app.testing.workflows.Shape` of a few segments (chains, conditional branches,
fans with nested fans, flaky actions with and without error edges), kept small so that one
example runs in milliseconds locally.
"""

from __future__ import annotations

from hypothesis import strategies as st

from stream_app.testing.workflows import Branch, Chain, Fan, Flaky, Segment, Shape

__all__ = ["inputs", "segments", "shapes"]


def _flaky(*, allow_failure: bool) -> st.SearchStrategy[Flaky]:
    def build(attempts: int, failures: int, error_edge: bool) -> Flaky:
        if not allow_failure and not error_edge:
            failures = min(failures, attempts - 1)
        return Flaky(failures=failures, attempts=attempts, error_edge=error_edge)

    return st.builds(build, st.integers(1, 3), st.integers(0, 3), st.booleans())


def segments(*, depth: int = 2, allow_failure: bool = True) -> st.SearchStrategy[Segment]:
    """One segment; fans nest up to ``depth`` levels. ``allow_failure=False``: every flaky
    action either succeeds within its attempts or has an error edge, so runs succeed."""
    leaves: st.SearchStrategy[Segment] = st.one_of(
        st.builds(Chain, length=st.integers(1, 3)),
        st.just(Branch()),
        _flaky(allow_failure=allow_failure),
    )
    if depth <= 0:
        return leaves
    fans = st.builds(
        Fan,
        width=st.integers(0, 4),
        branch=st.lists(segments(depth=depth - 1, allow_failure=allow_failure), max_size=2),
    )
    return st.one_of(leaves, fans)


def shapes(*, allow_failure: bool = True, max_segments: int = 4) -> st.SearchStrategy[Shape]:
    """A workflow shape of 1 to ``max_segments`` segments."""
    return st.builds(
        Shape,
        segments=st.lists(segments(allow_failure=allow_failure), min_size=1, max_size=max_segments),
    )


def inputs() -> st.SearchStrategy[dict[str, int]]:
    """A run's input: ``{"v": n}``."""
    return st.builds(lambda v: {"v": v}, st.integers(0, 999))
