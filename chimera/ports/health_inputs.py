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


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)

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

    def _backlog(self, stream: str, g: dict) -> int:
        lag = g.get("lag")
        if lag is None:
            # Redis cannot count it (NULL: entries trimmed or deleted past the group, or a failover
            # left entries-read unknown). Behind unless the group has read the newest entry: S5 took a
            # failover's NULL for "caught up" and adopted 8 positions S6 was about to open (CI run 12).
            last = self.r.xinfo_stream(stream)["last-generated-id"]
            lag = 0 if _text(g.get("last-delivered-id")) == _text(last) else 1
        return int(lag) + int(g.get("pending") or 0)

    def stream_lag(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for stream in self.streams:
            groups = self._groups(stream)
            if groups is not None:
                out[stream] = max((self._backlog(stream, g) for g in groups), default=0)
        return out

    def group_backlog(self, stream: str, group: str) -> int:
        for g in self._groups(stream) or ():
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if name == group:
                return self._backlog(stream, g)
        return 0


@dataclass
class MemoryHealthInputs:
    lags: dict[str, int] = field(default_factory=dict)

    groups: dict[tuple[str, str], int] = field(default_factory=dict)

    def stream_lag(self) -> dict[str, int]:
        return dict(self.lags)

    def group_backlog(self, stream: str, group: str) -> int:
        return self.groups.get((stream, group), 0)
