"""Fault injection for chaos drills; one seeded RNG so a drill replays identically."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields


@dataclass
class FaultConfig:
    latency_ms: int = 0
    reply_delay_ms: int = 0  # mutating requests: executed first, reply held this long
    error_5xx_share: float = 0.0
    error_429_share: float = 0.0
    lost_reply_share: float = 0.0
    ws_drop_every_s: float = 0.0
    # The next N diff-depth events are not sent to WebSocket clients (the venue's book still applies
    # them): a sequence gap for a client's local order book.
    drop_depth_diffs: int = 0
    # The next N WebSocket connection attempts are refused (HTTP 503 instead of the upgrade) /
    # dropped right after the upgrade, before any frame: a venue failing while a client connects.
    refuse_ws_connects: int = 0
    drop_ws_connects: int = 0
    seed: int = 7
    rng: random.Random = field(default_factory=lambda: random.Random(7), repr=False, compare=False)
    # How many of each fault were injected (error_5xx, error_429, lost_reply, ws_drop): a drill's figures.
    injected: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def roll(self, share: float) -> bool:
        # Always draw, so enabling one fault does not shift the sequence of another.
        draw = self.rng.random()
        return share > 0 and draw < share

    def count(self, kind: str, n: int = 1) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + n

    def take(self, budget: str, counted_as: str) -> bool:
        """Use one unit of a counted fault (``refuse_ws_connects`` ...); False when none is left."""
        left = getattr(self, budget)
        if left <= 0:
            return False
        setattr(self, budget, left - 1)
        self.count(counted_as)
        return True

    def update(self, changes: dict) -> None:
        for f in fields(self):
            if f.compare and f.name != "seed" and f.name in changes:
                setattr(self, f.name, type(getattr(self, f.name))(changes[f.name]))
        if "seed" in changes:
            self.seed = int(changes["seed"])
            self.rng = random.Random(self.seed)

    def as_json(self) -> dict:
        out = asdict(self)
        out.pop("rng", None)
        return out
