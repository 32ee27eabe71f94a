"""Worker modules the benchmarks run with ``faust -A bench.apps.<module> worker``.

- :mod:`bench.apps.cell_counter`: the counter as a stream_app cell (a :class:`Behaviour` on a
  :class:`Runtime`), consuming ``<app_id>.counter.in``.
- :mod:`bench.apps.faust_counter`: the same update as a plain Faust agent with a Table.
- :mod:`bench.apps.quix_counter`: the same update in Quix Streams (run with the Quix virtualenv
  of :mod:`bench.peers`, not as a Faust worker).
- :mod:`bench.apps.timer_cell`: a cell whose messages each set many named timers.

The counters share one message model and one data model (:mod:`bench.apps.model`) with the
hand-written loop of :mod:`bench.cells_throughput`, and report their progress with
:mod:`bench.apps.harness`.
"""
