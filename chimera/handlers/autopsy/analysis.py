"""The numbers of one autopsy, from documents and 1m bars only (no store, no clock).

Inputs: the position (S6), its fills (S4), the signal and its decision (S3), funding records (S1),
labels (S7), the symbol's 1m bars from before the entry to an hour after the exit, and peer trades.
Sign conventions: a trade's markout at +k is ``side × (mid(t+k) − price) / price`` in bp (positive =
the market moved in the trade's favour after it); implementation shortfall is a cost (positive = paid).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from chimera.handlers.labels.compute import D, counterfactual
from chimera.research import metrics

ZERO = Decimal(0)
BP = Decimal(10_000)
MARKOUTS = (("1m", 60_000), ("5m", 300_000), ("30m", 1_800_000), ("1h", 3_600_000))
BAR_MS = 60_000
MINUTES_PER_YEAR = 365 * 1440


@dataclass
class Bars:
    bars: list

    def __post_init__(self) -> None:
        self.bars = sorted(self.bars, key=lambda k: k.open_time)
        self.opens = [k.open_time for k in self.bars]

    def mid_at(self, t: int) -> Decimal | None:
        """The last 1m close known at ``t`` (the bar that closed by then)."""
        i = bisect.bisect_right(self.opens, t - BAR_MS) - 1
        return D(self.bars[i].close) if i >= 0 and self.bars[i].close_time <= t + 1 else None

    def between(self, start: int, end: int) -> list:
        return self.bars[bisect.bisect_left(self.opens, start):bisect.bisect_left(self.opens, end)]


def _f(x: Decimal | None, q: str = "0.00000001") -> str | None:
    return None if x is None else format(x.quantize(Decimal(q)), "f")


def split_fills(pos: dict, fills: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    entries = [f for f in fills if f["side"] == pos["side"]]
    exits = [f for f in fills if f["side"] != pos["side"]]
    key = lambda f: (int(f.get("ts") or 0), f["_key"] if "_key" in f else f["trade_id"])  # noqa: E731
    return sorted(entries, key=key), sorted(exits, key=key)


def vwap(fs: Sequence[dict]) -> Decimal | None:
    q = sum((D(f["qty"]) for f in fs), ZERO)
    return None if q == 0 else sum((D(f["qty"]) * D(f["price"]) for f in fs), ZERO) / q


def net_of(pos: dict, fills: Sequence[dict], funding: Sequence[dict], mark: Decimal | None = None) -> dict:
    """Realized PnL, fees and funding of a position, from its fills and the funding it was charged; with
    ``mark``, what is still held is valued there (a stagnating position's autopsy)."""
    entries, exits = split_fills(pos, fills)
    sign = 1 if pos["side"] == "BUY" else -1
    entry = vwap(entries)
    realized = sum((sign * (D(f["price"]) - entry) * D(f["qty"]) for f in exits), ZERO) if entry else ZERO
    fees = sum((D(f.get("fee") or 0) for f in fills), ZERO)
    t_in = int(entries[0]["ts"]) if entries else 0
    t_out = int(exits[-1]["ts"]) if exits else int(pos.get("closed_at") or 0)
    fund = sum((D(r["amount_usdt"]) for r in funding if r.get("symbol") == pos["symbol"]
                and r.get("account", "main") == pos.get("account_id", "main") and t_in <= int(r["funding_time"]) <= t_out),
               ZERO)
    notional = sum((D(f["qty"]) * D(f["price"]) for f in entries), ZERO)
    held = sum((D(f["qty"]) for f in entries), ZERO) - sum((D(f["qty"]) for f in exits), ZERO)
    unrealized = sign * (mark - entry) * held if mark is not None and entry and held > 0 else ZERO
    net = realized + unrealized - fees + fund
    return {"entry_price": entry, "exit_price": vwap(exits) if held <= 0 or mark is None else mark,
            "realized": realized, "unrealized": unrealized, "fees": fees, "funding": fund,
            "net": net, "notional": notional, "roi": net / notional if notional else None, "opened_at": t_in,
            "closed_at": t_out, "qty": sum((D(f["qty"]) for f in entries), ZERO)}


def roe_curve(pos: dict, money: dict, bars: Bars) -> list[tuple[int, float]]:
    """ROE (on margin, the position's leverage) at each 1m close from entry to exit."""
    entry = money["entry_price"]
    if entry is None:
        return []
    sign = 1 if pos["side"] == "BUY" else -1
    lev = D(pos.get("leverage") or 1)
    out = [(money["opened_at"], 0.0)]
    for b in bars.between(money["opened_at"], money["closed_at"]):
        if b.close_time <= money["closed_at"]:
            out.append((int(b.close_time), float(sign * (D(b.close) - entry) / entry * lev)))
    if money["exit_price"] is not None:
        out.append((money["closed_at"], float(sign * (money["exit_price"] - entry) / entry * lev)))
    return out


def tca(pos: dict, fills: Sequence[dict], signal: dict, money: dict) -> dict:
    """Slippage against the decision's mid and the mid at send; implementation shortfall of the entry
    split into delay (decision → send), spread+impact (send → fill), fees and funding; maker share."""
    entries, exits = split_fills(pos, fills)
    sign = 1 if pos["side"] == "BUY" else -1
    decision = (signal.get("decision") or {}).get("price")
    dmid = D(decision) if decision is not None else None
    qty = money["qty"]
    avg = money["entry_price"]
    out: dict = {"decision_mid": _f(dmid), "entry_vwap": _f(avg), "exit_vwap": _f(money["exit_price"])}
    send = [f for f in entries if f.get("mid_at_send") is not None]
    smid = (sum((D(f["mid_at_send"]) * D(f["qty"]) for f in send), ZERO) / sum((D(f["qty"]) for f in send), ZERO)
            if send else None)
    out["mid_at_send"] = _f(smid)
    out["slippage_vs_decision_bp"] = _f(sign * (avg - dmid) / dmid * BP, "0.0001") if dmid and avg else None
    out["slippage_vs_send_bp"] = _f(sign * (avg - smid) / smid * BP, "0.0001") if smid and avg else None
    delay = sign * (smid - dmid) * qty if smid is not None and dmid is not None else None
    impact = sum((sign * (D(f["price"]) - D(f["mid_at_send"])) * D(f["qty"]) for f in send), ZERO) if send else None
    parts = {"delay": delay, "spread_impact": impact, "fees": money["fees"], "funding": -money["funding"]}
    out["shortfall_usdt"] = {k: _f(v) for k, v in parts.items()}
    out["shortfall_total_usdt"] = _f(sum((v for v in parts.values() if v is not None), ZERO))
    all_qty = sum((D(f["qty"]) for f in fills), ZERO)
    maker = sum((D(f["qty"]) for f in fills if f.get("is_maker")), ZERO)
    out["maker_share"] = _f(maker / all_qty, "0.0001") if all_qty else None
    out["taker_share"] = _f((all_qty - maker) / all_qty, "0.0001") if all_qty else None
    out["exit_slippage_vs_send_bp"] = None
    xs = [f for f in exits if f.get("mid_at_send") is not None]
    if xs:
        xm = sum((D(f["mid_at_send"]) * D(f["qty"]) for f in xs), ZERO) / sum((D(f["qty"]) for f in xs), ZERO)
        xv = vwap(xs)
        out["exit_slippage_vs_send_bp"] = _f(-sign * (xv - xm) / xm * BP, "0.0001")
    return out


def markouts(pos: dict, money: dict, bars: Bars) -> dict:
    sign = 1 if pos["side"] == "BUY" else -1
    out: dict = {}
    for leg, price, t, s in (("entry", money["entry_price"], money["opened_at"], sign),
                             ("exit", money["exit_price"], money["closed_at"], -sign)):
        row = {}
        for name, dt in MARKOUTS:
            mid = bars.mid_at(t + dt)
            row[name] = _f(s * (mid - price) / price * BP, "0.0001") if mid is not None and price else None
        out[leg] = row
    return out


def percentile(value: Decimal, population: Sequence[Decimal]) -> float | None:
    """Share of the population at or below ``value`` (mid-rank for ties), in percent."""
    if not population:
        return None
    below = sum(1 for x in population if x < value)
    equal = sum(1 for x in population if x == value)
    return round(100.0 * (below + 0.5 * equal) / len(population), 4)


def peers(money: dict, groups: dict[str, list[Decimal]]) -> dict:
    roi = money["roi"]
    return {name: {"n": len(pop), "percentile": percentile(roi, pop) if roi is not None else None,
                   "median_roi": _f(sorted(pop)[len(pop) // 2]) if pop else None}
            for name, pop in groups.items()}


def counterfactuals(pos: dict, money: dict, signal: dict, bars: Bars, sizing: dict,
                    fees: dict[str, Decimal]) -> dict:
    """ROI of the same entry under other choices (each on the entered notional, net of fees)."""
    sign_side = pos["side"]
    entry = money["entry_price"]
    out: dict = {"actual": _f(money["roi"])}
    if entry is None:
        return out
    feats = signal.get("features") or {}
    atr = D(feats["atr"]) if feats.get("atr") is not None else None
    d = signal.get("decision") or {}
    tp_k = D(sizing.get("tp_atr", 3.0)) * D(d.get("tp_mult", 1.0))
    sl_k = D(sizing.get("sl_atr", 1.5)) * D(d.get("sl_mult", 1.0))
    taker = fees["taker"]
    t0 = money["opened_at"]
    sign = 1 if sign_side == "BUY" else -1
    for h in (12, 24, 36):  # held to the label horizon (S7's label of a traded signal is the actual trade)
        mid = bars.mid_at(t0 + h * 3_600_000)
        out[f"exit_at_{h}h"] = _f(sign * (mid - entry) / entry - taker * (entry + mid) / entry) if mid else None
    if atr is None:
        return out
    path = bars.between(t0 - t0 % BAR_MS + BAR_MS, t0 + 36 * 3_600_000)
    for name, k in (("no_trailing", sl_k), ("stop_1x_atr", Decimal(1)), ("stop_2x_atr", Decimal(2))):
        o = counterfactual(sign_side, entry, atr, k, tp_k, path, taker)
        out[name] = _f(o.roi_net) if o else None
    # Maker-only entry: the same path entered at the mid at send, paying the maker fee on the entry.
    smid = D(money.get("mid_at_send")) if money.get("mid_at_send") else None
    if smid is not None:
        o = counterfactual(sign_side, smid, atr, sl_k, tp_k, path, taker)
        if o is not None:
            o_roi = o.roi_net + (taker - fees["maker"])  # entry fee at the maker rate instead
            out["maker_only_entry"] = _f(o_roi)
    return out


def risk(curve: list[tuple[int, float]], leverage: Decimal) -> dict:
    """Per-minute returns of the position's notional, annualised over 365 days."""
    lev = float(leverage) or 1.0
    values = [1.0 + r / lev for _, r in curve]
    rets = [b / a - 1.0 for a, b in zip(values, values[1:], strict=False) if a > 0]
    s = metrics.sharpe(rets, MINUTES_PER_YEAR)
    so = metrics.sortino(rets, MINUTES_PER_YEAR)
    mdd = metrics.max_drawdown(rets) if rets else math.nan
    clean = lambda x: None if x is None or math.isnan(x) or math.isinf(x) else round(x, 6)  # noqa: E731
    return {"sharpe_365": clean(s), "sortino_365": clean(so), "max_drawdown": clean(mdd), "minutes": len(rets)}


def tldr(pos: dict, money: dict, t: dict, marks: dict, peer: dict, cf: dict) -> str:
    """Three deterministic sentences from the numbers above."""
    side = "long" if pos["side"] == "BUY" else "short"
    mins = max(0, (money["closed_at"] - money["opened_at"]) // 60_000)
    roi = money["roi"]
    s1 = (f"{pos['symbol']} {side} closed by {pos.get('close_reason') or 'exit'} after {mins} min: "
          f"net {money['net']:.4f} USDT ({float(roi) * 100:+.3f}% of notional) after fees {money['fees']:.4f} "
          f"and funding {money['funding']:+.4f}.") if roi is not None else f"{pos['symbol']} {side}: no fills."
    sf = t.get("shortfall_usdt") or {}
    s2 = (f"Entry cost {t.get('slippage_vs_decision_bp') or 'n/a'} bp vs the decision mid "
          f"(delay {sf.get('delay') or 'n/a'}, spread+impact {sf.get('spread_impact') or 'n/a'} USDT); "
          f"maker share {t.get('maker_share') or 'n/a'}; 5m entry markout {marks['entry'].get('5m') or 'n/a'} bp.")
    best = max(((k, D(v)) for k, v in cf.items() if k != "actual" and v is not None), key=lambda kv: kv[1], default=None)
    sym_peer = peer.get("symbol", {}).get("percentile")
    s3 = (f"Better alternative: {best[0].replace('_', ' ')} at {float(best[1]) * 100:+.3f}%" if best and roi is not None
          and best[1] > roi else "No alternative tested did better") + (
        f"; ranks at the {sym_peer:.0f}th percentile of {peer['symbol']['n']} {pos['symbol']} trades." if sym_peer is not None
        else ".")
    return " ".join((s1, s2, s3))
