"""``strategy_metrics_daily``: per (bundle, symbol, UTC day), recomputed from the store's facts.

Facts, not event counts: positions CLOSED that day (PnL, trades, hit rate), fills booked that day
(maker fill ratio, slippage, fees) and ``funding_records`` of that day. Recomputing the whole day on
every tick makes the document an idempotent upsert (a replay or a second replica writes the same
figures). The bundle is the one the position's decision was made under (signal → ``bundle_id``),
else ``manual`` (gateway orders, adopted positions).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from chimera.store.collections import (
    FILLS,
    FUNDING_RECORDS,
    ORDER_INTENTS,
    POSITIONS,
    SIGNALS,
    STRATEGY_METRICS_DAILY,
)

DAY_MS = 86_400_000


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def _bundle_of(store, intent_id: str | None, cache: dict) -> str:
    if not intent_id:
        return "manual"
    if intent_id not in cache:
        intent = store.get(ORDER_INTENTS, intent_id) or {}
        bundle = intent.get("bundle_id")
        sig_id = intent.get("signal_id")
        if not bundle and sig_id:
            bundle = (store.get(SIGNALS, sig_id) or {}).get("bundle_id")
        cache[intent_id] = bundle or "manual"
    return cache[intent_id]


def _d(x) -> Decimal:
    return Decimal(str(x)) if x not in (None, "") else Decimal(0)


def compute(store, day_ms: int) -> dict[str, dict]:
    """``{key: document}`` for every (bundle, symbol) active on the day starting at ``day_ms``."""
    end, cache = day_ms + DAY_MS, {}
    rows: dict[tuple[str, str], dict] = defaultdict(lambda: {
        "pnl_usdt": Decimal(0), "trades": 0, "wins": 0, "fills": 0, "maker_fills": 0, "fees_usdt": Decimal(0),
        "slip_sum": 0.0, "slip_n": 0, "funding_usdt": Decimal(0)})
    # closed_at <= updated_at, so the updated_at filter is a superset; older documents have no closed_at.
    for pos in store.query(POSITIONS, {"state": "CLOSED", "updated_at": (">=", day_ms)}):
        closed = pos.get("closed_at") or pos["updated_at"]
        if not day_ms <= closed < end:
            continue
        row = rows[(_bundle_of(store, pos.get("entry_intent_id"), cache), pos["symbol"])]
        pnl = _d(pos.get("realized_pnl"))
        row["pnl_usdt"] += pnl
        row["trades"] += 1
        row["wins"] += pnl > 0
    for f in store.query(FILLS, {"ts": (">=", day_ms)}):
        if f["ts"] >= end:
            continue
        row = rows[(_bundle_of(store, f.get("intent_id"), cache), f["symbol"])]
        row["fills"] += 1
        row["maker_fills"] += bool(f.get("is_maker"))
        if f.get("fee_asset", "USDT") == "USDT":
            row["fees_usdt"] += _d(f.get("fee"))
        if f.get("slippage_bps") is not None:
            row["slip_sum"] += float(f["slippage_bps"])
            row["slip_n"] += 1
    for fr in store.query(FUNDING_RECORDS, {"funding_time": (">=", day_ms)}):
        if fr["funding_time"] < end:
            # Funding is per account and symbol, not per bundle: booked on the symbol's "all" row.
            rows[("all", fr["symbol"])]["funding_usdt"] += _d(fr.get("amount_usdt"))
    out = {}
    for (bundle, symbol), r in rows.items():
        out[f"{bundle}:{symbol}:{day_ms}"] = {
            "bundle_id": bundle, "symbol": symbol, "day_ms": day_ms, "pnl_usdt": str(r["pnl_usdt"]),
            "trades": r["trades"], "hit_rate": r["wins"] / r["trades"] if r["trades"] else None,
            "fills": r["fills"], "maker_fill_ratio": r["maker_fills"] / r["fills"] if r["fills"] else None,
            "slippage_bps_avg": r["slip_sum"] / r["slip_n"] if r["slip_n"] else None,
            "fees_usdt": str(r["fees_usdt"]), "funding_usdt": str(r["funding_usdt"]),
            "net_pnl_usdt": str(r["pnl_usdt"] - r["fees_usdt"] + r["funding_usdt"])}
    return out


def write(store, day_ms: int) -> dict[str, dict]:
    docs = compute(store, day_ms)
    for key, doc in docs.items():
        store.upsert(STRATEGY_METRICS_DAILY, key, doc)
    return docs


def realized_today(docs: dict[str, dict]) -> Decimal:
    return sum((Decimal(d["net_pnl_usdt"]) for d in docs.values()), Decimal(0))
