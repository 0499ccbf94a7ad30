"""Replay clock.

Pacing (documented in docs/venue.md):
- speed > 0: replay time advances `speed` ms per wall ms (1 = real time, 60 = a minute per second);
- speed == 0: paused; time only moves via explicit advance requests (deterministic tests);
- speed < 0 ("max"): as fast as consumers keep up - the driver dispatches events back to back
  but waits whenever any WebSocket client's send queue is above a high-water mark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class ReplayClock:
    time_ms: int = 0
    speed: float = 1.0
    total: int = 0
    processed: int = 0
    done: bool = False
    # Wall/replay anchor pair for paced modes; re-anchored on every speed change.
    anchor_wall: float = 0.0
    anchor_replay: int = 0

    def __call__(self) -> int:
        return self.time_ms

    def set_speed(self, speed: float) -> None:
        self.speed = speed
        self.reanchor()

    def reanchor(self) -> None:
        self.anchor_wall = time.monotonic()
        self.anchor_replay = self.time_ms

    def wall_delay_until(self, event_ms: int) -> float:
        """Seconds to wait before an event at `event_ms` is due under the current speed."""
        if self.speed <= 0:
            return 0.0
        due = self.anchor_wall + (event_ms - self.anchor_replay) / 1000.0 / self.speed
        return max(0.0, due - time.monotonic())

    @property
    def progress(self) -> float:
        return 1.0 if self.total == 0 else self.processed / self.total

    def as_json(self) -> dict:
        speed: float | str = "max" if self.speed < 0 else self.speed
        return {"time_ms": self.time_ms, "speed": speed, "progress": round(self.progress, 6),
                "done": self.done, "processed": self.processed, "total": self.total}
