"""Beside the engine during a run: scrapes the target's Prometheus /metrics into events.db."""
