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

    def _groups(self, stream: str) -> list[dict] | None:
        """The stream's groups; None when nobody wrote the stream yet (no backlog either)."""
        try:
            return self.r.xinfo_groups(stream)
        except Exception as exc:  # noqa: BLE001 - told apart by its message below
            if "no such key" in str(exc).lower():
                return None
            raise

    @staticmethod
    def _backlog(g: dict) -> int:
        return int(g.get("lag") or 0) + int(g.get("pending") or 0)

    def stream_lag(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for stream in self.streams:
            groups = self._groups(stream)
            if groups is not None:
                out[stream] = max((self._backlog(g) for g in groups), default=0)
        return out

    def group_backlog(self, stream: str, group: str) -> int:
        for g in self._groups(stream) or ():
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name == group:
                return self._backlog(g)
        return 0


@dataclass
class MemoryHealthInputs:
    lags: dict[str, int] = field(default_factory=dict)

    groups: dict[tuple[str, str], int] = field(default_factory=dict)

    def stream_lag(self) -> dict[str, int]:
        return dict(self.lags)

    def group_backlog(self, stream: str, group: str) -> int:
        return self.groups.get((stream, group), 0)
