"""Clients that talk to a running app from outside it, through Kafka or its web views."""
