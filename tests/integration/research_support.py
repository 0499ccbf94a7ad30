"""One real backtest of the shipped sample (the sample bundle on 2025-07-06, real BTC/ETH 1m bars),
shared by the S7/S8 tests of a session: its store holds the signals, orders, fills and positions the
real S2→S3→S4→S6 handlers wrote; its venue engine is the independent source of truth (trades,
commissions, realized PnL, funding income)."""

from __future__ import annotations

import functools
from decimal import Decimal
from pathlib import Path

import pandas as pd

from chimera.schemas.messages import Kline

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "chimera" / "venues" / "local" / "data"
BUNDLE = REPO / "chimera" / "bundles" / "sample_vol_breakout.json"
FILES = {"BTCUSDT": "BTC_USDT_USDT-1m-futures.feather", "ETHUSDT": "ETH_USDT_USDT-1m-futures.feather"}
DAY = ("2025-07-06", "2025-07-07")


@functools.cache
def frames() -> dict[str, pd.DataFrame]:
    out = {}
    for sym, name in FILES.items():
        df = pd.read_feather(DATA / name)
        df["open_time"] = df["date"].astype("int64") // 1_000_000
        out[sym] = df.reset_index(drop=True)
    return out


@functools.cache
def klines() -> dict[str, list[Kline]]:
    return {sym: [Kline(market="perp", symbol=sym, interval="1m", open_time=int(r.open_time),
                        close_time=int(r.open_time) + 59_999, open=Decimal(str(r.open)), high=Decimal(str(r.high)),
                        low=Decimal(str(r.low)), close=Decimal(str(r.close)), volume=Decimal(str(r.volume)))
                  for r in df.itertuples()] for sym, df in frames().items()}


def kline_source(symbol: str, start: int, end: int) -> list[Kline]:
    """The venue's klines port over the sample file (closed 1m bars with start <= open_time < end)."""
    return [k for k in klines()[symbol] if start <= k.open_time < end]


@functools.cache
def sample_run():
    """The backtest's RunOutput; funding income booked by the venue is copied into ``funding_records``
    exactly as S1's ``sync_funding`` writes it from ``/fapi/v1/income``."""
    from chimera.backtest.bundle import load_bundle
    from chimera.backtest.data import load
    from chimera.backtest.runner import ACCOUNT, run
    from chimera.store.collections import FUNDING_RECORDS

    b = load_bundle(str(BUNDLE))
    ds = load(["sample"], *DAY)
    out = run(b.body, ds.feed, ds.symbols, bundle_id=b.bundle_id, rev=b.rev)
    for i in out.exchange.engine.income:
        if i.income_type == "FUNDING_FEE" and i.account == ACCOUNT:
            out.store.insert_if_absent(FUNDING_RECORDS, f"{ACCOUNT}:{i.tran_id}", {
                "account": ACCOUNT, "symbol": i.symbol, "funding_time": i.time, "amount_usdt": str(i.income),
                "asset": i.asset, "tran_id": str(i.tran_id), "rate": None})
    return out, b.body


def exit_events(out) -> list:
    """``PositionChanged(EXIT)`` of every closed position of the run, as S6 publishes it on ``pos:events``
    (rebuilt from S6's documents: the backtest runner does not keep its streams' entries)."""
    from decimal import Decimal as D

    from chimera.schemas.messages import PositionChanged
    from chimera.store.collections import POSITIONS

    return [PositionChanged(pos_id=p["_key"], kind="EXIT", symbol=p["symbol"], side=p["side"], qty=D(p["qty"]),
                            state=p["state"], entry_price=D(p["entry_price"]), exit_price=D(p["exit_price"]),
                            realized_pnl=D(p["realized_pnl"]))
            for p in sorted(out.store.query(POSITIONS, {"state": "CLOSED"}), key=lambda p: p["_key"])
            if p.get("exit_price") is not None]
