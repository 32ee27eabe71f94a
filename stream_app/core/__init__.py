"""The core every layer builds on: the message envelope, its validation, and dead letters."""
