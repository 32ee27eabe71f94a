"""Durable timers: due-ordered keys and the misfire policy (pure; the engine stores them)."""
