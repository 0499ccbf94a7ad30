"""Live figures of one rollout stage, read from S4's and S6's documents (the source of truth).

An order belongs to the stage when its intent's signal was decided by the stage's (bundle_id, rev)
(``signals.decision`` records both) and the intent was created after the stage started. Figures
without a sample are NaN, which the analysis treats as Inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from chimera.store.collections import FILLS, ORDER_INTENTS, ORDERS, POSITIONS, SIGNALS

NAN = float("nan")
_REJECTED = ("REJECTED", "EXPIRED_REJECTED")


def _chunks(ids: list[str], n: int = 200) -> Iterable[list[str]]:
    for i in range(0, len(ids), n):
        yield ids[i:i + n]


def _rev_signals(store, bundle_id: str, rev: int, since_ms: int, until_ms: int) -> set[str]:
    rows = store.query(SIGNALS, {"config_rev": rev, "t0": (">=", since_ms)})
    return {r["_key"] for r in rows if int(r.get("t0") or 0) < until_ms
            and (r.get("decision") or {}).get("bundle_id", bundle_id) == bundle_id}


def _drawdown_pct(store, signal_ids: set[str], equity: float) -> float:
    pnl = 0.0
    for chunk in _chunks(sorted(signal_ids)):
        for p in store.query(POSITIONS, {"signal_id": ("in", chunk)}):
            if p.get("closed_at"):
                pnl += float(p.get("realized_pnl") or 0)
    return max(0.0, -pnl) / equity * 100 if equity > 0 else NAN


def stage_metrics(store, *, bundle_id: str, rev: int, since_ms: int, until_ms: int,
                  incumbent: tuple[str, int], equity_usdt: float) -> dict:
    sigs = _rev_signals(store, bundle_id, rev, since_ms, until_ms)
    intents: list[str] = []
    for chunk in _chunks(sorted(sigs)):
        intents += [d["_key"] for d in store.query(ORDER_INTENTS, {"signal_id": ("in", chunk)})]
    legs: list[dict] = []
    fills: list[dict] = []
    for chunk in _chunks(intents):
        legs += store.query(ORDERS, {"intent_id": ("in", chunk)})
        fills += store.query(FILLS, {"intent_id": ("in", chunk)})
    entries = [leg for leg in legs if leg.get("purpose", "ENTRY") == "ENTRY"]
    rejected = sum(1 for leg in entries if leg.get("status") in _REJECTED)
    maker = [leg for leg in entries if leg.get("type") == "LIMIT"]
    maker_filled = sum(1 for leg in maker if leg.get("status") in ("FILLED", "PARTIALLY_FILLED"))
    slips = [float(f["slippage_bps"]) for f in fills if f.get("slippage_bps") is not None]
    duration = max(1, until_ms - since_ms)
    inc = _rev_signals(store, incumbent[0], incumbent[1], since_ms - duration, since_ms)
    return {
        "signals": len(sigs), "orders": len(entries), "rejects": rejected,
        "reject_rate": rejected / len(entries) if entries else NAN,
        "maker_sent": len(maker), "maker_filled": maker_filled,
        "maker_fill_ratio": maker_filled / len(maker) if maker else NAN,
        "fills": len(fills), "slippage_bps": sum(slips) / len(slips) if slips else NAN,
        "drawdown_pct": _drawdown_pct(store, sigs, equity_usdt),
        "incumbent_drawdown_pct": _drawdown_pct(store, inc, equity_usdt),
    }


def jsonable(m: dict) -> dict:
    """NaN is not JSON: stored as None (and still read back as missing)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
