"""The arithmetic of one label, from documents and bars only (no store, no clock): testable alone.

``traded``: the signal's position(s) over [t0, t0+h] from its fills (prices, fees) and the account's
funding records of that symbol while it was held; a quantity still held at t0+h is valued at the close
of the last 1m bar ending by then. ``counterfactual``: the bundle's standard entry at t0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

ZERO = Decimal(0)
HOUR_MS = 3_600_000


def D(v) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(str(v))


@dataclass
class Outcome:
    roi_net: Decimal | None
    net_pnl: Decimal | None = None
    realized: Decimal = ZERO
    unrealized: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    notional: Decimal = ZERO
    entry_price: Decimal | None = None
    exit_price: Decimal | None = None
    exit_reason: str = ""
    exit_time: int = 0
    pos_ids: list[str] = field(default_factory=list)


def traded(positions: Sequence[dict], fills: Sequence[dict], funding: Sequence[dict], end_ms: int,
           mark_at_end: dict[str, Decimal]) -> Outcome | None:
    """``positions``: the signal's positions; ``fills``: theirs (any order); ``funding``: the account's
    records for their symbols. None when no fill happened by ``end_ms`` (the signal did not trade)."""
    out = Outcome(roi_net=None)
    entered_qty = ZERO
    entry_cost = ZERO
    for pos in sorted(positions, key=lambda p: p.get("pos_id") or p.get("_key", "")):
        pid = pos.get("pos_id") or pos["_key"]
        sign = 1 if pos.get("side", "BUY") == "BUY" else -1
        mine = sorted((f for f in fills if f.get("pos_id") == pid and int(f.get("ts") or 0) <= end_ms),
                      key=lambda f: (int(f.get("ts") or 0), int(f["trade_id"]) if str(f["trade_id"]).isdigit() else 0))
        if not mine:
            continue
        out.pos_ids.append(pid)
        held, avg, first, last = ZERO, ZERO, int(mine[0]["ts"]), int(mine[0]["ts"])
        for f in mine:
            qty, price = D(f["qty"]), D(f["price"])
            out.fees += D(f.get("fee") or 0)
            last = int(f["ts"])
            if (f["side"] == "BUY") == (sign > 0):  # adds to the position
                avg = (avg * held + price * qty) / (held + qty)
                held += qty
                entered_qty += qty
                entry_cost += price * qty
            else:
                close = min(qty, held)
                out.realized += (price - avg) * close * sign
                held -= close
                out.exit_price, out.exit_reason = price, "CLOSED"
        until = end_ms
        if held > 0:
            mark = mark_at_end.get(pos["symbol"])
            if mark is None:
                return None  # cannot value what is still held: try again when the bar is there
            out.unrealized += (mark - avg) * held * sign
            out.exit_price, out.exit_reason, out.exit_time = mark, "HORIZON", end_ms
        else:
            until = last
            out.exit_time = max(out.exit_time, last)
        acct = pos.get("account_id", "main")
        out.funding += sum((D(r["amount_usdt"]) for r in funding
                            if r.get("symbol") == pos["symbol"] and r.get("account", "main") == acct
                            and first <= int(r["funding_time"]) <= until), ZERO)
    if not out.pos_ids or entered_qty == 0:
        return None
    out.notional = entry_cost
    out.entry_price = entry_cost / entered_qty
    out.net_pnl = out.realized + out.unrealized - out.fees + out.funding
    out.roi_net = out.net_pnl / out.notional
    return out


def counterfactual(side: str, entry: Decimal, atr: Decimal, sl_dist_atr: Decimal, tp_dist_atr: Decimal,
                   bars: Sequence, taker_fee: Decimal) -> Outcome | None:
    """Enter at ``entry`` (the signal bar's close), stop ``sl_dist_atr`` ATRs away, take-profit
    ``tp_dist_atr`` ATRs away, walk ``bars`` (1m, in time order). A bar touching both exits at the stop
    (conservative); no touch exits at the last bar's close. Taker fee on both legs."""
    if not bars or entry <= 0:
        return None
    sign = 1 if side == "BUY" else -1
    stop = entry - sign * sl_dist_atr * atr
    tp = entry + sign * tp_dist_atr * atr
    exit_price, reason, t = D(bars[-1].close), "HORIZON", bars[-1].close_time
    for b in bars:
        lo, hi = D(b.low), D(b.high)
        hit_stop = lo <= stop if sign > 0 else hi >= stop
        hit_tp = hi >= tp if sign > 0 else lo <= tp
        if hit_stop:
            exit_price, reason, t = stop, "STOP", b.close_time
            break
        if hit_tp:
            exit_price, reason, t = tp, "TAKE_PROFIT", b.close_time
            break
    fees = taker_fee * (entry + exit_price)
    pnl = (exit_price - entry) * sign - fees
    return Outcome(roi_net=pnl / entry, net_pnl=pnl, realized=(exit_price - entry) * sign, fees=fees,
                   notional=entry, entry_price=entry, exit_price=exit_price, exit_reason=reason, exit_time=int(t))


def classify(roi: Decimal | None, positive: Decimal, negative: Decimal) -> tuple[int, str]:
    if roi is None:
        return 0, "NONE"
    if roi > positive:
        return 1, "POSITIVE"
    if roi < negative:
        return -1, "NEGATIVE"
    return 0, "NEUTRAL"
