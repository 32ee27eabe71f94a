"""Offline operations on an app's topics: fold an entity's event log, redrive dead letters."""
