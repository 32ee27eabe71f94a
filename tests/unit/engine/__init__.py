"""Unit tests of the cell engine, through in-memory fakes of its ports (no broker)."""
