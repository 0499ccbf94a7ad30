"""Time comes from the clock in context, never from the wall directly (ARCHITECTURE §4)."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """Backtests and tests: time moves only when told (or follows event time)."""

    def __init__(self, start_ms: int = 0) -> None:
        self._t = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        return self._t

    def set(self, t_ms: int) -> None:
        with self._lock:
            self._t = max(self._t, t_ms)

    def advance(self, ms: int) -> None:
        with self._lock:
            self._t += ms


class FollowClock:
    """Follows a remote clock (the local venue's replay time) between periodic syncs.

    ``fetch`` returns (remote_ms, speed); between syncs time runs at ``speed`` × wall time.
    """

    def __init__(self, fetch, resync_s: float = 1.0) -> None:
        self._fetch = fetch
        self._resync_s = resync_s
        self._base_remote = 0
        self._base_wall = 0.0
        self._speed = 1.0
        self._synced_at = -1e9
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        wall = time.monotonic()
        if wall - self._synced_at > self._resync_s:
            with self._lock:
                try:
                    remote, speed = self._fetch()
                    self._base_remote, self._base_wall, self._speed = remote, wall, float(speed)
                except Exception:  # keep extrapolating; the next call tries again
                    pass
                self._synced_at = wall
        return int(self._base_remote + (wall - self._base_wall) * 1000 * self._speed)
