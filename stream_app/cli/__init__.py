"""The ``stream-app`` command line: one module per command group."""
