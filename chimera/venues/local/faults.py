"""Fault injection for chaos drills; one seeded RNG so a drill replays identically."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field


@dataclass
class FaultConfig:
    latency_ms: int = 0
    error_5xx_share: float = 0.0
    error_429_share: float = 0.0
    lost_reply_share: float = 0.0
    ws_drop_every_s: float = 0.0
    seed: int = 7
    rng: random.Random = field(default_factory=lambda: random.Random(7), repr=False, compare=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def roll(self, share: float) -> bool:
        # Always draw, so enabling one fault does not shift the sequence of another.
        draw = self.rng.random()
        return share > 0 and draw < share

    def update(self, changes: dict) -> None:
        for key in ("latency_ms", "error_5xx_share", "error_429_share", "lost_reply_share", "ws_drop_every_s"):
            if key in changes:
                setattr(self, key, type(getattr(self, key))(changes[key]))
        if "seed" in changes:
            self.seed = int(changes["seed"])
            self.rng = random.Random(self.seed)

    def as_json(self) -> dict:
        out = asdict(self)
        out.pop("rng", None)
        return out
