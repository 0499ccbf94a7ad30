"""Prometheus metrics of the runtime (each worker process exposes its own registry)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram


class _Metrics:
    def __init__(self) -> None:
        self.processed = Counter("chimera_entries_total", "Stream entries handled", ["role", "outcome"])
        self.dead_letters = Counter("chimera_dead_letters_total", "Entries dead-lettered", ["group"])
        self.handle_seconds = Histogram(
            "chimera_handle_seconds", "Time from decode to ack per entry", ["role"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )


METRICS = _Metrics()
