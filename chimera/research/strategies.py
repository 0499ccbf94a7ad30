"""Vectorised bar strategies for experiments: a position per period from the bars, net returns out.

Picklable (plain arrays), so trials run in worker processes. ``returns[t]`` is the bar return from t to
t+1; the position held over it is decided at t; a change of position pays ``cost`` per unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BarStrategies:
    times: np.ndarray  # period start, ms
    closes: np.ndarray
    kind: str  # "random" | "momentum" | "signal" | "flat"
    cost: float = 0.0
    signal: np.ndarray | None = None  # kind "signal": the position per period (planted-edge tests)
    salt: int = 0  # kind "random": which family of coin flips

    def positions(self, params: dict) -> np.ndarray:
        n = self.closes.size
        if self.kind == "flat":
            return np.zeros(n)
        if self.kind == "random":
            rng = np.random.default_rng([self.salt, int(params.get("seed", 0))])
            return rng.choice([-1.0, 0.0, 1.0], size=n)
        if self.kind == "momentum":
            k = int(params["lookback"])
            pos = np.zeros(n)
            pos[k:] = np.sign(self.closes[k:] - self.closes[:-k])
            return pos
        if self.kind == "signal":
            return np.asarray(self.signal, dtype=float) * float(params.get("scale", 1.0))
        raise ValueError(f"unknown strategy kind {self.kind!r}")

    def __call__(self, params: dict, start: int, end: int) -> np.ndarray:
        rets = np.append(self.closes[1:] / self.closes[:-1] - 1.0, 0.0)
        pos = self.positions(params)
        turn = np.abs(np.diff(np.concatenate([[0.0], pos])))
        net = pos * rets - self.cost * turn
        sel = (self.times >= start) & (self.times < end)
        sel[-1] = False  # the last period has no next bar
        return net[sel]
