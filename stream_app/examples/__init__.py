"""Runnable example apps; each doubles as documentation and is exercised by the tests."""
