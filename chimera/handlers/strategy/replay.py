"""Replay a strategy bundle over real 1m bars through the in-process runtime (a dry-run, not a backtest).

Features come from S2's FeatureEngine; decisions from the real s3 handler. A deliberately
naive fill model stands in for S4/S6 so the lifecycle moves: entries fill at the bar close,
exits fill when a later bar's range touches the SL or TP price (SL first when both). It
answers "does this rule set trade this data, and does the state machine hold", nothing more:
no fees, no slippage, no PnL claims.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import pandas as pd

from chimera.handlers.features.engine import Bar, FeatureEngine
from chimera.handlers.strategy.role import SPEC
from chimera.ops.settings import Settings
from chimera.schemas.messages import FeaturesComputed, OrderResult, SubmitOrder
from chimera.store import open_store
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.config import activate
from chimera.workers.inprocess import InProcessRuntime

DATA = Path(__file__).resolve().parents[2] / "venues" / "local" / "data"
FILES = {"BTCUSDT": "BTC_USDT_USDT-1m-futures.feather", "ETHUSDT": "ETH_USDT_USDT-1m-futures.feather"}


def _bars(symbol: str, limit: int | None) -> list[Bar]:
    df = pd.read_feather(DATA / FILES[symbol])
    if limit:
        df = df.iloc[:limit]
    t = df["date"].astype("int64") // 1_000_000
    return [Bar(int(ts), o, h, low, c, v) for ts, o, h, low, c, v in
            zip(t, df["open"], df["high"], df["low"], df["close"], df["volume"], strict=True)]


def replay(bundle: dict, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"), limit: int | None = None) -> dict:
    store = open_store("sqlite://:memory:")
    activate(store, bundle.get("bundle_id", "replay"), 1, bundle)
    rt = InProcessRuntime([SPEC], store=store, settings=Settings(symbols=symbols), clock=ManualClock(0))
    engines = {s: FeatureEngine.new(s) for s in symbols}
    series = {s: _bars(s, limit) for s in symbols}
    open_pos: dict[str, tuple[SubmitOrder, int]] = {}  # intent_id -> (order, symbol index)
    seen_orders = 0
    opened = 0
    n = min(len(b) for b in series.values())
    for i in range(n):
        for k, sym in enumerate(symbols):
            bar = series[sym][i]
            if sym != "BTCUSDT" and "BTCUSDT" in series:
                engines[sym].on_reference_bar(series["BTCUSDT"][i].open_time, series["BTCUSDT"][i].close)
            _exits(rt, open_pos, sym, bar)
            snap = engines[sym].on_bar(bar)
            if snap is None:
                continue
            sid = f"{sym}:{snap.t0}"
            rt.publish(keys.feat_stream(sym), FeaturesComputed(signal_id=sid, t0=snap.t0, symbol=sym,
                       features=snap.features, flags=snap.flags), idempotency_key=sid, event_time=snap.t0)
            rt.run()
            orders = rt.entries(keys.ORD_COMMANDS)
            for env in orders[seen_orders:]:
                intent = env.payload.intent
                rt.publish(keys.ORD_RESULTS, OrderResult(
                    intent_id=intent.intent_id, leg="entry", client_order_id=intent.intent_id, symbol=sym,
                    status="FILLED", side=intent.side, qty=intent.qty, filled_qty=intent.qty,
                    avg_price=Decimal(repr(bar.close)), pos_id=intent.pos_id,
                ), idempotency_key=f"{intent.intent_id}:entry:FILLED", event_time=snap.t0)
                open_pos[intent.intent_id] = (env.payload, k)
                opened += 1
            seen_orders = len(orders)
            rt.run()
    reasons = Counter(e.payload.reason.split(";")[0] for e in rt.entries(keys.SIG_EVENTS))
    # The positions this naive fill model opened and closed (no S6 runs here to keep position records).
    states = Counter({"CLOSED": opened - len(open_pos), "ACTIVE": len(open_pos)})
    states = +states  # drop zero counts
    return {"decisions": sum(reasons.values()), "reasons": dict(reasons), "positions": dict(states),
            "alerts": len(rt.entries(keys.ALERTS)), "dead": len(rt.dead)}


def _exits(rt, open_pos: dict, sym: str, bar: Bar) -> None:
    for intent_id, (order, _) in list(open_pos.items()):
        it = order.intent
        if it.symbol != sym:
            continue
        long = it.side == "BUY"
        hit_sl = it.sl_price is not None and (bar.low <= it.sl_price if long else bar.high >= it.sl_price)
        hit_tp = it.tp_price is not None and (bar.high >= it.tp_price if long else bar.low <= it.tp_price)
        if not (hit_sl or hit_tp):
            continue
        purpose, px = ("STOP", it.sl_price) if hit_sl else ("TAKE_PROFIT", it.tp_price)
        t = bar.open_time + 60_000
        rt.publish(keys.ORD_RESULTS, OrderResult(
            intent_id=f"{intent_id}:{purpose}", leg=purpose.lower(), client_order_id=f"{intent_id}:{purpose}",
            symbol=sym, status="FILLED", purpose=purpose, qty=it.qty, filled_qty=it.qty, avg_price=px,
            pos_id=it.pos_id), idempotency_key=f"{intent_id}:{purpose}:FILLED", event_time=t)
        rt.ports.risk.release(it.pos_id, sym)  # S6's part in production: the close gives the reservation back
        del open_pos[intent_id]
    rt.run()


if __name__ == "__main__":
    import json
    import sys

    path = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[2] / "bundles" /
                                                      "sample_vol_breakout.json")
    print(json.dumps(replay(json.loads(Path(path).read_text())), indent=2))
