"""Kafka plumbing: declared topics and the development broker."""
