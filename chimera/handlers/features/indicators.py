"""S2 indicators: streaming building blocks.

Streaming state lives in msgspec Structs (plain lists/dicts/floats) so the whole feature
cache can be JSON-encoded into Redis and resumed bit-for-bit by another replica. Rolling
statistics are recomputed from the stored window on every update (two-pass, ``math.fsum``)
rather than updated incrementally: windows are at most a few hundred values, and this way
a resumed or long-running stream never accumulates floating-point drift.

Pure module: no I/O, no clock. Definitions: docs/features.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import msgspec

MINUTES_PER_YEAR = 365 * 24 * 60  # crypto trades 24/7


# ---------------------------------------------------------------- ATR (Wilder)

class AtrState(msgspec.Struct):
    period: int
    prev_close: float | None = None
    count: int = 0  # true ranges seen, capped once seeded
    seed_sum: float = 0.0
    atr: float | None = None


def true_range(high: float, low: float, prev_close: float | None) -> float:
    if prev_close is None:  # first bar: no previous close, the bar's own range
        return high - low
    return max(high - low, abs(high - prev_close), abs(low - prev_close))


def atr_update(s: AtrState, high: float, low: float, close: float) -> float | None:
    """Feed one closed bar; returns the ATR once ``period`` true ranges were seen."""
    tr = true_range(high, low, s.prev_close)
    s.prev_close = close
    if s.atr is None:
        s.count += 1
        s.seed_sum += tr
        if s.count == s.period:
            s.atr = s.seed_sum / s.period  # seed: SMA of the first `period` true ranges
    else:
        s.atr = (s.atr * (s.period - 1) + tr) / s.period
    return s.atr


# ------------------------------------------------------- rolling statistics

def sample_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1); None below two values."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    dev = [v - mean for v in values]
    return math.sqrt(math.fsum([d * d for d in dev]) / (n - 1))


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None below two pairs or when either side is constant."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    dx = [x - mx for x in xs]
    dy = [y - my for y in ys]
    sxx = math.fsum([d * d for d in dx])
    syy = math.fsum([d * d for d in dy])
    if sxx == 0.0 or syy == 0.0:
        return None
    return math.fsum([a * b for a, b in zip(dx, dy, strict=True)]) / math.sqrt(sxx * syy)


def annualize(per_bar_vol: float | None, bar_ms: int) -> float | None:
    if per_bar_vol is None:
        return None
    return per_bar_vol * math.sqrt(MINUTES_PER_YEAR * 60_000 / bar_ms)


# ------------------------------------------------------------- order book

Level = tuple[float, float]  # (price, quantity); Binance sends strings, accepted too


def spread_mid(bid: float, ask: float) -> tuple[float, float]:
    """(spread_bp, mid) with spread_bp = (ask - bid) / mid * 1e4."""
    bid, ask = float(bid), float(ask)
    mid = (bid + ask) / 2.0
    return (ask - bid) / mid * 1e4, mid


def depth_notional(bids: Iterable[Level], asks: Iterable[Level], levels: int) -> tuple[float, float, float | None]:
    """(bid notional, ask notional, imbalance) over the best ``levels`` of each side.

    Imbalance = (bid - ask) / (bid + ask) in [-1, 1]; None for an empty book.
    """
    b = sorted(((float(p), float(q)) for p, q in bids), key=lambda lv: -lv[0])[:levels]
    a = sorted(((float(p), float(q)) for p, q in asks), key=lambda lv: lv[0])[:levels]
    bid_n = math.fsum(p * q for p, q in b)
    ask_n = math.fsum(p * q for p, q in a)
    total = bid_n + ask_n
    return bid_n, ask_n, ((bid_n - ask_n) / total if total > 0 else None)
