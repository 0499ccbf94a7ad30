"""B10 cost learning: once a month S11 fits the router's taker slippage against the book it met,
and files the curve as a DRAFT for S10's gate (it never changes live routing parameters itself).

Model, per taker fill of the window (fills booked by S4 with the book at send):

    slip_bps = b0 + b1 * spread_bp + b2 * size_to_depth

``spread_bp`` = (best ask - best bid) / mid at send, in bps; ``size_to_depth`` = the fill's notional /
the notional of the three levels on the side it took (asks for a BUY). Ordinary least squares; fewer
than ``MIN_SAMPLES`` usable fills files nothing. The draft goes to ``experiments/costfit:<from_ms>``
(kind COST_CURVE, status DRAFT) with n and R². Regime and volatility terms wait for S4 to record
them on the fill.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from chimera.schemas.messages import TimerFired
from chimera.store.collections import EXPERIMENTS, FILLS
from chimera.streams import keys
from chimera.streams.producer import Emit

TIMER = "s11:costfit"
MIN_SAMPLES = 30
MODEL = "slip_bps = b0 + b1 * spread_bp + b2 * size_to_depth"


def month_start(ms: int, months_ahead: int = 0) -> int:
    import datetime as dt

    d = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    y, m = divmod(d.month - 1 + months_ahead, 12)
    return int(dt.datetime(d.year + y, m + 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def arm(due_ms: int) -> Emit:
    return Emit(keys.HEALTH_TIMERS, TimerFired(name=TIMER, due_ms=due_ms), f"{TIMER}:{due_ms}", due_ms=due_ms,
                timer_key=TIMER)


def row(fill: dict) -> tuple[float, float, float] | None:
    """(spread_bp, size_to_depth, slip_bps) of a taker fill, or None when it lacks the book."""
    book, mid, slip = fill.get("top3_at_send") or {}, fill.get("mid_at_send"), fill.get("slippage_bps")
    if fill.get("is_maker") or slip is None or not mid or not book.get("bids") or not book.get("asks"):
        return None
    bid, ask, mid = Decimal(str(book["bids"][0][0])), Decimal(str(book["asks"][0][0])), Decimal(str(mid))
    side = book["asks"] if fill["side"] == "BUY" else book["bids"]
    depth = sum(Decimal(str(p)) * Decimal(str(q)) for p, q in side)
    if mid <= 0 or depth <= 0:
        return None
    notional = Decimal(str(fill["qty"])) * Decimal(str(fill["price"]))
    return float((ask - bid) / mid * 10_000), float(notional / depth), float(slip)


def fit(fills: list[dict]) -> dict | None:
    rows = [r for r in map(row, fills) if r is not None]
    if len(rows) < MIN_SAMPLES:
        return None
    data = np.array(rows)
    x = np.column_stack([np.ones(len(data)), data[:, 0], data[:, 1]])
    y = data[:, 2]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / total if total > 0 else 1.0
    return {"b0": float(coef[0]), "b1_spread_bp": float(coef[1]), "b2_size_to_depth": float(coef[2]),
            "n": len(rows), "r2": r2}


def on_costfit(ctx, p: TimerFired) -> list[Emit]:
    """Fit the month before ``p.due_ms`` and arm the next month's run."""
    due = p.due_ms or ctx.now_ms()
    start = month_start(due - 1)
    fills = ctx.store.query(FILLS, {"ts": (">=", start)})
    result = fit([f for f in fills if f["ts"] < due])
    if result is not None:
        ctx.store.upsert(EXPERIMENTS, f"costfit:{start}", {
            "kind": "COST_CURVE", "status": "DRAFT", "model": MODEL, **result, "from_ms": start, "to_ms": due,
            "created_at": ctx.now_ms(), "created_by": "s11"})
    return [arm(month_start(due, 1))]
