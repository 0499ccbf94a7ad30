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


class EventClock(ManualClock):
    """A replay driver's clock shared by Redis workers (``backtest/redis_replay.py``): like the
    in-process runtime's, time also moves to the event time of each entry a worker takes
    (``follow_event``, called by the runtime's pipeline), so a handler reacting to a message
    stamped t (a feature snapshot as of a bar's close + 1 ms) acts at t on both runtimes."""

    def follow_event(self, t_ms: int | None) -> None:
        if t_ms:
            self.set(t_ms)


class FollowClock:
    """Follows a remote clock (the local venue's replay time, ARCHITECTURE §4).

    ``fetch`` returns ``(remote_ms, speed)``, re-read every ``resync_s`` of wall time. With a
    positive speed (a free-running replay at xN) time runs on at ``speed`` x wall time between
    syncs, at most ``resync_s`` ahead of the last sync (so a stalled venue does not leave the
    workers' timers racing ahead); with speed <= 0 (paced, "max" or paused) the clock IS the last
    value read: a paced venue waits for the pipeline, and so must its timers. Never goes backwards.
    """

    def __init__(self, fetch, resync_s: float = 0.02) -> None:
        self._fetch = fetch
        self._resync_s = resync_s
        self._base_remote = 0
        self._base_wall = 0.0
        self._speed = 0.0
        self._synced_at = -1e9
        self._last = 0
        self._lock = threading.Lock()

    def sync(self) -> None:
        """Read the remote clock now (raises what ``fetch`` raises)."""
        remote, speed = self._fetch()
        with self._lock:
            self._base_remote, self._base_wall, self._speed = int(remote), time.monotonic(), float(speed)
            self._synced_at = self._base_wall

    def now_ms(self) -> int:
        wall = time.monotonic()
        if wall - self._synced_at > self._resync_s:
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - keep the last value; the next call tries again
                self._synced_at = wall
        with self._lock:
            ahead = 0.0
            if self._speed > 0:  # (a sync in this call is later than ``wall``: never extrapolate backwards)
                ahead = min(max(wall - self._base_wall, 0.0), self._resync_s) * 1000 * self._speed
            self._last = max(self._last, int(self._base_remote + ahead))
            return self._last


def redis_fetch(r, key: str):
    """``fetch`` for FollowClock: the venue's ``replay:{clock}`` JSON -> (time_ms, speed or 0)."""
    import json

    def fetch() -> tuple[int, float]:
        raw = r.get(key)
        if raw is None:
            raise LookupError(f"{key} is not set: no venue is publishing its replay clock")
        doc = json.loads(raw)
        speed = -1.0 if doc.get("speed") == "max" else float(doc.get("speed") or 0)
        # Paced or "max": the venue moves only when the pipeline has caught up; never extrapolate.
        return int(doc["time_ms"]), (0.0 if doc.get("paced") or speed < 0 else speed)

    return fetch


def parse_clock_spec(spec: str) -> tuple[str, str]:
    """``wall`` | ``follow`` | ``follow:<key>`` -> (mode, key); ValueError naming the fix otherwise."""
    from chimera.streams import keys

    spec = (spec or "wall").strip()
    if spec == "wall":
        return "wall", ""
    if spec == "follow":
        return "follow", keys.REPLAY_CLOCK
    if spec.startswith("follow:") and spec[len("follow:"):]:
        return "follow", spec[len("follow:"):]
    raise ValueError(f"CHIMERA_CLOCK={spec!r}: use 'wall' (live, paper on live data) or 'follow' / "
                     f"'follow:<redis key>' (follow a replaying venue's clock, default key {keys.REPLAY_CLOCK})")


def follow_redis(r, key: str, wait_s: float = 30.0) -> FollowClock:
    """A clock on the venue's replay time; waits up to ``wait_s`` for the venue's first publication."""
    # Read on every call: a paced venue moves only once the pipeline is idle, so a value read now is
    # exact; a cached one could be a step behind for the next entry (a maker window would run 1 step long).
    clock = FollowClock(redis_fetch(r, key), resync_s=0.0)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            clock.sync()
            return clock
        except LookupError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
