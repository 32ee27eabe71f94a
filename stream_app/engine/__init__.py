"""The engine: dispatch, invocation, commit, timers, parking, effects and the reactor."""
