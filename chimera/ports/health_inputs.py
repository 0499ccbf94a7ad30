"""What S11 reads from Redis to grade health besides S4's figures (those come through S4's own
port, ``chimera.ports.exec_metrics``), behind a port so the handler never touches Redis.

``RedisHealthInputs`` reads the backlog of every consumer group on the core streams
(``XINFO GROUPS``: ``lag``, entries not yet delivered to the group (Redis >= 7), plus ``pending``).
``MemoryHealthInputs`` is the in-process runtime's and the unit tests' twin: values are set directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from chimera.streams import keys

# The streams whose backlog means "the pipeline is late" (market data lag is S1's WS lag instead).
CORE_STREAMS = (keys.ORD_COMMANDS, keys.ORD_RESULTS, keys.VENUE_REPORTS, keys.POS_COMMANDS,
                keys.ROUTER_TIMERS, keys.STRAT_COMMANDS, keys.RECON_COMMANDS)


class HealthInputs(Protocol):
    def stream_lag(self) -> dict[str, int]:
        """stream -> the largest backlog (undelivered + pending) of any group on it."""

    def group_backlog(self, stream: str, group: str) -> int:
        """One group's backlog on one stream (undelivered + pending; 0 when the group does not exist)."""


class RedisHealthInputs:
    def __init__(self, r, streams: tuple[str, ...] = CORE_STREAMS) -> None:
        self.r, self.streams = r, streams

    def stream_lag(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for stream in self.streams:
            try:
                groups = self.r.xinfo_groups(stream)
            except Exception as exc:  # noqa: BLE001 - a stream nobody wrote yet has no backlog
                if "no such key" in str(exc).lower():
                    continue
                raise
            worst = 0
            for g in groups:
                lag = g.get("lag") if isinstance(g, dict) else None
                worst = max(worst, int(lag or 0) + int(g.get("pending") or 0))
            out[stream] = worst
        return out

    def group_backlog(self, stream: str, group: str) -> int:
        try:
            groups = self.r.xinfo_groups(stream)
        except Exception as exc:  # noqa: BLE001 - no stream: nothing behind
            if "no such key" in str(exc).lower():
                return 0
            raise
        for g in groups:
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name == group:
                return int(g.get("lag") or 0) + int(g.get("pending") or 0)
        return 0


@dataclass
class MemoryHealthInputs:
    lags: dict[str, int] = field(default_factory=dict)

    groups: dict[tuple[str, str], int] = field(default_factory=dict)

    def stream_lag(self) -> dict[str, int]:
        return dict(self.lags)

    def group_backlog(self, stream: str, group: str) -> int:
        return self.groups.get((stream, group), 0)


def inputs_for(ctx) -> HealthInputs:
    """The port the runtime built for this worker."""
    return ctx.health_inputs
